"""Triplet judgements as the formats store them: the two kinds and the labelled-triplets table.

The kinds, in this order (their codes are the positions, used by the embeddings file and the
methods' kind codes):

* ``directed``: ``(a, b, c)`` with ``a`` the anchor, ``b`` judged closer to it than ``c``;
* ``odd-one-out``: ``(a, b, c)`` with ``(a, b)`` the pair judged most similar, ``c`` the odd one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TRIPLET_KINDS = ("directed", "odd-one-out")
KIND_CODE = {kind: code for code, kind in enumerate(TRIPLET_KINDS)}
TRIPLET_SPLITS = ("train", "val", "test")


def kind_codes(kinds) -> np.ndarray:
    """uint8 codes (:data:`KIND_CODE`) of an array of kind names."""
    out = np.zeros(len(kinds), dtype=np.uint8)
    for kind, code in KIND_CODE.items():
        out[np.asarray(kinds) == kind] = code
    return out


@dataclass
class Triplets:
    """Labelled triplets over the rows of an embeddings file (or a dataset's items)."""

    index: np.ndarray  # int64 (T, 3) row numbers
    kind: np.ndarray  # str (T,) directed | odd-one-out
    split: np.ndarray  # str (T,) train | val | test

    def __len__(self) -> int:
        return len(self.index)

    def select(self, mask: np.ndarray) -> Triplets:
        return Triplets(self.index[mask], self.kind[mask], self.split[mask])
