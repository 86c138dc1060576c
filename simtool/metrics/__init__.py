"""Metrics on embeddings: odd-one-out accuracy and representation statistics.

* :mod:`simtool.metrics.odd_one_out` - triplet odd-one-out accuracy at the context, category and
  object levels (Aubret et al., ICDL 2024).
* :mod:`simtool.metrics.representation` - sparsity, collapse and effective rank of an ``(N, D)``
  representation matrix.
"""

from simtool.metrics.odd_one_out import LEVELS, TripletSet, odd_one_out_accuracy, sample_odd_one_out_triplets, triplet_correct
from simtool.metrics.representation import collapse, effective_rank, sparsity

__all__ = [
    "LEVELS",
    "TripletSet",
    "sample_odd_one_out_triplets",
    "triplet_correct",
    "odd_one_out_accuracy",
    "sparsity",
    "collapse",
    "effective_rank",
]
