"""Self-supervised object similarity from time and context (Aubret et al., ICDL 2024).

The experience stream (:mod:`simtool.data.stream`) is built once per run from the training
objects (``stream.redraw: per_epoch`` draws a new one every epoch); every epoch takes a fresh
permutation of its positions as anchors, ``loop.batch_size`` of them per step over all processes.
The positive of anchor position ``i`` is stream position ``clamp(i + s)``, ``|s| <= rotation_range``
(contrast mode ``time``; ``stream.sampling`` picks the original's other modes: ``interval_uniform``
jumps to a random clip of the anchor's room, or of another with probability ``p_change_room``, when
the offset leaves the clip; ``uniform``, ``randomwalk`` and ``last`` build no stream and take the
positive from the anchor's own video), the same frame (``classic``) or the stream neighbour with classic
augmentations (``combined``); the classic presets train on the same stream frames as the time
presets. Every image is a RandomResizedCrop of its stored frame (taken on the device when frames
are stored at the training size, in the data loader from the encoded frame otherwise). Losses,
summed:

* ``classic`` module: NT-Xent between the ``time`` head outputs of anchors and positives;
* ``labels`` module: NT-Xent between the ``label`` head outputs of the anchors and the learned
  embedding of their category label;
* ``linear_eval`` module: cross-entropy of linear category and context probes on detached
  backbone features of the anchors (they measure, they do not shape the representation).

Under torchrun the NT-Xent negatives are the embeddings of every process (gathered with
gradients) and BatchNorm is synchronised, so N processes train as one process with the global
batch would.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Literal, Union

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, field_validator, model_validator

from simtool.data.augment import IMAGENET_MEAN, IMAGENET_STD, BatchAugment, normalize
from simtool.data.images import center_box
from simtool.data.loading import StoreLoader
from simtool.data.stream import WITHIN_VIDEO, build_stream, sample_positives, video_stream
from simtool.engine.distributed import all_gather, convert_sync_batchnorm
from simtool.engine.method import StepInfo
from simtool.errors import UserError
from simtool.losses import create_loss
from simtool.methods._common import DatasetMethod, StepPlan, rank_share
from simtool.methods._registry import register_method
from simtool.models import create_model
from simtool.rng import Streams, numpy_rng, torch_generator
from simtool.specs.augment import AugmentSpec
from simtool.specs.base import Spec
from simtool.specs.common import BaseDataSpec, CommonSpec, ImageLoadingSpec

# ---------------------------------------------------------------------------------------------
# the method's part of the train spec
# ---------------------------------------------------------------------------------------------

Module = Literal["classic", "labels", "linear_eval"]


class DataSpec(BaseDataSpec, ImageLoadingSpec):
    rooms: str = Field("semantic", description="'semantic', 'random', or a room-assignment JSON file")
    image_size: int = Field(224, ge=16, le=1024)
    subsample: float = Field(0.3, gt=0, le=1, description="fraction of training objects kept (see subsample_mode)")
    subsample_mode: Literal["balanced_draw", "per_category"] = Field(
        "balanced_draw",
        description="balanced_draw: int(subsample x N) draws with replacement, weights 1/(objects of the category), as the original; "
        "per_category: ceil(subsample x n) objects of every category",
    )
    eval_crop: float = Field(0.875, gt=0, le=1, description="test transform: the central fraction of each side, resized (0.875 = the original's 224/256)")


class StreamSpec(Spec):
    crop_number: float = Field(7.0, ge=0, description="clip length is 1 + Poisson(crop_number)")
    p_change_room: float = Field(0.1, ge=0, le=1)
    chunk_ratio_limit: float = Field(0.8, gt=0, le=1, description="stop the stream after this fraction of clips")
    rotation_range: int = Field(2, ge=0, description="positive = stream position i+s, |s| <= rotation_range")
    redraw: Literal["once", "per_epoch"] = Field("once", description="once: one stream per run, as the original; per_epoch: a new stream every epoch")
    sampling: Literal["interval", "interval_uniform", "uniform", "randomwalk", "last"] = Field(
        "interval",
        description="interval: positive = stream position i+s, as the original; interval_uniform: an offset that leaves the clip jumps to a random clip "
        "of the anchor's room (another room with probability p_change_room); uniform | randomwalk | last: no stream, every training frame an anchor, "
        "its positive from the same video (a uniform frame | the next one, the previous at the end | the last)",
    )


class ContrastSpec(Spec):
    mode: Literal["time", "classic", "combined"] = "time"
    temperature: float = Field(0.1, gt=0)
    global_negatives: bool = Field(True, description="under torchrun, gather every process's embeddings (with gradients) before NT-Xent")
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
    sync_bn: bool = Field(True, description="under torchrun, BatchNorm statistics of the global batch")
    zero_init_last: bool = Field(False, description="timm's zero init of each residual block's last BatchNorm (the original does not)")


class ProbeSpec(Spec):
    train_on: Literal["anchors", "both"] = Field("anchors", description="the online linear probes train on the anchor half (as the original) or on both halves")


class TimeSSLSpec(CommonSpec):
    """Train spec of the self-supervised time/context route (Aubret et al., ICDL 2024)."""

    method: Literal["time_ssl"] = "time_ssl"
    modules: list[Module] = ["classic", "labels", "linear_eval"]
    data: DataSpec = DataSpec()
    stream: StreamSpec = StreamSpec()
    contrast: ContrastSpec = ContrastSpec()
    labels: LabelsSpec = LabelsSpec()
    model: ModelSpec = ModelSpec()
    probe: ProbeSpec = ProbeSpec()

    @field_validator("modules")
    @classmethod
    def _modules(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("at least one of 'classic', 'labels', 'linear_eval' is needed")
        if len(set(v)) != len(v):
            raise ValueError("modules are listed more than once")
        return v

    @model_validator(mode="after")
    def _trainable(self) -> TimeSSLSpec:
        if not ({"classic", "labels"} & set(self.modules)):
            raise ValueError("modules need 'classic' or 'labels': linear probes alone train no representation")
        return self


# ---------------------------------------------------------------------------------------------
# the method
# ---------------------------------------------------------------------------------------------


def balanced_draw(object_category: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """The original's object subsample: ``int(fraction * n)`` draws **with replacement** among the
    ``n`` objects, object o drawn with probability proportional to 1 / (number of objects of its
    category), so every category is equally likely. Returns the sorted distinct drawn objects (an
    object drawn twice is kept once, so fewer than ``fraction`` of the objects survive)."""
    _, inverse, counts = np.unique(object_category, return_inverse=True, return_counts=True)
    weights = 1.0 / counts[inverse.reshape(-1)]
    k = max(int(fraction * len(object_category)), 1)
    return np.unique(rng.choice(len(object_category), size=k, replace=True, p=weights / weights.sum()))


def subsample_objects(objects: np.ndarray, categories: np.ndarray, fraction: float, rng: np.random.Generator, mode: str = "balanced_draw") -> np.ndarray:
    """Boolean mask (N,) of the rows whose object is kept for training.

    ``balanced_draw``: :func:`balanced_draw`; every category must keep an object (the original
    asserts it), a category left without one is one clear error. ``per_category``:
    ``ceil(fraction * n)`` objects of every category, drawn without replacement (simtool's first
    release). ``fraction >= 1`` keeps everything.
    """
    if fraction >= 1:
        return np.ones(len(objects), dtype=bool)
    pairs = np.unique(np.stack([categories, objects], 1), axis=0)  # one row per object
    if mode == "per_category":
        keep: list[int] = []
        for cat in np.unique(pairs[:, 0]):
            objs = pairs[pairs[:, 0] == cat, 1]
            k = max(1, int(np.ceil(fraction * len(objs))))
            keep.extend(int(o) for o in rng.choice(objs, size=k, replace=False))
        return np.isin(objects, np.asarray(keep, dtype=np.int64))
    drawn = balanced_draw(pairs[:, 0], fraction, rng)
    lost = sorted(set(pairs[:, 0].tolist()) - set(pairs[drawn, 0].tolist()))
    if lost:
        raise UserError(f"data.subsample={fraction} leaves category {lost[0]} without a training object "
                        f"({len(lost)} categor{'y' if len(lost) == 1 else 'ies'} lost); raise data.subsample or use data.subsample_mode=per_category.")
    return np.isin(objects, pairs[drawn, 1])


@dataclass
class PairBatch:
    anchor: torch.Tensor  # uint8 (B, 3, S, S): whole stored frames (fast path) or crops already taken
    positive: torch.Tensor | None  # uint8 (B, 3, S, S) or None when no positive is needed
    category: torch.Tensor  # int64 (B,) of the anchors
    room: torch.Tensor  # int64 (B,)
    pos_category: torch.Tensor  # int64 (B,) of the positives
    pos_room: torch.Tensor


def _gather(x: torch.Tensor, info, on: bool) -> torch.Tensor:
    return all_gather(x, info) if on else x


@register_method("time_ssl", TimeSSLSpec)
class TimeSSL(DatasetMethod):
    """See the module docstring. Differences from the original code are listed in the README."""

    needs = "a video dataset; the toy world is used only from the CLI default"

    def setup(self) -> None:
        spec, dist, ds = self.spec, self.dist, self.ds
        room_of_category, self.room_names, self.rooms_source = ds.rooms(spec.data.rooms)
        self.room_of_category = room_of_category
        self.room = room_of_category[ds.category]
        usable = self.room >= 0
        train = (ds.split == "train") & usable
        if not train.any():
            raise UserError(f"The dataset {ds.root} has no training frames in a room; check its split column and room assignment.")
        train_rows = np.flatnonzero(train)  # the subsample is drawn among training objects only
        keep = subsample_objects(ds.object[train_rows], ds.category[train_rows], spec.data.subsample, numpy_rng(spec.seed, Streams.SUBSAMPLE),
                                 spec.data.subsample_mode)
        self.train_rows = train_rows[keep]
        self.val_rows = np.flatnonzero((ds.split == "val") & usable)
        size = spec.data.image_size
        self.store = ds.images(size)
        # Fast path: frames already square at the training size (the toy world) are decoded once
        # and cropped on the device; otherwise every crop is taken from the stored frame in a worker.
        self.loader = StoreLoader(self.store, size, spec.data.cache, spec.data.num_workers, ds.index[self.train_rows])

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
            zero_init_last=spec.model.zero_init_last,
        )
        if dist.enabled and spec.model.sync_bn:
            self.model = convert_sync_batchnorm(self.model)
        self.time_loss = create_loss("ntxent", temperature=spec.contrast.temperature)
        self.label_loss = create_loss("ntxent", temperature=spec.labels.temperature)
        mode = spec.contrast.mode
        on_device = self.loader.on_device
        if mode == "time":
            self.min_crop = spec.contrast.time_min_crop
            self.aug = BatchAugment(size, "crop", min_crop=self.min_crop, crop=on_device)
        else:
            self.min_crop = spec.contrast.augment.min_crop
            self.aug = BatchAugment(size, "classic", spec.contrast.augment, crop=on_device)
        self.need_positive = self.use_time
        self.positive_from_stream = mode in ("time", "combined")
        # Every epoch has the same number of steps, fixed by the first epoch's stream.
        self._streams: dict[int, object] = {}
        first = self._stream(0)
        self.plan = StepPlan.of(spec, dist)
        self.plan = StepPlan(self.plan.per_device, self.plan.world, len(first) // self.plan.global_batch)
        self.per_device, self._steps = self.plan.per_device, self.plan.steps

    # -- data ---------------------------------------------------------------------------------
    def _stream(self, epoch: int):
        """The experience stream: one per run (default, as the original) or one per epoch; for the
        within-video sampling modes every training frame, video after video (no stream is built)."""
        s = self.spec.stream
        rows = self.train_rows
        if s.sampling in WITHIN_VIDEO:
            if 0 not in self._streams:
                self._streams = {0: video_stream(self.ds.object[rows], self.ds.frame[rows], self.room[rows])}
            return self._streams[0]
        key = epoch if s.redraw == "per_epoch" else 0
        if key not in self._streams:
            self._streams = {key: build_stream(
                self.ds.object[rows], self.ds.frame[rows], self.room[rows],
                crop_number=s.crop_number, p_change_room=s.p_change_room, chunk_ratio_limit=s.chunk_ratio_limit,
                rng=numpy_rng(self.spec.seed, key, Streams.STREAM),
            )}
        return self._streams[key]

    def steps_per_epoch(self) -> int:
        return self._steps

    @property
    def images_per_step(self) -> int:
        return self.per_device * (2 if self.need_positive else 1)

    def epoch_plan(self, epoch: int) -> list[tuple[np.ndarray, np.ndarray | None]]:
        """This rank's (anchor rows, positive rows) for every step of ``epoch``; deterministic.

        Anchors are a fresh permutation of the stream's positions every epoch (with a within-video
        ``stream.sampling`` mode: of every training frame); positives as ``stream.sampling`` says
        (:func:`~simtool.data.stream.sample_positives`). The global batch of a step is the
        concatenation of the ranks' batches in rank order.
        """
        stream = self._stream(epoch)
        rng = numpy_rng(self.spec.seed, epoch, Streams.EPOCH_ORDER)
        needed = self.plan.needed
        order = rng.permutation(len(stream))
        while len(order) < needed:
            order = np.concatenate([order, rng.permutation(len(stream))])
        anchors = order[:needed]
        if self.positive_from_stream:
            st = self.spec.stream
            positives = sample_positives(stream, anchors, st.sampling, st.rotation_range, rng, st.p_change_room)
        else:
            positives = anchors
        anchors = rank_share(anchors, self.plan, self.dist.rank)
        positives = rank_share(positives, self.plan, self.dist.rank)
        plan = []
        for a, p in zip(anchors, positives):
            rows_a = self.train_rows[stream.rows[a]]
            rows_p = self.train_rows[stream.rows[p]] if self.need_positive else None
            plan.append((rows_a, rows_p))
        return plan

    def batches(self, epoch: int, start_step: int) -> Iterator[PairBatch]:
        steps = self.epoch_plan(epoch)[start_step:]
        index = self.ds.index
        plan = [(start_step + k, (index[a], None if p is None else index[p])) for k, (a, p) in enumerate(steps)]
        loaded = self.loader.batches(plan, self.min_crop, (self.spec.seed, epoch, self.dist.rank), Streams.PAIR_CROPS, self.device.type == "cuda")
        for (a, p), batch in zip(steps, loaded):
            pos = p if p is not None else a
            anchor, positive = batch.images
            yield PairBatch(anchor=anchor, positive=positive, category=torch.from_numpy(self.ds.category[a]), room=torch.from_numpy(self.room[a]),
                            pos_category=torch.from_numpy(self.ds.category[pos]), pos_room=torch.from_numpy(self.room[pos]))

    # -- training -----------------------------------------------------------------------------
    def training_step(self, model, batch: PairBatch, info: StepInfo):
        gen = torch_generator(self.spec.seed, info.epoch, info.step, info.dist.rank)
        dev = info.device
        xa = self.aug(batch.anchor.to(dev, non_blocking=True), gen)
        xp = self.aug(batch.positive.to(dev, non_blocking=True), gen) if self.need_positive else None
        return self.loss(model, xa, xp, batch.category.to(dev), batch.room.to(dev), batch.pos_category.to(dev), batch.pos_room.to(dev), info)

    def loss(self, model, xa, xp, category, room, pos_category, pos_room, info):
        """Loss of augmented anchors ``xa`` and positives ``xp`` (B, 3, S, S) of this process.

        NT-Xent negatives come from the global batch (every process's embeddings, gathered with
        gradients) unless ``contrast.global_negatives`` is off; BatchNorm statistics are per half
        and, under torchrun with ``model.sync_bn``, of the global half-batch.
        """
        spec = self.spec
        B = xa.shape[0]
        if xp is not None:
            x = torch.cat([xa, xp])
            halves = 2 if spec.model.per_half else 1
        else:
            x, halves = xa, 1
        out = model(x, halves=halves, categories=category if self.use_labels else None, probes=self.use_probes)
        loss = x.new_zeros(())
        logs: dict[str, float] = {}
        glob = spec.contrast.global_negatives
        if self.use_time:
            z = out["time.out"]
            l_time = self.time_loss(_gather(z[:B], info.dist, glob), _gather(z[B:], info.dist, glob))
            loss = loss + l_time
            logs["loss/time"] = float(l_time.detach())
        if self.use_labels:
            l_lab = self.label_loss(_gather(out["label.out"][:B], info.dist, glob), _gather(out["label.embed"], info.dist, glob))
            loss = loss + l_lab
            logs["loss/labels"] = float(l_lab.detach())
        if self.use_probes:
            n = B if spec.probe.train_on == "anchors" else out["probe.category"].shape[0]
            cat_t = torch.cat([category, pos_category])[:n]
            room_t = torch.cat([room, pos_room])[:n]
            logits_c, logits_r = out["probe.category"][:n].float(), out["probe.context"][:n].float()
            l_cat = F.cross_entropy(logits_c, cat_t)
            l_room = F.cross_entropy(logits_r, room_t)
            loss = loss + l_cat + l_room
            logs["probe/category_acc"] = float((logits_c.argmax(1) == cat_t).float().mean())
            logs["probe/context_acc"] = float((logits_r.argmax(1) == room_t).float().mean())
        return loss, logs

    @torch.no_grad()
    def evaluate(self, model, epoch: int, device: torch.device) -> dict[str, float]:
        if not self.use_probes or len(self.val_rows) == 0:
            return {}
        model.eval()
        correct_c = correct_r = 0
        box = center_box(self.spec.data.eval_crop)
        for start in range(0, len(self.val_rows), 256):
            rows = self.val_rows[start : start + 256]
            x = normalize(self.store.load_crops(self.ds.index[rows], lambda w, h: box).to(device))
            out = model(x, layers=("backbone",), probes=True)
            correct_c += int((out["probe.category"].argmax(1).cpu() == torch.from_numpy(self.ds.category[rows])).sum())
            correct_r += int((out["probe.context"].argmax(1).cpu() == torch.from_numpy(self.room[rows])).sum())
        n = len(self.val_rows)
        return {"val/probe_category_acc": correct_c / n, "val/probe_context_acc": correct_r / n}

    def card(self) -> dict:
        return {
            "input": {"image_size": self.spec.data.image_size, "transform": "center_crop", "crop_frac": self.spec.data.eval_crop,
                      "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)},
            "dataset": self.ds.ref(),
            "context": {"rooms": self.spec.data.rooms, "room_names": list(self.room_names)},
        }
