"""The embeddings file: what ``save-embeddings`` writes and ``evaluate`` / ``compare`` read.

Format version 2 is a pair of files, ``NAME.safetensors`` and ``NAME.rows.parquet``:

* ``NAME.safetensors`` holds one float32 tensor of shape ``(N, R, D)`` per model and layer, named
  ``"<model>/<layer>"`` (R = repetitions: 1 for an image model, the number of teacher runs for a
  multi-run teacher). Its metadata (JSON strings) holds ``kind: embeddings``, ``format_version``,
  ``models`` (per model: name, run, method, preset, seed, the resolved train spec and its hash, the
  layers, whether training had finished, what the method recorded about context), ``dataset``
  (name, kind, content fingerprint, path at export time), ``split``, ``n_rows``, the simtool
  version and ``rows_sha256``, which ties the rows file to this file.
* Rows with several images (the items of a triplets dataset whose items have several, THINGS
  concepts, the toy world's objects) hold the renormalised mean of their images' unit embeddings;
  the file then also holds every image's embedding: ``__images__/<model>/<layer>`` float32
  ``(M, D)`` and ``__images__/row`` int64 ``(M,)`` (the row of every image), so that
  ``evaluate --type triplets`` scores individual images as the original (:class:`Embeddings`
  holds them in ``images`` and ``image_row``).
* Embeddings of a ``triplets`` dataset also carry its labelled triplets among the exported rows (so
  ``evaluate --type triplets`` needs nothing else): three more tensors in ``NAME.safetensors``,
  ``__triplets__/index`` int64 ``(T, 3)`` (row numbers of this file: anchor or pair member, closer
  or pair member, farther or odd one), ``__triplets__/kind`` and ``__triplets__/split`` uint8
  ``(T,)`` (codes into the metadata's ``triplets`` JSON: ``{"kinds": [...], "splits": [...]}``).
  They are not embeddings: :class:`Embeddings` holds them in ``triplets``.
* ``NAME.rows.parquet`` has one row per embedding row: ``id`` (string, stable across copies of a
  dataset), ``split``, and a column per label level the dataset has (``category``, ``object``,
  ``room:<assignment>`` for each room assignment, room ``-1`` = no room); ``row`` and ``frame``
  when the rows come from a dataset directory. Its schema metadata holds the category names and
  the room names of every assignment.

Self-contained: evaluating it never opens the dataset directory. Plain arrays made by other tools
are read by :func:`read_array` (``.npy`` (N, D), or ``.npz`` with one (N, D) array per layer) with
a labels file (CSV or parquet, one row per embedding, columns named after levels).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from simtool import __version__
from simtool.errors import UserError
from simtool.formats.rooms import ROOM_LABEL_PREFIX as ROOM_PREFIX
from simtool.formats.triplets import TRIPLET_KINDS, TRIPLET_SPLITS, Triplets
from simtool.io import atomic_path

FORMAT_VERSION = 2
KIND = "embeddings"
SUFFIX = ".safetensors"
ROWS_SUFFIX = ".rows.parquet"
LEVEL_COLUMNS = ("category", "object")
TRIPLETS_PREFIX = "__triplets__/"
IMAGES_PREFIX = "__images__/"


def _encode_triplets(t: Triplets, n_rows: int) -> tuple[dict, dict]:
    import torch

    index = np.asarray(t.index, dtype=np.int64).reshape(-1, 3)
    if len(index) and (index.min() < 0 or index.max() >= n_rows):
        raise ValueError(f"triplet rows must lie in 0..{n_rows - 1}")
    kinds = sorted(set(np.asarray(t.kind).tolist()) | set(TRIPLET_KINDS), key=lambda k: (k not in TRIPLET_KINDS, k))
    splits = sorted(set(np.asarray(t.split).tolist()) | set(TRIPLET_SPLITS), key=lambda k: (k not in TRIPLET_SPLITS, k))
    kind_code = np.array([kinds.index(k) for k in np.asarray(t.kind).tolist()], dtype=np.uint8)
    split_code = np.array([splits.index(k) for k in np.asarray(t.split).tolist()], dtype=np.uint8)
    tensors = {TRIPLETS_PREFIX + "index": torch.from_numpy(index), TRIPLETS_PREFIX + "kind": torch.from_numpy(kind_code),
               TRIPLETS_PREFIX + "split": torch.from_numpy(split_code)}
    return tensors, {"kinds": kinds, "splits": splits, "n": int(len(index))}


def _decode_triplets(tensors: dict, meta: dict, n_rows: int) -> Triplets | None:
    keys = [k for k in tensors if k.startswith(TRIPLETS_PREFIX)]
    if not keys:
        return None
    info = json.loads(meta.get("triplets", "{}"))
    index = tensors.pop(TRIPLETS_PREFIX + "index").numpy().astype(np.int64)
    kind = np.asarray(info["kinds"])[tensors.pop(TRIPLETS_PREFIX + "kind").numpy().astype(np.int64)]
    split = np.asarray(info["splits"])[tensors.pop(TRIPLETS_PREFIX + "split").numpy().astype(np.int64)]
    if (index.ndim != 2 or index.shape[1] != 3 or len(kind) != len(index) or len(split) != len(index)
            or (len(index) and (index.min() < 0 or index.max() >= n_rows))):
        raise ValueError("malformed triplets")
    return Triplets(index, kind.astype(str), split.astype(str))


def _encode_images(emb, n_rows: int) -> dict:
    import torch

    row = np.asarray(emb.image_row, dtype=np.int64).reshape(-1)
    if len(row) and (row.min() < 0 or row.max() >= n_rows):
        raise ValueError(f"image rows must lie in 0..{n_rows - 1}")
    out = {IMAGES_PREFIX + "row": torch.from_numpy(row)}
    for key, t in emb.images.items():
        if t.dim() != 2 or t.shape[0] != len(row):
            raise ValueError(f"image tensor {key} must be (M={len(row)}, D), got {tuple(t.shape)}")
        out[IMAGES_PREFIX + key] = t.float().contiguous()
    return out


def _decode_images(tensors: dict, n_rows: int) -> tuple[dict, np.ndarray | None]:
    keys = [k for k in tensors if k.startswith(IMAGES_PREFIX)]
    if not keys:
        return {}, None
    row = tensors.pop(IMAGES_PREFIX + "row").numpy().astype(np.int64)
    images = {k[len(IMAGES_PREFIX):]: tensors.pop(k) for k in keys if k != IMAGES_PREFIX + "row"}
    if any(t.dim() != 2 or t.shape[0] != len(row) for t in images.values()) or (len(row) and (row.min() < 0 or row.max() >= n_rows)):
        raise ValueError("malformed image embeddings")
    return images, row


def rows_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name.removesuffix(SUFFIX) + ROWS_SUFFIX)


@dataclass
class Embeddings:
    """Embeddings of N items by one or more models, with the items' labels and provenance."""

    rows: pa.Table
    models: list[dict]
    tensors: dict  # "<model>/<layer>" -> float32 torch tensor (N, R, D)
    dataset: dict = field(default_factory=dict)
    split: str = "test"
    info: dict = field(default_factory=dict)  # category_names, rooms: {assignment: [room names]}
    path: Path | None = None
    triplets: Triplets | None = None  # labelled triplets among the rows (triplets datasets)
    # rows with several images (the items of a triplets dataset): every image's embedding,
    # "<model>/<layer>" -> float32 (M, D), and the row of every image, int64 (M,)
    images: dict = field(default_factory=dict)
    image_row: np.ndarray | None = None

    def __len__(self) -> int:
        return self.rows.num_rows

    def tensor(self, model: str, layer: str):
        return self.tensors[f"{model}/{layer}"]

    def column(self, name: str) -> np.ndarray:
        return self.rows.column(name).to_numpy(zero_copy_only=False)

    @property
    def ids(self) -> np.ndarray:
        return self.column("id").astype(str)

    @property
    def room_assignments(self) -> list[str]:
        return [c[len(ROOM_PREFIX):] for c in self.rows.column_names if c.startswith(ROOM_PREFIX)]

    def has(self, column: str) -> bool:
        return column in self.rows.column_names

    def labels_held(self) -> str:
        """What labels these embeddings have, in the user's terms, to end a sentence about a missing
        one: the columns of the ``--labels`` file it came with, else its label levels and rooms."""
        if self.info.get("labels_file"):
            return f"the labels file {self.info['labels_file']} has the columns: {', '.join(self.info.get('label_columns', [])) or 'none'}"
        internal = {"id", "split", "image", "frame", "key"}
        names = [c for c in self.rows.column_names if c not in internal and not c.startswith(ROOM_PREFIX)]
        if self.room_assignments:
            names.append(f"context (rooms: {', '.join(self.room_assignments)})")
        return f"these embeddings have the labels: {', '.join(names) or 'none'}"

    def rooms(self, which: str) -> np.ndarray:
        """int64 (N,) room of every row under assignment ``which`` (a stored one, or a room JSON
        file applied to the ``category`` column); -1 = no room."""
        if which in self.room_assignments:
            return self.column(ROOM_PREFIX + which).astype(np.int64)
        if Path(which).suffix == ".json" or Path(which).is_file():
            from simtool.formats.rooms import load_room_assignment

            if not self.has("category"):
                raise UserError(f"A room file needs a category label to map to rooms; {self.labels_held()}.")
            category = self.column("category").astype(np.int64)
            n_cat = max(len(self.info.get("category_names", [])), int(category.max()) + 1 if len(category) else 0)
            room_of_category, _ = load_room_assignment(which, n_cat)
            return room_of_category[category]
        have = ", ".join(self.room_assignments) or "none"
        raise UserError(f"These embeddings have no room assignment {which!r} (stored: {have}); pass --rooms with one of them or a room JSON file.")


def _table_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def check_out_path(path: str | Path) -> Path:
    path = Path(path)
    if path.suffix != SUFFIX:
        raise UserError(f"--out {path} must end in {SUFFIX} (row ids are written beside it as {ROWS_SUFFIX}).")
    return path


def write_embeddings(path: str | Path, emb: Embeddings, spec: dict | None = None) -> tuple[Path, Path]:
    """Write ``emb`` as ``path`` (.safetensors) and its rows file, both atomically."""
    from safetensors.torch import save_file

    path = check_out_path(path)
    n = len(emb)
    for key, t in emb.tensors.items():
        if t.dim() != 3 or t.shape[0] != n:
            raise ValueError(f"tensor {key} must be (N={n}, R, D), got {tuple(t.shape)}")
    table = emb.rows.replace_schema_metadata({"simtool": json.dumps(emb.info)})
    data = _table_bytes(table)
    meta = {
        "simtool": __version__,
        "kind": KIND,
        "format_version": str(FORMAT_VERSION),
        "models": json.dumps(emb.models),
        "dataset": json.dumps(emb.dataset),
        "split": emb.split,
        "n_rows": str(n),
        "rows_sha256": hashlib.sha256(data).hexdigest(),
        "spec": json.dumps(spec or {}),
    }
    tensors = {k: v.float().contiguous() for k, v in emb.tensors.items()}
    if emb.triplets is not None:
        extra, info = _encode_triplets(emb.triplets, n)
        tensors.update(extra)
        meta["triplets"] = json.dumps(info)
    if emb.images:
        tensors.update(_encode_images(emb, n))
    rp = rows_path(path)
    with atomic_path(rp) as tmp:
        tmp.write_bytes(data)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return path, rp


def numpy_magic(path: Path) -> bool:
    """Whether ``path`` starts as a ``.npy`` (``\\x93NUMPY``) or a ``.npz`` (a zip) file does."""
    with open(path, "rb") as fh:
        head = fh.read(6)
    return head == b"\x93NUMPY" or head[:4] == b"PK\x03\x04"


def read_embeddings(path: str | Path) -> Embeddings:
    """Read and validate an embeddings file written by :func:`write_embeddings`."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    again = "write it again with simtool save-embeddings"
    if path.is_dir():
        raise UserError(f"{path} is a directory, not an embeddings file; for a run directory write its embeddings first "
                        f"(simtool save-embeddings {path} --split all --out FILE.safetensors) and pass FILE.safetensors.")
    if not path.is_file():
        raise UserError(f"The embeddings file {path} does not exist; write one with simtool save-embeddings.")
    if numpy_magic(path):
        raise UserError(f"{path} is a NumPy array, not an embeddings file: it has no row ids to match; "
                        "pass a file written by simtool save-embeddings.")
    try:
        with safe_open(str(path), "pt") as fh:
            meta = dict(fh.metadata() or {})
    except Exception:  # noqa: BLE001 - safetensors has its own error types
        raise UserError(f"{path} is damaged or not a safetensors file; pass a file written by simtool save-embeddings.") from None
    if meta.get("kind") != KIND:
        raise UserError(f"{path} is not a simtool embeddings file; write one with simtool save-embeddings.")
    if meta.get("format_version") != str(FORMAT_VERSION):
        raise UserError(f"{path} is an embeddings file of format version {meta.get('format_version', 1)}; "
                        f"this simtool reads version {FORMAT_VERSION}: {again}.")
    rp = rows_path(path)
    if not rp.is_file():
        raise UserError(f"The rows file {rp} of {path} is missing; copy it along with the embeddings or {again}.")
    data = rp.read_bytes()
    if hashlib.sha256(data).hexdigest() != meta.get("rows_sha256"):
        raise UserError(f"The rows file {rp} does not belong to {path} (damaged or from another export); {again}.")
    table = pq.read_table(pa.BufferReader(data))
    try:
        tensors = load_file(str(path), device="cpu")
        models = json.loads(meta["models"])
        dataset = json.loads(meta.get("dataset", "{}"))
        info = json.loads((table.schema.metadata or {}).get(b"simtool", b"{}"))
        triplets = _decode_triplets(tensors, meta, int(meta.get("n_rows", table.num_rows)))
        images, image_row = _decode_images(tensors, int(meta.get("n_rows", table.num_rows)))
    except Exception:  # noqa: BLE001
        raise UserError(f"{path} is damaged (its tensors or metadata cannot be read); {again}.") from None
    n = int(meta.get("n_rows", table.num_rows))
    for key, t in tensors.items():
        if t.dim() != 3 or t.shape[0] != n or table.num_rows != n:
            raise UserError(f"{path} is damaged ({key} has shape {tuple(t.shape)} for {table.num_rows} rows); {again}.")
    return Embeddings(rows=table.replace_schema_metadata(None), models=models, tensors=tensors, dataset=dataset,
                      split=meta.get("split", "test"), info=info, path=path,
                      triplets=triplets, images=images, image_row=image_row)


def _codes(values: np.ndarray) -> np.ndarray:
    _, inverse = np.unique(values.astype(str), return_inverse=True)
    return inverse.reshape(-1).astype(np.int64)


def read_labels_table(path: str | Path, need: str) -> pa.Table:
    """A labels file as it is: parquet by its ``.parquet`` suffix, else CSV with a header row.
    ``need`` completes the sentence of the error for a missing file (what to pass instead)."""
    import pyarrow.csv as pacsv

    path = Path(path)
    if not path.is_file():
        raise UserError(f"The labels file {path} does not exist; {need}.")
    try:
        return pq.read_table(path) if path.suffix == ".parquet" else pacsv.read_csv(path)
    except (pa.ArrowException, OSError) as exc:
        raise UserError(f"The labels file {path} cannot be read ({str(exc).splitlines()[0]}); pass a CSV with a header row or a parquet file.") from None


def read_labels(path: str | Path, n: int) -> pa.Table:
    """A labels file (CSV or parquet, one row per embedding) as a rows table.

    Columns named ``context`` (or ``room``), ``category``, ``object`` become the levels and a
    ``class`` column the class of each item (for ``evaluate --type classes``); any values, turned
    into integer codes. ``id`` and ``split`` are kept when present.
    """
    table = read_labels_table(path, "pass a CSV or parquet file with one row per embedding")
    if table.num_rows != n:
        raise UserError(f"The labels file {path} has {table.num_rows} rows for {n} embeddings; it needs one row per embedding, in order.")
    cols = {c.lower(): c for c in table.column_names}
    out: dict[str, pa.Array] = {}
    out["id"] = pa.array(table.column(cols["id"]).to_numpy(zero_copy_only=False).astype(str)) if "id" in cols else pa.array([str(i) for i in range(n)])
    out["split"] = pa.array(table.column(cols["split"]).to_numpy(zero_copy_only=False).astype(str)) if "split" in cols else pa.array(["test"] * n)
    for level in LEVEL_COLUMNS:
        if level in cols:
            out[level] = pa.array(_codes(table.column(cols[level]).to_numpy(zero_copy_only=False)))
    ctx = cols.get("context", cols.get("room"))
    if ctx is not None:
        out[ROOM_PREFIX + "labels"] = pa.array(_codes(table.column(ctx).to_numpy(zero_copy_only=False)))
    if "class" in cols:
        out["class"] = pa.array(_codes(table.column(cols["class"]).to_numpy(zero_copy_only=False)))
    if len(out) == 2:
        raise UserError(f"The labels file {path} has none of the label columns context, category, object, class (it has: {', '.join(table.column_names)}).")
    return pa.table(out)


def load_arrays(path: str | Path, labels: str | Path | None, labels_hint: str, repetitions: bool = False) -> tuple[dict, int]:
    """The layers of a plain array target as ``(tensors, n)``: ``{"<stem>/<layer>": (N, R, D) float32}``
    from a ``.npy`` (one layer, ``embedding``) or an ``.npz`` (one array per layer). Arrays are (N, D)
    (R = 1), or also (N, R, D) with ``repetitions``. ``labels`` must be given; ``labels_hint`` says
    what the labels file holds. Any problem is one sentence."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise UserError(f"The array file {path} does not exist; pass a .npy or .npz file.")
    if labels is None:
        raise UserError(f"A plain array ({path.name}) needs --labels FILE: {labels_hint}.")
    if not numpy_magic(path):
        raise UserError(f"{path} is not a NumPy file (it does not start as .npy or .npz files do); write the array with numpy.save or numpy.savez.")
    try:
        loaded = np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "pickle" in str(exc):
            raise UserError(f"{path} holds Python objects, which simtool never unpickles; save a numeric array with numpy.save.") from None
        raise UserError(f"{path} cannot be read as a NumPy array ({str(exc).splitlines()[0]}); write it again with numpy.save.") from None
    except OSError as exc:
        raise UserError(f"{path} cannot be read as a NumPy array ({str(exc).splitlines()[0]}); write it again with numpy.save.") from None
    layers = {"embedding": loaded} if isinstance(loaded, np.ndarray) else {k: loaded[k] for k in loaded.files}
    ndims, shape = ((2, 3), "(N, D) or (N, R, D)") if repetitions else ((2,), "(N, D)")
    n = None
    tensors = {}
    for layer, arr in layers.items():
        if arr.ndim not in ndims or not np.issubdtype(arr.dtype, np.number):
            raise UserError(f"{path} ({layer}) has shape {arr.shape} and dtype {arr.dtype}; it must be a numeric {shape} array.")
        if n is not None and arr.shape[0] != n:
            raise UserError(f"The arrays in {path} have different numbers of rows ({n} and {arr.shape[0]}); "
                            f"use one {shape} array per layer with the same rows.")
        n = arr.shape[0]
        if n == 0 or arr.shape[-1] == 0:
            raise UserError(f"{path} ({layer}) has shape {arr.shape}: no embeddings to evaluate; pass an array with rows and columns.")
        if not np.isfinite(arr).all():
            raise UserError(f"{path} ({layer}) holds NaN or infinite values; clean the embeddings first.")
        t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
        tensors[f"{path.stem}/{layer}"] = t if t.dim() == 3 else t.unsqueeze(1)
    return tensors, n


def read_array(path: str | Path, labels: str | Path | None) -> Embeddings:
    """A plain ``.npy`` (N, D) array, or an ``.npz`` of (N, D) arrays (one per layer), with labels."""
    path = Path(path)
    tensors, n = load_arrays(path, labels, "a CSV or parquet file with one row per embedding and columns named after levels (context, category, object)")
    layers = [k.split("/", 1)[1] for k in tensors]
    name = path.stem
    rows = read_labels(labels, n)
    model = {"name": name, "run": str(path), "method": None, "preset": None, "seed": None,
             "spec": {}, "layers": layers, "finished": True, "context": {"rooms": "labels"}}
    return Embeddings(rows=rows, models=[model], tensors=tensors,
                      dataset={"name": Path(labels).stem, "fingerprint": "", "kind": "labels"}, split="test",
                      info={"labels_file": str(labels), "label_columns": read_labels_table(labels, "").column_names}, path=path)
