"""``evaluate --type knn``: weighted k-nearest-neighbour classification of frozen embeddings.

The train rows are the memory, the test rows the queries (:func:`simtool.metrics.probes.weighted_knn`,
as solo-learn's ``WeightedKNNClassifier``): a query's ``k`` (20) most similar memory items vote for
their class with weight ``exp(cos / T)`` (``T`` = ``temperature``, 0.07), or ``1 / (d + 1e-5)`` with
``distance: euclidean``; the class with the largest vote wins (ties: the lower class). Neighbours are
exact and computed tile by tile on the target device (CUDA when present), as the class-retrieval
evaluator's; equal similarities go to the lower memory row. Levels, rooms and splits as the linear
probe's (:mod:`simtool.evaluators.linear_probe`): top-1 accuracy ± standard error per level, with
every query's correctness for ``compare``'s bootstrap intervals.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import Field

from simtool.evaluators._registry import register_evaluator
from simtool.evaluators.linear_probe import ProbeEvaluator, ProbeLevels
from simtool.metrics.probes import weighted_knn


class KnnOptions(ProbeLevels):
    type: Literal["knn"] = "knn"
    k: int = Field(20, ge=1, description="neighbours that vote")
    temperature: float = Field(0.07, gt=0, description="T of the vote weights exp(cos / T) (cosine only)")
    distance: Literal["cosine", "euclidean"] = Field("cosine", description="cosine on L2-normalised rows (weights exp(cos / T)), "
                                                                           "or euclidean (weights 1 / (d + 1e-5))")


@register_evaluator("knn", KnnOptions)
class Knn(ProbeEvaluator):
    title = "weighted kNN"

    def condition(self, options) -> str:
        return f"k={options.k} " + (f"T={options.temperature:g}" if options.distance == "cosine" else "euclidean")

    def _device(self):
        from simtool.engine.device import resolve_device

        device = resolve_device(self.device or "auto")
        return device if device.type == "cuda" else torch.device("cpu")

    def score(self, x_train, y_train, n_classes, x_test, options, x_val, y_val):
        device = self._device()
        k = min(options.k, len(y_train))
        pred = weighted_knn(x_test.to(device), x_train.to(device), y_train, n_classes, k, options.temperature, options.distance)
        return np.asarray(pred), f"k={k}"
