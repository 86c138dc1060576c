"""What every dataset directory has, whatever its kind: file names, the card, column conversions,
table checks and the content fingerprint's hashing."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

FORMAT_VERSION = 2
CARD = "dataset.json"
IMAGES = "images.h5"
REJECTED = "rejected.txt"
SPLITS = ("train", "val", "test")
SPLIT_BY = ("triplet", "item")
_HASH_CHUNK = 100_000
FINGERPRINT_SALT = b"simtool-dataset-v2\0"


def rebuild_hint(root: Path) -> str:
    return f"rebuild it with simtool build-data (or check that {root} was copied completely)"


def read_card(root: str | Path) -> dict | None:
    """The card of a dataset directory, or None when ``root`` holds no readable card (no error)."""
    path = Path(root) / CARD
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return card if isinstance(card, dict) else None


def hash_columns(h, table: pa.Table, columns: Sequence[str]) -> None:
    """Feed the named columns of ``table`` (those it has) into the hash ``h``."""
    for name in columns:
        if name not in table.column_names:
            continue
        col = table.column(name)
        h.update(name.encode() + b"\0")
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            # "\0".join(all values), fed in chunks (same bytes, bounded memory)
            for start in range(0, len(col), _HASH_CHUNK):
                values = col.slice(start, _HASH_CHUNK).to_numpy(zero_copy_only=False).astype(str)
                if start:
                    h.update(b"\x00")
                h.update("\x00".join(values.tolist()).encode("utf-8"))
        else:
            h.update(np.ascontiguousarray(col.to_numpy(zero_copy_only=False).astype(np.int64)).tobytes())
        h.update(b"\0")


def new_hash(prefix: bytes = b"") -> hashlib._Hash:
    return hashlib.sha256(FINGERPRINT_SALT + prefix)


def conform_table(table: pa.Table | dict, required: dict, optional: dict | None = None, what: str = "table") -> pa.Table:
    """``table`` with exactly the declared columns (required, then optional ones present), cast to their types."""
    if isinstance(table, dict):
        table = pa.table(table)
    optional = optional or {}
    missing = [c for c in required if c not in table.column_names]
    if missing:
        raise ValueError(f"{what} lacks the column(s) {', '.join(missing)}")
    cols, fields = [], []
    for name, typ in list(required.items()) + [(k, t) for k, t in optional.items() if k in table.column_names]:
        col = table.column(name)
        if col.type != typ:
            col = col.cast(typ)
        cols.append(col)
        fields.append(pa.field(name, typ))
    return pa.Table.from_arrays(cols, schema=pa.schema(fields))


def codes(col: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes of a string column in sorted order of its values, and the sorted values.

    Equal to ``np.unique(values, return_inverse=True)`` reversed, but built by dictionary encoding:
    no per-row Python objects.
    """
    if len(col) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=str)
    if isinstance(col, pa.ChunkedArray) and pa.types.is_dictionary(col.type):
        col = col.unify_dictionaries()  # as read with read_dictionary: one dictionary for every chunk
        dictionary = col.chunk(0).dictionary
        indices = np.concatenate([c.indices.to_numpy(zero_copy_only=False) for c in col.chunks]) if col.num_chunks else np.zeros(0, np.int64)
    else:
        if isinstance(col, pa.ChunkedArray):
            col = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
        enc = col if pa.types.is_dictionary(col.type) else pc.dictionary_encode(col)
        dictionary, indices = enc.dictionary, enc.indices.to_numpy(zero_copy_only=False)
    values = dictionary.to_numpy(zero_copy_only=False).astype(str)
    # values may repeat in a dictionary unified from chunks: map equal values to one code
    uniq, first_code = np.unique(values, return_inverse=True)
    out = first_code.reshape(-1).astype(np.int64)[indices.astype(np.int64)]
    return out, uniq


def strings(col) -> np.ndarray:
    """A string column as a NumPy str array, built from its dictionary (fast for repetitive values)."""
    c, values = codes(col)
    return values[c] if len(c) else np.zeros(0, dtype=str)


def ints(col) -> np.ndarray:
    return np.asarray(col.to_numpy(), dtype=np.int64) if len(col) else np.zeros(0, dtype=np.int64)
