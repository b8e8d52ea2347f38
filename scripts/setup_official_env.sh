#!/usr/bin/env bash
# Build the separate virtualenv that runs the official PLONK code (PyPI diff-plonk 0.4) for
# benchmarks/bench_vs_official.py and scripts/check_official_extractors.py. It never touches
# globeflow's own .venv.
#
#   bash scripts/setup_official_env.sh [VENV_DIR]        (default: .venv-official in the repo root)
#
# - torch==2.13.0 first (the CPU wheel on this machine's disk), then everything else with a
#   constraint pinning torch, so no dependency can pull another (CUDA) torch;
# - diff-plonk itself with --no-deps: its metadata requires accelerate/geos (unused on the paths
#   we call) and torchvision;
# - torchvision==0.28.0 with --no-deps (the release built for torch 2.13): its compiled operators
#   do not load next to the CPU torch wheel, so `import torchvision` fails in
#   torchvision._meta_registrations; scripts/official_extractors_worker.py registers an empty module
#   under that name first, and the PIL transforms the official extractors use run as released;
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
  huggingface_hub safetensors tqdm transformers pillow
"${PIP[@]}" --no-deps "diff-plonk==0.4" "torchvision==0.28.0"

"$VENV/bin/python" - <<'PY'
import sys, types
import torch
assert torch.__version__.startswith("2.13.0"), f"the official venv got torch {torch.__version__}, expected 2.13.0"
# torchvision's compiled ops do not load here; an empty _meta_registrations lets its PIL transforms import
sys.modules.setdefault("torchvision._meta_registrations", types.ModuleType("torchvision._meta_registrations"))
import torchvision.transforms
import plonk, importlib.metadata as md
from plonk.models.pretrained_models import Plonk
print(f"official env ok: torch {torch.__version__}, diff-plonk {md.version('diff-plonk')}, "
      f"torchvision {md.version('torchvision')}, numpy {md.version('numpy')}, scipy {md.version('scipy')}, torchdiffeq {md.version('torchdiffeq')}")
PY
