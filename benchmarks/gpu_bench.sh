#!/usr/bin/env bash
# The one benchmark command for the GPU machine (see ../../shared/device/README.md).
#
# It runs there after onnxruntime-gpu is unpacked into ~/ortsite, as
#   export PYTHONPATH=~/ortsite PYTHONUNBUFFERED=1 &&
#   python3 -m pip install -q --no-deps --no-build-isolation -e . && bash benchmarks/gpu_bench.sh
# where there is no z3, maybe no rich, and at most 9 minutes for everything. It writes under $OUT:
#   env.txt     versions, providers, GPU (nvidia-smi)
#   cuda.md     `superopt bench` results, rewritten after every model (a timeout keeps the rows)
#   cuda.json   the same with every round's time
#   bench.log   the run's phase-by-phase log (build, optimize with cache state, timing)
#   costs.sqlite3  the measured-cost cache the run filled (a consistent copy)
#   gate.txt, gate-<model>.json  first of all: the analytic CUDA roofline's best graph of each
#               of GATE_MODELS put through the end-to-end gate on the device (`optimize --cost
#               analytic`): whether the rewrites reach.md's analytic column counts make the real
#               model faster (issue 14: ResNet-50/ResNeXt-50's conv-add-merge, SqueezeNet's and
#               Inception's merges, BERT's Q/K/V merge, NasRNN's merged kernels merged again)
#
# Dry run on a CPU machine (same code path, CPU provider):
#   SUPEROPT_BENCH_DEVICE=cpu OUT=/tmp/x bash benchmarks/gpu_bench.sh
# Knobs (environment): SUPEROPT_BENCH_DEVICE (cuda), SUPEROPT_BENCH_MODELS (all seven, space
# separated), SUPEROPT_BENCH_ROUNDS (9), SUPEROPT_BENCH_TIMING_S (8 s of rounds per model),
# SUPEROPT_BENCH_SEARCH_S (10 s of search per model), SUPEROPT_BENCH_MAX_TOTAL_S (start no
# model later; default: what SUPEROPT_TOTAL_S leaves, less 90 s), SUPEROPT_BENCH_TIMEOUT_S
# (hard stop; default: what SUPEROPT_TOTAL_S (540) leaves), SUPEROPT_GATE_MODELS (resnet50
# resnext50 nasrnn squeezenet inception_v3 bert), SUPEROPT_GATE_BUDGET_S (15 s of gate timing per
# model), SUPEROPT_GATE_TOTAL_S (180: start no gate model later), PYTHON (python3).
set -uo pipefail

OUT=${OUT:-/tmp/superopt-bench}
DEVICE=${SUPEROPT_BENCH_DEVICE:-cuda}
MODELS=${SUPEROPT_BENCH_MODELS:-}
ROUNDS=${SUPEROPT_BENCH_ROUNDS:-9}
TIMING_S=${SUPEROPT_BENCH_TIMING_S:-8}
SEARCH_S=${SUPEROPT_BENCH_SEARCH_S:-10}
TOTAL_S=${SUPEROPT_TOTAL_S:-540}  # the whole script, under the device's 10-minute command limit
GATE_MODELS=${SUPEROPT_GATE_MODELS:-resnet50 resnext50 nasrnn squeezenet inception_v3 bert}
GATE_BUDGET_S=${SUPEROPT_GATE_BUDGET_S:-15}
GATE_TOTAL_S=${SUPEROPT_GATE_TOTAL_S:-180}
PY=${PYTHON:-python3}
# A fresh cache outside $OUT (so a cold fill is measured and timed); copied into $OUT at the end.
CACHE=${SUPEROPT_BENCH_CACHE:-$(mktemp -d)}

mkdir -p "$OUT/zoo"
t0=$(date +%s)
phase() { echo "== $(($(date +%s) - t0)) s: $*"; }

phase "environment"
"$PY" - >"$OUT/env.txt" 2>&1 <<'EOF'
import importlib.util, platform, subprocess
import numpy, onnx, onnxruntime as ort
if hasattr(ort, "preload_dlls"):  # onnxruntime-gpu: load the CUDA/cuDNN pip libraries first
    try:
        ort.preload_dlls()
    except Exception as e:  # noqa: BLE001
        print("preload_dlls failed:", e)
from superopt.runtime import cuda_probe
print("python", platform.python_version(), "| onnxruntime", ort.__version__, "| onnx",
      onnx.__version__, "| numpy", numpy.__version__)
for mod in ("rich", "z3", "onnxslim"):
    print(mod, "installed" if importlib.util.find_spec(mod) else "missing")
print("providers", ort.get_available_providers())
print("cuda probe", cuda_probe())
try:
    print(subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.sm",
                          "--format=csv"], capture_output=True, text=True, timeout=20).stdout)
except OSError as e:
    print("nvidia-smi:", e)
EOF
cat "$OUT/env.txt"

phase "analytic candidates through the gate on $DEVICE (models: $GATE_MODELS)"
for m in $GATE_MODELS; do
  (( $(date +%s) - t0 < GATE_TOTAL_S )) || { echo "$m | skipped: gate phase time spent" >>"$OUT/gate.txt"; continue; }
  timeout 60 "$PY" -m superopt zoo build "$m" -q -o "$OUT/zoo/$m.onnx" || continue
  timeout $((GATE_BUDGET_S + 90)) "$PY" -m superopt optimize "$OUT/zoo/$m.onnx" \
    "$OUT/zoo/$m.analytic.onnx" --device "$DEVICE" --cost analytic \
    --gate-budget "$GATE_BUDGET_S" --json "$OUT/gate-$m.json" -q 2>&1 | tee -a "$OUT/gate.log"
  "$PY" -c '
import json, sys
m, path = sys.argv[1], sys.argv[2]
try:
    d = json.load(open(path))
except OSError as e:
    print(m, "| no report:", e); sys.exit()
steps = [s.get("rule_name") or s["rule_id"] for s in d.get("candidate_steps") or []]
print(m, "|", len(steps), "rewrites:", ", ".join(sorted(set(steps))) or "-", "|",
      d["verdict"], "|", d.get("kept_reason") or "", "| speedup", d["latency"].get("speedup"))
' "$m" "$OUT/gate-$m.json" >>"$OUT/gate.txt"
  tail -1 "$OUT/gate.txt"
done

left=$((TOTAL_S - ($(date +%s) - t0)))
TIMEOUT_S=${SUPEROPT_BENCH_TIMEOUT_S:-$left}
MAX_TOTAL_S=${SUPEROPT_BENCH_MAX_TOTAL_S:-$((left > 150 ? left - 90 : 60))}
phase "superopt bench on $DEVICE (models: ${MODELS:-all}; $MAX_TOTAL_S s to start models, $TIMEOUT_S s in all)"
# shellcheck disable=SC2086  # MODELS is a space-separated list of names
timeout "$TIMEOUT_S" "$PY" -m superopt bench $MODELS --device "$DEVICE" --out "$OUT/$DEVICE.md" \
  --json "$OUT/$DEVICE.json" \
  --rounds "$ROUNDS" --timing-budget "$TIMING_S" --time-limit "$SEARCH_S" \
  --max-total "$MAX_TOTAL_S" --cache-dir "$CACHE" 2>&1 | tee "$OUT/bench.log"
rc=${PIPESTATUS[0]}
phase "bench exited with $rc"

# SQLite in WAL mode: copy through the backup API so the copy holds every committed cost.
"$PY" - "$CACHE/costs.sqlite3" "$OUT/costs.sqlite3" <<'EOF' || echo "cost cache not copied"
import os, sqlite3, sys
src, dst = sys.argv[1], sys.argv[2]
if os.path.exists(src):
    with sqlite3.connect(src) as a, sqlite3.connect(dst) as b:
        a.backup(b)
    print("cost cache:", dst, os.path.getsize(dst), "bytes")
else:
    print("no cost cache at", src)
EOF

phase "done"
[[ -f "$OUT/gate.txt" ]] && cat "$OUT/gate.txt"
[[ -f "$OUT/$DEVICE.md" ]] && cat "$OUT/$DEVICE.md"
exit "$rc"
