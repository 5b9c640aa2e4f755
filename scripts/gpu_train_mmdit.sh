#!/usr/bin/env bash
# Train the toy MM-DiT on the borrowed GPU machine (docs/toy_world.md), for a set number of minutes:
#
#   bash scripts/gpu_train_mmdit.sh OUT MINUTES [WHEELS_DIR] [-- TRAIN_MMDIT_ARGS...]
#
# Installs the wheels as benchmarks/gpu_check.sh does (WHEELS_DIR default: wheels/ in the repository; made by
# scripts/gpu_wheels.sh), then runs `python -m mfexp.toyworld.train_mmdit --device cuda --max-minutes MINUTES` in
# OUT/run (resuming from OUT/run/checkpoint when there is one) with the arguments after `--`. At the end OUT holds
# three files, small enough to come back from the machine: transformer.safetensors (the EMA weights if the run keeps
# an EMA, else the weights, with the architecture in their metadata: `python -m mfexp.toyworld.toy_mmdit
# OUT/transformer.safetensors DEST` exports them), state.json (step and losses) and train.log.
# PYTHON picks the interpreter (default python3).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python3}
OUT=${1:?usage: scripts/gpu_train_mmdit.sh OUT MINUTES [WHEELS_DIR] [-- ARGS...]}
MINUTES=${2:?usage: scripts/gpu_train_mmdit.sh OUT MINUTES [WHEELS_DIR] [-- ARGS...]}
shift 2
WHEELS=$ROOT/wheels
if [[ $# -gt 0 && $1 != -- ]]; then WHEELS=$1; shift; fi
[[ $# -gt 0 && $1 == -- ]] && shift
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=disabled PYTHONUNBUFFERED=1
source "$ROOT/scripts/gpu_packages.sh"
gpu_packages "$PY" "$WHEELS" || exit 1
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
mkdir -p "$OUT"
"$PY" -m mfexp.toyworld.train_mmdit --out "$OUT/run" --device "${TRAIN_DEVICE:-cuda}" --max-minutes "$MINUTES" "$@" \
  2>&1 | tee "$OUT/train.log"
CKPT=$OUT/run/checkpoint
if [[ -f $CKPT/ema.safetensors ]]; then cp "$CKPT/ema.safetensors" "$OUT/transformer.safetensors"
else cp "$CKPT/transformer.safetensors" "$OUT/transformer.safetensors"; fi
cp "$CKPT/state.json" "$OUT/state.json"
echo "gpu_train_mmdit: $(ls "$OUT")"
