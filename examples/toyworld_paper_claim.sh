#!/usr/bin/env bash
# Reproduce the central claim of Aubret et al. (ICDL 2024) on the built-in toy world:
# learning from time (normal, time_only) makes objects of one room (context) similar, SimCLR does
# not, and a model trained with a random room assignment learns *those* rooms, not the semantic ones.
# About 10 minutes on 2 CPU cores; seconds on a GPU.
set -euo pipefail
OUT=${OUT:-runs/claim}
SEED=${SEED:-0}
for preset in normal time_only simclr random_context; do
  simtool train --preset "$preset" --seed "$SEED" --out "$OUT/$preset"
  simtool evaluate "$OUT/$preset" --type odd-one-out --rooms semantic
done
simtool evaluate "$OUT/random_context" --type odd-one-out --rooms random
simtool compare "$OUT"/normal "$OUT"/time_only "$OUT"/simclr "$OUT"/random_context --layer time.out --out "$OUT/comparison"
