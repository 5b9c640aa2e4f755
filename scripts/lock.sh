#!/usr/bin/env bash
# Refresh the lock, constraints.txt, from the project's venv: after changing pyproject.toml's dependencies (or to move
# to newer releases), install what you want into .venv (e.g. `.venv/bin/python -m pip install -U diffusers`), run the
# tests, then `bash scripts/lock.sh` and commit constraints.txt. setup.sh installs exactly these versions; CI checks
# that its venv matches them (python -m mfexp.environment check).
# Lock from a venv set up with --test: the lock then names the test tools too, which CI installs.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${MFEXP_VENV:-.venv}
"$VENV/bin/python" -m mfexp.environment lock constraints.txt
"$VENV/bin/python" -m mfexp.environment check constraints.txt
