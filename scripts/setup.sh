#!/usr/bin/env bash
# Create .venv and install vitrine with its pinned dependencies (CPU torch, no torchvision).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# torch first and pinned: an unpinned resolve would pull the CUDA build (gigabytes).
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet "torch==2.13.0"
.venv/bin/python -m pip install --quiet -e ".[dev]"
.venv/bin/vitrine models >/dev/null
echo "vitrine is installed in .venv (try: .venv/bin/vitrine --help)"
