"""Loading the stored images of a method's training steps: one loader, one cache policy.

Every image method plans its steps as ``(step, image indices...)`` (one array per image set of the
step: the anchors and positives of time_ssl, the batch of a student) and hands the plan to a
:class:`StoreLoader`, which decides once, for the images it will train on, how they are read:

* **frames already square at the training size** (the toy world) are the fast path: decoded once
  into memory when they fit in :data:`CACHE_LIMIT_BYTES` (``data.cache: auto``) and cropped on the
  training device (``on_device``); ``data.cache: memory`` insists on it, ``none`` decodes per step;
* **larger frames** are cropped from the stored frame in DataLoader workers (Pillow's draft mode for
  JPEGs), each crop a RandomResizedCrop box drawn from a generator keyed by the step.

Worker count: ``data.num_workers`` (``auto``: half the CPU threads, at most 8; none with the memory
cache). Decoding problems in a worker come back as one sentence (raised in the main process).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch

from simtool.data.images import sample_crop_box
from simtool.errors import UserError
from simtool.rng import numpy_rng, seed_worker

CACHE_LIMIT_BYTES = 4 * 2**30
RATIO = (3 / 4, 4 / 3)  # RandomResizedCrop's aspect ratio range


@dataclass
class LoadedBatch:
    """One step's images: uint8 ``(B, 3, S, S)`` per planned image set (None where none was planned)."""

    step: int
    images: tuple
    error: str | None = None  # a decoding problem met in a worker, raised in the main process

    def pin_memory(self) -> LoadedBatch:
        """Called by the DataLoader when ``pin_memory=True`` (CUDA), so host→device copies overlap."""
        return LoadedBatch(self.step, tuple(x.pin_memory() if isinstance(x, torch.Tensor) else x for x in self.images), self.error)


class _PlanDataset(torch.utils.data.Dataset):
    """Item k = the images of the k-th planned step (decoding happens here, in workers)."""

    def __init__(self, plan, store, crop: tuple | None, key: tuple, tag: int):
        self.plan, self.store, self.crop, self.key, self.tag = plan, store, crop, key, tag

    def __len__(self) -> int:
        return len(self.plan)

    def _images(self, indices: np.ndarray, rng) -> torch.Tensor:
        if self.crop is None:
            return self.store.load(indices)
        scale, ratio = self.crop
        return self.store.load_crops(indices, lambda w, h: sample_crop_box(w, h, scale, ratio, rng))

    def __getitem__(self, k: int) -> LoadedBatch:
        step, sets = self.plan[k]
        rng = numpy_rng(*self.key, step, self.tag) if self.crop is not None else None
        try:
            images = tuple(None if idx is None else self._images(idx, rng) for idx in sets)
        except UserError as exc:  # DataLoader would wrap it in a traceback; hand the sentence over instead
            return LoadedBatch(step, (), str(exc))
        return LoadedBatch(step, images)


def _identity(x):
    return x


class StoreLoader:
    """Reads the planned images of an image store (see the module docstring).

    ``train_images``: the image indices training will read (a probe of them decides whether the
    frames are whole, the cache holds them). ``cache`` / ``num_workers``: the spec's ``data.cache``
    and ``data.num_workers``.
    """

    def __init__(self, store, size: int, cache: str, num_workers, train_images: np.ndarray):
        self.store, self.size = store, int(size)
        train_images = np.asarray(train_images, dtype=np.int64)
        probe = train_images[:: max(1, len(train_images) // 16)][:16]
        self.whole_frames = len(probe) > 0 and all(store.frame_size(i) == (self.size, self.size) for i in probe)
        if cache == "auto":
            cache = "memory" if self.whole_frames and store.nbytes_decoded(len(np.unique(train_images))) <= CACHE_LIMIT_BYTES else "none"
        if cache == "memory":
            if not self.whole_frames:
                raise UserError(f"data.cache=memory needs images stored at the training size ({self.size}x{self.size}); these are not: "
                                "use data.cache=none (crops are then taken from the stored frames).")
            store.cache_all(train_images)
        self.num_workers = 0 if store.cached else (min(8, max(1, (torch.get_num_threads() or 2) // 2)) if num_workers == "auto" else int(num_workers))

    @property
    def on_device(self) -> bool:
        """Whether random crops are taken on the training device (whole frames), not in the loader."""
        return self.store.cached or self.whole_frames

    def batches(self, plan: Sequence[tuple[int, tuple]], min_crop: float, key: tuple, tag: int, pin_memory: bool = False) -> Iterator[LoadedBatch]:
        """The :class:`LoadedBatch` of every ``(step, (indices or None, ...))`` of ``plan``, in order.

        Off the fast path every image is a RandomResizedCrop (area ``min_crop``..1) of its stored
        frame, from the generator ``numpy_rng(*key, step, tag)`` (one per step, drawn in plan order)."""
        crop = None if self.on_device else ((min_crop, 1.0), RATIO)
        loader = torch.utils.data.DataLoader(
            _PlanDataset(list(plan), self.store, crop, tuple(key), tag), batch_size=None, shuffle=False,
            num_workers=self.num_workers if len(plan) > 1 else 0, collate_fn=_identity, worker_init_fn=seed_worker,
            pin_memory=pin_memory, persistent_workers=False,
        )
        for batch in loader:
            if batch.error:
                raise UserError(batch.error)
            yield batch
