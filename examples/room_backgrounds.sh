#!/usr/bin/env bash
# Does context come from time or from the backgrounds? (the background-removed test of Aubret et al.,
# ICDL 2024, on the toy world, where the answer is known). A world in which every room has its own
# background hue (toyworld.room_backgrounds=true, otherwise the default world, seed 0) and its
# background-removed twin (toyworld.background=none: the same objects, views, splits and rooms on one
# plain grey, the same index) are built; simclr, time_only and normal are trained on the world (3
# seeds each) and evaluated by odd-one-out on its test frames and on the same test frames of the twin
# (evaluate --images: no retraining); ONE compare call writes the table (mean ± sd over seeds, paired
# differences against simclr with bootstrap 95 % intervals, for both image sets).
# SimCLR sees single frames, so it can only learn rooms from their backgrounds; the time models can
# also learn them from which objects follow each other in the stream.
#
# Full size: 9 trainings of 2-4 minutes each on 2 CPU cores, one after another; a GPU is faster.
# Environment overrides, e.g. for a quick check:
#   OUT=/tmp/rb SEEDS=0 EPOCHS=1 WORLD="toyworld.objects_per_category=12 toyworld.frames_per_object=4" examples/room_backgrounds.sh
#   OUT     output directory (runs/room_backgrounds)   SEEDS    seeds ("0 1 2")
#   EPOCHS  training epochs (profile default)          PRESETS  ("simclr time_only normal")
#   WORLD   extra toy-world settings, "key=value ..."  SETS     extra train overrides, "key=value ..."
#   DEVICE  auto | cpu | cuda (auto)                   BOOTSTRAP resamples for the intervals (1000)
# Runs that already finished are not trained again, so an interrupted script can be restarted.
set -euo pipefail
OUT=${OUT:-runs/room_backgrounds}
SEEDS=${SEEDS:-"0 1 2"}
DEVICE=${DEVICE:-auto}
PRESETS=${PRESETS:-"simclr time_only normal"}

world_opts=(--seed 0 --set toyworld.room_backgrounds=true)
for kv in ${WORLD:-}; do world_opts+=(--set "$kv"); done
DATA="$OUT/data/world"
TWIN="$OUT/data/world-nobackground"
if [ ! -f "$DATA/dataset.json" ]; then rm -rf "$DATA"; simtool build-data --format toyworld --out "$DATA" "${world_opts[@]}"; fi
if [ ! -f "$TWIN/dataset.json" ]; then rm -rf "$TWIN"; simtool build-data --format toyworld --out "$TWIN" "${world_opts[@]}" --set toyworld.background=none; fi

train_opts=(--device "$DEVICE" --data "$DATA")
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
    simtool evaluate "$run" --type odd-one-out --rooms semantic --images "$TWIN" --device "$DEVICE"
  done
done

simtool compare "${runs[@]}" --layer time.out --reference simclr --bootstrap "${BOOTSTRAP:-1000}" --out "$OUT/table"
echo "Table: $OUT/table/comparison.md"
