#!/usr/bin/env bash
# Offline linear probe and weighted kNN of the five self-supervised presets on the toy world, three
# seeds each (the runs of examples/toyworld_table.sh: the same presets, seeds and output layout, so
# OUT=runs/table reuses them): every seed's five runs exported with every row (train rows teach the
# probe or are the kNN memory, test rows are scored: the held-out objects), the linear probe
# (multinomial logistic regression, penalty chosen on the val rows) and kNN (k 20, T 0.07) at the
# layers the tables show (LAYERS; "all" for every layer, about 4 times longer) for context (the
# semantic rooms), category and object (left out: no test object is a train object), then ONE compare call: mean ± sd over seeds at backbone and at time.out (language_only at
# label.out), paired differences against simclr with bootstrap 95 % intervals, and figures.
#
# Full size: 15 trainings of 2-4 minutes each on 2 CPU cores (skipped when finished), then about 2
# minutes of export and probes. Environment overrides, e.g. for a quick check:
#   OUT=/tmp/p SEEDS="0" EPOCHS=1 DATA=data/tiny SETS="data.image_size=32" examples/probes_table.sh
#   OUT     output directory (runs/table)      SEEDS  seeds ("0 1 2")
#   EPOCHS  training epochs (profile default)  DATA   dataset directory (default: the cached toy world)
#   SETS    extra train overrides, "key=value key=value"; DEVICE auto | cpu | cuda (auto)
#   BOOTSTRAP resamples for the intervals (1000)
#   LAYERS  layers to probe ("backbone,time.out,label.out"; each model is probed at those it has)
set -euo pipefail
OUT=${OUT:-runs/table}
SEEDS=${SEEDS:-"0 1 2"}
DEVICE=${DEVICE:-auto}
PRESETS="normal language_only time_only simclr random_context"
LAYERS=${LAYERS:-backbone,time.out,label.out}
layer_opts=()
if [ "$LAYERS" != all ]; then layer_opts=(--layers "$LAYERS"); fi

train_opts=(--device "$DEVICE")
if [ -n "${DATA:-}" ]; then train_opts+=(--data "$DATA"); fi
if [ -n "${EPOCHS:-}" ]; then train_opts+=(--set "loop.epochs=$EPOCHS"); fi
for kv in ${SETS:-}; do train_opts+=(--set "$kv"); done

results=()
for seed in $SEEDS; do
  runs=()
  for preset in $PRESETS; do
    run="$OUT/runs/$preset-$seed"
    runs+=("$run")
    if [ ! -f "$run/checkpoints/final.safetensors" ]; then
      rm -rf "$run"  # an unfinished start: train it again from the beginning
      simtool train --preset "$preset" --seed "$seed" --out "$run" "${train_opts[@]}"
    fi
  done
  file="$OUT/probes/seed-$seed.safetensors"
  [ -f "$file" ] || simtool save-embeddings "${runs[@]}" --split all --out "$file" --device "$DEVICE"
  simtool evaluate "$file" --type linear-probe --rooms semantic --device "$DEVICE" "${layer_opts[@]}"
  simtool evaluate "$file" --type knn --rooms semantic --device "$DEVICE" "${layer_opts[@]}"
  results+=("$OUT/probes/seed-$seed.linear-probe-lbfgs.json" "$OUT/probes/seed-$seed.knn-20-0.07.json")
done

for layer in backbone time.out; do
  simtool compare "${results[@]}" --layer "$layer" --layer language_only="${layer/time.out/label.out}" --reference simclr \
      --bootstrap "${BOOTSTRAP:-1000}" --out "$OUT/probes/table-$layer"
done
echo "Tables: $OUT/probes/table-backbone/comparison.md, $OUT/probes/table-time.out/comparison.md"
