#!/usr/bin/env bash
# The p_change_room sweep of Aubret et al. (ICDL 2024) on the built-in toy world: time_only trained
# with p_c = 0, 0.1, 0.5 and 1.0 (the probability of changing room at a clip boundary), evaluated by
# odd-one-out at every layer, compared in one table. At p_c = 1 every clip boundary changes room, so
# stream neighbours from another object never share its context.
# About 2.5 minutes per run on 2 CPU cores (seconds on a GPU). Override OUT, SEEDS, PS.
set -euo pipefail
OUT=${OUT:-runs/p_sweep}
SEEDS=${SEEDS:-"0 1 2"}
PS=${PS:-"0 0.1 0.5 1.0"}
EXTRA=${EXTRA:-}
targets=()
names=()
for p in $PS; do
  for seed in $SEEDS; do
    run="$OUT/p$p-seed$seed"
    if [ ! -f "$run/summary.json" ]; then
      rm -rf "$run"
      simtool train --preset time_only --seed "$seed" --set stream.p_change_room="$p" $EXTRA --out "$run"
    fi
    simtool evaluate "$run" --type odd-one-out --rooms semantic
    targets+=("$run")
    names+=(--name "time_only p=$p")
  done
done
simtool compare "${targets[@]}" "${names[@]}" --layer time.out --out "$OUT/comparison"
