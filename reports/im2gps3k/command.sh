#!/bin/sh
# Regenerates reports/im2gps3k/report.md and report.json (run from the repository root).
# One torch thread: the report's CPU time is then also the wall time on a quiet machine.
exec globeflow evaluate --store data/im2gps3k/efficientnet-lite0 --folds 5 \
  --models rfm,fm,diffusion,regression,cells,retrieval,vmf,vmf_mixture --cfg 0,tuned --seed 0 --threads 1 \
  --out reports/im2gps3k/report.md --json reports/im2gps3k/report.json
