"""Seeding. Data order and augmentation use counter-based generators derived from
``(seed, epoch, step, rank)``, so a resumed run draws exactly what an uninterrupted one would,
independently of how many random numbers were consumed before the interruption."""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def numpy_rng(*key: int) -> np.random.Generator:
    return np.random.default_rng([int(k) for k in key])


def torch_generator(*key: int) -> torch.Generator:
    """A CPU generator seeded from a tuple of ints (mixed through NumPy's SeedSequence)."""
    seed = int(np.random.SeedSequence([int(k) for k in key]).generate_state(1, dtype=np.uint64)[0] >> 1)
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seeds Python and NumPy from torch's per-worker seed."""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)
