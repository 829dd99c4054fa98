#!/usr/bin/env bash
# Regenerate tests/fixtures/tiny-bert-pth/ with real PyTorch + transformers.
# Needs PyPI access and ~4 GB of disk for the venv (torch pulls CUDA wheels).
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${MAWQIF_PTH_VENV:-${TMPDIR:-/tmp}/mawqif-pth-venv}"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q torch==2.5.1 transformers==4.46.3
fi
"$venv/bin/python" scripts/pth-fixture/make_fixture.py tests/fixtures/tiny-bert-pth
