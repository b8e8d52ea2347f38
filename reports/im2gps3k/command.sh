#!/bin/sh
# Regenerates reports/im2gps3k/report.md and report.json (run from the repository root, with the
# project's environment active and ../shared beside the checkout for the MP-16 locations; timed in
# report.md's header: 2 worker processes of one torch thread each on a 2-core machine).
# Models ending in +prior also train on 100,000 MP-16 photo locations (unconditional rows).
# Generative models: at most 1,200 steps (the EMA weights of lowest NLL of held-out photographers,
# checked every 200); rfm+prior: 5,000 steps of 1,024 rows with Fourier position features (64, up to
# 512 rad⁻¹): the budget that resolves the clustered MP-16 prior (docs/evaluation.md). Truth densities
# 64 RK4 steps (data-dense grid for the Fourier-feature model), sampler 16 steps.
# fm/diffusion direction densities (radial quadrature of ODE solves, 8 nodes) are computed for 100
# photos per fold (--r3-photos) with 6 own samples each.
# Stated regions: split-conformal masses from up to 300 held-out photos per fold (rfm models).
# Sized to finish on a shared 2-core machine: only cfg = tuned (chosen among -1, -0.5, 0 on 40 photos).
# Generative point estimates as predict picks its best guess: the sample of highest expected GeoScore,
# among 256 plain samples per photo (a pass of its own: every photo, fm/diffusion too).
exec globeflow evaluate --store data/im2gps3k/efficientnet-lite0 --folds 3 \
  --models rfm,rfm+prior,fm,diffusion,regression,cells,cells+prior,retrieval,vmf,vmf_mixture,vmf_mixture+prior \
  --cfg tuned --tune-grid=-1,-0.5,0 --point-rule geoscore --tune-photos 40 --train-steps 1200 --val-every 200 \
  --patience 0 --prior-steps 5000 --prior-batch-size 1024 --r3-photos 100 --r3-samples 6 --r3-nodes 8 --steps 16 --density-steps 64 --point-samples 256 --seed 0 \
  --threads 1 --workers 2 --no-progress --out reports/im2gps3k/report.md --json reports/im2gps3k/report.json
