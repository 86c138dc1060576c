"""Counter-based random generators and the named streams every method draws from.

Data order and augmentation use generators derived from a key such as ``(seed, epoch, step,
rank, stream)``, so a resumed run draws exactly what an uninterrupted one would, independently of
how many random numbers were consumed before the interruption. The last element of a key names
*what* is drawn (:class:`Streams`), so two draws never share a stream by accident.
"""

from __future__ import annotations

import random

import numpy as np
import torch


class Streams:
    """The stream tags of the methods' keys (the values are part of every run's reproducibility:
    changing one changes what the runs that use it draw)."""

    SUBSAMPLE = 101  # time_ssl: which training objects the subsample keeps; key (seed, tag)
    STREAM = 202  # time_ssl: the experience stream; key (seed, epoch or 0, tag)
    EPOCH_ORDER = 303  # every image method: the order of an epoch's samples; key (seed, epoch, tag)
    PAIR_CROPS = 404  # time_ssl: worker-side crops of anchors and positives; key (seed, epoch, rank, step, tag)
    ITEM_IMAGE = 404  # direct: which image of an item a triplet member shows; key (seed, epoch, step, rank, tag)
    IMAGE_CROPS = 505  # distill, direct: worker-side crops; key (seed, epoch, rank, step, tag)
    VAL_TRIPLETS = 606  # teacher, direct: the held-out fraction of the training triplets; key (seed, tag)
    AUGMENT = 707  # distill, direct: device-side augmentation; key (seed, epoch, step, rank, tag)
    MINER = 808  # distill: the relational loss's batch miner; key (seed, epoch, step, rank, tag)
    VAL_GROUPS = 909  # distill: the held-out fraction of the training items or classes; key (seed, tag)
    VAL_TRIPLES = 910  # distill: the index triples of FSTR/FSTRT; key (seed, tag)
    VAL_IMAGES = 911  # distill, direct: the images of the validation item triplets (K per triplet, drawn once); key (seed, tag)
    TEACHER_ORDER = 111  # teacher: each repetition's shuffle of the training triplets; key (seed, epoch, repetition, tag)
    # time_ssl's device-side augmentation draws from the untagged key (seed, epoch, step, rank).


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
