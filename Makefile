# The two commands a fresh machine needs: `make run` and `make test`.
# Each creates the virtual environment when it is missing (or stale).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint bench-timeline gpu-wheels gpu-check package smoke clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/duetto $(ARGS)

# vLLM-Omni's own duplex client, for the test that has it talk to `duetto serve`
# (tests/test_vllm_omni_client.py): the package without its engine, in a folder of its
# own (importing it whole needs the engine; the test imports the client module alone).
VLLM_CLIENT := $(VENV)/vllm-omni-client
$(VLLM_CLIENT)/.installed: $(STAMP)
	$(BIN)/python -m pip install --quiet --no-deps --target $(VLLM_CLIENT) \
		vllm-omni==0.30.0 pybase64==1.5.1
	touch $@

test: $(STAMP) $(VLLM_CLIENT)/.installed
	$(BIN)/ruff check app tests packaging
	QT_QPA_PLATFORM=offscreen DUETTO_VLLM_OMNI_CLIENT=$(VLLM_CLIENT) \
		$(BIN)/python -m pytest -q $(PYTEST_ARGS); rc=$$?; \
		if [ $$rc -eq 5 ]; then echo "no tests collected"; exit 0; fi; exit $$rc

# The installer for the system this runs on, into dist/ (packaging/README.md): the
# launcher frozen by PyInstaller, the lock, the app's wheel, uv and a Python runtime.
PKG_STAMP := $(VENV)/.packaging
$(PKG_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,package]'
	touch $(PKG_STAMP)

package: $(PKG_STAMP)
	$(BIN)/python packaging/build_installer.py

# Installs the Linux artifact as a new user would and times first and second start
# (downloads torch and the rest: minutes; not part of `make test`).
smoke:
	packaging/smoke.sh

lint: $(STAMP)
	$(BIN)/ruff check app tests packaging

bench-timeline: $(STAMP)
	$(BIN)/duetto bench timeline

# The wheels the GPU check installs on a machine without network (scripts/gpu_check.sh):
# transformers and bitsandbytes as pinned here, what this transformers needs newer than
# a machine with an older one may have, and pytest. About 61 MiB, manylinux x86_64, for
# Python 3.12; into gpu_wheels/ (ignored by git; carry it with the checkout).
GPU_WHEELS ?= gpu_wheels
GPU_PY ?= 3.12
GPU_WHEEL_SPECS := transformers==5.24.0 bitsandbytes==0.50.2 "huggingface_hub>=1.31,<2" \
	tokenizers==0.23.3 safetensors==0.8.0 regex==2026.11.19 pytest==9.2.0 pluggy==1.7.0 \
	iniconfig==2.3.1

# Any pip downloads them: the project's environment when there is one, else $(PYTHON).
GPU_PIP_PY ?= $(shell test -x $(BIN)/python && echo $(BIN)/python || echo $(PYTHON))

gpu-wheels:
	mkdir -p $(GPU_WHEELS)
	$(GPU_PIP_PY) -m pip download --quiet --no-deps --only-binary=:all: \
		--platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
		--platform manylinux2014_x86_64 --python-version $(GPU_PY) --implementation cp \
		-d $(GPU_WHEELS) $(GPU_WHEEL_SPECS)
	du -sh $(GPU_WHEELS)

# On a CUDA machine: install those wheels privately, run the `gpu` tests and
# `duetto bench gpu`, write one JSON report ($$OUT/gpu_check.json, else out/).
gpu-check:
	scripts/gpu_check.sh

clean:
	rm -rf $(VENV) build dist packaging/build-icons *.egg-info
