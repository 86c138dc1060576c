#!/usr/bin/env bash
# The GPU check of issue 18, as one prepared script (about 6 minutes on one H200; every step has its
# own time limit, so the whole stays under 8 minutes even when a step hangs).
#
#   bash scripts/gpu_check.sh            # in the repository root of a machine with a CUDA GPU
#
# Steps:
#   1. env        the GPU, python, torch, torchvision
#   2. pytest     the CUDA test subset: pytest -q -k cuda (tests/test_augment.py's CUDA test,
#                 tests/test_gpu_paths.py's nvJPEG-vs-Pillow and CUDA training tests)
#   3. train      one short `train --device cuda` of each method on the toy world: time_ssl (normal),
#                 teacher (toy_p_ste, 5 repetitions) -> save-embeddings -> distill (toy_se_rkd), direct
#                 (toy_d_ste); then normal once more with engine.compile=true
#   4. bench      benchmarks/bench_throughput.py: ResNet-50 at 224 px, the normal preset's global batch
#                 (512 anchors + 512 positives), decoding in workers and on the GPU; figures in
#                 $OUT/bench_throughput.txt and .json
# $OUT is where the results go (the device tool sets it); without it, ./gpu_check_out.
#
# simtool needs pydantic, which the H200 image of this workplace lacks: carry it as wheels. Once, on
# the machine you call from, in the repository root:
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
#     pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 typing-extensions==4.16.0
# and run this script with .whl carried (the device tool's carry: [".whl"]); it installs them into
# /tmp/site when pydantic is missing.
# GPU_CHECK_DEVICE=cpu BENCH_ARGS="--quick --backbone test_resnet --size 64" bash scripts/gpu_check.sh
# runs the same steps on the CPU (the CUDA tests skip; slow: toy_d_ste's epoch alone takes minutes);
# GPU_CHECK_DRY=1 only prints the commands, to check the script itself.
#
# What comes back from $OUT (the device tool returns at most 8 files): summary.txt (each step's
# outcome and seconds), steps.log (every step's output), pytest_cuda.log, runs.json (each run's
# summary.json), bench_throughput.txt and bench_throughput.json.
set -u -o pipefail
OUT=${OUT:-$PWD/gpu_check_out}
DEV=${GPU_CHECK_DEVICE:-cuda}
BENCH_ARGS=${BENCH_ARGS:---device cuda --decode workers,device}
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/gpu_check.XXXXXX)
LOGS=$WORK/logs
mkdir -p "$LOGS"
export PYTHONUNBUFFERED=1 SIMTOOL_CACHE=$WORK/cache
PY=${PYTHON:-python3}
SUMMARY=$OUT/summary.txt
: >"$SUMMARY"
T0=$(date +%s)

if ! $PY -c "import pydantic" 2>/dev/null; then
  if ls .whl/*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
  else
    echo "pydantic is missing and no .whl/ folder was carried: see the header of $0 for the two commands that fetch it." | tee -a "$SUMMARY"
    exit 3
  fi
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
SIMTOOL="$PY -m simtool"

# step NAME LIMIT_SECONDS COMMAND...: run it with a time limit, log it, note its outcome
FAILED=0
STEPS=()
step() {
  local name=$1 limit=$2
  shift 2
  local t rc took what
  t=$(date +%s)
  if [ -n "${GPU_CHECK_DRY:-}" ]; then
    echo "$*" >"$LOGS/$name.log"
  else
    timeout --kill-after=10 "$limit" "$@" >"$LOGS/$name.log" 2>&1
  fi
  rc=$?
  took=$(($(date +%s) - t))
  what=ok
  if [ $rc -ne 0 ]; then
    what="FAILED (exit $rc$([ $rc -eq 124 ] && echo ', time limit'))"
    FAILED=$((FAILED + 1))
  fi
  STEPS+=("$name")
  printf '%-20s %-28s %4d s\n' "$name" "$what" "$took" | tee -a "$SUMMARY"
  [ $rc -eq 0 ] || tail -n 15 "$LOGS/$name.log" | sed 's/^/    /' | tee -a "$SUMMARY"
  return $rc
}

step env 60 bash -c "nvidia-smi -L; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; nproc
  $PY -c 'import sys, torch, torchvision; print(sys.version); print(\"torch\", torch.__version__, \"torchvision\", torchvision.__version__, \"cuda\", torch.version.cuda)'
  $PY -c 'import torch; print(torch.cuda.get_device_name(0))'"

step pytest_cuda 240 $PY -m pytest -q -rs -k cuda tests
cp "$LOGS/pytest_cuda.log" "$OUT/pytest_cuda.log"

W=$WORK/runs
step train_time_ssl 150 $SIMTOOL train --preset normal --set loop.epochs=1 --device "$DEV" --out "$W/normal"
step train_teacher 90 $SIMTOOL train --preset toy_p_ste --repeats 5 --set loop.epochs=5 --device "$DEV" --out "$W/teachers"
step save_embeddings 60 $SIMTOOL save-embeddings "$W/teachers" --out "$W/teachers.safetensors" --device "$DEV"
step train_distill 120 $SIMTOOL train --preset toy_se_rkd --set "data.teacher=$W/teachers.safetensors" --set loop.epochs=1 --device "$DEV" --out "$W/student"
step evaluate_distill 60 $SIMTOOL evaluate "$W/student" --type triplets --device "$DEV"
step train_direct 150 $SIMTOOL train --preset toy_d_ste --set loop.epochs=1 --device "$DEV" --out "$W/direct"
step train_compiled 180 $SIMTOOL train --preset normal --set loop.epochs=1 --set engine.compile=true --device "$DEV" --out "$W/normal-compiled"
$PY - "$W" >"$OUT/runs.json" <<'PYEOF'
import json, pathlib, sys
root = pathlib.Path(sys.argv[1])
print(json.dumps({p.parent.name: json.loads(p.read_text()) for p in sorted(root.glob("*/summary.json"))}, indent=1))
PYEOF

# the throughput benchmark: whatever time is left, at most 5 minutes (it takes about 2.5 on an H200)
LEFT=$((470 - ($(date +%s) - T0)))
[ $LEFT -gt 300 ] && LEFT=300
if [ $LEFT -gt 60 ]; then
  # shellcheck disable=SC2086
  step bench_throughput $LEFT $PY benchmarks/bench_throughput.py $BENCH_ARGS --out "$OUT/bench_throughput.json"
  cp "$LOGS/bench_throughput.log" "$OUT/bench_throughput.txt"
else
  echo "bench_throughput     SKIPPED (only $LEFT s left)" | tee -a "$SUMMARY"
  FAILED=$((FAILED + 1))
fi

for name in "${STEPS[@]}"; do
  printf '\n===== %s =====\n' "$name"
  tail -c 20000 "$LOGS/$name.log"
done >"$OUT/steps.log"
echo "total $(($(date +%s) - T0)) s, $FAILED step(s) failed" | tee -a "$SUMMARY"
rm -rf "$WORK"
[ $FAILED -eq 0 ]
