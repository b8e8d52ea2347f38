#!/bin/sh
# Regenerates reports/im2gps3k/report.md and report.json (run from the repository root; ~20 min on 2 cores).
# fm and diffusion are left out of the committed report: their radial-quadrature densities cost
# about 6 CPU-minutes per fold each (add them with --models ...,fm,diffusion).
exec globeflow evaluate --store data/im2gps3k/efficientnet-lite0 --folds 3 \
  --models rfm,regression,cells,retrieval,vmf,vmf_mixture --cfg 0,tuned --tune-grid=-1,-0.5,0,1 \
  --tune-photos 60 --seed 0 --threads 2 --out reports/im2gps3k/report.md --json reports/im2gps3k/report.json
