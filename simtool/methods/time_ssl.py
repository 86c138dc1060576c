"""Self-supervised object similarity from time and context (Aubret et al., ICDL 2024).

Per step, ``batch_size`` anchor positions are drawn from this epoch's experience stream
(:mod:`simtool.data.stream`); the positive of anchor position ``i`` is stream position
``clamp(i + s)``, ``|s| <= rotation_range`` (contrast mode ``time``), the same frame (``classic``)
or the stream neighbour with classic augmentations (``combined``). Losses, summed:

* ``classic`` module: NT-Xent between the ``time`` head outputs of anchors and positives;
* ``labels`` module: NT-Xent between the ``label`` head outputs of the anchors and the learned
  embedding of their category label;
* ``linear_eval`` module: cross-entropy of linear category and context probes on detached
  backbone features (they measure, they do not shape the representation).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Iterator, Literal, Union

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, field_validator, model_validator
from rich.console import Console

from simtool.data.augment import BatchAugment, ClassicAugment
from simtool.data.stream import build_stream, positive_positions
from simtool.engine.distributed import DistInfo
from simtool.engine.method import Method, StepInfo
from simtool.engine.seed import numpy_rng, seed_worker, torch_generator
from simtool.errors import UserError
from simtool.formats.dataset_dir import Dataset
from simtool.losses import create_loss
from simtool.methods import register_method
from simtool.models import create_model
from simtool.specs.base import Spec
from simtool.specs.common import BaseDataSpec, CommonSpec

CACHE_LIMIT_BYTES = 4 * 2**30

# ---------------------------------------------------------------------------------------------
# the method's part of the train spec
# ---------------------------------------------------------------------------------------------

Module = Literal["classic", "labels", "linear_eval"]


class DataSpec(BaseDataSpec):
    rooms: str = Field("semantic", description="'semantic', 'random', or a room-assignment JSON file")
    image_size: int = Field(224, ge=16, le=1024)
    subsample: float = Field(0.3, gt=0, le=1, description="fraction of training objects, category-balanced")
    cache: Literal["auto", "memory", "none"] = "auto"
    num_workers: Union[int, Literal["auto"]] = "auto"


class StreamSpec(Spec):
    crop_number: float = Field(7.0, ge=0, description="clip length is 1 + Poisson(crop_number)")
    p_change_room: float = Field(0.1, ge=0, le=1)
    chunk_ratio_limit: float = Field(0.8, gt=0, le=1, description="stop the stream after this fraction of clips")
    rotation_range: int = Field(2, ge=0, description="positive = stream position i+s, |s| <= rotation_range")


class AugmentSpec(Spec):
    """Classic (SimCLR) augmentations; probabilities in [0, 1]."""

    min_crop: float = Field(0.5, gt=0, le=1, description="RandomResizedCrop scale lower bound")
    flip: float = Field(0.5, ge=0, le=1)
    jitter: float = Field(0.8, ge=0, le=1)
    brightness: float = Field(0.4, ge=0)
    contrast: float = Field(0.4, ge=0)
    saturation: float = Field(0.4, ge=0)
    hue: float = Field(0.1, ge=0, le=0.5)
    grayscale: float = Field(0.2, ge=0, le=1)
    blur: float = Field(0.0, ge=0, le=1)


class ContrastSpec(Spec):
    mode: Literal["time", "classic", "combined"] = "time"
    temperature: float = Field(0.1, gt=0)
    time_min_crop: float = Field(0.5, gt=0, le=1, description="RandomResizedCrop scale lower bound in time mode")
    augment: AugmentSpec = AugmentSpec()


class LabelsSpec(Spec):
    temperature: float = Field(0.1, gt=0)


class ModelSpec(Spec):
    backbone: str = "resnet50"
    pretrained: Union[bool, str] = False
    head_hidden: int = Field(1024, ge=1)
    head_out: int = Field(512, ge=1)
    per_half: bool = Field(True, description="anchors and positives through BatchNorm separately")


class TimeSSLSpec(CommonSpec):
    """Train spec of the self-supervised time/context route (Aubret et al., ICDL 2024)."""

    method: Literal["time_ssl"] = "time_ssl"
    modules: list[Module] = ["classic", "labels", "linear_eval"]
    data: DataSpec = DataSpec()
    stream: StreamSpec = StreamSpec()
    contrast: ContrastSpec = ContrastSpec()
    labels: LabelsSpec = LabelsSpec()
    model: ModelSpec = ModelSpec()

    @field_validator("modules")
    @classmethod
    def _modules(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("at least one of 'classic', 'labels', 'linear_eval' is needed")
        if len(set(v)) != len(v):
            raise ValueError("modules are listed more than once")
        return v

    @model_validator(mode="after")
    def _trainable(self) -> "TimeSSLSpec":
        if not ({"classic", "labels"} & set(self.modules)):
            raise ValueError("modules need 'classic' or 'labels': linear probes alone train no representation")
        return self


# ---------------------------------------------------------------------------------------------
# the method
# ---------------------------------------------------------------------------------------------


def subsample_objects(objects: np.ndarray, categories: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Boolean mask (N,) keeping ``ceil(fraction * n)`` random objects of every category (at least one)."""
    if fraction >= 1:
        return np.ones(len(objects), dtype=bool)
    keep: set[int] = set()
    pairs = np.unique(np.stack([categories, objects], 1), axis=0)
    for cat in np.unique(pairs[:, 0]):
        objs = pairs[pairs[:, 0] == cat, 1]
        k = max(1, int(np.ceil(fraction * len(objs))))
        keep.update(int(o) for o in rng.choice(objs, size=k, replace=False))
    return np.isin(objects, np.fromiter(keep, dtype=np.int64))


@dataclass
class PairBatch:
    anchor: torch.Tensor  # uint8 (B, 3, S, S)
    positive: torch.Tensor | None  # uint8 (B, 3, S, S) or None when no positive is needed
    category: torch.Tensor  # int64 (B,) of the anchors
    room: torch.Tensor  # int64 (B,)
    pos_category: torch.Tensor  # int64 (B,) of the positives
    pos_room: torch.Tensor

    def pin_memory(self) -> "PairBatch":
        """Called by the DataLoader when ``pin_memory=True`` (CUDA), so host→device copies overlap."""
        return PairBatch(*(getattr(self, f.name).pin_memory() if getattr(self, f.name) is not None else None for f in fields(self)))


class _PairDataset(torch.utils.data.Dataset):
    """Item k = the k-th batch of (anchor rows, positive rows); decoding happens here (in workers)."""

    def __init__(self, batches: list[tuple[np.ndarray, np.ndarray | None]], store, image_index, category, room):
        self.batches, self.store, self.image_index, self.category, self.room = batches, store, image_index, category, room

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, k: int) -> PairBatch:
        a, p = self.batches[k]
        pos = p if p is not None else a
        return PairBatch(
            anchor=self.store.load(self.image_index[a]),
            positive=self.store.load(self.image_index[p]) if p is not None else None,
            category=torch.from_numpy(self.category[a]),
            room=torch.from_numpy(self.room[a]),
            pos_category=torch.from_numpy(self.category[pos]),
            pos_room=torch.from_numpy(self.room[pos]),
        )


def _identity(x):
    return x


@register_method("time_ssl", TimeSSLSpec)
class TimeSSL(Method):
    def __init__(self, spec: TimeSSLSpec, device: torch.device, dist: DistInfo, console: Console):
        self.spec, self.device, self.dist, self.console = spec, device, dist, console
        if spec.data.path is None:
            raise UserError("No dataset: pass --data DIR (the toy world is used only from the CLI default).")
        ds = Dataset(spec.data.path)
        self.ds = ds
        room_of_category, self.room_names, self.rooms_source = ds.rooms(spec.data.rooms)
        self.room_of_category = room_of_category
        self.room = room_of_category[ds.category]
        usable = self.room >= 0
        train = (ds.split == "train") & usable
        if not train.any():
            raise UserError(f"The dataset {ds.root} has no training frames in a room; check its split column and room assignment.")
        keep = subsample_objects(ds.object, ds.category, spec.data.subsample, numpy_rng(spec.seed, 101))
        self.train_rows = np.flatnonzero(train & keep)
        self.val_rows = np.flatnonzero((ds.split == "val") & usable)
        self.store = ds.images(spec.data.image_size)
        needed = np.concatenate([self.train_rows, self.val_rows])
        cache = spec.data.cache
        if cache == "auto":
            cache = "memory" if self.store.nbytes_decoded(len(needed)) <= CACHE_LIMIT_BYTES else "none"
        if cache == "memory":
            self.store.cache_all(ds.index[needed])
        workers = spec.data.num_workers
        self.num_workers = 0 if self.store.cached else (min(8, max(1, (torch.get_num_threads() or 2) // 2)) if workers == "auto" else int(workers))

        modules = spec.modules
        self.use_time = "classic" in modules
        self.use_labels = "labels" in modules
        self.use_probes = "linear_eval" in modules
        self.model = create_model(
            "time_context",
            backbone=spec.model.backbone,
            n_categories=ds.n_categories,
            n_rooms=len(self.room_names),
            modules=list(modules),
            pretrained=spec.model.pretrained,
            head_hidden=spec.model.head_hidden,
            head_out=spec.model.head_out,
        )
        self.time_loss = create_loss("ntxent", temperature=spec.contrast.temperature)
        self.label_loss = create_loss("ntxent", temperature=spec.labels.temperature)
        size = spec.data.image_size
        mode = spec.contrast.mode
        if mode == "time":
            self.aug = BatchAugment(size, "crop", min_crop=spec.contrast.time_min_crop)
        else:
            self.aug = BatchAugment(size, "classic", ClassicAugment(**spec.contrast.augment.model_dump()))
        self.eval_aug = BatchAugment(size, "eval")
        self.need_positive = self.use_time
        self.positive_from_stream = mode in ("time", "combined")
        B, W = spec.loop.batch_size, dist.world_size
        # Epoch length is fixed from the first epoch's stream so every epoch has the same number of steps.
        first = self._stream(0)
        self._steps = len(first) // (B * W)

    # -- data ---------------------------------------------------------------------------------
    def _stream(self, epoch: int):
        s = self.spec.stream
        rows = self.train_rows
        return build_stream(
            self.ds.object[rows], self.ds.frame[rows], self.room[rows],
            crop_number=s.crop_number, p_change_room=s.p_change_room, chunk_ratio_limit=s.chunk_ratio_limit,
            rng=numpy_rng(self.spec.seed, epoch, 202),
        )

    def steps_per_epoch(self) -> int:
        return self._steps

    @property
    def images_per_step(self) -> int:
        return self.spec.loop.batch_size * (2 if self.need_positive else 1)

    def epoch_plan(self, epoch: int) -> list[tuple[np.ndarray, np.ndarray | None]]:
        """This rank's (anchor rows, positive rows) for every step of ``epoch``; deterministic."""
        B, W, rank = self.spec.loop.batch_size, self.dist.world_size, self.dist.rank
        stream = self._stream(epoch)
        rng = numpy_rng(self.spec.seed, epoch, 303)
        needed = self._steps * B * W
        order = rng.permutation(len(stream))
        while len(order) < needed:
            order = np.concatenate([order, rng.permutation(len(stream))])
        anchors = order[:needed]
        if self.positive_from_stream:
            positives = positive_positions(anchors, len(stream), self.spec.stream.rotation_range, rng)
        else:
            positives = anchors
        anchors = anchors.reshape(self._steps, W, B)[:, rank]
        positives = positives.reshape(self._steps, W, B)[:, rank]
        plan = []
        for a, p in zip(anchors, positives):
            rows_a = self.train_rows[stream.rows[a]]
            rows_p = self.train_rows[stream.rows[p]] if self.need_positive else None
            plan.append((rows_a, rows_p))
        return plan

    def batches(self, epoch: int, start_step: int) -> Iterator[PairBatch]:
        plan = self.epoch_plan(epoch)[start_step:]
        dataset = _PairDataset(plan, self.store, self.ds.index, self.ds.category, self.room)
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=None, shuffle=False, num_workers=self.num_workers, collate_fn=_identity,
            worker_init_fn=seed_worker, pin_memory=self.device.type == "cuda", persistent_workers=False,
        )
        yield from loader

    # -- training -----------------------------------------------------------------------------
    def training_step(self, model, batch: PairBatch, info: StepInfo):
        spec = self.spec
        gen = torch_generator(spec.seed, info.epoch, info.step, info.dist.rank)
        dev = info.device
        xa = self.aug(batch.anchor.to(dev, non_blocking=True), gen)
        category = batch.category.to(dev)
        B = xa.shape[0]
        if self.need_positive:
            xp = self.aug(batch.positive.to(dev, non_blocking=True), gen)
            x = torch.cat([xa, xp])
            halves = 2 if spec.model.per_half else 1
        else:
            x, halves = xa, 1
        out = model(x, halves=halves, categories=category if self.use_labels else None, probes=self.use_probes)
        loss = x.new_zeros(())
        logs: dict[str, float] = {}
        if self.use_time:
            z = out["time.out"]
            l_time = self.time_loss(z[:B], z[B:])
            loss = loss + l_time
            logs["loss/time"] = float(l_time.detach())
        if self.use_labels:
            l_lab = self.label_loss(out["label.out"][:B], out["label.embed"])
            loss = loss + l_lab
            logs["loss/labels"] = float(l_lab.detach())
        if self.use_probes:
            n = out["probe.category"].shape[0]
            cat_t = torch.cat([category, batch.pos_category.to(dev)])[:n]
            room_t = torch.cat([batch.room.to(dev), batch.pos_room.to(dev)])[:n]
            l_cat = F.cross_entropy(out["probe.category"].float(), cat_t)
            l_room = F.cross_entropy(out["probe.context"].float(), room_t)
            loss = loss + l_cat + l_room
            logs["probe/category_acc"] = float((out["probe.category"].argmax(1) == cat_t).float().mean())
            logs["probe/context_acc"] = float((out["probe.context"].argmax(1) == room_t).float().mean())
        return loss, logs

    @torch.no_grad()
    def evaluate(self, model, epoch: int, device: torch.device) -> dict[str, float]:
        if not self.use_probes or len(self.val_rows) == 0:
            return {}
        model.eval()
        correct_c = correct_r = 0
        for start in range(0, len(self.val_rows), 256):
            rows = self.val_rows[start : start + 256]
            x = self.eval_aug(self.store.load(self.ds.index[rows]).to(device))
            out = model(x, layers=("backbone",), probes=True)
            correct_c += int((out["probe.category"].argmax(1).cpu() == torch.from_numpy(self.ds.category[rows])).sum())
            correct_r += int((out["probe.context"].argmax(1).cpu() == torch.from_numpy(self.room[rows])).sum())
        n = len(self.val_rows)
        return {"val/probe_category_acc": correct_c / n, "val/probe_context_acc": correct_r / n}

    def card(self) -> dict:
        return {
            "input": {"image_size": self.spec.data.image_size, "transform": "center_crop", "crop_frac": 1.0, "normalize": "imagenet"},
            "dataset": self.ds.ref(),
            "context": {"rooms": self.spec.data.rooms, "room_names": list(self.room_names)},
        }
