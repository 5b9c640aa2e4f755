# Sourced by the scripts for the borrowed GPU machine (benchmarks/gpu_check.sh, scripts/gpu_train_mmdit.sh): its
# python3 has torch but not diffusers / hydra / omegaconf; their wheels travel in a folder (scripts/gpu_wheels.sh).
#   gpu_packages PYTHON WHEELS_DIR    installs WHEELS_DIR into a temporary folder on PYTHONPATH unless the packages
#                                     import already (GPU_CHECK_FORCE_INSTALL=1 installs anyway)
gpu_packages() {
  local py=$1 wheels=$2 site
  if [[ ${GPU_CHECK_FORCE_INSTALL:-0} == 1 ]] || ! "$py" -c "import diffusers, hydra, omegaconf" 2>/dev/null; then
    compgen -G "$wheels/*.whl" >/dev/null || { echo "packages missing and no wheels in $wheels" >&2; return 1; }
    site=$(mktemp -d)
    "$py" -m pip install -q --no-index --no-deps --no-compile --target "$site" "$wheels"/*.whl || return 1
    export PYTHONPATH=$site${PYTHONPATH:+:$PYTHONPATH}
    echo "installed $(ls "$wheels"/*.whl | wc -l) wheels into $site"
  fi
}
