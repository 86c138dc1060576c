"""Teacher-student training: an image student learns the teachers' dense relations (``*_se_*`` configs).

Reference: R. Dondera, "Towards Learning Image Similarity from General Triplet Labels", CVPR 2024
workshops. Every batch of B images is embedded by the student (:class:`~simtool.models.student.StudentModel`)
and a relational loss (``rkd``, ``relaxed_*``, ``stmr``, ``mtt``; :mod:`simtool.losses`) matches the
student's pairwise distances, angles or triplet margins among all B images to those of the teachers,
``teacher (B, R, D_t)``, averaged over the R teacher runs.

Teachers:

* ``data.teacher: FILE`` (or a list of files): an embeddings file written by ``save-embeddings`` from
  teacher runs (``(N, R, D)`` per model). Its rows are matched to the student's images **by id**:
  the item id for a ``triplets`` dataset, so an item's teacher vector is broadcast to every image of
  the item (THINGS concepts, the toy world's objects); the image id for a ``classes`` dataset. Every
  model of the file (``data.teacher_models`` picks some) with layer ``data.teacher_layer`` is stacked
  along R. A missing id, NaN values or models of different dimensions are one clear error.
* no file on a ``classes`` dataset (CUB, Cars, SOP): the one-hot class vector (R = 1), formed per
  batch over the batch's classes (the same distances as the C-dimensional one-hot, without a C x C
  matrix). Class batches are drawn as the paper's sampler: the classes in a fresh random order,
  ``data.per_class`` images of each, until the batch is full.

Splits: the student trains on the training items (or classes) and validates on the ``val`` ones; a
dataset without them (a THINGS build split by triplet, the class datasets' train/test) gets a seeded
``data.val_fraction`` of the training items (classes) held out, never the test split. Validation after
every epoch: ``val/fstrt`` and ``val/fstr`` (agreement with the mean teacher on ``validation.triplets``
index triples of validation images drawn once, ``|teacher margin| > validation.threshold``) with a teacher
file; ``val/precision_at_1`` (nearest neighbour of the same class) on a class dataset; ``val/accuracy`` on
the labelled validation triplets among validation items when there are at least 100 (an item = the mean of its
images' embeddings). ``checkpoint.best`` keeps the best epoch's weights (the presets: FSTRT, or P@1 for the
class datasets).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Literal, Optional, Union

import numpy as np
import torch
from pydantic import Field

from simtool.engine.method import StepInfo
from simtool.errors import UserError
from simtool.formats.dataset_dir import ClassesDataset, ImageRows, TripletsDataset
from simtool.methods._common import DatasetMethod, StepPlan, rank_share
from simtool.methods._images import ImageDataSpec, ImagePipeline, StudentAugmentSpec, StudentSpec, create_student, embed_images
from simtool.methods._registry import register_method
from simtool.methods._triplets import RelationalLossSpec, kind_codes, triplet_scores
from simtool.metrics.triplets import sample_image_triplets
from simtool.rng import Streams, numpy_rng, torch_generator
from simtool.specs.base import Spec
from simtool.specs.common import BaseDataSpec, CommonSpec


class DistillDataSpec(BaseDataSpec, ImageDataSpec):
    teacher: Optional[Union[str, list[str]]] = Field(None, description="teacher embeddings file(s) from save-embeddings; "
                                                                       "none = one-hot classes (classes datasets)")
    teacher_models: Optional[list[str]] = Field(None, description="models of the teacher file(s) to use (default: all)")
    teacher_layer: str = "embedding"
    val_fraction: float = Field(0.2, ge=0, lt=1, description="without val items (classes): this fraction of the training ones validates (seeded)")
    per_class: int = Field(2, ge=0, description="classes datasets: images per class in a batch (the paper's sampler); 0 = plain shuffle")
    last_batch: Optional[Literal["keep", "drop"]] = Field(
        None, description="the last, partial batch of an epoch: keep it (the original's plain shuffle, triplets datasets) or drop it "
                          "(the original's per-class sampler, classes datasets); default: as the original")


class ValidationSpec(Spec):
    triplets: int = Field(1_000_000, ge=1, description="index triples of validation images for FSTR/FSTRT (drawn once, as the original)")
    threshold: float = Field(0.2, ge=0, description="FSTRT counts the triples whose |mean teacher margin| exceeds it")
    distinct: bool = Field(True, description="draw triples of three different images (the original allowed repeats)")


class DistillSpec(CommonSpec):
    """Train spec of teacher-student distillation (Dondera, CVPR 2024 workshops)."""

    method: Literal["distill"] = "distill"
    precision: Literal["auto", "fp32", "bf16"] = Field("fp32", description="the triplet route trains in fp32 as the original (bf16: autocast on CUDA)")
    data: DistillDataSpec = DistillDataSpec()
    model: StudentSpec = StudentSpec()
    loss: RelationalLossSpec = RelationalLossSpec(name="stmr", options={"tau": 5.0, "beta": 0.5})
    augment: StudentAugmentSpec = StudentAugmentSpec()
    validation: ValidationSpec = ValidationSpec()


# ---------------------------------------------------------------------------------------------
# images of a dataset and their supervision
# ---------------------------------------------------------------------------------------------


MIN_VAL_TRIPLETS = 100  # fewer labelled validation triplets than this are not scored


def split_groups(rows: ImageRows, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray, str]:
    """``(training rows, validation rows, where validation comes from)`` over ``rows``' images."""
    if (rows.split == "val").any():
        return np.flatnonzero(rows.split == "train"), np.flatnonzero(rows.split == "val"), "split val"
    train = np.flatnonzero((rows.split == "train") | (rows.split == ""))
    groups = np.unique(rows.group[train])
    if val_fraction <= 0 or len(groups) < 2:
        return train, np.zeros(0, dtype=np.int64), "none"
    rng = numpy_rng(seed, Streams.VAL_GROUPS)
    n_val = max(1, int(round(val_fraction * len(groups))))
    val_groups = rng.choice(groups, size=n_val, replace=False)
    is_val = np.isin(rows.group[train], val_groups)
    return train[~is_val], train[is_val], f"{val_fraction:g} of the training {rows.what}"


def match_ids(want: np.ndarray, have: np.ndarray, what: str) -> np.ndarray:
    """Position in ``have`` of every id of ``want``; one clear error for an id missing from ``have``."""
    have = np.asarray(have).astype(str)
    order = np.argsort(have, kind="stable")
    sorted_ids = have[order]
    pos = np.searchsorted(sorted_ids, want)
    pos = np.clip(pos, 0, max(0, len(sorted_ids) - 1))
    found = (len(sorted_ids) > 0) & (sorted_ids[pos] == want) if len(sorted_ids) else np.zeros(len(want), dtype=bool)
    if not found.all():
        missing = np.unique(want[~found])
        raise UserError(f"The teacher file {what} has no row for id {str(missing[0])!r} ({len(missing)} id(s) of this dataset missing); "
                        "export the teachers from runs on this dataset (save-embeddings --split all).")
    return order[pos]


def load_teachers(paths: list[str], models: list[str] | None, layer: str, keys: np.ndarray) -> torch.Tensor:
    """``(len(keys), R, D)`` float32 teacher rows for the ids ``keys``, stacked over files and models."""
    from simtool.formats.embeddings import read_embeddings

    parts, dims = [], []
    for path in paths:
        emb = read_embeddings(path)
        names = [m["name"] for m in emb.models]
        chosen = models or names
        unknown = [m for m in chosen if m not in names]
        if models and len(unknown) == len(chosen):
            raise UserError(f"The teacher file {path} has none of data.teacher_models ({', '.join(models)}); it holds: {', '.join(names)}.")
        pos = match_ids(np.asarray(keys).astype(str), emb.ids, path)
        for name in chosen:
            if name in unknown:
                continue
            key = f"{name}/{layer}"
            if key not in emb.tensors:
                layers = sorted(k.split("/", 1)[1] for k in emb.tensors if k.startswith(name + "/"))
                raise UserError(f"The teacher file {path} has no layer {layer!r} for {name} (it has: {', '.join(layers)}); set data.teacher_layer.")
            t = emb.tensors[key].float()[torch.from_numpy(pos)]
            if not torch.isfinite(t).all():
                raise UserError(f"The teacher embeddings {key} in {path} hold NaN or infinite values; train and export the teachers again.")
            parts.append(t)
            dims.append((f"{Path(path).name}:{name}", t.shape[2]))
    if len({d for _, d in dims}) > 1:
        raise UserError("The teacher models have different dimensions (" + ", ".join(f"{n} {d}" for n, d in dims) +
                        "); use teachers of one dimension (data.teacher_models picks some).")
    return torch.cat(parts, dim=1)


def per_class_batches(groups: np.ndarray, batch: int, k: int, steps: int, rng: np.random.Generator) -> np.ndarray:
    """``(steps, batch)`` positions into ``groups``: classes in a fresh random order, ``min(k, n_c)``
    random images of each, until the batch is full (the paper's SamplePerClassSampler)."""
    classes, inverse = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inverse == c) for c in range(len(classes))]
    out = np.empty((steps, batch), dtype=np.int64)
    for s in range(steps):
        picked: list[np.ndarray] = []
        n = 0
        while n < batch:
            for c in rng.permutation(len(classes)):
                m = members[c]
                take = rng.choice(m, size=min(k, len(m)), replace=False)
                picked.append(take)
                n += len(take)
                if n >= batch:
                    break
        out[s] = np.concatenate(picked)[:batch]
    return out


@register_method("distill", DistillSpec, default_dataset="triplets")  # without --data: the default toy world's triplets
class Distill(DatasetMethod):
    """See the module docstring."""

    needs = "a triplets dataset with images, or a classes dataset"

    def setup(self) -> None:
        spec, device, dist, console, ds = self.spec, self.device, self.dist, self.console, self.ds
        rows = self.rows = ds.image_table()
        teacher = spec.data.teacher
        self.classes = isinstance(ds, ClassesDataset)
        if teacher is None and not self.classes:
            raise UserError("The student needs teachers: export teacher runs with simtool save-embeddings RUN --split all --out T.safetensors "
                            "and pass --set data.teacher=T.safetensors.")
        self.onehot = teacher is None
        train, val, self.val_source = split_groups(rows, spec.data.val_fraction, spec.seed)
        if self.onehot:
            self.teacher = None
        else:
            paths = [teacher] if isinstance(teacher, str) else list(teacher)
            self.teacher = load_teachers(paths, spec.data.teacher_models, spec.data.teacher_layer, rows.key)  # (M, R, D) per image
        self.train_rows, self.val_rows = train, val
        self.use_per_class = self.classes and spec.data.per_class > 0
        keep_last = (spec.data.last_batch or ("drop" if self.use_per_class else "keep")) == "keep"
        full = StepPlan.of(spec, dist)
        # the last, partial batch (kept as the original did for triplets datasets: Yummly's ~60 training
        # images give one partial batch of the rkd presets' 172); split over the processes, kept only
        # when every process gets at least 2 images
        self.partial = len(train) % full.global_batch if keep_last else 0
        if self.partial < 2 * dist.world_size:
            self.partial = 0
        self.plan = StepPlan(full.per_device, full.world, len(train) // full.global_batch)
        if self.plan.steps + (self.partial > 0) < 1:
            raise UserError(f"loop.batch_size={spec.loop.batch_size} is more than the {len(train)} training images; lower loop.batch_size.")
        self.per_device, self._steps = self.plan.per_device, self.plan.steps + (self.partial > 0)
        self.model = create_student(spec.model)
        cfg = self.model.input_config
        self.store = ds.images(spec.data.image_size)
        self.pipe = ImagePipeline(self.store, spec.data, spec.augment, cfg["mean"], cfg["std"], cfg["crop_pct"], rows.image[train], spec.seed, dist.rank,
                                  pin_memory=device.type == "cuda", interpolation=cfg["interpolation"])
        self.samples = spec.data.samples_per_triplet
        self.loss_fn = spec.loss.build("relational")
        self._fixed_triples: torch.Tensor | None = None
        self.val_triplets = self._val_triplets()
        if console is not None and dist.is_main:
            what = "one-hot classes" if self.onehot else f"{self.teacher.shape[1]} teacher run(s) of dimension {self.teacher.shape[2]}"
            last = f" (the last of {self.partial // dist.world_size}+ per device)" if self.partial else ""
            console.print(f"distill: {len(train)} training images, {len(val)} validation images ({self.val_source}); {what}; "
                          f"{self._steps} steps per epoch{last}.", soft_wrap=True, highlight=False)

    def _val_triplets(self):
        """Labelled validation triplets among validation items (triplets datasets) as image triplets
        (K per item triplet, drawn once) into the validation images, with their kind codes; None
        when fewer than ``MIN_VAL_TRIPLETS`` lie among them."""
        if not isinstance(self.ds, TripletsDataset) or not len(self.val_rows):
            return None
        val_items = np.unique(self.rows.group[self.val_rows])
        sel = np.flatnonzero(self.ds.triplet_split == "val")
        if not len(sel):
            return None
        trip = self.ds.triplets[sel]
        inside = np.isin(trip, val_items).all(1)
        if inside.sum() < MIN_VAL_TRIPLETS:  # a handful of triplets is noise, not a figure to select on
            return None
        images = sample_image_triplets(trip[inside], self.rows.group[self.val_rows], self.samples, numpy_rng(self.spec.seed, Streams.VAL_IMAGES))
        return images, np.tile(kind_codes(self.ds.triplet_kind[sel][inside]), self.samples)

    # -- data ---------------------------------------------------------------------------------
    def steps_per_epoch(self) -> int:
        return self._steps

    @property
    def images_per_step(self) -> int:
        return self.per_device

    def epoch_plan(self, epoch: int) -> list[np.ndarray]:
        """The training rows of this rank for every step of ``epoch`` (the last may be partial)."""
        rng = numpy_rng(self.spec.seed, epoch, Streams.EPOCH_ORDER)
        if self.use_per_class:
            order = per_class_batches(self.rows.group[self.train_rows], self.plan.global_batch, self.spec.data.per_class, self.plan.steps, rng).reshape(-1)
        else:
            order = rng.permutation(len(self.train_rows))
        plan = list(self.train_rows[rank_share(order, self.plan, self.dist.rank)])
        if self.partial:
            rest = order[self.plan.needed : self.plan.needed + self.partial]
            plan.append(self.train_rows[np.array_split(rest, self.dist.world_size)[self.dist.rank]])
        return plan

    def batches(self, epoch: int, start_step: int) -> Iterator:
        plan = self.epoch_plan(epoch)
        steps = [(s, self.rows.image[plan[s]]) for s in range(start_step, self._steps)]
        for step, images in self.pipe.batches(epoch, steps):
            yield step, images, plan[step]

    def _teacher_batch(self, rows: np.ndarray) -> torch.Tensor:
        if self.onehot:
            _, inv = np.unique(self.rows.group[rows], return_inverse=True)
            inv = torch.from_numpy(inv.reshape(-1))
            return torch.nn.functional.one_hot(inv, int(inv.max()) + 1).float().unsqueeze(1)
        return self.teacher[torch.from_numpy(rows)]

    # -- training -----------------------------------------------------------------------------
    def training_step(self, model, batch, info: StepInfo):
        step, images, rows = batch
        x = self.pipe.train_transform(images.to(info.device, non_blocking=True), info.epoch, step)
        z = model(x)
        t = self._teacher_batch(rows).to(info.device)
        loss = self.loss_fn(z.float(), t, generator=torch_generator(self.spec.seed, info.epoch, step, info.dist.rank, Streams.MINER))
        return loss, {}

    @torch.no_grad()
    def evaluate(self, model, epoch: int, device: torch.device) -> dict[str, float]:
        if not len(self.val_rows):
            return {}
        from simtool.metrics.triplets import sample_index_triplets, teacher_agreement

        emb = embed_images(model, self.pipe, self.rows.image[self.val_rows], device)
        out: dict[str, float] = {}
        if not self.onehot and len(self.val_rows) >= 3:
            if self._fixed_triples is None:
                self._fixed_triples = sample_index_triplets(len(self.val_rows), self.spec.validation.triplets,
                                                            torch_generator(self.spec.seed, Streams.VAL_TRIPLES), self.spec.validation.distinct)
            agree = teacher_agreement(emb, self.teacher[torch.from_numpy(self.val_rows)], self._fixed_triples, self.spec.validation.threshold)
            out["val/fstrt"], out["val/fstr"] = agree["fstrt"], agree["fstr"]
        groups = self.rows.group[self.val_rows]
        if self.classes or self.onehot:
            from simtool.metrics.retrieval import knn

            _, counts = np.unique(groups, return_counts=True)
            if counts.max(initial=0) > 1:
                nn = knn(emb, 1).squeeze(1).numpy()
                _, inv, cnt = np.unique(groups, return_inverse=True, return_counts=True)
                valid = cnt[inv.reshape(-1)] > 1
                out["val/precision_at_1"] = float((groups[nn] == groups)[valid].mean())
        if self.val_triplets is not None:
            images, kinds = self.val_triplets
            out.update(triplet_scores(emb, images, kinds))
        return out

    def card(self) -> dict:
        return {"input": self.pipe.card_input(), "dataset": self.ds.ref(),
                "context": {"teacher": self.spec.data.teacher, "val": self.val_source, "samples_per_triplet": self.samples}}
