#!/usr/bin/env bash
# The clip-length sweep of Aubret et al. (ICDL 2024) on the built-in toy world: time_only trained with
# stream.crop_number = 0 (whole videos as clips), 1, 3, 7 (the preset) and 15 (clips of
# 1 + Poisson(crop_number) frames, cut short by the end of the video), evaluated by odd-one-out at
# every layer, compared in one table with paired differences to crop_number 7. Shorter clips put more
# clip boundaries into the stream, so more positive pairs join two different objects (of one room
# with probability about 1 - p_change_room).
# About 2.5 minutes per run on 2 idle CPU cores (seconds on a GPU); on a busy machine run it with
# OMP_NUM_THREADS=1 (several times faster than 2 threads fighting for 2 cores). Environment overrides:
#   OUT (runs/crop_sweep)  SEEDS ("0 1")  CROPS ("0 1 3 7 15")  EPOCHS (profile default)  DATA (the cached toy world)
#   SETS (extra train overrides, "key=value ...")  DEVICE (auto)  BOOTSTRAP (1000)
# Runs that already finished are not trained again, so an interrupted script can be restarted.
set -euo pipefail
OUT=${OUT:-runs/crop_sweep}
SEEDS=${SEEDS:-"0 1"}
CROPS=${CROPS:-"0 1 3 7 15"}
DEVICE=${DEVICE:-auto}

train_opts=(--device "$DEVICE")
if [ -n "${DATA:-}" ]; then train_opts+=(--data "$DATA"); fi
if [ -n "${EPOCHS:-}" ]; then train_opts+=(--set "loop.epochs=$EPOCHS"); fi
for kv in ${SETS:-}; do train_opts+=(--set "$kv"); done

targets=()
names=()
for c in $CROPS; do
  for seed in $SEEDS; do
    run="$OUT/crop$c-seed$seed"
    if [ ! -f "$run/checkpoints/final.safetensors" ]; then
      rm -rf "$run"
      simtool train --preset time_only --seed "$seed" --set stream.crop_number="$c" --out "$run" "${train_opts[@]}"
    fi
    simtool evaluate "$run" --type odd-one-out --rooms semantic --device "$DEVICE"
    targets+=("$run")
    names+=(--name "time_only crop_number=$c")
  done
done
ref=()
case " $CROPS " in *" 7 "*) ref=(--reference "time_only crop_number=7" --bootstrap "${BOOTSTRAP:-1000}");; esac
simtool compare "${targets[@]}" "${names[@]}" --layer time.out "${ref[@]}" --out "$OUT/comparison"
echo "Table: $OUT/comparison/comparison.md"
