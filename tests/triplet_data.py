"""Tiny generated triplets datasets for the triplet-route tests (planted embeddings, optional images)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.conftest import cli


def planted(n_items: int, dim: int = 4, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.random((n_items, dim)) ** 2
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def write_triplets(path: Path, truth: np.ndarray, n: int, kind: str, seed: int = 0, noise: float = 0.05) -> None:
    """``n`` triplets of ``kind`` judged from ``truth`` by a noisy observer, as a text file of item ids."""
    rng = np.random.default_rng([seed, 1])
    m = len(truth)
    lines = []
    sim = truth @ truth.T
    for _ in range(n):
        a, b, c = rng.choice(m, 3, replace=False)
        if kind == "directed":
            if sim[a, b] + rng.normal(0, noise) < sim[a, c]:
                b, c = c, b
        else:
            pairs = [(a, b, c), (a, c, b), (b, c, a)]
            scores = [sim[p, q] + rng.normal(0, noise) for p, q, _ in pairs]
            a, b, c = pairs[int(np.argmax(scores))]
        lines.append(f"item{a} item{b} item{c}")
    path.write_text("\n".join(lines) + "\n")


def write_images(folder: Path, truth: np.ndarray, size: int = 16) -> None:
    """One PNG per item whose colour encodes the first three coordinates of its planted vector."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(5)
    for i, v in enumerate(truth):
        base = (np.clip(v[:3] / max(v[:3].max(), 1e-6), 0, 1) * 255).astype(np.uint8)
        img = np.broadcast_to(base, (size, size, 3)).copy()
        img = np.clip(img.astype(int) + rng.integers(-10, 10, img.shape), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(folder / f"item{i}.png")


def build(root: Path, n_items: int = 40, n_triplets: int = 3000, kind: str = "odd-one-out", split: str = "0.7,0.1,0.2",
          split_by: str = "triplet", images: bool = False, seed: int = 0, dim: int = 4) -> tuple[Path, np.ndarray]:
    """Build a triplets dataset directory under ``root``; returns ``(its path, the planted embedding)``."""
    root.mkdir(parents=True, exist_ok=True)
    truth = planted(n_items, dim, seed)
    write_triplets(root / "t.txt", truth, n_triplets, kind, seed)
    args = ["build-data", "--format", "triplets", "--triplets", root / "t.txt", "--kind", kind,
            "--split", split, "--split-by", split_by, "--out", root / "data"]
    if images:
        write_images(root / "images", truth)
        args += ["--images", root / "images"]
    else:
        (root / "items.csv").write_text("id,name\n" + "".join(f"item{i},thing {i}\n" for i in range(n_items)))
        args += ["--items", root / "items.csv", "--set", "triplets.id_column=id"]
    result = cli(*args)
    assert result.exit_code == 0, result.output
    return root / "data", truth
