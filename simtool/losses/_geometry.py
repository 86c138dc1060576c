"""Geometry of the losses' batches: distances, teacher distances, margins, angles, masks, chunked sums.

Infrastructure, not a loss (the registry's package scan skips ``_`` modules). Conventions used by
every loss of Dondera, "Towards Learning Image Similarity from General Triplet Labels" (CVPR 2024
workshops), as re-implemented here:

* Distances are Euclidean on the embeddings as given (every simtool model L2-normalises its
  output, so ``d`` lies in ``[0, 2]``). ``safe_sqrt(x) = sqrt(max(x, 1e-12))`` as in the original,
  so the gradient is finite (and zero) when two different rows coincide; the distance of a row to
  *itself* (the diagonal of a distance matrix) is exactly 0.
* Triplet tensors are indexed ``[a, p, n]`` (anchor, positive, negative) and the triplet margin is
  ``T[a, p, n] = D[a, n] - D[a, p]`` (> 0 means "correct").
* Teacher signals come from ``teacher (B, R, D_t)``, R teacher repetitions. They are computed
  without gradient, in float64 where the device has it, and pairs of identical teacher rows get a
  distance of exactly 0 (so all images of one class, which share a teacher vector, are at 0).
* Losses over ``B x B x B`` triples run over chunks of anchors (:func:`chunked_sum`); only one
  chunk's autograd graph is alive at a time, so memory is ``O(chunk * B^2)`` and not ``O(B^3)``.

What it holds:

* dense ``(B, B)`` geometry of the ``relational`` convention: :func:`pairwise_distances`,
  :func:`teacher_run_distances`, :func:`relational_geometry` (-> :class:`RelationalGeometry`, the
  argument of :meth:`RelationalLoss.compute <simtool.losses.relational.RelationalLoss.compute>`),
  :func:`margins`, :func:`angles`, the degenerate-triple masks :func:`pair_mask`, :func:`triple_mask`
  and :func:`n_triples`, and :func:`chunked_sum`;
* sparse triplet geometry of the ``labelled`` convention: :func:`triplet_geometry` (->
  :class:`TripletGeometry`, the argument of :meth:`LabelledLoss.directed
  <simtool.losses.labelled.LabelledLoss.directed>`), computed by the ``_TripletDots`` kernels (dense
  Gram matrix, sparse SDDMM/SpMM or gathered rows).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import torch
from torch import Tensor

from simtool.errors import UserError

EPS = 1e-12  # safe_sqrt floor (the original's epsilon)
# Elements of one (chunk, B, B) tensor when a loss picks its own chunk: 2**21 floats = 8 MiB.
AUTO_CHUNK_ELEMENTS = 2**21


# ------------------------------------------------------------------------------------- general
def work_dtype(*tensors: Tensor) -> torch.dtype:
    """float32, or float64 when an input is float64 (half precision never: margins need the bits)."""
    dtype = torch.float32
    for t in tensors:
        if t.dtype == torch.float64:
            dtype = torch.float64
    return dtype


def safe_sqrt(x: Tensor) -> Tensor:
    """``sqrt(max(x, 1e-12))``: finite gradient (zero below the floor)."""
    return x.clamp_min(EPS).sqrt()


def auto_chunk(batch: int, factor: int = 1) -> int:
    """Anchors per chunk so that a ``(chunk, B, B)`` tensor (times ``factor``) stays near 8 MiB."""
    return max(1, AUTO_CHUNK_ELEMENTS // max(1, batch * batch * factor))


# ------------------------------------------------------------------------- pairwise distances
def pairwise_sq_distances(x: Tensor) -> Tensor:
    """``(..., B, D) -> (..., B, B)`` squared Euclidean distances by the Gram identity, >= 0,
    diagonal exactly 0; differentiable."""
    b = x.shape[-2]
    n = (x * x).sum(-1)
    sq = n.unsqueeze(-1) + n.unsqueeze(-2) - 2.0 * (x @ x.transpose(-1, -2))
    eye = torch.eye(b, dtype=torch.bool, device=x.device)
    return sq.clamp_min(0.0).masked_fill(eye, 0.0)


def pairwise_distances(x: Tensor) -> Tensor:
    """``(B, D) -> (B, B)`` student distances ``safe_sqrt(||x_i - x_j||^2)`` with an exact 0 diagonal."""
    sq = pairwise_sq_distances(x)
    eye = torch.eye(x.shape[-2], dtype=torch.bool, device=x.device)
    return safe_sqrt(sq).masked_fill(eye, 0.0)


def teacher_tensor(teacher: Tensor, batch: int) -> Tensor:
    """Check and detach ``teacher``: ``(B, R, D_t)`` (or ``(B, D_t)`` for R = 1) -> ``(B, R, D_t)``."""
    if teacher.dim() == 2:
        teacher = teacher.unsqueeze(1)
    if teacher.dim() != 3 or teacher.shape[0] != batch:
        raise ValueError(f"teacher must be (B, R, D_t) with B = {batch}, got shape {tuple(teacher.shape)}")
    if not torch.isfinite(teacher).all():
        raise UserError("The teacher embeddings of this batch contain NaN or infinite values; re-export the teachers.")
    return teacher.detach()


def teacher_run_distances(teacher: Tensor) -> Tensor:
    """``(B, R, D_t) -> (R, B, B)`` distance matrices of each teacher run, without gradient.

    Computed in float64 (float32 on devices without it) by the Gram identity; squared distances at
    most ``1e-10`` (float32: ``1e-5``) times ``|t_i|^2 + |t_j|^2`` are set to 0, so identical
    teacher rows are at distance exactly 0 despite rounding."""
    with torch.no_grad():
        use64 = teacher.device.type in ("cpu", "cuda")
        t = teacher.transpose(0, 1).to(torch.float64 if use64 else torch.float32)  # (R, B, D_t)
        n = (t * t).sum(-1)
        scale = n.unsqueeze(-1) + n.unsqueeze(-2)
        sq = pairwise_sq_distances(t)
        sq = sq.masked_fill(sq <= (1e-10 if use64 else 1e-5) * scale, 0.0)
        return sq.sqrt()


def student_input(student: Tensor, teacher: Tensor) -> tuple[Tensor, Tensor, torch.dtype]:
    """Validate the relational inputs; returns ``(student in the working dtype, teacher (B, R, D_t), dtype)``."""
    if student.dim() != 2:
        raise ValueError(f"student must be (B, E), got shape {tuple(student.shape)}")
    teacher = teacher_tensor(teacher, student.shape[0])
    dtype = work_dtype(student)
    return student.to(dtype), teacher, dtype


# ----------------------------------------------------------------------- degenerate triples
def pair_mask(batch: int, device) -> Tensor:
    """``(B, B)`` bool, True off the diagonal."""
    return ~torch.eye(batch, dtype=torch.bool, device=device)


def triple_mask(a0: int, a1: int, batch: int, device) -> Tensor:
    """``(a1 - a0, B, B)`` bool, True where ``a != p``, ``a != n`` and ``p != n`` (a = a0..a1-1)."""
    a = torch.arange(a0, a1, device=device).view(-1, 1, 1)
    p = torch.arange(batch, device=device).view(1, -1, 1)
    n = torch.arange(batch, device=device).view(1, 1, -1)
    return (a != p) & (a != n) & (p != n)


def n_triples(batch: int, keep_degenerate: bool) -> int:
    return batch**3 if keep_degenerate else batch * (batch - 1) * (batch - 2)


def margins(d: Tensor, a0: int, a1: int) -> Tensor:
    """Triplet margins of anchors ``a0..a1-1``: ``(..., c, B, B)`` with ``[a, p, n] = d[a, n] - d[a, p]``
    from a ``(..., B, B)`` distance matrix (leading dims, e.g. teacher runs, are kept)."""
    rows = d[..., a0:a1, :]
    return rows.unsqueeze(-2) - rows.unsqueeze(-1)


def angles(d: Tensor, a0: int, a1: int) -> Tensor:
    """Cosines of the angle at vertex ``a`` of triangles ``(a, j, k)``: ``(c, B, B)`` from the
    ``(..., B, B)`` distance matrix ``d`` (leading dims broadcast, e.g. teacher runs).

    Law of cosines: ``A[a, j, k] = (d_aj^2 + d_ak^2 - d_jk^2) / (2 d_aj d_ak)``, which equals the
    RKD definition ``u_aj . u_ak`` with ``u_aj = (e_a - e_j) / |e_a - e_j|`` without forming any
    ``B^3 x D`` tensor. Distances below ``1e-6`` are floored in the denominator only, so a vertex
    coinciding with ``j`` or ``k`` (zero numerator) has angle cosine 0, as the original's
    ``u = 0 / (0 + eps)`` gives."""
    rows = d[..., a0:a1, :]  # (..., c, B)
    sq_rows = rows * rows
    num = sq_rows.unsqueeze(-1) + sq_rows.unsqueeze(-2) - (d * d).unsqueeze(-3)
    floor = rows.clamp_min(math.sqrt(EPS))
    return num / (2.0 * floor.unsqueeze(-1) * floor.unsqueeze(-2))


# ------------------------------------------------------------------------------- chunking
class _Surrogate(torch.autograd.Function):
    """Returns ``value``; its backward sends ``grad_out * grad`` to ``x`` (a precomputed gradient)."""

    @staticmethod
    def forward(ctx, x, value, grad):
        ctx.save_for_backward(grad)
        return value.clone()

    @staticmethod
    def backward(ctx, grad_out):
        (grad,) = ctx.saved_tensors
        return grad_out * grad, None, None


def chunked_sum(fn: Callable[[int, int, Tensor], Tensor], d: Tensor, chunk: int) -> Tensor:
    """``sum over anchor chunks [a0, a1) of fn(a0, a1, d)`` with the gradient with respect to ``d``.

    Each chunk's graph is built, differentiated with respect to ``d`` and freed before the next
    one, so peak memory is one chunk's intermediates; the result carries the accumulated gradient
    (first order) back to ``d`` and through it to the student. Without grad mode (validation) it
    only sums the values."""
    batch = d.shape[0]
    chunk = max(1, int(chunk))
    if not (torch.is_grad_enabled() and d.requires_grad):
        with torch.no_grad():
            return sum((fn(a0, min(a0 + chunk, batch), d) for a0 in range(0, batch, chunk)), d.new_zeros(()))
    leaf = d.detach().requires_grad_(True)
    total = d.new_zeros(())
    grad = torch.zeros_like(d)
    for a0 in range(0, batch, chunk):
        value = fn(a0, min(a0 + chunk, batch), leaf)
        if value.requires_grad:
            (g,) = torch.autograd.grad(value, leaf, allow_unused=True)
            if g is not None:
                grad += g
        total = total + value.detach()
    return _Surrogate.apply(d, total, grad)


def zero_loss(student: Tensor) -> Tensor:
    """A zero that stays connected to ``student`` (so DDP and ``backward`` see every parameter)."""
    return (student * 0.0).sum()


# ---------------------------------------------------------------------------- relational batch
@dataclass(frozen=True)
class RelationalGeometry:
    """One batch of the ``relational`` convention, in the working dtype (float32, or float64 for float64 students).

    ``student (B, E)`` and its distances ``d (B, B)`` (:func:`pairwise_distances`) carry the
    gradient; the teacher runs' distances ``d_runs (R, B, B)`` (:func:`teacher_run_distances`) and
    their mean ``dbar (B, B)`` (the mean of the R distance matrices, not the distance of mean
    embeddings) are detached."""

    student: Tensor
    d: Tensor
    d_runs: Tensor
    dbar: Tensor

    @property
    def batch(self) -> int:
        """``B``."""
        return self.student.shape[0]

    @property
    def dim(self) -> int:
        """``E``, the student's embedding dimension."""
        return self.student.shape[1]

    @property
    def runs(self) -> int:
        """``R``, the number of teacher runs."""
        return self.d_runs.shape[0]

    def zero(self) -> Tensor:
        """A zero loss connected to the student (:func:`zero_loss`)."""
        return zero_loss(self.student)


def relational_geometry(student: Tensor, teacher: Tensor) -> RelationalGeometry:
    """Validate ``student (B, E)`` and ``teacher (B, R, D_t)`` (or ``(B, D_t)``) and compute their :class:`RelationalGeometry`."""
    student, teacher, dtype = student_input(student, teacher)
    d_runs = teacher_run_distances(teacher).to(dtype)
    return RelationalGeometry(student, pairwise_distances(student), d_runs, d_runs.mean(0))


# --------------------------------------------------------------- triplet-label gram helpers
_CPU_TRIPLET_BLOCK = 1024  # triplets per block of the gather path on CPU (3 x 1024 x 128 floats, in L2)
_SPARSE_MIN_TRIPLETS = 256  # below this the CPU uses the gather path too


def _csr_structure(idx: Tensor, m: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Row-sorted structure of the symmetric ``(m, m)`` pair matrix of triplets ``idx (K, 3)``.

    Every triplet member is one CSR entry group: row = the member, columns = the two other members
    (6K stored values, 2 per member). Returns ``(crow (m+1,), col (6K,), order (3K,), inverse
    (3K,))`` where ``order`` sorts the member-major list ``[i0..., i1..., i2...]`` by row (a
    counting-friendly numpy sort: radix for ``m < 2^16``) and ``inverse`` undoes it."""
    import numpy as np

    k = idx.shape[0]
    rows = idx.t().reshape(-1)  # (3K,) member-major
    keys = rows.numpy()
    order_np = np.argsort(keys.astype(np.uint16), kind="stable") if m < 65536 else np.argsort(keys)
    order = torch.from_numpy(order_np.astype(np.int64, copy=False))
    partners = torch.cat([idx[:, 1:3], idx[:, 0::2], idx[:, 0:2]])  # (3K, 2): the other two members
    col = partners.index_select(0, order).reshape(-1)
    crow = torch.zeros(m + 1, dtype=torch.int64)
    torch.cumsum(torch.bincount(rows, minlength=m) * 2, 0, out=crow[1:])
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(3 * k)
    return crow, col, order, inverse


def _csr(crow: Tensor, col: Tensor, values: Tensor, m: int) -> Tensor:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
        return torch.sparse_csr_tensor(crow, col, values, (m, m), check_invariants=False)


_FORCE_PATH: str | None = None  # tests force "dense", "sparse" or "gather"


def _dots_path(m: int, k: int, device: torch.device) -> str:
    if _FORCE_PATH is not None:
        return _FORCE_PATH
    if m * m <= 24 * k:  # few rows, many triplets: the whole Gram matrix is cheaper
        return "dense"
    if device.type == "cpu" and k >= _SPARSE_MIN_TRIPLETS:  # (6K <= M^2 here, as sampled_addmm needs)
        return "sparse"
    return "gather"


class _TripletDots(torch.autograd.Function):
    """``(table (M, D), i0, i1, i2 (K,)) -> (K, 3)`` dot products ``[t_i0.t_i1, t_i0.t_i2, t_i1.t_i2]``.

    No ``(K, 3, D)`` tensor is kept between forward and backward. Three paths, same result:

    * few rows for many triplets (``M^2 <= 24 K``): the whole Gram matrix ``table @ table.T``, and a
      dense ``M x M`` gradient matrix in the backward;
    * on CPU for ``K >= 256``: the pairs form a sparse symmetric ``M x M`` matrix; the forward is one
      sampled dense-dense product (SDDMM) on its pattern and the backward one sparse-dense product
      (SpMM), about three times faster than gathering rows;
    * otherwise rows are gathered (in blocks on CPU) and the backward adds the row gradients
      straight into the table's gradient."""

    @staticmethod
    def forward(ctx, table, i0, i1, i2):
        k, m = i0.shape[0], table.shape[0]
        path = _dots_path(m, k, table.device)
        ctx.dense, ctx.sparse = path == "dense", path == "sparse"
        if ctx.dense:
            gram = table @ table.t()
            ctx.save_for_backward(table, i0, i1, i2)
            return torch.stack([gram[i0, i1], gram[i0, i2], gram[i1, i2]], 1)
        if ctx.sparse:
            idx = torch.stack([i0, i1, i2], 1)
            crow, col, order, inverse = _csr_structure(idx, m)
            pattern = _csr(crow, col, table.new_zeros(col.shape[0]), m)  # zeros: beta=0 does not mask NaN garbage
            v = torch.sparse.sampled_addmm(pattern, table, table.t(), beta=0.0).values().view(-1, 2)
            v = v.index_select(0, inverse[: 2 * k])  # member-major rows of members 0 and 1
            out = torch.stack([v[:k, 0], v[:k, 1], v[k:, 1]], 1)
            ctx.save_for_backward(table, crow, col, order)
            return out
        block = _CPU_TRIPLET_BLOCK if table.device.type == "cpu" else max(1, k)
        out = table.new_empty((k, 3))
        for s in range(0, k, block):
            b = slice(s, s + block)
            e0, e1, e2 = table.index_select(0, i0[b]), table.index_select(0, i1[b]), table.index_select(0, i2[b])
            out[b, 0] = torch.linalg.vecdot(e0, e1)
            out[b, 1] = torch.linalg.vecdot(e0, e2)
            out[b, 2] = torch.linalg.vecdot(e1, e2)
        ctx.save_for_backward(table, i0, i1, i2)
        ctx.block = block
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        g = g.to(ctx.saved_tensors[0].dtype)
        if ctx.dense:
            table, i0, i1, i2 = ctx.saved_tensors
            m = table.shape[0]
            w = table.new_zeros((m, m))
            w.index_put_((torch.cat([i0, i0, i1]), torch.cat([i1, i2, i2])), torch.cat([g[:, 0], g[:, 1], g[:, 2]]), accumulate=True)
            return (w + w.t()) @ table, None, None, None
        if ctx.sparse:
            table, crow, col, order = ctx.saved_tensors
            g01, g02, g12 = g.unbind(1)
            values = torch.cat([torch.stack([g01, g02], 1), torch.stack([g01, g12], 1), torch.stack([g02, g12], 1)])
            values = values.index_select(0, order).reshape(-1)
            return torch.sparse.mm(_csr(crow, col, values, table.shape[0]), table), None, None, None
        table, i0, i1, i2 = ctx.saved_tensors
        grad = torch.zeros_like(table)
        for s in range(0, i0.shape[0], ctx.block):
            b = slice(s, s + ctx.block)
            e0, e1, e2 = table.index_select(0, i0[b]), table.index_select(0, i1[b]), table.index_select(0, i2[b])
            gb = g[b]
            g01, g02, g12 = gb[:, 0:1], gb[:, 1:2], gb[:, 2:3]
            grad.index_add_(0, i0[b], torch.addcmul(e1 * g01, e2, g02))
            grad.index_add_(0, i1[b], torch.addcmul(e0 * g01, e2, g12))
            grad.index_add_(0, i2[b], torch.addcmul(e0 * g02, e1, g12))
        return grad, None, None, None


class TripletGeometry:
    """Dot products and distances of the three pairs of every triplet, shapes ``(R, T)``.

    ``s01, s02, s12``: dot products (cosine similarities for unit vectors);
    ``d01, d02, d12``: ``safe_sqrt(|e_i|^2 + |e_j|^2 - 2 e_i.e_j)`` (computed on first use). Rows
    0, 1, 2 of a triplet are (anchor, closer, farther) for directed and (pair, pair, odd) for
    odd-one-out triplets."""

    def __init__(self, dots: Tensor, table: Tensor, index: Tensor, shape: tuple[int, int]):
        self.s01, self.s02, self.s12 = dots.view(*shape, 3).unbind(-1)
        self._table, self._index, self._shape = table, index, shape

    @cached_property
    def _norms(self) -> tuple[Tensor, Tensor, Tensor]:
        sq = torch.linalg.vecdot(self._table, self._table)
        return tuple(sq[self._index[:, c]].view(self._shape) for c in range(3))

    @cached_property
    def d01(self) -> Tensor:
        n0, n1, _ = self._norms
        return safe_sqrt((n0 + n1 - 2 * self.s01).clamp_min(0.0))

    @cached_property
    def d02(self) -> Tensor:
        n0, _, n2 = self._norms
        return safe_sqrt((n0 + n2 - 2 * self.s02).clamp_min(0.0))

    @cached_property
    def d12(self) -> Tensor:
        _, n1, n2 = self._norms
        return safe_sqrt((n1 + n2 - 2 * self.s12).clamp_min(0.0))


def triplet_geometry(embeddings: Tensor, triplets: Tensor) -> TripletGeometry:
    """Pairwise geometry of ``triplets`` over ``embeddings``.

    Args:
        embeddings: ``(B, D)``, or ``(B, R, D)`` for R repetitions (e.g. the psycho model's output).
        triplets: int64 row indices, ``(T, 3)`` (shared by all repetitions) or ``(R, T, 3)`` (one
            set per repetition).

    Returns:
        :class:`TripletGeometry` whose tensors are ``(R, T)`` (``R = 1`` for 2-D embeddings).
    """
    if embeddings.dim() == 2:
        embeddings = embeddings.unsqueeze(1)
    if embeddings.dim() != 3:
        raise ValueError(f"embeddings must be (B, D) or (B, R, D), got shape {tuple(embeddings.shape)}")
    b, r, dim = embeddings.shape
    triplets = torch.as_tensor(triplets, device=embeddings.device)
    if triplets.dtype != torch.int64:
        triplets = triplets.long()
    if triplets.dim() == 2 and triplets.shape[-1] == 3:
        t = triplets.shape[0]
        index = triplets if r == 1 else (triplets.unsqueeze(0) + (torch.arange(r, device=triplets.device) * b).view(r, 1, 1)).reshape(-1, 3)
    elif triplets.dim() == 3 and triplets.shape[0] == r and triplets.shape[2] == 3:
        t = triplets.shape[1]
        index = (triplets + (torch.arange(r, device=triplets.device) * b).view(r, 1, 1)).reshape(-1, 3)
    else:
        raise ValueError(f"triplets must be (T, 3) or (R={r}, T, 3), got shape {tuple(triplets.shape)}")
    if triplets.numel() and (int(triplets.min()) < 0 or int(triplets.max()) >= b):
        raise IndexError(f"triplet indices out of range for {b} embeddings")
    dtype = work_dtype(embeddings)
    with torch.autocast(device_type=embeddings.device.type, enabled=False):
        table = embeddings.transpose(0, 1).reshape(r * b, dim).to(dtype)  # free for a (R, B, D) layout
        i0, i1, i2 = (index[:, c].contiguous() for c in range(3))
        dots = _TripletDots.apply(table, i0, i1, i2)
    return TripletGeometry(dots, table, index, (r, t))
