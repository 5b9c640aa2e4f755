#!/usr/bin/env bash
# Wheels for the borrowed GPU machine (docs: benchmarks/gpu_check.sh): the packages the generator benchmark imports
# that its python3 (3.12: torch, transformers, huggingface-hub, numpy, scipy, opencv-python-headless, pillow,
# pandas, lightning) lacks, pinned to this checkout's .venv, for CPython 3.12 manylinux x86-64, no dependencies.
# antlr4-python3-runtime 4.9.3 (omegaconf's pin) is a source archive on PyPI: it is built here into a pure-Python
# wheel. mmdet, mmcv, mmengine, pycocotools and wandb are not needed: the generator path never imports them.
#
#   bash scripts/gpu_wheels.sh wheels        # then carry wheels/ (ignored by git), at most 64 MiB
set -euo pipefail
DIR=${1:?usage: scripts/gpu_wheels.sh DIR}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PIP="${PYTHON:-$ROOT/.venv/bin/python} -m pip"
LIMIT_MIB=64
PACKAGES=(diffusers hydra-core omegaconf)   # pure-Python wheels on PyPI
SOURCE_ONLY=(antlr4-python3-runtime)         # built here (py3-none-any)

pin() {  # NAME -> NAME==VERSION as installed in the venv
  local v
  v=$($PIP show "$1" 2>/dev/null | sed -n 's/^Version: //p')
  [[ -n $v ]] || { echo "gpu_wheels: $1 is not installed in the venv" >&2; exit 1; }
  echo "$1==$v"
}

mkdir -p "$DIR"
pins=(); for p in "${PACKAGES[@]}"; do pins+=("$(pin "$p")"); done
built=(); for p in "${SOURCE_ONLY[@]}"; do built+=("$(pin "$p")"); done
echo "gpu_wheels: ${pins[*]} ${built[*]}"
$PIP download -q --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux2014_x86_64 --no-deps -d "$DIR" "${pins[@]}"
$PIP wheel -q --no-deps -w "$DIR" "${built[@]}"
for w in "$DIR"/*.whl; do  # a source-built wheel must be pure Python to install on the GPU machine
  case $w in *-none-any.whl|*cp312*manylinux*x86_64.whl) ;; *) echo "gpu_wheels: $w is not for CPython 3.12 x86-64" >&2; exit 1;; esac
done
size=$(du -sk "$DIR" | cut -f1)
echo "gpu_wheels: $DIR holds $(ls "$DIR"/*.whl | wc -l) wheels, $((size / 1024)) MiB ($size KiB; limit $LIMIT_MIB MiB)"
if (( size > LIMIT_MIB * 1024 )); then echo "gpu_wheels: $DIR is over $LIMIT_MIB MiB" >&2; exit 1; fi
