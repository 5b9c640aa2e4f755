#!/usr/bin/env bash
# Set up (or reuse) the project's virtual environment: torch (the version pinned in pyproject.toml), mmcv 2.1.0 with
# ops built from source once per torch/CUDA flavour and cached as a wheel, mmdet 3.3.0 and the rest. No torchvision.
# Every version comes from the lock, constraints.txt (pip -c); `bash scripts/lock.sh` refreshes it.
#
# Usage: bash scripts/setup.sh [--test] [--cuda[=cuXYZ]]
#   --test         also install the test tools and what the slow tests need (the slurm extra: submitit)
#   --cuda         GPU node: torch's CUDA build from the PyTorch index and mmcv built with CUDA ops. Variant:
#                  MFEXP_CUDA or --cuda=cuXYZ; by default cu126 (V100 to H200, CUDA 12 toolkit), or cu130 where
#                  nvidia-smi shows a Blackwell GPU (compute capability >= 10). torch 2.13 has cu126, cu130, cu132.
# Environment: MFEXP_VENV (.venv), MFEXP_CACHE (~/.cache/mfexp; wheels in $MFEXP_CACHE/wheels), PYTHON (python3.11),
#   MAX_JOBS (compile jobs; all cores), MFEXP_CUDA, MFEXP_TORCH_INDEX (https://download.pytorch.org/whl/<variant>),
#   TORCH_CUDA_ARCH_LIST (GPU architectures of mmcv's CUDA ops; default below), CUDA_HOME (the toolkit whose nvcc
#   builds them: same CUDA major version as torch's).
# Cached wheels: $MFEXP_CACHE/wheels/mmcv-2.1.0+torch<version>.<cpu|cuXYZ>/, so a CPU build is never used on a GPU
# node or the reverse; a CUDA build records its TORCH_CUDA_ARCH_LIST and is rebuilt when that changes.
set -euo pipefail
cd "$(dirname "$0")/.."

TEST=0
FLAVOR=cpu
for arg in "$@"; do
  case "$arg" in
    --test) TEST=1 ;;
    --cuda) FLAVOR=${MFEXP_CUDA:-auto} ;;
    --cuda=*) FLAVOR=${arg#--cuda=} ;;
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "setup.sh: unknown argument $arg (use --test, --cuda, --cuda=cuXYZ)" >&2; exit 2 ;;
  esac
done
if [ "$FLAVOR" = auto ]; then
  # compute capabilities of the visible GPUs, lowest first (none on a login node)
  CAPS=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | grep -E '^[0-9]+\.[0-9]+$' \
         | sort -V || true)
  if [ -n "$CAPS" ] && [ "$(echo "$CAPS" | tail -1 | cut -d. -f1)" -ge 10 ]; then FLAVOR=cu130; else FLAVOR=cu126; fi
  echo "CUDA variant: $FLAVOR (GPUs' compute capabilities: $(echo ${CAPS:-none}); MFEXP_CUDA=cuXYZ to choose)"
fi
if [ "$FLAVOR" != cpu ] && ! [[ "$FLAVOR" =~ ^cu[0-9]{3,4}$ ]]; then
  echo "setup.sh: CUDA variant must look like cu126 (got '$FLAVOR')" >&2; exit 2
fi

VENV=${MFEXP_VENV:-.venv}
CACHE=${MFEXP_CACHE:-$HOME/.cache/mfexp}
WHEELS="$CACHE/wheels"
mkdir -p "$WHEELS"
TORCH_VERSION=$(sed -n 's/.*"torch==\([^"]*\)".*/\1/p' pyproject.toml | head -1)
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
MMCV_DIR="$WHEELS/mmcv-2.1.0+torch$TORCH_VERSION.$FLAVOR"
# wheels built before the per-flavour folders (CPU ops, torch 2.13.0): keep using them, without a rebuild
CPU_DIR="$WHEELS/mmcv-2.1.0+torch$TORCH_VERSION.cpu"
if ls "$WHEELS"/mmcv-2.1.0-*.whl >/dev/null 2>&1 && ! ls "$CPU_DIR"/mmcv-2.1.0-*.whl >/dev/null 2>&1; then
  mkdir -p "$CPU_DIR" && mv "$WHEELS"/mmcv-2.1.0-*.whl "$CPU_DIR"/
  echo "moved the cached CPU mmcv wheel to $CPU_DIR"
fi

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP="$VENV/bin/python -m pip --disable-pip-version-check -q"
INSTALL="$PIP install -c constraints.txt"   # every install takes the lock's versions
stamp="$VENV/.mfexp-setup-$(cat pyproject.toml scripts/setup.sh constraints.txt | sha1sum | cut -c1-12).$FLAVOR"
if [ -f "$stamp" ] && [ "$TEST" = 0 -o -f "$stamp.test" ]; then exit 0; fi

if [ "$FLAVOR" != cpu ]; then
  # GPU node checks: a driver (nvidia-smi) is needed to run, a CUDA toolkit (nvcc) only to build mmcv's CUDA ops
  if command -v nvidia-smi >/dev/null 2>&1; then
    DRIVER_CUDA=$(nvidia-smi 2>/dev/null | sed -n 's/.*CUDA Version: *\([0-9][0-9]*\.[0-9][0-9]*\).*/\1/p' | head -1)
    WANT=$(echo "${FLAVOR#cu}" | sed 's/\(.*\)\(.\)$/\1.\2/')   # cu128 -> 12.8
    echo "GPU driver supports CUDA ${DRIVER_CUDA:-?}; installing torch $TORCH_VERSION+$FLAVOR (CUDA $WANT)"
    if [ -n "$DRIVER_CUDA" ] && [ "$(printf '%s\n%s\n' "$WANT" "$DRIVER_CUDA" | sort -V | head -1)" != "$WANT" ]; then
      echo "warning: the driver supports CUDA up to $DRIVER_CUDA < $WANT: torch may not see the GPU (an older" \
           "driver of the same CUDA major version usually works); update the driver or pick an older variant" >&2
    fi
  else
    echo "warning: nvidia-smi not found: no NVIDIA driver on this machine. Installing the CUDA build anyway" \
         "(e.g. on a login node); runs need a GPU node." >&2
  fi
fi
# switching flavour in an existing venv: drop torch and mmcv (same version numbers would count as installed).
# A venv with torch but without the marker holds a CPU build (the marker is written at the end of a set-up).
PREV=$(cat "$VENV/.mfexp-flavor" 2>/dev/null || true)
if [ -z "$PREV" ] && [ -n "$(ls -d "$VENV"/lib/python*/site-packages/torch 2>/dev/null)" ]; then PREV=cpu; fi
if [ -n "$PREV" ] && [ "$PREV" != "$FLAVOR" ]; then
  echo "switching $VENV from $PREV to $FLAVOR"
  $PIP uninstall -y torch mmcv >/dev/null 2>&1 || true
fi
rm -f "$VENV"/.mfexp-setup-*

$INSTALL -U "pip<26" "setuptools>=77.0.3,<81" wheel ninja
if [ "$FLAVOR" = cpu ]; then
  $INSTALL "torch==$TORCH_VERSION" numpy
else
  # the CUDA index alone (it may lack the lock's versions of torch's dependencies): the installs below, from PyPI
  # under the lock, then move those dependencies to the locked versions
  INDEX=${MFEXP_TORCH_INDEX:-https://download.pytorch.org/whl/$FLAVOR}
  $PIP install "torch==$TORCH_VERSION+$FLAVOR" --index-url "$INDEX" || {
    echo "setup.sh: could not install torch==$TORCH_VERSION+$FLAVOR from $INDEX: pick a CUDA variant that" \
         "PyTorch publishes for $TORCH_VERSION (https://pytorch.org/get-started/locally/;" \
         "2.13: cu126, cu130, cu132)" >&2
    exit 1; }
  $INSTALL numpy
  $VENV/bin/python -c "import sys, torch; print('torch', torch.__version__, '| GPU visible:',
    torch.cuda.is_available()); sys.exit(0 if torch.version.cuda else 1)" \
    || { echo "setup.sh: the installed torch is not a CUDA build" >&2; exit 1; }
fi

# mmcv 2.1.0 is a source archive on PyPI: build it once per flavour with ops and keep the wheel.
# --no-cache-dir: pip's own wheel cache is keyed by the archive only and would hand back the other flavour's build.
build_cuda_mmcv() {
  local nvcc="" torch_cuda nvcc_cuda
  for c in "${CUDA_HOME:+$CUDA_HOME/bin/nvcc}" "$(command -v nvcc || true)" /usr/local/cuda/bin/nvcc; do
    if [ -n "$c" ] && [ -x "$c" ]; then nvcc=$c; break; fi
  done
  torch_cuda=$($VENV/bin/python -c "import torch; print(torch.version.cuda)")
  if [ -z "$nvcc" ]; then
    echo "setup.sh: building mmcv's CUDA ops needs the CUDA toolkit (nvcc) of CUDA ${torch_cuda%%.*}.x, and none" \
         "was found (CUDA_HOME, PATH, /usr/local/cuda). Load it (e.g. 'module load cuda/$torch_cuda') or set" \
         "CUDA_HOME, then re-run; or build the wheel on a machine that has it and put it in $MMCV_DIR/." >&2
    exit 1
  fi
  nvcc_cuda=$("$nvcc" --version | sed -n 's/.*release \([0-9][0-9]*\.[0-9][0-9]*\).*/\1/p')
  if [ "${nvcc_cuda%%.*}" != "${torch_cuda%%.*}" ]; then
    echo "setup.sh: $nvcc is CUDA $nvcc_cuda but torch is built with CUDA $torch_cuda: the major versions must" \
         "match (set CUDA_HOME to a CUDA ${torch_cuda%%.*}.x toolkit, or MFEXP_CUDA to a matching variant)" >&2
    exit 1
  fi
  export CUDA_HOME=${CUDA_HOME:-$(dirname "$(dirname "$nvcc")")}
  # torch's CUDA headers include cuBLAS/cuSPARSE/cuSOLVER headers: a bare nvcc (no math-library headers) fails
  if ! compgen -G "$CUDA_HOME/include/cusparse.h" >/dev/null \
     && ! compgen -G "$CUDA_HOME/targets/*/include/cusparse.h" >/dev/null; then
    echo "warning: no cusparse.h under $CUDA_HOME: the build fails unless the headers are on CPATH; a full CUDA" \
         "toolkit has them (a bare nvcc does not)" >&2
  fi
  echo "building mmcv 2.1.0 with CUDA ops (nvcc $nvcc_cuda, archs $ARCHS; one time, tens of minutes)..."
  MMCV_WITH_OPS=1 FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="$ARCHS" MAX_JOBS=${MAX_JOBS:-$(nproc)} \
    $VENV/bin/python -m pip wheel --no-cache-dir --no-build-isolation --no-deps -w "$MMCV_DIR" mmcv==2.1.0
}
if [ "$FLAVOR" != cpu ]; then
  # default GPU architectures (a cubin also runs on later GPUs of its major version; PTX is compiled on first use
  # by later ones): 7.0 V100 (+ T4 7.5; CUDA 13 has no Volta), 8.0 A100 (+ A10/RTX 30 8.6, L4/RTX 40 8.9),
  # 9.0 H100/H200, 10.0 B200 and 12.0 RTX 50 (CUDA >= 12.8)
  case "$FLAVOR" in
    cu11*|cu120|cu121|cu122|cu123|cu124|cu125|cu126|cu127) DEFAULT_ARCHS="7.0;8.0;9.0+PTX" ;;
    cu12*) DEFAULT_ARCHS="7.0;8.0;9.0;10.0;12.0+PTX" ;;
    *) DEFAULT_ARCHS="7.5;8.0;9.0;10.0;12.0+PTX" ;;
  esac
  ARCHS=${TORCH_CUDA_ARCH_LIST:-$DEFAULT_ARCHS}
  if [ -d "$MMCV_DIR" ] && [ "$(cat "$MMCV_DIR/ARCH_LIST" 2>/dev/null)" != "$ARCHS" ]; then
    echo "cached $MMCV_DIR was built for archs '$(cat "$MMCV_DIR/ARCH_LIST" 2>/dev/null)', not '$ARCHS': rebuilding"
    rm -rf "$MMCV_DIR"
  fi
fi
if ! ls "$MMCV_DIR"/mmcv-2.1.0-*.whl >/dev/null 2>&1; then
  mkdir -p "$MMCV_DIR"
  if [ "$FLAVOR" = cpu ]; then
    echo "building mmcv 2.1.0 with CPU ops (one time, ~8 minutes on 2 cores)..."
    # CPU ops only, even where a GPU is visible (mmcv's setup builds CUDA ops when torch sees one)
    MMCV_WITH_OPS=1 FORCE_CUDA=0 CUDA_VISIBLE_DEVICES="" MAX_JOBS=${MAX_JOBS:-$(nproc)} \
      $VENV/bin/python -m pip wheel --no-cache-dir --no-build-isolation --no-deps -w "$MMCV_DIR" mmcv==2.1.0
  else
    build_cuda_mmcv
    echo "$ARCHS" > "$MMCV_DIR/ARCH_LIST"
  fi
fi
$INSTALL "$MMCV_DIR"/mmcv-2.1.0-*.whl mmengine==0.10.7 "mmdet==3.3.0"
# lvis depends on opencv-python; we use the contrib build (ximgproc) instead, so install lvis without deps.
$INSTALL --no-deps lvis==0.5.3
$INSTALL -e .
if [ "$TEST" = 1 ]; then $INSTALL -e '.[test,slurm]'; fi
# mmengine asks for opencv-python; keep exactly one cv2: the contrib build (cv2.ximgproc)
$PIP uninstall -y opencv-python opencv-python-headless >/dev/null 2>&1 || true
$INSTALL --force-reinstall --no-deps opencv-contrib-python-headless
# guard: torchvision breaks diffusers/transformers imports against the CPU torch (and the project does not use it)
if $VENV/bin/python -c "import torchvision" 2>/dev/null; then $PIP uninstall -y torchvision; fi
if [ "$FLAVOR" != cpu ]; then
  $VENV/bin/python -c "import sys, mmcv.ops; v = mmcv.ops.get_compiling_cuda_version(); print('mmcv ops: CUDA', v)
sys.exit(v == 'not available')" || { echo "setup.sh: $MMCV_DIR holds an mmcv without CUDA ops: remove it" >&2; exit 1; }
fi
echo "$FLAVOR" > "$VENV/.mfexp-flavor"
touch "$stamp"
if [ "$TEST" = 1 ]; then touch "$stamp.test"; fi
