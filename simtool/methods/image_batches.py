"""Image batches for the image methods of the triplet route (``distill``, ``direct``).

Training images follow the paper's preprocessing (Dondera, CVPR 2024 workshops, after torchvision
and timm): RandomResizedCrop to ``image_size`` (area ``min_crop``..1, aspect 3/4..4/3), horizontal
flip with probability ``flip``, colour jitter with probability ``jitter`` (the ViT configs: 1.0,
brightness/contrast/saturation 0.4), then normalisation with the backbone's mean and std.
Evaluation images are the central ``eval_crop`` of each side (the backbone's ``crop_pct``: 0.875
for ResNet-50 = 224/256, 0.9 for ViT) resized to ``image_size``, exactly what ``save-embeddings``
does with the model card's ``input``.

Frames already stored square at the training size (the toy world) are decoded once into memory and
cropped on the training device; otherwise every crop is decoded from the stored frame in DataLoader
workers (Pillow's draft mode for JPEGs). Random draws come from generators keyed by
``(seed, epoch, step, rank)``, so a resumed run draws the same crops.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Literal, Optional, Union

import numpy as np
import torch
from pydantic import Field

from simtool.data.augment import color_jitter, normalize, random_hflip, random_resized_crop, to_float
from simtool.data.images import center_box, sample_crop_box
from simtool.engine.seed import numpy_rng, seed_worker, torch_generator
from simtool.errors import UserError
from simtool.specs.base import Spec
from simtool.specs.common import ImageLoadingSpec

CACHE_LIMIT_BYTES = 4 * 2**30


class AugmentSpec(Spec):
    """Training augmentation (probabilities in [0, 1])."""

    min_crop: float = Field(0.08, gt=0, le=1, description="RandomResizedCrop area lower bound (torchvision's 0.08)")
    flip: float = Field(0.5, ge=0, le=1)
    jitter: float = Field(0.0, ge=0, le=1, description="probability of colour jitter (the ViT configs: 1.0)")
    brightness: float = Field(0.4, ge=0)
    contrast: float = Field(0.4, ge=0)
    saturation: float = Field(0.4, ge=0)
    hue: float = Field(0.0, ge=0, le=0.5)


class ImageDataSpec(ImageLoadingSpec):
    """What every image method's ``data`` section has beyond ``path``."""

    image_size: int = Field(224, ge=16, le=1024)
    eval_crop: Optional[float] = Field(None, gt=0, le=1, description="central fraction of each side at evaluation; default: the backbone's crop_pct")


@dataclass
class _Batch:
    step: int
    images: torch.Tensor  # uint8 (B, 3, S, S)
    error: str | None = None


class _Loader(torch.utils.data.Dataset):
    def __init__(self, plan, store, crop, key):
        self.plan, self.store, self.crop, self.key = plan, store, crop, key

    def __len__(self) -> int:
        return len(self.plan)

    def __getitem__(self, k: int) -> _Batch:
        step, idx = self.plan[k]
        try:
            if self.crop is None:
                images = self.store.load(idx)
            else:
                rng = numpy_rng(*self.key, step, 505)
                scale, ratio = self.crop
                images = self.store.load_crops(idx, lambda w, h: sample_crop_box(w, h, scale, ratio, rng))
        except UserError as exc:
            return _Batch(step, torch.zeros(0), str(exc))
        return _Batch(step, images)


def _identity(x):
    return x


class ImagePipeline:
    """Loads and augments batches of stored images (see the module docstring)."""

    def __init__(self, store, data: ImageDataSpec, augment: AugmentSpec, mean, std, crop_pct: float, train_images: np.ndarray, seed: int, rank: int):
        self.store, self.size, self.aug = store, data.image_size, augment
        self.mean, self.std = list(mean), list(std)
        self.eval_crop = float(data.eval_crop if data.eval_crop is not None else crop_pct)
        self.seed, self.rank = seed, rank
        probe = train_images[:: max(1, len(train_images) // 16)][:16]
        self.whole_frames = len(probe) > 0 and all(store.frame_size(i) == (self.size, self.size) for i in probe)
        cache = data.cache
        if cache == "auto":
            cache = "memory" if self.whole_frames and store.nbytes_decoded(len(np.unique(train_images))) <= CACHE_LIMIT_BYTES else "none"
        if cache == "memory":
            if not self.whole_frames:
                raise UserError(f"data.cache=memory needs images stored at the training size ({self.size}x{self.size}); these are not: use data.cache=none.")
            store.cache_all(train_images)
        self.on_device = store.cached or self.whole_frames
        workers = data.num_workers
        self.num_workers = 0 if store.cached else (min(8, max(1, (torch.get_num_threads() or 2) // 2)) if workers == "auto" else int(workers))

    def batches(self, epoch: int, plan: list[tuple[int, np.ndarray]]) -> Iterator[tuple[int, torch.Tensor]]:
        """``(step, uint8 images)`` for ``plan`` = [(step, image indices)], in order."""
        crop = None if self.on_device else ((self.aug.min_crop, 1.0), (3 / 4, 4 / 3))
        loader = torch.utils.data.DataLoader(_Loader(plan, self.store, crop, (self.seed, epoch, self.rank)), batch_size=None, shuffle=False,
                                             num_workers=self.num_workers if len(plan) > 1 else 0, collate_fn=_identity, worker_init_fn=seed_worker)
        for b in loader:
            if b.error:
                raise UserError(b.error)
            yield b.step, b.images

    def train_transform(self, x: torch.Tensor, epoch: int, step: int) -> torch.Tensor:
        """Augment a uint8 batch on its device (random crop there when the frames are whole)."""
        gen = torch_generator(self.seed, epoch, step, self.rank, 707)
        x = random_resized_crop(x, self.size, scale=(self.aug.min_crop, 1.0), generator=gen) if self.on_device else to_float(x)
        x = random_hflip(x, self.aug.flip, generator=gen)
        if self.aug.jitter > 0:
            x = color_jitter(x, self.aug.jitter, self.aug.brightness, self.aug.contrast, self.aug.saturation, self.aug.hue, generator=gen)
        return normalize(x, self.mean, self.std)

    def eval_images(self, image_indices: np.ndarray, device: torch.device) -> torch.Tensor:
        box = center_box(self.eval_crop)
        return normalize(self.store.load_crops(image_indices, lambda w, h: box).to(device), self.mean, self.std)

    def card_input(self) -> dict:
        return {"image_size": self.size, "transform": "center_crop", "crop_frac": self.eval_crop, "mean": self.mean, "std": self.std}


@torch.no_grad()
def embed_images(model, pipeline: ImagePipeline, image_indices: np.ndarray, device: torch.device, batch: int = 256) -> torch.Tensor:
    """Evaluation embeddings ``(n, E)`` (CPU float32) of stored images."""
    was = model.training
    model.eval()
    out = []
    for s in range(0, len(image_indices), batch):
        out.append(model(pipeline.eval_images(image_indices[s : s + batch], device)).float().cpu())
    model.train(was)
    return torch.cat(out) if out else torch.zeros(0, 0)
