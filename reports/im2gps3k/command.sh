#!/bin/sh
# Regenerates reports/im2gps3k/report.md and report.json (run from the repository root, with the
# project's environment active; timed in report.md's header, 2 threads on a 2-core machine).
# fm/diffusion direction densities (radial quadrature of ODE solves) are computed for 25 photos
# per fold (--r3-photos): their point metrics use those photos, their draws use all.
exec globeflow evaluate --store data/im2gps3k/efficientnet-lite0 --folds 3 \
  --models rfm,fm,diffusion,regression,cells,retrieval,vmf,vmf_mixture --cfg 0,tuned --tune-grid=-1,-0.5,0,1 \
  --tune-photos 60 --seed 0 --threads 2 --out reports/im2gps3k/report.md --json reports/im2gps3k/report.json
