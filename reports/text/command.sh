#!/bin/sh
# Regenerates reports/text/ (report.md, report.json, map_*.png) from the repository root with the
# project's environment active (bash scripts/setup.sh). Trains the report model first: the shipped
# recipe minus the test authors' captions and the held-out place names (scripts/train_text_model.py
# --split report); embeddings come from the user cache when the shipped model was trained before.
set -e
MODEL=${TEXT_REPORT_MODEL:-/tmp/globeflow-text-report-model}
[ -f "$MODEL/model.safetensors" ] || python scripts/train_text_model.py --split report --places 5000 --out "$MODEL"
exec python -m globeflow.text.benchmark --model "$MODEL" --shipped src/globeflow/assets/models/text-minilm-l6 --places 5000 \
  --samples 1024 --steps 32 --name-count 200 --sweep-captions 50 --sweep-samples 128 \
  --baselines retrieval,regression,cells,vmf --out reports/text
