#!/usr/bin/env bash
# Zappos shoes end to end on CPU under the paper's stage layout (Dondera, CVPR 2024 workshops): 85
# shoe photos with directed human triplets, one seeded permutation of the shoes 51 / 17 / 17
# (train / val / test) that every stage shares -> 5 psycho teachers on every triplet among the train
# and val shoes (20 % of those held out to pick each teacher's epoch) -> save-embeddings -> a small
# image student trained on the train shoes, selected on the val shoes -> the human triplets among the
# 17 test shoes, which neither teachers nor student saw; the same network untrained for reference.
# Three seeds (the split and every training seed change together, like the paper's Yummly splits
# ~0..~4), then one compare with the untrained network as reference. The files are in
# ../shared/data/zappos (images/{i}.jpg and deconflicted_triplets.csv, Heim et al. 2015); set SRC
# to their folder. About 3 minutes per seed on 2 CPU cores.
set -euo pipefail
SRC=${SRC:-../shared/data/zappos}
OUT=${OUT:-runs/zappos}
SEEDS=${SEEDS:-"0 1 2"}
# a small student from scratch (no download): ResNet-18 at 64 px, all BatchNorm layers training,
# Adam 1e-3 instead of the fine-tuning rate 1e-6 of a pretrained ResNet-50
STUDENT=(--set model.backbone=resnet18 --set model.pretrained=false --set model.frozen=none --set data.image_size=64
         --set optim.lr=0.001 --set validation.triplets=100000 --set loop.log_every=20)
for seed in $SEEDS; do
  dir="$OUT/seed$seed"
  [ -f "$dir/data/dataset.json" ] || simtool build-data --format triplets --triplets "$SRC/deconflicted_triplets.csv" --kind directed \
      --images "$SRC/images" --split-by item --split 0.6,0.2,0.2 --seed "$seed" --out "$dir/data"
  [ -f "$dir/teachers/summary.json" ] || { rm -rf "$dir/teachers"; simtool train --preset zappos_p_ste --data "$dir/data" --repeats 5 \
      --seed "$seed" --out "$dir/teachers"; }
  [ -f "$dir/teachers.safetensors" ] || simtool save-embeddings "$dir/teachers" --split all --out "$dir/teachers.safetensors"
  [ -f "$dir/student/summary.json" ] || { rm -rf "$dir/student"; simtool train --preset zappos_se_stmr --data "$dir/data" --seed "$seed" \
      --set data.teacher="$dir/teachers.safetensors" "${STUDENT[@]}" --set loop.epochs=60 --out "$dir/student"; }
  simtool evaluate "$dir/student" --type triplets
  # the same network untrained (one step at a learning rate of 1e-12: only BatchNorm statistics move)
  [ -f "$dir/untrained/summary.json" ] || { rm -rf "$dir/untrained"; simtool train --preset zappos_se_stmr --data "$dir/data" --seed "$seed" \
      --set data.teacher="$dir/teachers.safetensors" "${STUDENT[@]}" --set loop.epochs=1 --set optim.lr=1e-12 --out "$dir/untrained"; }
  simtool evaluate "$dir/untrained" --type triplets
done
students=(); untrained=()
for seed in $SEEDS; do students+=("$OUT/seed$seed/student"); untrained+=("$OUT/seed$seed/untrained"); done
names=(); for _ in $SEEDS; do names+=(--name student); done; for _ in $SEEDS; do names+=(--name untrained); done
simtool compare "${students[@]}" "${untrained[@]}" "${names[@]}" --layer embedding --reference untrained --out "$OUT/compare"
