#!/usr/bin/env bash
# Set up (or reuse) the project's virtual environment: torch pinned to the local CPU build, mmcv 2.1.0 with ops
# built from source once and cached as a wheel, mmdet 3.3.0 and the rest of the stack. No torchvision.
# Usage: bash scripts/setup.sh [--test]     (--test adds the test tools)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${MFEXP_VENV:-.venv}
CACHE=${MFEXP_CACHE:-$HOME/.cache/mfexp}
WHEELS="$CACHE/wheels"
mkdir -p "$WHEELS"
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP="$VENV/bin/python -m pip --disable-pip-version-check -q"
stamp="$VENV/.mfexp-setup-$(cat pyproject.toml scripts/setup.sh | sha1sum | cut -c1-12)"
if [ -f "$stamp" ] && [ "${1:-}" != "--test" -o -f "$stamp.test" ]; then exit 0; fi

$PIP install -U "pip<26" "setuptools>=77.0.3,<81" wheel ninja
$PIP install torch==2.13.0 numpy
# mmcv 2.1.0 is a source archive on PyPI: build it once with CPU ops and keep the wheel.
if ! ls "$WHEELS"/mmcv-2.1.0-*.whl >/dev/null 2>&1; then
  echo "building mmcv 2.1.0 with ops (one time, ~8 minutes on 2 cores)..."
  MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} $VENV/bin/python -m pip wheel --no-build-isolation --no-deps \
    -w "$WHEELS" mmcv==2.1.0
fi
$PIP install "$WHEELS"/mmcv-2.1.0-*.whl mmengine==0.10.7 "mmdet==3.3.0"
# lvis depends on opencv-python; we use the contrib build (ximgproc) instead, so install lvis without deps.
$PIP install --no-deps lvis==0.5.3
$PIP install -e . 
if [ "${1:-}" = "--test" ]; then $PIP install -e '.[test]'; touch "$stamp.test"; fi
# mmengine asks for opencv-python; keep exactly one cv2: the contrib build (cv2.ximgproc)
$PIP uninstall -y opencv-python opencv-python-headless >/dev/null 2>&1 || true
$PIP install --force-reinstall --no-deps opencv-contrib-python-headless
# guard: torchvision breaks diffusers/transformers imports against the CPU torch
if $VENV/bin/python -c "import torchvision" 2>/dev/null; then $PIP uninstall -y torchvision; fi
touch "$stamp"
