#!/usr/bin/env bash
# The GPU check, in one command, on a CUDA machine without network:
#
#   scripts/gpu_check.sh            (report in $OUT/gpu_check.json, or ./out/ without $OUT)
#
# 1. installs the wheels `make gpu-wheels` downloaded into gpu_wheels/ (transformers,
#    bitsandbytes and what this transformers needs newer than a machine may have, plus
#    pytest) into a private folder with --no-deps: nothing of the machine's Python changes;
# 2. puts that folder and this checkout on PYTHONPATH (the project's pinned dependencies
#    are not installed: what runs is this code on the machine's own torch);
# 3. runs the tests marked `gpu` (tests/test_gpu.py) and `duetto bench gpu`;
# 4. writes ONE JSON report: versions, test results, the benchmark's figures, and
#    whether every target was met. Exit 0 only when everything passed.
#
# Without CUDA it installs and imports the wheels (the part a CPU can check), says in one
# line that the GPU part was not run, writes the report and exits 2.
# Time: under 9 minutes (tests limited to 170 s, the benchmark to 260 s of new rows and
# 320 s in all). The benchmark's rows run target rows first, MiniCPM-o nf4 before all
# (app/bench/gpu.py DEFAULT_ROWS); rows the budget leaves out are reported as skipped.
set -u

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python3}
WHEELS=${GPU_WHEELS:-$ROOT/gpu_wheels}
OUT_DIR=${OUT:-$ROOT/out}
WORK=$(mktemp -d)
VENDOR=$WORK/site
mkdir -p "$OUT_DIR" "$VENDOR"
REPORT=$OUT_DIR/gpu_check.json
START=$(date +%s)
cd "$ROOT" || exit 2

note() { echo "gpu_check: $*" >&2; }

# --- 1. wheels -----------------------------------------------------------------------------
shopt -s nullglob
wheels=("$WHEELS"/*.whl)
INSTALLED=no
if ((${#wheels[@]})); then
    if "$PY" -m pip install --quiet --no-deps --no-index --disable-pip-version-check \
            --target "$VENDOR" "${wheels[@]}" >"$WORK/pip.log" 2>&1; then
        INSTALLED=yes
        note "installed ${#wheels[@]} wheels from $WHEELS into a private folder"
    else
        note "installing the wheels failed ($(grep -m1 ERROR "$WORK/pip.log")); going on" \
             "with what is installed"
    fi
else
    note "no wheels in $WHEELS (run \`make gpu-wheels\` where there is network); going on" \
         "with what is installed"
    : >"$WORK/pip.log"
fi
export PYTHONPATH="$VENDOR:$ROOT"
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

"$PY" - >"$WORK/env.json" 2>"$WORK/env.err" <<'EOF'
import importlib, json
out = {}
for name in ("torch", "transformers", "accelerate", "bitsandbytes", "numpy", "pytest"):
    try:
        out[name] = getattr(importlib.import_module(name), "__version__", "?")
    except Exception as exc:
        out[name] = f"not importable: {type(exc).__name__}: {exc}"
import torch
out["cuda"] = torch.cuda.is_available()
out["device"] = torch.cuda.get_device_name(0) if out["cuda"] else None
print(json.dumps(out))
EOF
CUDA=$("$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))['cuda'])" \
       "$WORK/env.json" 2>/dev/null || echo False)

# --- 2. tests and benchmark ------------------------------------------------------------------
TESTS_RC=skipped
BENCH_RC=skipped
if [ "$CUDA" = "True" ]; then
    timeout 170 "$PY" -m pytest -q -m gpu tests/test_gpu.py -p no:cacheprovider \
        -o addopts="" --junitxml="$WORK/tests.xml" >"$WORK/tests.log" 2>&1
    TESTS_RC=$?
    timeout 320 "$PY" -m app bench gpu --budget-s 260 --json "$WORK/bench.json" \
        >"$WORK/bench.log" 2>&1
    BENCH_RC=$?
else
    note "no CUDA GPU here: the GPU tests and \`duetto bench gpu\` were not run (they need" \
         "one); wheels installed: $INSTALLED; versions imported are in the report"
fi

# --- 3. one report ---------------------------------------------------------------------------
"$PY" - "$WORK" "$REPORT" "$TESTS_RC" "$BENCH_RC" "$START" "$CUDA" "$INSTALLED" <<'EOF'
import json, sys, time
from pathlib import Path
import xml.etree.ElementTree as ET

work, report, tests_rc, bench_rc, start, cuda, installed = sys.argv[1:8]
work = Path(work)

def text(name, tail=6000):
    path = work / name
    return path.read_text(errors="replace")[-tail:] if path.exists() else ""

def load(name):
    try:
        return json.loads((work / name).read_text())
    except (OSError, ValueError):
        return None

env = load("env.json") or {"error": text("env.err")}
tests = {"rc": tests_rc, "log_tail": text("tests.log")}
if (work / "tests.xml").exists():
    suite = ET.parse(work / "tests.xml").getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    tests.update({k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")})
    tests["cases"] = [
        {"name": c.get("name"), "time_s": float(c.get("time", 0)),
         "outcome": ("failed" if c.find("failure") is not None or c.find("error") is not None
                     else "skipped" if c.find("skipped") is not None else "passed")}
        for c in suite.iter("testcase")]
bench = {"rc": bench_rc, "log_tail": text("bench.log"), "report": load("bench.json")}
ran = cuda == "True"
ok = ran and tests_rc == "0" and bench_rc == "0"
out = {
    "ok": ok,
    "gpu_part_run": ran,
    "note": ("" if ran else "no CUDA GPU: the GPU tests and `duetto bench gpu` were not run"),
    "wheels_installed": installed == "yes",
    "elapsed_s": round(time.time() - float(start), 1),
    "environment": env,
    "pip_log_tail": text("pip.log", 2000),
    "tests": tests,
    "bench": bench,
}
Path(report).write_text(json.dumps(out, indent=1))
print(f"gpu_check: {'all passed' if ok else 'NOT all passed'}; report: {report}")
EOF

rm -rf "$WORK"
if [ "$CUDA" != "True" ]; then exit 2; fi
[ "$TESTS_RC" = 0 ] && [ "$BENCH_RC" = 0 ] && exit 0
exit 1
