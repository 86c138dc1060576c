"""Class retrieval metrics from exact k-nearest neighbours: P@1, Recall@K, R-Precision, MAP@R.

Every item is a query against all other items (the query is removed from its own neighbours).
For a query ``q`` of class ``c`` with ``R = |c| - 1`` other items of its class and neighbours
``n_1, n_2, ...`` (most similar first), with ``rel(i) = [class(n_i) == c]``:

=============  ===========================================================================
metric         per query (the reported figure is the mean over queries)
=============  ===========================================================================
P@1            ``rel(1)``
Recall@K       ``1`` if any of ``n_1 .. n_K`` is of class ``c`` (the metric-learning "R@K")
R-Precision    ``(1/R) * sum_{i<=R} rel(i)``
MAP@R          ``(1/R) * sum_{i<=R} rel(i) * P(i)`` with ``P(i) = (1/i) * sum_{j<=i} rel(j)``
               (K. Musgrave, S. Belongie, S.-N. Lim, "A Metric Learning Reality Check",
               ECCV 2020)
=============  ===========================================================================

Queries of classes with a single item (``R = 0``) have no correct neighbour: they are left out of
every metric and counted (they still serve as neighbours of the other queries).

Neighbours are exact: similarities come from chunked matrix products on the target device (a
``query_block × ref_block`` tile at a time, never an ``N × N`` matrix), and equal similarities
(as computed in float32, e.g. duplicate embeddings) are broken by the lower item index. Values
that are equal in exact arithmetic but differ in float32's last bit rank as float32 says, which
can depend on the tile shape. ``k`` is the largest class size minus one (enough for R-Precision
and MAP@R) or the largest K of Recall@K, whichever is larger.

How the exact top-k stays cheap: each tile's columns are split into ``g`` interleaved groups and
only every group's maximum is kept (a fast reduction). The true top-k items of a query lie in the
groups whose maximum is at least the k-th largest group maximum; a few more than k groups are
taken, their members re-scored exactly and ranked by (similarity, then lower index). A query
whose selection cannot prove that (ties at the boundary, e.g. duplicate embeddings) is redone
with a plain exact tile-by-tile top-k, so the result never depends on the shortcut.

On a CPU that multiplies bfloat16 at least twice as fast as float32 (:func:`bf16_pays`), the
cosine search screens first (:class:`Bf16Screen`): the ``2k + 8`` best items of a bfloat16 product
are re-scored in float32, and a per-query bound on the bfloat16 rounding proves that no other item
can be among the ``k`` nearest; queries it cannot prove take the path above.
"""

from __future__ import annotations

import math
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["DISTANCES", "prepare", "knn", "knn_chunks", "retrieval_metrics", "recall_name"]

DISTANCES = ("cosine", "euclidean")
_LOW = 0xFFFFFFFF
_NEG = -math.inf


def recall_name(k: int) -> str:
    return f"recall_at_{k}"


def _keys(values: Tensor, index: Tensor) -> Tensor:
    """int64 keys ordering (value descending, index ascending) as plain integer descending order."""
    bits = (values.float() + 0.0).contiguous().view(torch.int32)  # + 0.0 turns -0.0 into +0.0
    mono = (bits ^ ((bits >> 31) & 0x7FFFFFFF)).to(torch.int64)  # order-preserving int of a float
    return (mono << 32) | (_LOW - index)


def _index_of(keys: Tensor) -> Tensor:
    return _LOW - (keys & _LOW)


def _value_of(keys: Tensor) -> Tensor:
    mono = (keys >> 32).to(torch.int32)
    return (mono ^ ((mono >> 31) & 0x7FFFFFFF)).view(torch.float32)


def prepare(x: Tensor, distance: str = "cosine", device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
    """(queries, references) as float32 on ``device`` whose dot product ranks like ``distance``.

    cosine: L2-normalised rows (a zero row has similarity 0 with everything). euclidean:
    ``q' = [q, -1/2]`` and ``x' = [x, |x|^2]``, so ``q'.x' = q.x - |x|^2 / 2`` orders the
    references of every query by increasing Euclidean distance.
    """
    if distance not in DISTANCES:
        raise ValueError(f"distance must be one of {DISTANCES}, got {distance!r}")
    if x.dim() != 2:
        raise ValueError(f"embeddings must be (N, D), got shape {tuple(x.shape)}")
    device = torch.device(device) if device is not None else x.device
    x = x.detach().to(device=device, dtype=torch.float32)
    if distance == "cosine":
        ref = F.normalize(x, p=2, dim=1)
        return ref, ref
    sq = (x.double() ** 2).sum(1, keepdim=True).float()
    ref = torch.cat([x, sq], 1)
    query = torch.cat([x, torch.full_like(sq, -0.5)], 1)
    return query, ref


def _group_size(n: int, kk: int, d: int, ref_block: int) -> int:
    """Interleaved groups per tile: balances the top-k over n/g group maxima against re-scoring kk*g items."""
    g = math.sqrt(n / max(1, kk * d))
    g = 1 << max(0, int(round(math.log2(max(g, 1.0)))))
    return int(min(g, ref_block, 64))


def _exact_rows(q: Tensor, ref: Tensor, rows: Tensor, k: int, ref_block: int) -> tuple[Tensor, Tensor]:
    """Plain exact top-k of query rows ``rows`` (global indices) tile by tile: (keys (m, k))."""
    n = ref.shape[0]
    best = None
    for rs in range(0, n, ref_block):
        w = min(ref_block, n - rs)
        s = q @ ref[rs : rs + w].T
        hit = (rows >= rs) & (rows < rs + w)
        if hit.any():
            r = hit.nonzero().flatten()
            s[r, rows[r] - rs] = _NEG
        cols = torch.arange(rs, rs + w, device=q.device).expand_as(s)
        blk = _keys(s, cols).topk(min(k, w), dim=1).values
        best = blk if best is None else torch.cat([best, blk], 1).topk(min(k, best.shape[1] + blk.shape[1]), dim=1).values
    return best


# -- bfloat16 screen -------------------------------------------------------------------------------

_BF16_PAYS: dict[tuple[int, int], bool] = {}
_U16 = 2.0**-8  # unit roundoff of bfloat16 (8 significant bits)
_U32 = 2.0**-24


def bf16_pays(d: int) -> bool:
    """Whether a bfloat16 matrix product of search-tile shape takes at most half the float32 one's
    time on this CPU at the current thread count (true where the CPU has bfloat16 dot-product or
    AMX instructions; emulated bfloat16 is slower than float32). Timed once per dimension and thread count."""
    key = (int(d), torch.get_num_threads())
    if key not in _BF16_PAYS:
        import time

        gen = torch.Generator().manual_seed(0)
        a, b = torch.randn(256, d, generator=gen), torch.randn(2048, d, generator=gen)
        times = []
        for x, y in ((a, b), (a.bfloat16(), b.bfloat16())):
            x @ y.T  # warm up
            best = math.inf
            for _ in range(3):
                t0 = time.perf_counter()
                x @ y.T
                best = min(best, time.perf_counter() - t0)
            times.append(best)
        _BF16_PAYS[key] = times[1] <= 0.5 * times[0]
    return _BF16_PAYS[key]


def screen_candidates(k: int, n: int) -> int:
    """Candidates kept per query by the bfloat16 screen: ``2k + 8`` (48 at k = 20), at most ``n``."""
    return min(n, 2 * k + 8)


def _top_by_groups(a: Tensor, c: int) -> tuple[Tensor, Tensor]:
    """``(values, columns)`` of the ``c`` largest entries of every row of ``a`` (any order of equal
    values): the row's ``w`` columns split into ``G`` interleaved groups (column ``j`` in group
    ``j mod G``) whose maxima are one fast reduction; the ``c`` largest entries lie in the ``c``
    groups of the largest maxima, so only those groups' entries are ranked."""
    m, w = a.shape
    size = 1
    while size < 32 and w % (2 * size) == 0 and w // (2 * size) >= 4 * c:
        size *= 2
    if size == 1:
        return a.topk(c, dim=1)
    groups = w // size
    top_groups = a.view(m, size, groups).amax(1).topk(c, dim=1).indices  # (m, c)
    cols = (top_groups[:, :, None] + groups * torch.arange(size, device=a.device)).flatten(1)
    v, j = a.gather(1, cols).topk(c, dim=1)
    return v, cols.gather(1, j)


class Bf16Screen:
    """Exact top-k by dot product of unit rows through a bfloat16 screen.

    With ``x^`` the float32 unit rows the scores are defined on and ``h(.)`` rounding to bfloat16,
    :meth:`search` takes the ``c`` items with the largest ``a = h(q^) . h(x^)`` (a bfloat16
    product: float32 accumulation, a bfloat16 result) per query, and the caller re-scores them in
    float32 (``f = q^ . x^``). Any other item ``j`` has ``a_j <= A`` (the ``c``-th largest ``a``),
    and by Cauchy-Schwarz on the rounding residuals

        f_j <= A + u |A| / (1 - u) + (1 + u) |q^| (max_j |x^_j - h(x^_j)| + g (1 + u) X)
               + |q^ - h(q^)| X + g |q^| X,

    with ``u = 2^-8``, ``g = D 2^-24 / (1 - D 2^-24)`` (float32 sums of ``D`` terms) and ``X`` the
    largest ``|x^_j|``. A query whose ``k``-th re-scored candidate lies above that bound has provably
    found its exact top ``k`` among the candidates (ties at the cut included: every item with an
    equal score is a candidate); the others are flagged for the plain float32 search.

    Build it from the unit rows in row chunks (:meth:`add`), so the bfloat16 copy (half the float32
    rows' memory) is the only copy made.
    """

    def __init__(self, n: int, d: int):
        self.ref = torch.empty(n, d, dtype=torch.bfloat16)
        self.resid = 0.0  # the largest |x^_j - h(x^_j)|
        self.size = 0.0  # the largest |x^_j|: 1 up to rounding, 0 for a zero row
        self.filled = 0

    def add(self, unit: Tensor) -> None:
        """Append float32 unit rows (overwritten: the chunk is used as scratch)."""
        s, e = self.filled, self.filled + len(unit)
        if s == e:
            return
        self.ref[s:e] = unit
        self.size = max(self.size, float(torch.linalg.vector_norm(unit, dim=1).max()))
        self.resid = max(self.resid, float(torch.linalg.vector_norm(unit.sub_(self.ref[s:e]), dim=1).max()))
        self.filled = e

    def search(self, q: Tensor, k: int, c: int, rescore, ref_block: int = 8192, exclude: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(keys (b, k), proven (b,))`` for the float32 unit query rows ``q``; ``rescore(cand (b, c))``
        returns the float32 scores ``f`` of those candidates; ``exclude`` (b,): an item per query that is
        never its neighbour (the query itself), or ``None``."""
        n, d = self.ref.shape
        q_h = q.bfloat16()
        g = d * _U32 / (1 - d * _U32)
        x = self.size
        q_size = torch.linalg.vector_norm(q, dim=1).double()  # |h(v)| <= (1 + u) |v| for any v
        slack = (q_size * (1 + _U16) * (self.resid + g * (1 + _U16) * x)
                 + torch.linalg.vector_norm(q - q_h.float(), dim=1).double() * x + q_size * g * x) * 1.001 + 1e-6
        best_v = best_i = None
        rows = torch.arange(len(q))
        for rs in range(0, n, ref_block):
            w = min(ref_block, n - rs)
            a = q_h @ self.ref[rs : rs + w].T
            if exclude is not None:
                hit = (exclude >= rs) & (exclude < rs + w)
                a[rows[hit], exclude[hit] - rs] = _NEG
            v, i = _top_by_groups(a, min(c, w))
            i = i + rs
            if best_v is not None:
                v, j = torch.cat([best_v, v], 1).topk(min(c, best_v.shape[1] + v.shape[1]), dim=1)
                i = torch.cat([best_i, i], 1).gather(1, j)
            best_v, best_i = v, i
        bound = best_v[:, -1].double()
        bound = bound + _U16 * bound.abs() / (1 - _U16) + slack
        keys = _keys(rescore(best_i), best_i).topk(k, dim=1).values  # (score desc, index asc)
        return keys, _value_of(keys[:, -1]).double() > bound  # False for NaN


def knn_chunks(
    query: Tensor,
    ref: Tensor,
    k: int,
    query_block: int | None = None,
    ref_block: int | None = None,
    extra_groups: int | None = None,
    screen: bool = False,
) -> Iterator[tuple[int, Tensor, Tensor]]:
    """Exact k nearest neighbours of every row of ``query`` among the rows of ``ref`` (same items).

    Args:
        query, ref: ``(N, D)`` float32 from :func:`prepare`, on the target device; row ``i`` of
            both is item ``i``, which is never its own neighbour.
        k: neighbours per query, ``1 <= k <= N - 1``.
        query_block, ref_block: tile size (default 256 × 2048 on CPU, 4096 × 8192 on CUDA).
        extra_groups: groups taken beyond ``k`` (default ``max(2, k // 4)``).
        screen: CPU, cosine (unit rows) only: candidates from the bfloat16 screen of
            :class:`Bf16Screen` (the caller decides, e.g. with :func:`bf16_pays`); queries it cannot
            prove, and all queries after a first block that mostly fails, take the group path.

    Yields:
        ``(start, indices, similarities)`` per block of queries: ``(b, k)`` int64 neighbour
        indices, most similar first, ties broken by the lower index, and their float32 scores.
    """
    n = query.shape[0]
    if ref.shape[0] != n:
        raise ValueError(f"query and ref must hold the same N items, got {n} and {ref.shape[0]}")
    if not 1 <= k <= n - 1:
        raise ValueError(f"k must be in 1..N-1 = {n - 1}, got {k}")
    c = screen_candidates(k, n - 1)
    if screen and query.device.type == "cpu" and c < n - 1:
        yield from _knn_chunks_screened(query, ref, k, c, query_block, ref_block, extra_groups)
        return
    yield from _knn_chunks_groups(query, ref, k, query_block, ref_block, extra_groups)


def _knn_chunks_screened(query: Tensor, ref: Tensor, k: int, c: int, query_block, ref_block, extra_groups):
    n, d = ref.shape
    scr = Bf16Screen(n, d)
    for s in range(0, n, 2048):
        scr.add(ref[s : s + 2048].clone())
    bq, br = int(query_block or 512), int(ref_block or 8192)  # bfloat16 tiles of 8 MiB unless told
    for qs in range(0, n, bq):
        q = query[qs : qs + bq]
        b = len(q)

        def rescore(cand: Tensor, q=q) -> Tensor:
            f = torch.empty(cand.shape)
            for s in range(0, len(cand), 64):
                part = cand[s : s + 64]
                f[s : s + 64] = torch.bmm(ref.index_select(0, part.flatten()).view(len(part), c, d), q[s : s + len(part), :, None]).squeeze(-1)
            return f

        keys, ok = scr.search(q, k, c, rescore, br, exclude=torch.arange(qs, qs + b))
        bad = (~ok).nonzero().flatten()
        if qs == 0 and len(bad) > b // 2:  # the screen does not pay on these embeddings
            del scr
            yield from _knn_chunks_groups(query, ref, k, query_block, ref_block, extra_groups)
            return
        if len(bad):
            keys[bad] = _exact_rows(q[bad], ref, bad + qs, k, int(ref_block or 2048))
        yield qs, _index_of(keys), _value_of(keys)


def _knn_chunks_groups(query: Tensor, ref: Tensor, k: int, query_block, ref_block, extra_groups):
    n = query.shape[0]
    device = query.device
    cuda = device.type == "cuda"
    bq = int(query_block or (4096 if cuda else 256))
    br = int(ref_block or (8192 if cuda else 2048))
    br = max(1, min(br, 1 << max(0, math.ceil(math.log2(n)))))
    kk = k + (max(2, k // 4) if extra_groups is None else int(extra_groups))
    g = _group_size(n, kk, query.shape[1], br)
    while br % g:
        g //= 2
    ngb = br // g  # groups per tile
    nb = -(-n // br)  # tiles per row of queries
    n_groups = nb * ngb
    kk = min(kk, n_groups)
    tile = torch.empty(bq, br, device=device)
    gmax = torch.empty(nb, bq, ngb, device=device)
    t_off = (torch.arange(g, device=device) * ngb).view(1, 1, g)
    for qs in range(0, n, bq):
        b = min(bq, n - qs)
        q = query[qs : qs + b]
        s = tile[:b]
        for j in range(nb):
            rs = j * br
            w = min(br, n - rs)
            if w == br:
                torch.mm(q, ref[rs : rs + br].T, out=s)
            else:
                s[:, :w] = q @ ref[rs : rs + w].T
                s[:, w:] = _NEG
            lo, hi = max(qs, rs), min(qs + b, rs + w)
            if lo < hi:
                r = torch.arange(lo, hi, device=device)
                s[r - qs, r - rs] = _NEG
            torch.amax(s.view(b, g, ngb), 1, out=gmax[j, :b])
        groups = gmax[:, :b].permute(1, 0, 2).reshape(b, n_groups)
        top = groups.topk(kk, dim=1)
        ok = top.values[:, kk - 1] < top.values[:, k - 1] if kk < n_groups else torch.ones(b, dtype=torch.bool, device=device)
        gid = top.indices  # (b, kk) group ids: tile j = gid // ngb, column within tile = gid % ngb + t * ngb
        cols = ((gid // ngb) * br + gid % ngb).unsqueeze(-1) + t_off  # (b, kk, g)
        cols = cols.view(b, kk * g)
        me = torch.arange(qs, qs + b, device=device).unsqueeze(1)
        valid = (cols < n) & (cols != me)
        cand = ref.index_select(0, cols.clamp(max=n - 1).flatten()).view(b, kk * g, -1)
        sims = torch.bmm(cand, q.unsqueeze(-1)).squeeze(-1)
        sims = sims.masked_fill(~valid, _NEG)
        keys = _keys(sims, cols).topk(k, dim=1).values
        if not bool(ok.all()):
            bad = (~ok).nonzero().flatten()
            keys[bad] = _exact_rows(q[bad], ref, bad + qs, k, br)
        yield qs, _index_of(keys), _value_of(keys)


def _auto_screen(distance: str, query: Tensor, k: int, screen: bool | None) -> bool:
    """Whether :func:`knn_chunks` screens: cosine on the CPU where bfloat16 pays, unless told."""
    if distance != "cosine" or query.device.type != "cpu":
        return False
    if screen is not None:
        return bool(screen)
    return screen_candidates(k, query.shape[0] - 1) < query.shape[0] - 1 and bf16_pays(query.shape[1])


def knn(x: Tensor, k: int, distance: str = "cosine", device: torch.device | str | None = None, screen: bool | None = None, **blocks) -> Tensor:
    """``(N, k)`` int64 exact nearest-neighbour indices (self excluded, ties → lower index), on the CPU."""
    query, ref = prepare(x, distance, device)
    out = torch.empty(x.shape[0], k, dtype=torch.int64)
    for start, idx, _ in knn_chunks(query, ref, k, screen=_auto_screen(distance, query, k, screen), **blocks):
        out[start : start + idx.shape[0]] = idx.cpu()
    return out


def retrieval_metrics(
    x: Tensor,
    labels,
    ks: Sequence[int] = (1, 2, 4, 8),
    distance: str = "cosine",
    device: torch.device | str | None = None,
    **blocks,
) -> dict:
    """P@1, Recall@K, R-Precision and MAP@R of embeddings ``x`` with class ``labels``.

    Args:
        x: ``(N, D)`` embeddings (any float dtype and device; moved to ``device``).
        labels: ``(N,)`` class of every item (any values; compared for equality).
        ks: the K of Recall@K.
        distance: ``cosine`` or ``euclidean``.

    Returns:
        A dict with, per metric (``precision_at_1``, ``recall_at_<K>`` for every K,
        ``r_precision``, ``map_at_r``), the per-query values of the ``n_queries`` queries whose class
        has more than one item (a numpy array in item order: bool for P@1 and Recall@K, float64
        otherwise), and ``n_items``, ``n_queries``, ``n_classes``, ``singleton_classes``, ``k`` (the
        neighbours retrieved per query), ``queries`` (the item indices of the queries).
    """
    labels = np.asarray(labels.cpu() if isinstance(labels, Tensor) else labels)
    if labels.ndim != 1 or len(labels) != x.shape[0]:
        raise ValueError(f"labels must be (N,) = ({x.shape[0]},), got shape {labels.shape}")
    ks = sorted({int(v) for v in ks})
    if not ks or ks[0] < 1:
        raise ValueError(f"every K of Recall@K must be >= 1, got {list(ks)}")
    n = len(labels)
    _, codes, counts = np.unique(labels, return_inverse=True, return_counts=True)
    codes = codes.reshape(-1)
    r_all = counts[codes] - 1
    valid = r_all > 0
    out = {
        "n_items": int(n),
        "n_classes": int(len(counts)),
        "singleton_classes": int((counts == 1).sum()),
        "n_queries": int(valid.sum()),
        "queries": np.flatnonzero(valid),
    }
    names = ["precision_at_1", *(recall_name(v) for v in ks), "r_precision", "map_at_r"]
    if out["n_queries"] == 0:
        out.update({m: np.zeros(0, dtype=bool if m != "r_precision" and m != "map_at_r" else np.float64) for m in names})
        out["k"] = 0
        return out
    k = int(min(n - 1, max(int(r_all.max()), ks[-1])))
    out["k"] = k
    query, ref = prepare(x, distance, device)
    dev = query.device
    lab = torch.from_numpy(codes).to(dev)
    r_t = torch.from_numpy(r_all).to(dev)
    p1 = np.zeros(n, dtype=bool)
    rec = {v: np.zeros(n, dtype=bool) for v in ks}
    rp = np.zeros(n, dtype=np.float64)
    mapr = np.zeros(n, dtype=np.float64)
    pos = torch.arange(k, device=dev).unsqueeze(0)
    screen = _auto_screen(distance, query, k, blocks.pop("screen", None))
    for start, idx, _ in knn_chunks(query, ref, k, screen=screen, **blocks):
        b = idx.shape[0]
        mine = lab[start : start + b]
        r = r_t[start : start + b]
        match = lab[idx] == mine.unsqueeze(1)  # (b, k)
        within = pos < r.unsqueeze(1)
        rel = match & within
        hits = rel.sum(1).double()
        prec = match.double().cumsum(1) / (pos + 1).double()
        rden = r.clamp(min=1).double()
        sl = slice(start, start + b)
        p1[sl] = match[:, 0].cpu().numpy()
        for v in ks:
            rec[v][sl] = match[:, : min(v, k)].any(1).cpu().numpy()
        rp[sl] = (hits / rden).cpu().numpy()
        mapr[sl] = ((prec * rel.double()).sum(1) / rden).cpu().numpy()
    out["precision_at_1"] = p1[valid]
    for v in ks:
        out[recall_name(v)] = rec[v][valid]
    out["r_precision"] = rp[valid]
    out["map_at_r"] = mapr[valid]
    return out
