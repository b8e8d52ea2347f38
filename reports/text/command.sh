#!/bin/sh
# Regenerates reports/text/ (report.md, report.json, map_*.png) from the repository root with the
# project's environment active (bash scripts/setup.sh). Trains the report model first: the shipped
# recipe minus the test authors' captions and the held-out place names (scripts/train_text_model.py
# --split report); embeddings come from the user cache when the shipped model was trained before.
# The baselines need no model weights: they are fitted (on exactly the report model's training rows)
# in a second process while the model trains, then merged.
set -e
MODEL=${TEXT_REPORT_MODEL:-/tmp/globeflow-text-report-model}
SETTINGS="--samples 128 --steps 32 --name-count 200 --baselines retrieval,regression,cells,vmf --threads 1"
[ -f reports/text/baselines.json ] || python -m globeflow.text.benchmark --baselines-only $SETTINGS --out reports/text &
[ -f "$MODEL/model.safetensors" ] || python scripts/train_text_model.py --split report --steps 5000 --threads 1 \
  --calibration-captions 250 --out "$MODEL"
wait
exec python -m globeflow.text.benchmark --model "$MODEL" --shipped src/globeflow/assets/models/text-minilm-l6 \
  $SETTINGS --sweep-captions 0 --baselines-from reports/text/baselines.json --out reports/text
