"""Preparing the images of a build: read one source file (or HDF5 element), check it decodes,
resize and re-encode it. Runs in worker processes."""

from __future__ import annotations

import io
import os
import re
from typing import Sequence

import numpy as np

KEPT_FORMATS = ("JPEG", "PNG")

_ADDRESS = re.compile(r"<[^<>]* at 0x[0-9a-fA-F]+>")


def _first_line(exc: BaseException) -> str:
    """``Type: first line of the message``, without object addresses (rejected.txt must be reproducible)."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    text = _ADDRESS.sub("the data", text)
    return f"{type(exc).__name__}{': ' + text if text else ''}"


def prepare_image(data: bytes, max_side: int, quality: int = 90) -> tuple[bytes | None, str | None]:
    """Encoded image bytes -> ``(bytes to store, None)``, or ``(None, reason)`` for a bad file.

    ``max_side`` 0 keeps the original bytes (after checking that they decode completely). Otherwise
    a JPEG or PNG whose longer side is at most ``max_side`` is kept as it is, and anything else is
    resized (aspect ratio kept, longer side = ``max_side``, Lanczos) and re-encoded as JPEG of
    ``quality``. Large JPEGs are decoded in Pillow's draft mode (DCT scaling) straight to about the
    target size. Greyscale stays greyscale; other modes become RGB. EXIF orientation is not applied
    (the stored pixels are the file's, as with ``max_side`` 0).
    """
    from PIL import Image

    try:
        img = Image.open(io.BytesIO(data))
        w, h = img.size
        fmt = img.format
        if max_side <= 0 or (max(w, h) <= max_side and fmt in KEPT_FORMATS):
            if fmt == "JPEG":
                img.draft(img.mode, (max(1, w // 8), max(1, h // 8)))  # still reads every block
            img.load()
            return bytes(data), None
        scale = min(1.0, max_side / max(w, h))
        tw, th = max(1, round(w * scale)), max(1, round(h * scale))
        if fmt == "JPEG" and scale < 1:
            img.draft("L" if img.mode == "L" else "RGB", (tw, th))
        img.load()
        if img.mode not in ("RGB", "L"):
            img = img.convert("RGB")
        if img.size != (tw, th):
            img = img.resize((tw, th), Image.LANCZOS)
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=int(quality))
        return buf.getvalue(), None
    except Image.UnidentifiedImageError:
        return None, "not an image (Pillow cannot identify the file)"
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for bad bytes
        return None, f"not a readable image ({_first_line(exc)})"


_H5_FILES: dict[str, object] = {}


def read_source(reader: tuple[str, str], key: str, member: int) -> bytes:
    """The encoded bytes of one plan row: a file under a root, or element ``member`` of an HDF5 dataset."""
    kind, root = reader
    if kind == "files":
        with open(os.path.join(root, key), "rb") as fh:
            return fh.read()
    if kind == "h5":
        import h5py

        fh = _H5_FILES.get(root)
        if fh is None:
            fh = _H5_FILES[root] = h5py.File(root, "r")
        return np.asarray(fh[key][int(member)], dtype=np.uint8).tobytes()
    raise ValueError(f"unknown reader {kind!r}")


def process_batch(reader: tuple[str, str], keys: Sequence[str], members: Sequence[int], max_side: int, quality: int) -> list[tuple[bytes | None, str | None]]:
    """Read and prepare a batch of plan rows (runs in a worker process)."""
    out = []
    for key, member in zip(keys, members):
        try:
            data = read_source(reader, key, member)
        except KeyError:
            out.append((None, "missing from the source file"))
            continue
        except Exception as exc:  # noqa: BLE001 - OSError, h5py errors, ...
            out.append((None, f"cannot be read ({_first_line(exc)})"))
            continue
        out.append(prepare_image(data, max_side, quality))
    return out
