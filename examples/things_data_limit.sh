#!/usr/bin/env bash
# Is the THINGS teacher limited by the data or by the method? Simulate observers whose truth is the
# published VICE embedding (which scores 0.645 on the human test triplets): for random triples of the
# 1,854 concepts, the odd one out is drawn from the embedding's choice probabilities
# (softmax of the three pairs' dot products). Fit one things_p_ste teacher (tuned lr 0.01) on as many
# simulated triplets as the human file has (146,163, split 90/10 like it) and on ten times as many,
# and score both on the held-out HUMAN triplets of the real build. If the 1x teacher is no better than
# the teacher fitted on human triplets, the number of triplets, not the fitting, is what limits it.
# The files are in ../shared/data/things; set SRC to their folder. About 12 minutes on 2 CPU cores.
set -euo pipefail
SRC=${SRC:-../shared/data/things}
OUT=${OUT:-runs/things}
[ -f "$OUT/data/dataset.json" ] || simtool build-data --format triplets --triplets "$SRC/triplets_test10.txt" \
    --kind odd-one-out --items "$SRC/item_names.tsv" --out "$OUT/data"
for size in 1 10; do
  name=sim-${size}x
  if [ ! -f "$OUT/$name-data/dataset.json" ]; then
    python - "$SRC/vice_embedding_42d.npy" "$OUT/$name.txt" "$((146163 * size))" <<'PY'
import sys
import numpy as np
emb, out, n = np.load(sys.argv[1]).astype(np.float64), sys.argv[2], int(sys.argv[3])
rng = np.random.default_rng(7)
t = rng.integers(0, len(emb), size=(int(n * 1.01) + 100, 3))
t = t[(t[:, 0] != t[:, 1]) & (t[:, 0] != t[:, 2]) & (t[:, 1] != t[:, 2])][:n]
x, y, z = emb[t[:, 0]], emb[t[:, 1]], emb[t[:, 2]]
logit = np.stack([(x * y).sum(1), (x * z).sum(1), (y * z).sum(1)], 1)  # pairs (0,1) (0,2) (1,2)
p = np.exp(logit - logit.max(1, keepdims=True)); p /= p.sum(1, keepdims=True)
c = (rng.random(n)[:, None] > np.cumsum(p, 1)).sum(1)  # the chosen (most similar) pair
order = np.array([[0, 1, 2], [0, 2, 1], [1, 2, 0]])[c]  # pair, pair, odd one out
np.savetxt(out, np.take_along_axis(t, order, 1), fmt="%d")
PY
    simtool build-data --format triplets --triplets "$OUT/$name.txt" --kind odd-one-out --items "$SRC/item_names.tsv" --out "$OUT/$name-data"
  fi
  epochs=$((size == 1 ? 100 : 20))  # about the same number of steps
  if [ ! -f "$OUT/$name/summary.json" ]; then
    rm -rf "${OUT:?}/$name"
    simtool train --preset things_p_ste --data "$OUT/$name-data" --out "$OUT/$name" --set optim.lr=0.01 --set loop.epochs=$epochs \
        --set data.train_splits=[train] --set data.val_fraction=0.1   # the transductive layout of this analysis (split by triplet)
  fi
  simtool evaluate "$OUT/$name" --type triplets   # its own (simulated) test triplets
  # the human test triplets: export the teacher, then score it as a plain (items, 1, E) array in item
  # order (both builds list the same 1,854 concepts) against the human build's triplets table
  simtool save-embeddings "$OUT/$name" --out "$OUT/$name.safetensors"
  python - "$OUT/$name.safetensors" "$OUT/data/items.parquet" "$OUT/$name.npy" <<'PY'
import sys
import numpy as np
import pyarrow.parquet as pq
from simtool.formats.embeddings import read_embeddings
emb = read_embeddings(sys.argv[1])
assert (emb.ids == pq.read_table(sys.argv[2]).column("id").to_numpy(zero_copy_only=False).astype(str)).all()
np.save(sys.argv[3], np.asarray(emb.tensor(emb.models[0]["name"], "embedding")))
PY
  simtool evaluate "$OUT/$name.npy" --type triplets --labels "$OUT/data/triplets.parquet" --out "$OUT/$name.triplets.json"
done
