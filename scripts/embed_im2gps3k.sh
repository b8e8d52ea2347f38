#!/usr/bin/env bash
# Rebuild the committed default embedding store data/im2gps3k/efficientnet-lite0 from the shared
# Im2GPS3k photos (see data/im2gps3k/PROVENANCE.md). Restartable: re-run after an interruption.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED="${SHARED:-../shared/data}"
exec globeflow embed "$SHARED/im2gps3k/images" \
    --metadata "$SHARED/im2gps3k/metadata.csv" \
    --out data/im2gps3k/efficientnet-lite0 "$@"
