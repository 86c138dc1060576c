#!/usr/bin/env bash
# Evaluate models no run trained (save-embeddings --model), end to end on CPU:
#  1. toy world: the untrained backbone of the toy runs (timm's test_resnet, three seeds of its random
#     initialisation) embedded at timm's preprocessing, scored by the linear probe and weighted kNN
#     (every frame: train rows learn, test rows are scored) and by odd-one-out (the test frames, as
#     the trained runs of examples/probes_table.sh are);
#  2. Zappos shoes: the human triplets among the held-out test shoes scored by an untrained ResNet-18,
#     by the student of examples/zappos.sh, and by a model read from --weights (the student's own
#     ResNet-18 weights in timm's resnet18, at timm's preprocessing); RSA and CKA of each with a human
#     similarity embedding of all 85 shoes (5 teachers fitted to 90 % of all triplets, the first
#     one as the reference), over all shoes and over the test shoes;
#  3. THINGS: RSA and CKA of a teacher fitted to the public 10 % triplets with the published VICE
#     embedding (no THINGS images are needed: both embed the 1,854 concepts by id).
# Files: ../shared/data/zappos and ../shared/data/things (set ZAPPOS, THINGS). About 20 minutes on
# 2 CPU cores, most of it the teachers and the student of part 2.
#   OUT    output directory (runs/any_model)      SEEDS  seeds of the random initialisation ("0 1 2")
#   PARTS  which parts ("toy zappos things")
set -euo pipefail
OUT=${OUT:-runs/any_model}
ZAPPOS=${ZAPPOS:-../shared/data/zappos}
THINGS=${THINGS:-../shared/data/things}
SEEDS=${SEEDS:-"0 1 2"}
PARTS=${PARTS:-"toy zappos things"}
mkdir -p "$OUT"

if [[ " $PARTS " == *" toy "* ]]; then
  [ -f "$OUT/toy/dataset.json" ] || simtool build-data --format toyworld --out "$OUT/toy"
  simtool save-embeddings --model test_resnet --list-layers
  files=()
  for seed in $SEEDS; do
    emb="$OUT/emb/toy-test_resnet-$seed.safetensors"
    [ -f "$emb" ] || simtool save-embeddings --model test_resnet --seed "$seed" --data "$OUT/toy" --out "$emb"
    test="$OUT/emb/toy-test_resnet-$seed-test.safetensors"
    [ -f "$test" ] || simtool save-embeddings --model test_resnet --seed "$seed" --data "$OUT/toy" --split test --out "$test"
    simtool evaluate "$emb" --type linear-probe
    simtool evaluate "$emb" --type knn
    simtool evaluate "$test" --type odd-one-out
    files+=("${emb%.safetensors}".{linear-probe-lbfgs,knn-20-0.07}.json "${test%.safetensors}.odd-one-out-semantic.json")
  done
  simtool compare "${files[@]}" --layer pooled --out "$OUT/toy-table"
fi

if [[ " $PARTS " == *" zappos "* ]]; then
  Z=$OUT/zappos
  # the dataset, teachers and student of examples/zappos.sh (split by item: 51 / 17 / 17 shoes)
  [ -f "$Z/data/dataset.json" ] || simtool build-data --format triplets --triplets "$ZAPPOS/deconflicted_triplets.csv" --kind directed \
      --images "$ZAPPOS/images" --split-by item --split 0.6,0.2,0.2 --out "$Z/data"
  [ -f "$Z/teachers/summary.json" ] || simtool train --preset zappos_p_ste --data "$Z/data" --repeats 5 --out "$Z/teachers"
  [ -f "$Z/teachers.safetensors" ] || simtool save-embeddings "$Z/teachers" --split all --out "$Z/teachers.safetensors"
  STUDENT=(--set model.backbone=resnet18 --set model.pretrained=false --set model.frozen=none --set data.image_size=64
           --set optim.lr=0.001 --set validation.triplets=100000 --set loop.log_every=20)
  [ -f "$Z/student/summary.json" ] || simtool train --preset zappos_se_stmr --data "$Z/data" --set data.teacher="$Z/teachers.safetensors" \
      "${STUDENT[@]}" --set loop.epochs=60 --out "$Z/student"
  # a human similarity embedding of every shoe: 5 teachers of a split by triplet (all shoes in every split)
  [ -f "$Z/all-data/dataset.json" ] || simtool build-data --format triplets --triplets "$ZAPPOS/deconflicted_triplets.csv" --kind directed \
      --images "$ZAPPOS/images" --split 0.9,0.1 --out "$Z/all-data"
  [ -f "$Z/human/summary.json" ] || simtool train --preset zappos_p_ste --data "$Z/all-data" --repeats 5 --out "$Z/human"
  [ -f "$Z/human.safetensors" ] || simtool save-embeddings "$Z/human" --split all --out "$Z/human.safetensors"
  # the student's weights file holds its ResNet-18 under "backbone.": --weights finds them by that prefix
  weights=$Z/student/checkpoints/best.safetensors
  [ -f "$weights" ] || weights=$Z/student/checkpoints/final.safetensors
  embs=()
  for seed in $SEEDS; do
    emb="$Z/emb/resnet18-$seed.safetensors"
    [ -f "$emb" ] || simtool save-embeddings --model resnet18 --seed "$seed" --data "$Z/data" --out "$emb"
    embs+=("$emb")
  done
  [ -f "$Z/emb/student-weights.safetensors" ] || simtool save-embeddings --model resnet18 --weights "$weights" --data "$Z/data" \
      --out "$Z/emb/student-weights.safetensors"
  [ -f "$Z/emb/student.safetensors" ] || simtool save-embeddings "$Z/student" --split all --out "$Z/emb/student.safetensors"
  embs+=("$Z/emb/student-weights.safetensors" "$Z/emb/student.safetensors")
  files=()
  for emb in "${embs[@]}"; do
    simtool evaluate "$emb" --type triplets                                             # the test shoes' triplets
    simtool evaluate "$emb" --type rsa --reference "$Z/human.safetensors"                # all 85 shoes
    simtool evaluate "$emb" --type rsa --reference "$Z/human.safetensors" --set split=test # the 17 test shoes
    files+=("${emb%.safetensors}".{triplets-test,rsa-human,rsa-human-test}.json)
  done
  simtool compare "${files[@]}" --out "$Z/table"
fi

if [[ " $PARTS " == *" things "* ]]; then
  T=$OUT/things
  [ -f "$T/data/dataset.json" ] || simtool build-data --format triplets --triplets "$THINGS/triplets_test10.txt" --kind odd-one-out \
      --items "$THINGS/item_names.tsv" --out "$T/data"
  [ -f "$T/teacher/summary.json" ] || simtool train --preset things_p_ste --data "$T/data" --set optim.lr=0.01 --out "$T/teacher"
  [ -f "$T/teacher.safetensors" ] || simtool save-embeddings "$T/teacher" --split all --out "$T/teacher.safetensors"
  simtool evaluate "$T/teacher.safetensors" --type triplets                             # the held-out 10 % of the triplets
  simtool evaluate "$T/teacher.safetensors" --type rsa --reference "$THINGS/vice_embedding_42d.npy" --set max_items=1854 --set bootstrap=200
fi
echo "Tables: $OUT/toy-table/comparison.md, $OUT/zappos/table/comparison.md; THINGS above."
