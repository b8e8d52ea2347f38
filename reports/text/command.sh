#!/bin/sh
# Regenerates reports/text/ (report.md, report.json, map_*.png) from the repository root with the
# project's environment active (bash scripts/setup.sh). Trains the report model first: the shipped
# recipe minus the test authors' captions and the held-out place names (scripts/train_text_model.py
# --split report); embeddings come from the user cache when a model was trained before (from an empty
# cache, embedding the ≈ 309 k unique strings takes 25–50 min on 2 cores).
# One-threaded processes in parallel (the 2 cores were shared with other jobs): the baselines need no
# model weights and are fitted (on exactly the report model's training rows) while the model trains;
# the evaluation parts run side by side and are merged at the end (OUT/part-*.json).
# Delete reports/text/baselines.json to refit the baselines.
set -e
MODEL=${TEXT_REPORT_MODEL:-/tmp/globeflow-text-report-model}
# the model is evaluated as `predict` runs it (its own default samples, steps and best-guess pass);
# the baselines' regions use 128 samples (BASELINE_SAMPLES)
S="--name-count 200 --threads 1"
[ -f reports/text/baselines.json ] || python -m globeflow.text.benchmark --baselines-only $S \
  --baselines retrieval,regression,cells,vmf --out reports/text &
[ -f "$MODEL/model.safetensors" ] || python scripts/train_text_model.py --split report --steps 12000 --popular-repeat 5 --threads 1 \
  --calibration-captions 250 --out "$MODEL"
wait
B="--model $MODEL --shipped src/globeflow/assets/models/text-minilm-l6 $S --baselines-from reports/text/baselines.json --out reports/text"
python -m globeflow.text.benchmark $B --parts captions &
python -m globeflow.text.benchmark $B --parts names,famous &
python -m globeflow.text.benchmark $B --parts namesakes,maps &
wait
exec python -m globeflow.text.benchmark $B --parts ""
