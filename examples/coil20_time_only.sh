#!/usr/bin/env bash
# COIL-20 end to end: an object-video tree -> --format mvimgnet -> train time_only and simclr ->
# evaluate odd-one-out and class retrieval (the 20 COIL objects as classes) -> compare with figures.
# COIL-20 (20 turntable objects x 72 views, 32x32 grey) as COIL20.mat, e.g. from
# http://www.cad.zju.edu.cn/home/dengcai/Data/MLData.html ; set MAT to its path. About 5 minutes on 2 CPU cores.
set -euo pipefail
MAT=${MAT:-../shared/data/coil20/COIL20.mat}
OUT=${OUT:-runs/coil20}
python examples/coil20_to_tree.py --mat "$MAT" --out "$OUT/tree"
simtool build-data --format rooms "$OUT/tree/coil20_rooms.csv" --out "$OUT/rooms" --random 1
simtool build-data --format mvimgnet "$OUT/tree" --out "$OUT/data" --split 0.5,0.25,0.25 \
    --rooms "$OUT/rooms/room_assignment_balanced.json"
simtool build-data --verify "$OUT/data"
for preset in time_only simclr; do
  if [ ! -f "$OUT/$preset/summary.json" ]; then
    rm -rf "$OUT/$preset"
    simtool train --preset $preset --data "$OUT/data" --profile toyworld --out "$OUT/$preset" \
        --set data.image_size=32 --set loop.epochs=10 --set loop.batch_size=32
  fi
  simtool evaluate "$OUT/$preset" --type odd-one-out
  # class retrieval with the 20 COIL objects (the dataset's categories) as classes
  simtool evaluate "$OUT/$preset" --type classes --set column=category
done
simtool compare "$OUT/time_only" "$OUT/simclr" --layer time.out --out "$OUT/compare"
