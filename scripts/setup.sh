#!/usr/bin/env bash
# Set up globeflow in ./.venv on a fresh machine (CPU torch from the local wheel, never a CUDA build).
#   bash scripts/setup.sh          # the library, CLI, text model and web app
#   bash scripts/setup.sh test     # ... plus the test tools and the Chromium browser for the e2e tests
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
# torch first and pinned, so that nothing later resolves a bare `torch` (which would pull CUDA builds)
.venv/bin/pip install -q torch==2.13.0
if [ "${1:-}" = "test" ]; then
    .venv/bin/pip install -q -e ".[all,test]"
    # the official PLONK code and the torchvision it was released with, for the parity tests only: kept
    # off the venv's path (pip --target), where transformers would pick torchvision up (27 MB, seconds)
    .venv/bin/pip install -q --no-deps --upgrade --target .venv/official-preprocessing \
        torchvision==0.28.0 diff-plonk==0.4 geoopt==0.5.1 einops==0.8.2
    bash scripts/install_browser.sh
else
    .venv/bin/pip install -q -e ".[all]"
fi
.venv/bin/python -c "import torch, globeflow; print('globeflow', globeflow.__version__, '| torch', torch.__version__)"
