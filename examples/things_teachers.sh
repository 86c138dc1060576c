#!/usr/bin/env bash
# THINGS teachers from the public human odd-one-out triplets (Hebart et al. 2020): build the
# triplets dataset (90/10 split by triplet), fit 5 psycho teachers (things_p_ste) with the paper's
# settings and with the tuned learning rate, score them on the held-out 10 %, and compare.
# SWEEP=1 also runs the one-setting-at-a-time tuning grid of the README (one teacher each).
# The files are in ../shared/data/things (triplets_test10.txt, item_names.tsv); set SRC to their
# folder. About 5 minutes per 5-teacher run on 2 CPU cores (1 thread each: OMP_NUM_THREADS=1).
set -euo pipefail
SRC=${SRC:-../shared/data/things}
OUT=${OUT:-runs/things}
[ -f "$OUT/data/dataset.json" ] || simtool build-data --format triplets --triplets "$SRC/triplets_test10.txt" \
    --kind odd-one-out --items "$SRC/item_names.tsv" --out "$OUT/data"
train() {  # name, then --set arguments
  local name=$1; shift
  if [ ! -f "$OUT/$name/summary.json" ]; then
    rm -rf "${OUT:?}/$name"
    simtool train --preset things_p_ste --data "$OUT/data" --out "$OUT/$name" "$@"
  fi
  simtool evaluate "$OUT/$name" --type triplets
}
train paper --repeats 5                        # the paper's settings: Adam 1e-3, E = 128, L1 1e-6, 100 epochs
train tuned --repeats 5 --set optim.lr=0.01    # the tuned learning rate (best epoch by validation)
if [ "${SWEEP:-0}" = 1 ]; then
  for kv in optim.lr=0.003 "optim.lr=0.01 model.dim=32" "optim.lr=0.01 model.dim=64" "optim.lr=0.01 model.l1=1e-5" \
            "optim.lr=0.01 model.l1=1e-4" "optim.lr=0.01 loss.options.tau=0.2" "optim.lr=0.01 loss.options.tau=1.0" \
            "optim.lr=0.003 loop.epochs=300"; do
    sets=(); name=sweep; for x in $kv; do sets+=(--set "$x"); name="$name-${x//[^a-zA-Z0-9.]/_}"; done
    train "$name" "${sets[@]}"
  done
fi
simtool compare "$OUT"/paper "$OUT"/tuned $( [ "${SWEEP:-0}" = 1 ] && ls -d "$OUT"/sweep-* ) --out "$OUT/compare"
