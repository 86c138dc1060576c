"""Write COIL-20 (``COIL20.mat``) as an object-video tree that ``build-data --format mvimgnet`` reads.

COIL-20 (Columbia Object Image Library, Nene, Nayar & Murase 1996) has 20 objects, each filmed on a
turntable in 72 views 5 degrees apart. ``COIL20.mat`` (the MATLAB v5 file of the Deng Cai
collection) holds ``fea`` (1440, 1024): 32x32 grey images in [0, 1], stored column-major, and
``gnd`` (1440, 1): the object id 1..20; the rows of one object are its views in turntable order.

The tree mirrors MVImgNet's layout, ``OUT/<category id>/<object id>/images/<frame>.png``:

* category = a COIL-20 object (ids 0..19, named ``coil01``..``coil20`` in ``mvimgnet_category.txt``);
* object = one of ``--segments`` consecutive pieces of its 360-degree video (default 8 pieces of 9
  frames = 45 degrees each), so that every category has several objects and held-out test
  objects exist (COIL-20 itself has one video per object);
* ``coil20_rooms.csv``: a category -> room table (``--rooms`` rooms, categories dealt round-robin)
  for ``build-data --format rooms``. The rooms are arbitrary, not semantic: the example shows the
  workflow, not a context effect.

    python examples/coil20_to_tree.py --mat COIL20.mat --out data/coil20-tree
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mat", required=True, help="path of COIL20.mat")
    ap.add_argument("--out", required=True, help="folder to create (must not exist)")
    ap.add_argument("--segments", type=int, default=8, help="objects (consecutive video pieces) per COIL-20 object (default 8)")
    ap.add_argument("--rooms", type=int, default=4, help="rooms in coil20_rooms.csv (default 4)")
    args = ap.parse_args(argv)

    from scipy.io import loadmat

    out = Path(args.out)
    if out.exists():
        print(f"{out} already exists; choose another --out or delete it.", file=sys.stderr)
        return 2
    m = loadmat(args.mat)
    fea, gnd = np.asarray(m["fea"], dtype=np.float64), np.asarray(m["gnd"]).astype(int).ravel()
    if fea.ndim != 2 or fea.shape[1] != 1024 or len(gnd) != len(fea):
        print(f"{args.mat} does not hold fea (N, 1024) and gnd (N, 1); is it COIL20.mat?", file=sys.stderr)
        return 2
    objects = sorted(set(gnd.tolist()))
    tmp = out.with_name(out.name + ".partial")
    tmp.mkdir(parents=True, exist_ok=False)
    n_images = 0
    for cat, obj in enumerate(objects):
        rows = np.flatnonzero(gnd == obj)  # the turntable views in order
        pieces = np.array_split(rows, args.segments)
        for s, piece in enumerate(pieces):
            folder = tmp / str(cat) / f"coil{obj:02d}-seg{s}" / "images"
            folder.mkdir(parents=True)
            for f, r in enumerate(piece):
                img = (fea[r].reshape(32, 32).T * 255).round().clip(0, 255).astype(np.uint8)  # column-major -> transpose
                Image.fromarray(img, mode="L").save(folder / f"{f:03d}.png")
                n_images += 1
    (tmp / "mvimgnet_category.txt").write_text("".join(f"{c},coil{o:02d}\n" for c, o in enumerate(objects)))
    (tmp / "coil20_rooms.csv").write_text("category,room\n" + "".join(f"{c},room{c % args.rooms}\n" for c in range(len(objects))))
    tmp.rename(out)
    print(f"Wrote {out}: {len(objects)} categories x {args.segments} objects, {n_images} frames; rooms table {out / 'coil20_rooms.csv'}.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
