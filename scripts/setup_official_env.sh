#!/usr/bin/env bash
# Build the separate virtualenv that runs the official PLONK code (PyPI diff-plonk 0.4) for
# benchmarks/bench_vs_official.py. It never touches globeflow's own .venv.
#
#   bash scripts/setup_official_env.sh [VENV_DIR]        (default: .venv-official in the repo root)
#
# - torch==2.13.0 first (the CPU wheel on this machine's disk), then everything else with a
#   constraint pinning torch, so no dependency can pull another (CUDA) torch;
# - diff-plonk itself with --no-deps: its metadata requires torchvision (only used for image
#   preprocessing, which the benchmark never runs; bench_vs_official.py registers an inert
#   placeholder module) and accelerate/geos (unused on the paths we call);
# - scipy==1.13.1 as diff-plonk pins it (needs numpy < 2.3).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${1:-$ROOT/.venv-official}"
PY="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install --quiet)
CONSTRAINTS="$(mktemp)"
trap 'rm -f "$CONSTRAINTS"' EXIT
echo "torch==2.13.0" > "$CONSTRAINTS"

"${PIP[@]}" "torch==2.13.0"
"${PIP[@]}" -c "$CONSTRAINTS" "numpy<2.3" "scipy==1.13.1" pandas einops "geoopt==0.5.1" "torchdiffeq==0.2.5" \
  huggingface_hub safetensors tqdm transformers
"${PIP[@]}" --no-deps "diff-plonk==0.4"

"$VENV/bin/python" - <<'PY'
import sys, types
import torch
assert torch.__version__.startswith("2.13.0"), f"the official venv got torch {torch.__version__}, expected 2.13.0"
for name in ("torchvision", "torchvision.transforms"):  # image preprocessing only; never called here
    sys.modules.setdefault(name, types.ModuleType(name))
sys.modules["torchvision"].transforms = sys.modules["torchvision.transforms"]
import plonk, importlib.metadata as md
from plonk.models.pretrained_models import Plonk
print(f"official env ok: torch {torch.__version__}, diff-plonk {md.version('diff-plonk')}, "
      f"numpy {md.version('numpy')}, scipy {md.version('scipy')}, torchdiffeq {md.version('torchdiffeq')}")
PY
