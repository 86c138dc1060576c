#!/usr/bin/env bash
# THINGS teachers from the public human odd-one-out triplets (Hebart et al. 2020), under the paper's
# stage layout: one seeded permutation of the 1,854 concepts, 60 / 20 / 20; the teachers train on
# every triplet among the first 80 % of the concepts (the train and val concepts, mixed triplets
# included), 20 % of those held out to pick each teacher's epoch; the last 20 % (the test concepts)
# are never seen, so a teacher cannot score them (evaluate says so; a student scores them). Reports
# the validation accuracy of 5 teachers with the paper's settings and with the tuned learning rate.
# LAYOUT=triplet reproduces the earlier, transductive figures (90/10 split by triplet: test triplets
# over concepts the teachers learned). SWEEP=1 adds the README's one-setting-at-a-time tuning grid
# (transductive layout). The files are in ../shared/data/things (triplets_test10.txt, item_names.tsv);
# set SRC to their folder. A few minutes per 5-teacher run on 2 CPU cores.
set -euo pipefail
SRC=${SRC:-../shared/data/things}
LAYOUT=${LAYOUT:-item}
OUT=${OUT:-runs/things}
if [ "$LAYOUT" = item ]; then
  DATA="$OUT/data-paper"; BUILD=(--split-by item --split 0.6,0.2,0.2 --set triplets.duplicates=keep)
else
  DATA="$OUT/data"; BUILD=()
fi
[ -f "$DATA/dataset.json" ] || simtool build-data --format triplets --triplets "$SRC/triplets_test10.txt" \
    --kind odd-one-out --items "$SRC/item_names.tsv" "${BUILD[@]}" --out "$DATA"
train() {  # name, then arguments
  local name=$1; shift
  if [ ! -f "$OUT/$name/summary.json" ]; then
    rm -rf "${OUT:?}/$name"
    simtool train --preset things_p_ste --data "$DATA" --out "$OUT/$name" "$@"
  fi
}
if [ "$LAYOUT" = item ]; then
  train paper-layout --repeats 5                      # the paper's settings: Adam 1e-3, E = 128, L1 1e-6, 100 epochs
  train paper-layout-tuned --repeats 5 --set optim.lr=0.01
  for name in paper-layout paper-layout-tuned; do
    python - "$OUT/$name/metrics.jsonl" <<'PY'
import json, sys
evals = [json.loads(line) for line in open(sys.argv[1]) if '"eval"' in line]
reps = sorted(k for k in evals[0] if k.startswith("val/accuracy_r"))
best = [max(e[k] for e in evals) for k in reps]
print(f"{sys.argv[1]}: each teacher's best validation accuracy {', '.join(f'{b:.3f}' for b in best)}; "
      f"mean {sum(best) / len(best):.3f}; ensemble at the last epoch {evals[-1]['val/ensemble_accuracy']:.3f}")
PY
  done
  simtool evaluate "$OUT/paper-layout" --type triplets --split all --set triplet_split=test || true   # says why it cannot
else
  # the earlier layout: teachers on 90 % of the triplets of every concept, scored on the other 10 %
  train paper --repeats 5 --set data.train_splits=[train] --set data.val_fraction=0.1
  train tuned --repeats 5 --set data.train_splits=[train] --set data.val_fraction=0.1 --set optim.lr=0.01
  simtool evaluate "$OUT/paper" --type triplets
  simtool evaluate "$OUT/tuned" --type triplets
  if [ "${SWEEP:-0}" = 1 ]; then
    for kv in optim.lr=0.003 "optim.lr=0.01 model.dim=32" "optim.lr=0.01 model.dim=64" "optim.lr=0.01 model.l1=1e-5" \
              "optim.lr=0.01 model.l1=1e-4" "optim.lr=0.01 loss.options.tau=0.2" "optim.lr=0.01 loss.options.tau=1.0" \
              "optim.lr=0.003 loop.epochs=300"; do
      sets=(--set data.train_splits=[train] --set data.val_fraction=0.1); name=sweep
      for x in $kv; do sets+=(--set "$x"); name="$name-${x//[^a-zA-Z0-9.]/_}"; done
      train "$name" "${sets[@]}"
      simtool evaluate "$OUT/$name" --type triplets
    done
  fi
  simtool compare "$OUT"/paper "$OUT"/tuned $( [ "${SWEEP:-0}" = 1 ] && ls -d "$OUT"/sweep-* ) --out "$OUT/compare"
fi
