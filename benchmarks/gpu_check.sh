#!/usr/bin/env bash
# One-shot GPU check of the generator (issue 21) for a borrowed GPU machine: one H100/H200, no network, python3 3.12
# with torch but without diffusers/hydra (their wheels travel in WHEELS_DIR: scripts/gpu_wheels.sh). Run from
# anywhere; it works in the repository it belongs to.
#
#   bash benchmarks/gpu_check.sh [--cpu] [WHEELS_DIR]     (WHEELS_DIR default: wheels/ in the repository)
#
# 1. Installs WHEELS_DIR into a temporary folder (pip --no-index --no-deps --target), unless the packages import.
# 2. Runs benchmarks/generate.py on the SD 1.4 architecture with random weights, 768x1024 N=4 mosaics, 50 steps:
#    bf16 (after / nocapture / plain / plain_crops), compiled bf16 `after`, fp32, a bf16 batch-size sweep (1, 2, 4, 8), then
#    compiled bf16 plain and nocapture (each variant on its own); every part is cut off at the deadline
#    (GPU_CHECK_SECONDS, default 450 s from the start) and listed under "skipped" in the JSON.
# 3. Writes one JSON (GPU_CHECK_JSON, default gpu_check.json in the current folder; the parts beside it) and prints
#    a summary.
# --cpu: a dry run at tiny sizes (the tiny random model, 2 steps, 2 mosaics) with the current python's packages:
#    the same fields, the variants of a part in one process (--in-process), compile a no-op (TORCHDYNAMO_DISABLE=1).
# PYTHON picks the interpreter (default python3).
set -euo pipefail
START=$(date +%s)
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python3}
CPU=0
WHEELS=$ROOT/wheels
for arg in "$@"; do
  case $arg in
    --cpu) CPU=1 ;;
    -*) echo "usage: benchmarks/gpu_check.sh [--cpu] [WHEELS_DIR]" >&2; exit 2 ;;
    *) WHEELS=$arg ;;
  esac
done
JSON=$(realpath -m "${GPU_CHECK_JSON:-gpu_check.json}")
PARTS=${JSON%.json}_parts
rm -rf "$PARTS" && mkdir -p "$PARTS"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=disabled PYTHONUNBUFFERED=1

# --- 1. packages
source "$ROOT/scripts/gpu_packages.sh"
gpu_packages "$PY" "$WHEELS" || exit 1
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
SETUP=$(( $(date +%s) - START ))

# --- 2. benchmark parts
if (( CPU )); then
  export TORCHDYNAMO_DISABLE=1
  COMMON=(--model tiny --steps 2 --mosaics 2 --rounds 1 --threads 1 --in-process)
  SWEEP=1,2
  DEADLINE=$(( START + ${GPU_CHECK_SECONDS:-300} ))
else
  COMMON=(--model sd14-random --steps 50 --mosaics 2 --rounds 1)
  SWEEP=1,2,4,8
  DEADLINE=$(( START + ${GPU_CHECK_SECONDS:-450} ))
fi
part() {  # NAME ARGS...: one generate.py run, cut off at the deadline
  local name=$1 left; shift
  left=$(( DEADLINE - $(date +%s) ))
  if (( left < 10 )) || ! timeout "$left" "$PY" "$ROOT/benchmarks/generate.py" "${COMMON[@]}" "$@" \
      --out "$PARTS/$name.json" >"$PARTS/$name.log" 2>&1; then
    echo "gpu_check: part $name skipped or failed (see $PARTS/$name.log)" >&2
    echo "$name" >>"$PARTS/skipped.txt"
  else
    echo "gpu_check: part $name done at $(( $(date +%s) - START )) s"
  fi
}
# most wanted first: what the deadline cuts comes last
part bf16 --dtype bf16 --variants after,nocapture,plain,plain_crops
if (( CPU )); then  # one process for all three (a dry run); on a GPU each its own part, so each beats the deadline
  part bf16_compiled_all --dtype bf16 --compile --variants after,nocapture,plain
else
  part bf16_compiled_after --dtype bf16 --compile --variants after
fi
part fp32 --dtype fp32 --variants after,nocapture,plain
part bf16_sweep --dtype bf16 --variants "" --sweep "$SWEEP"
if (( ! CPU )); then
  for v in plain nocapture; do part "bf16_compiled_$v" --dtype bf16 --compile --variants "$v"; done
fi

# --- 3. one JSON
"$PY" "$ROOT/benchmarks/gpu_check_report.py" "$PARTS" "$JSON" --setup-seconds "$SETUP" --start "$START"
