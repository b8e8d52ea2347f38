#!/bin/sh
# Regenerates reports/im2gps3k/report.md and report.json (run from the repository root; ~30 min on 2 cores).
exec globeflow evaluate --store data/im2gps3k/efficientnet-lite0 --folds 3 \
  --models rfm,fm,diffusion,regression,cells,retrieval,vmf,vmf_mixture --cfg 0,tuned --tune-grid=-1,-0.5,0,1 \
  --tune-photos 60 --r3-photos 10 --seed 0 --threads 2 --out reports/im2gps3k/report.md --json reports/im2gps3k/report.json
