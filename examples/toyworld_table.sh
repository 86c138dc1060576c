#!/usr/bin/env bash
# The paper-style table of the five self-supervised presets on the toy world, three seeds each:
# train, evaluate odd-one-out at every layer (semantic rooms; random_context and simclr also with
# the random rooms), export the test embeddings of every seed, then ONE compare call writes
# the table (mean ± sd over seeds, paired differences against simclr with bootstrap 95 % intervals),
# the bar and layer-curve figures, and the RSA/CKA matrix of the five models at time.out
# (language_only has no time head: it is compared at label.out).
#
# Full size: 15 trainings of 2-4 minutes each on 2 CPU cores (about 40 minutes two at a time with
# OMP_NUM_THREADS=1; one after another about an hour); a GPU is faster.
# Environment overrides, e.g. for a quick check:
#   OUT=/tmp/t SEEDS="0 1" EPOCHS=1 DATA=data/tiny SETS="data.image_size=32 model.backbone=test_resnet" examples/toyworld_table.sh
#   OUT     output directory (runs/table)      SEEDS  seeds ("0 1 2")
#   EPOCHS  training epochs (profile default)  DATA   dataset directory (default: the cached toy world)
#   SETS    extra train overrides, "key=value key=value"; DEVICE  auto | cpu | cuda (auto)
#   BOOTSTRAP resamples for the intervals (1000)
# Runs that already finished are not trained again, so an interrupted script can be restarted.
set -euo pipefail
OUT=${OUT:-runs/table}
SEEDS=${SEEDS:-"0 1 2"}
DEVICE=${DEVICE:-auto}
PRESETS="normal language_only time_only simclr random_context"

train_opts=(--device "$DEVICE")
if [ -n "${DATA:-}" ]; then train_opts+=(--data "$DATA"); fi
if [ -n "${EPOCHS:-}" ]; then train_opts+=(--set "loop.epochs=$EPOCHS"); fi
for kv in ${SETS:-}; do train_opts+=(--set "$kv"); done

runs=()
for preset in $PRESETS; do
  for seed in $SEEDS; do
    run="$OUT/runs/$preset-$seed"
    runs+=("$run")
    if [ ! -f "$run/checkpoints/final.safetensors" ]; then
      rm -rf "$run"  # an unfinished start: train it again from the beginning
      simtool train --preset "$preset" --seed "$seed" --out "$run" "${train_opts[@]}"
    fi
    simtool evaluate "$run" --type odd-one-out --rooms semantic --device "$DEVICE"
    if [ "$preset" = random_context ] || [ "$preset" = simclr ]; then
      simtool evaluate "$run" --type odd-one-out --rooms random --device "$DEVICE"
    fi
  done
done

embeddings=()
for seed in $SEEDS; do
  file="$OUT/embeddings/seed-$seed.safetensors"
  simtool save-embeddings $(for preset in $PRESETS; do echo "$OUT/runs/$preset-$seed"; done) --out "$file" --device "$DEVICE"
  embeddings+=("$file")
done

simtool compare "${runs[@]}" "${embeddings[@]}" --layer time.out --layer language_only=label.out \
  --reference simclr --bootstrap "${BOOTSTRAP:-1000}" --out "$OUT/table"
echo "Table: $OUT/table/comparison.md; figures: $OUT/table/*.png"
