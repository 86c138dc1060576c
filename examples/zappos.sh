#!/usr/bin/env bash
# Zappos shoes end to end on CPU (the triplet route on real data): 85 shoe photos with directed human
# triplets, split by item -> 5 psycho teachers -> save-embeddings -> a small image student -> evaluate
# triplets on the held-out shoes. The files are in ../shared/data/zappos (images/{i}.jpg and
# deconflicted_triplets.csv, Heim et al. 2015); set SRC to their folder. A few minutes on 2 CPU cores.
set -euo pipefail
SRC=${SRC:-../shared/data/zappos}
OUT=${OUT:-runs/zappos}
# 85 items: 51 train, 17 val, 17 test shoes; a triplet survives only inside one split
simtool build-data --format triplets --triplets "$SRC/deconflicted_triplets.csv" --kind directed --images "$SRC/images" \
    --split-by item --split 0.6,0.2,0.2 --out "$OUT/data"
# teachers learn the train and val shoes (the student validates on the val shoes) and validate on
# 10 % of those triplets held out; the test shoes stay unseen
simtool train --preset zappos_p_ste --data "$OUT/data" --repeats 5 --out "$OUT/teachers"
simtool save-embeddings "$OUT/teachers" --split all --out "$OUT/teachers.safetensors"
# a small student from scratch (no download): ResNet-18 at 64 px, all BatchNorm layers training,
# Adam 1e-3 instead of the fine-tuning rate 1e-6 of a pretrained ResNet-50
STUDENT=(--set model.backbone=resnet18 --set model.pretrained=false --set model.frozen=none --set data.image_size=64
         --set optim.lr=0.001 --set validation.triplets=100000 --set loop.log_every=20)
simtool train --preset zappos_se_stmr --data "$OUT/data" --set data.teacher="$OUT/teachers.safetensors" \
    "${STUDENT[@]}" --set loop.epochs=60 --out "$OUT/student"
simtool evaluate "$OUT/student" --type triplets
# the same network untrained (one step at a learning rate of 1e-12: only BatchNorm statistics move)
simtool train --preset zappos_se_stmr --data "$OUT/data" --set data.teacher="$OUT/teachers.safetensors" \
    "${STUDENT[@]}" --set loop.epochs=1 --set optim.lr=1e-12 --out "$OUT/untrained"
simtool evaluate "$OUT/untrained" --type triplets
