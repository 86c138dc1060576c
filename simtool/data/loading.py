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

How the loader runs (never what it loads) is set by the engine for the loaders a method builds, as
plain values (:class:`LoaderOptions`, from the train spec's ``engine`` section, in force while
:func:`loader_options` is): page-locked batches, workers kept from one epoch to the next, batches
prefetched per worker, and ``decode="device"``: the workers only read the stored bytes and draw the
crop boxes, and the main process decodes every JPEG of a step in one batched call on the training
device (``torchvision.io.decode_jpeg``, nvJPEG on CUDA) and crops there
(:meth:`~simtool.formats.image_store.ImageStore.decode_on`), so the CPU cores are not the limit.
"""

from __future__ import annotations

import contextlib
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch

from simtool.data.images import sample_crop_box
from simtool.errors import UserError
from simtool.rng import numpy_rng, seed_worker

CACHE_LIMIT_BYTES = 4 * 2**30
RATIO = (3 / 4, 4 / 3)  # RandomResizedCrop's aspect ratio range


@dataclass(frozen=True)
class LoaderOptions:
    """How a :class:`StoreLoader` runs (see the module docstring); the defaults are the plain loader.

    ``pin_memory`` None leaves it to the method (which asks for it on CUDA); ``prefetch`` None is
    torch's default (2 batches per worker); ``decode`` is ``"workers"`` or ``"device"`` (on
    ``device``, the training device)."""

    device: str = "cpu"
    pin_memory: bool | None = None
    persistent_workers: bool = False
    prefetch: int | None = None
    decode: str = "workers"


_OPTIONS: ContextVar[LoaderOptions | None] = ContextVar("simtool_loader_options", default=None)


@contextlib.contextmanager
def loader_options(options: LoaderOptions):
    """The options every :class:`StoreLoader` made inside this block runs with."""
    token = _OPTIONS.set(options)
    try:
        yield options
    finally:
        _OPTIONS.reset(token)


@dataclass
class LoadedBatch:
    """One step's images: uint8 ``(B, 3, S, S)`` per planned image set (None where none was planned)."""

    step: int
    images: tuple
    error: str | None = None  # a decoding problem met in a worker, raised in the main process

    def pin_memory(self) -> LoadedBatch:
        """Called by the DataLoader when ``pin_memory=True`` (CUDA), so host→device copies overlap."""
        return LoadedBatch(self.step, tuple(x.pin_memory() if isinstance(x, torch.Tensor) else x for x in self.images), self.error)


@dataclass(frozen=True)
class _Item:
    """What a worker is asked for: the images of one planned step."""

    step: int
    sets: tuple  # image indices (or None) per image set
    crop: tuple | None  # ((scale lo, hi), ratio) of the RandomResizedCrop boxes; None: whole frames
    key: tuple
    tag: int
    encoded: bool  # hand over the stored bytes and boxes (decode="device") instead of decoded images


class _PlanDataset(torch.utils.data.Dataset):
    """Item = the images of one planned step (:class:`_Item`; decoding happens here, in workers)."""

    def __init__(self, store):
        self.store = store

    def _images(self, indices: np.ndarray, item: _Item, rng):
        box_fn = None
        if item.crop is not None:
            scale, ratio = item.crop
            box_fn = lambda w, h: sample_crop_box(w, h, scale, ratio, rng)  # noqa: E731
        if item.encoded:
            return self.store.encoded_images(indices, box_fn)
        return self.store.load(indices) if box_fn is None else self.store.load_crops(indices, box_fn)

    def __getitem__(self, item: _Item) -> LoadedBatch:
        rng = numpy_rng(*item.key, item.step, item.tag) if item.crop is not None else None
        try:
            images = tuple(None if idx is None else self._images(idx, item, rng) for idx in item.sets)
        except UserError as exc:  # DataLoader would wrap it in a traceback; hand the sentence over instead
            return LoadedBatch(item.step, (), str(exc))
        return LoadedBatch(item.step, images)


class _PlanSampler(torch.utils.data.Sampler):
    """Yields the :class:`_Item` of every planned step; refilled for every epoch, so a DataLoader with
    persistent workers serves every epoch of a run."""

    def __init__(self):
        self.items: list[_Item] = []

    def __iter__(self):
        return iter(list(self.items))

    def __len__(self) -> int:
        return len(self.items)


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
        self.options = _OPTIONS.get() or LoaderOptions()
        if self.options.decode == "device":
            try:
                import torchvision.io  # noqa: F401 - decode_jpeg with a list of images: torchvision 0.19 or later
            except ImportError:
                raise UserError("engine.decode=device decodes JPEGs with torchvision, which is not installed; set engine.decode=workers.") from None
        self._persistent: tuple | None = None  # (DataLoader, sampler) kept across epochs with persistent_workers

    @property
    def on_device(self) -> bool:
        """Whether random crops are taken on the training device (whole frames), not in the loader."""
        return self.store.cached or self.whole_frames

    @property
    def decodes_on_device(self) -> bool:
        """Whether JPEGs are decoded on the training device (``decode="device"``, frames not cached)."""
        return self.options.decode == "device" and not self.store.cached

    def _loader(self, workers: int, pin: bool):
        """A DataLoader over a :class:`_PlanSampler`; one kept for the whole run with persistent workers."""
        persistent = self.options.persistent_workers and workers > 0
        if persistent and self._persistent is not None and self._persistent[2] == pin:
            return self._persistent[0], self._persistent[1]
        sampler = _PlanSampler()
        extra = {"prefetch_factor": self.options.prefetch} if workers > 0 and self.options.prefetch else {}
        loader = torch.utils.data.DataLoader(
            _PlanDataset(self.store), batch_size=None, sampler=sampler, num_workers=workers, collate_fn=_identity,
            worker_init_fn=seed_worker, pin_memory=pin, persistent_workers=persistent, **extra,
        )
        if persistent:
            self._persistent = (loader, sampler, pin)
        return loader, sampler

    def batches(self, plan: Sequence[tuple[int, tuple]], min_crop: float, key: tuple, tag: int, pin_memory: bool = False) -> Iterator[LoadedBatch]:
        """The :class:`LoadedBatch` of every ``(step, (indices or None, ...))`` of ``plan``, in order.

        Off the fast path every image is a RandomResizedCrop (area ``min_crop``..1) of its stored
        frame, from the generator ``numpy_rng(*key, step, tag)`` (one per step, drawn in plan order).
        With ``decode="device"`` the images arrive on the training device, else on the host
        (page-locked with ``pin_memory``, which the loader's options may override)."""
        crop = None if self.on_device else ((min_crop, 1.0), RATIO)
        encoded = self.decodes_on_device
        items = [_Item(int(step), tuple(sets), crop, tuple(key), tag, encoded) for step, sets in plan]
        if not items:
            return
        pin = self.options.pin_memory if self.options.pin_memory is not None else pin_memory
        pin = bool(pin) and not encoded and torch.cuda.is_available()
        workers = self.num_workers if len(items) > 1 else 0
        loader, sampler = self._loader(workers, pin)
        sampler.items = items
        device = torch.device(self.options.device)
        for batch in loader:
            if batch.error:
                raise UserError(batch.error)
            if encoded:
                batch = LoadedBatch(batch.step, tuple(None if x is None else self.store.decode_on(x, device) for x in batch.images))
            yield batch
