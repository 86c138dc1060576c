"""The direct route: an image network trained on the triplet labels themselves (the ``*_d_*`` configs).

Reference: R. Dondera, "Towards Learning Image Similarity from General Triplet Labels", CVPR 2024
workshops: the baseline the teachers beat. Every step takes ``loop.batch_size`` labelled triplets
(the paper's batch 249 = 83 triplets), one image per member (a random one of the item's images when
it has several, as the paper's image triplets sampled from class triplets), embeds the ``3 x T``
images with the student network (:class:`~simtool.models.student.StudentModel`) and applies a
labelled loss (``ste``, ``triplet``, ``double_margin``, ``double_contrastive``,
``double_multisimilarity``) to the triplets, directed or odd-one-out as the dataset says. An epoch
covers every training item triplet ``data.samples_per_triplet`` times (K, the original's image
triplets per class triplet: 2 THINGS, 3 IHSJC), each time with fresh random images. The paper's
presets train in fp32 on the part ``[train, val]`` of the item layout (the teachers' part) and take
the ``ste`` loss with the original's probability floor (``floor: 1e-12``).

Validation (see :func:`~simtool.methods._triplets.select_triplets`; never the test items):
``val/accuracy``, the fraction of correct validation image triplets, K sampled once per validation
item triplet (:func:`~simtool.metrics.triplets.sample_image_triplets`). ``checkpoint.best:
val/accuracy`` keeps the best epoch.
"""

from __future__ import annotations

from typing import Iterator, Literal

import numpy as np
import torch
from pydantic import Field

from simtool.engine.method import StepInfo
from simtool.errors import UserError
from simtool.methods._common import DatasetMethod, StepPlan, rank_share
from simtool.methods._images import ImageDataSpec, ImagePipeline, StudentAugmentSpec, StudentSpec, create_student, embed_images
from simtool.methods._registry import register_method
from simtool.methods._triplets import LabelledLossSpec, TripletSplitSpec, labelled_loss, select_triplets, single_kind, triplet_scores
from simtool.metrics.triplets import sample_image_triplets
from simtool.rng import Streams, numpy_rng
from simtool.specs.common import BaseDataSpec, CommonSpec


class DirectDataSpec(BaseDataSpec, ImageDataSpec, TripletSplitSpec):
    """A ``triplets`` dataset with item images and which of its triplets train and validate."""


class DirectSpec(CommonSpec):
    """Train spec of the direct route (an image network on the triplet labels)."""

    method: Literal["direct"] = "direct"
    precision: Literal["auto", "fp32", "bf16"] = Field("fp32", description="the triplet route trains in fp32 as the original (bf16: autocast on CUDA)")
    data: DirectDataSpec = DirectDataSpec()
    model: StudentSpec = StudentSpec()
    loss: LabelledLossSpec = LabelledLossSpec(name="ste", options={"tau": 0.005})
    augment: StudentAugmentSpec = StudentAugmentSpec()


@register_method("direct", DirectSpec, default_dataset="triplets")  # without --data: the default toy world's triplets
class Direct(DatasetMethod):
    """See the module docstring."""

    needs = "a triplets dataset with images"

    def setup(self) -> None:
        spec, device, dist, console, ds = self.spec, self.device, self.dist, self.console, self.ds
        sets = select_triplets(ds, spec.data, spec.seed)
        rows = self.rows = ds.image_table()
        # images of every item: rows are sorted by item, so item i's images are image[start[i]:start[i] + count[i]]
        self.count = np.bincount(rows.group, minlength=len(ds))
        self.start = np.concatenate([[0], np.cumsum(self.count)[:-1]])
        has = self.count > 0
        keep = has[sets.train].all(1)
        keep_val = has[sets.val].all(1) if len(sets.val) else np.zeros(0, dtype=bool)
        self.train, self.train_kind = sets.train[keep], sets.train_kind[keep]
        self.val, self.val_kind, self.val_source = sets.val[keep_val], sets.val_kind[keep_val], sets.val_source
        if not len(self.train):
            raise UserError(f"No training triplet of {ds.root} has an image for all three items; the direct route needs item images.")
        self.kind = single_kind(np.concatenate([self.train_kind, self.val_kind]))
        self.samples = spec.data.samples_per_triplet  # an epoch covers K image triplets per item triplet (the original's)
        self.plan = StepPlan.of(spec, dist, len(self.train) * self.samples, unit="triplets", pool="training image triplets")
        self.per_device, self._steps = self.plan.per_device, self.plan.steps
        self.model = create_student(spec.model)
        cfg = self.model.input_config
        train_items = np.unique(self.train)
        train_images = np.concatenate([rows.image[self.start[i] : self.start[i] + self.count[i]] for i in train_items])
        self.pipe = ImagePipeline(ds.images(spec.data.image_size), spec.data, spec.augment, cfg["mean"], cfg["std"], cfg["crop_pct"],
                                  train_images, spec.seed, dist.rank, pin_memory=device.type == "cuda", interpolation=cfg["interpolation"])
        self._val_images = None
        self.loss_fn = spec.loss.build("labelled")
        if console is not None and dist.is_main:
            console.print(f"direct: {len(self.train)} training triplets ({self.kind or 'mixed kinds'}) x {self.samples} image sample(s), "
                          f"validation: {len(self.val)} ({self.val_source}); {self._steps} steps per epoch of {self.per_device} triplets.",
                          soft_wrap=True, highlight=False)

    def steps_per_epoch(self) -> int:
        return self._steps

    @property
    def images_per_step(self) -> int:
        return 3 * self.per_device

    def _images_of(self, items: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One image per item: a random one of its images."""
        pick = (rng.random(items.shape) * self.count[items]).astype(np.int64)
        return self.rows.image[self.start[items] + pick]

    def batches(self, epoch: int, start_step: int) -> Iterator:
        rng = numpy_rng(self.spec.seed, epoch, Streams.EPOCH_ORDER)
        order = rank_share(rng.permutation(len(self.train) * self.samples) % len(self.train), self.plan, self.dist.rank)
        plan = []
        for s in range(start_step, self._steps):
            trip = self.train[order[s]]
            images = self._images_of(trip.reshape(-1), numpy_rng(self.spec.seed, epoch, s, self.dist.rank, Streams.ITEM_IMAGE))
            plan.append((s, images))
        kinds = self.train_kind[order]
        for step, images in self.pipe.batches(epoch, plan):
            yield step, images, kinds[step]

    def training_step(self, model, batch, info: StepInfo):
        step, images, kinds = batch
        x = self.pipe.train_transform(images.to(info.device, non_blocking=True), info.epoch, step)
        z = model(x).float()
        t = z.shape[0] // 3
        trip = torch.arange(3 * t, device=info.device).view(t, 3)
        loss = labelled_loss(self.loss_fn, z, trip, torch.from_numpy(kinds.astype(np.int64)).to(info.device), self.kind)
        return loss, {}

    @torch.no_grad()
    def evaluate(self, model, epoch: int, device: torch.device) -> dict[str, float]:
        if not len(self.val):
            return {}
        items = np.unique(self.val)
        rows = np.concatenate([np.arange(self.start[i], self.start[i] + self.count[i]) for i in items])
        if self._val_images is None:  # K image triplets per validation item triplet, drawn once (the original's)
            self._val_images = sample_image_triplets(self.val, self.rows.group[rows], self.samples, numpy_rng(self.spec.seed, Streams.VAL_IMAGES))
        emb = embed_images(model, self.pipe, self.rows.image[rows], device)
        return triplet_scores(emb, self._val_images, np.tile(self.val_kind, self.samples))

    def card(self) -> dict:
        return {"input": self.pipe.card_input(), "dataset": self.ds.ref(),
                "context": {"val": self.val_source, "samples_per_triplet": self.samples}}
