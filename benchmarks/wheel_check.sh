#!/usr/bin/env bash
# Build the wheel, install it into a fresh venv outside the checkout, and optimize a zoo model
# there with the shipped rule database: proves the package (and its data) works once installed.
#   bash benchmarks/wheel_check.sh            (or: make wheel-check)
# PYTHON picks the interpreter for the fresh venv; dependencies come from the registry (pip's
# cache makes repeat runs quick). Exits non-zero, naming the failed step, on any problem.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
BUILD_PY="${BUILD_PY:-$ROOT/.venv/bin/python}"
[ -x "$BUILD_PY" ] || BUILD_PY="$PYTHON"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
step() { echo "wheel-check: $*"; }

step "building the wheel"
"$BUILD_PY" -m pip wheel "$ROOT" --no-deps -q -w "$WORK/dist"
WHEEL="$(ls "$WORK"/dist/superopt-*.whl)"
step "built $(basename "$WHEEL")"

step "checking the wheel's contents"
LISTING="$("$BUILD_PY" -m zipfile -l "$WHEEL")"
for want in superopt/rules_db/rules.json superopt/search/backtrack.py \
            superopt/cost_model/__init__.py superopt/verifier/__init__.py \
            superopt/generator/__init__.py superopt/zoo/squeezenet.py superopt/face/report.py \
            superopt/face/drawing.py; do
  grep -q " *$want " <<<"$LISTING" || grep -q "$want" <<<"$LISTING" \
    || { echo "wheel-check: FAILED: $want is not in the wheel"; exit 1; }
done
if grep -qE '^(tests|benchmarks|search|generator|verifier|cost_model|rules_db)/' <<<"$(
    "$BUILD_PY" -c "import zipfile,sys; print('\n'.join(zipfile.ZipFile(sys.argv[1]).namelist()))" "$WHEEL")"; then
  echo "wheel-check: FAILED: top-level folders leaked into the wheel (must install under superopt.)"
  exit 1
fi

step "installing into a fresh venv in $WORK/venv"
"$PYTHON" -m venv "$WORK/venv"
"$WORK/venv/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
"$WORK/venv/bin/python" -m pip install -q "$WHEEL"

step "optimizing squeezenet with the installed command (in $WORK/run)"
mkdir -p "$WORK/run"
cd "$WORK/run"
# Far from the checkout: the installed package, not the source tree, must be imported.
"$WORK/venv/bin/python" -c "import superopt, sys; assert '$ROOT' not in superopt.__file__, superopt.__file__; print('wheel-check: imported', superopt.__file__)"
"$WORK/venv/bin/superopt" --version
"$WORK/venv/bin/superopt" zoo build squeezenet -o m.onnx
"$WORK/venv/bin/superopt" optimize m.onnx --device cpu --report r.html --json r.json \
  --time-limit "${TIME_LIMIT:-10}"
test -s m.opt.onnx || { echo "wheel-check: FAILED: no m.opt.onnx"; exit 1; }
test -s r.html || { echo "wheel-check: FAILED: no r.html"; exit 1; }
grep -q "superopt report" r.html || { echo "wheel-check: FAILED: r.html is not a report"; exit 1; }
"$WORK/venv/bin/superopt" inspect r.json
step "OK: $(basename "$WHEEL") installs and optimizes outside the checkout"
