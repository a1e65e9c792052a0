# The two commands a fresh machine needs: `make run` and `make test`.
# Each creates the virtual environment when it is missing (or stale).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint bench-timeline clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/duetto $(ARGS)

test: $(STAMP)
	$(BIN)/ruff check app tests
	QT_QPA_PLATFORM=offscreen $(BIN)/python -m pytest -q $(PYTEST_ARGS); rc=$$?; \
		if [ $$rc -eq 5 ]; then echo "no tests collected"; exit 0; fi; exit $$rc

lint: $(STAMP)
	$(BIN)/ruff check app tests

bench-timeline: $(STAMP)
	$(BIN)/duetto bench timeline

clean:
	rm -rf $(VENV) build *.egg-info
