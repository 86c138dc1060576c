"""Image batches for the image methods of the triplet route (``distill``, ``direct``).

Training images follow the paper's preprocessing (Dondera, CVPR 2024 workshops, after torchvision
and timm): RandomResizedCrop to ``image_size`` (area ``min_crop``..1, aspect 3/4..4/3), horizontal
flip with probability ``flip``, colour jitter with probability ``jitter`` (the ViT configs: 1.0,
brightness/contrast/saturation 0.4), then normalisation with the backbone's mean and std
(:class:`~simtool.data.augment.BatchAugment` in ``classic`` mode, :data:`StudentAugmentSpec`).
Evaluation images follow the backbone's own evaluation transform (``data.eval_transform:
resize_crop``): the short side resized to ``image_size / eval_crop`` and the centre square taken
(``eval_crop`` = the backbone's ``crop_pct``: 0.875 for ResNet-50 = 224/256, 0.9 for ViT), with
the backbone's interpolation (bicubic for timm's ViTs), as the original; exactly what
``save-embeddings`` does with the model card's ``input``.

Images are read by :class:`~simtool.data.loading.StoreLoader`: frames already stored square at the
training size (the toy world) are decoded once into memory and cropped on the training device;
otherwise every crop is decoded from the stored frame in DataLoader workers. Random draws come from
generators keyed by ``(seed, epoch, step, rank)``, so a resumed run draws the same crops.
"""

from __future__ import annotations

from typing import Iterator, Literal, Optional, Union

import numpy as np
import torch
from pydantic import Field

from simtool.data.augment import BatchAugment, normalize
from simtool.data.images import eval_box_fn
from simtool.data.loading import StoreLoader
from simtool.rng import Streams, torch_generator
from simtool.specs.augment import CropColourSpec, augment_spec
from simtool.specs.base import Spec
from simtool.specs.common import ImageLoadingSpec

StudentAugmentSpec = augment_spec(
    "StudentAugmentSpec", "Training augmentation of the image students (the paper's: torchvision's RandomResizedCrop area 0.08..1, flip; "
    "colour jitter in the ViT configs); probabilities in [0, 1].", base=CropColourSpec, min_crop=0.08, jitter=0.0, hue=0.0)


class ImageDataSpec(ImageLoadingSpec):
    """What every image method's ``data`` section has beyond ``path``."""

    image_size: int = Field(224, ge=16, le=1024)
    eval_crop: Optional[float] = Field(None, gt=0, le=1, description="evaluation crop fraction; default: the backbone's crop_pct (0.875 ResNet, 0.9 ViT)")
    eval_transform: Literal["resize_crop", "center_box"] = Field(
        "resize_crop", description="resize_crop: the centred square of eval_crop of the short side, resized with the backbone's interpolation "
                                   "(torchvision Resize(S / crop) + CenterCrop(S), the original's); center_box: the central eval_crop of each side "
                                   "resized to a square, bilinear (simtool's first release; distorts non-square images)")
    samples_per_triplet: int = Field(1, ge=1, le=100, description="image triplets drawn per item triplet, one random image of each item: per epoch "
                                                                  "(direct) and when validated or scored (the paper: 2 THINGS, 3 IHSJC; 1 when items "
                                                                  "have one image)")


class StudentSpec(Spec):
    """The image network of the triplet route (:class:`~simtool.models.student.StudentModel`)."""

    backbone: str = "resnet50.tv_in1k"
    pretrained: Union[bool, str] = True
    dim: int = Field(128, ge=1)
    frozen: Literal["none", "bn", "all"] = "bn"
    nonlinear_layers: int = Field(0, ge=0)
    head: Literal["linear", "vits"] = "linear"


def create_student(spec: StudentSpec):
    from simtool.models import create_model

    return create_model("student", backbone=spec.backbone, dim=spec.dim, frozen=spec.frozen, nonlinear_layers=spec.nonlinear_layers,
                        head=spec.head, pretrained=spec.pretrained)


class ImagePipeline:
    """Loads and augments batches of stored images (see the module docstring)."""

    def __init__(self, store, data: ImageDataSpec, augment, mean, std, crop_pct: float, train_images: np.ndarray, seed: int, rank: int,
                 pin_memory: bool = False, interpolation: str = "bilinear"):
        self.size = data.image_size
        self.mean, self.std = list(mean), list(std)
        self.eval_crop = float(data.eval_crop if data.eval_crop is not None else crop_pct)
        self.eval_transform = "resize_crop" if data.eval_transform == "resize_crop" else "center_crop"
        self.interpolation = (interpolation if interpolation in ("bilinear", "bicubic") else "bilinear") if self.eval_transform == "resize_crop" else "bilinear"
        self.seed, self.rank, self.pin_memory = seed, rank, pin_memory
        self.store = store
        self.loader = StoreLoader(store, self.size, data.cache, data.num_workers, train_images)
        self.min_crop = augment.min_crop
        self.aug = BatchAugment(self.size, "classic", augment, crop=self.loader.on_device, mean=self.mean, std=self.std)

    def batches(self, epoch: int, plan: list[tuple[int, np.ndarray]]) -> Iterator[tuple[int, torch.Tensor]]:
        """``(step, uint8 images)`` for ``plan`` = [(step, image indices)], in order."""
        for b in self.loader.batches([(step, (idx,)) for step, idx in plan], self.min_crop, (self.seed, epoch, self.rank), Streams.IMAGE_CROPS,
                                     self.pin_memory):
            yield b.step, b.images[0]

    def train_transform(self, x: torch.Tensor, epoch: int, step: int) -> torch.Tensor:
        """Augment a uint8 batch on its device (random crop there when the frames are whole)."""
        return self.aug(x, torch_generator(self.seed, epoch, step, self.rank, Streams.AUGMENT))

    def eval_images(self, image_indices: np.ndarray, device: torch.device) -> torch.Tensor:
        crops = self.store.load_crops(image_indices, eval_box_fn(self.eval_transform, self.eval_crop), self.interpolation)
        return normalize(crops.to(device), self.mean, self.std)

    def card_input(self) -> dict:
        return {"image_size": self.size, "transform": self.eval_transform, "crop_frac": self.eval_crop, "interpolation": self.interpolation,
                "mean": self.mean, "std": self.std}


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


def item_means(emb: torch.Tensor, groups: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
    """Mean embedding of every group (sorted group ids) and the group ids."""
    uniq, inverse = np.unique(groups, return_inverse=True)
    out = torch.zeros(len(uniq), emb.shape[1], dtype=emb.dtype)
    out.index_add_(0, torch.from_numpy(inverse.reshape(-1)), emb)
    counts = torch.from_numpy(np.bincount(inverse.reshape(-1), minlength=len(uniq))).to(emb.dtype).unsqueeze(1)
    return out / counts, uniq
