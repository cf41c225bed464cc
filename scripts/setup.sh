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
# The browser tests drive Debian's Chromium (never a downloaded browser); install it when we can.
if [ ! -x /usr/bin/chromium ]; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
      || echo "note: could not install chromium; the browser tests will be skipped" >&2
  else
    echo "note: /usr/bin/chromium is missing (apt-get install chromium); the browser tests will be skipped" >&2
  fi
fi
echo "vitrine is installed in .venv (try: .venv/bin/vitrine --help)"
