"""Offline probes of frozen embeddings: a linear classifier, a ridge readout, weighted kNN, and
bootstrap intervals over items for RSA and linear CKA.

Every function takes plain tensors or arrays (features of a train part and a test part, integer
class codes ``0..C-1``) and knows nothing of datasets or evaluators.

* :func:`logistic_fit` - multinomial logistic regression with an L2 penalty on the weights (not
  the bias), the objective ``(1/n) sum_i CE(x_i W + b, y_i) + (l2 / 2) |W|_F^2``, minimised by
  full-batch L-BFGS on an analytic gradient computed in row chunks (the ``n x C`` logits are
  never held at once). It is scikit-learn's
  ``LogisticRegression(C=1 / (l2 * n))`` objective (scikit-learn >= 1.2 scales it by ``1/n``),
  minimised by the same optimiser with the same stopping rule (scipy's L-BFGS-B: the largest
  absolute gradient entry at most ``tol``, or ``max_iter`` iterations); the objective and gradient
  are computed in float32 (float64 sums of the loss), the optimiser's state in float64.
* :func:`ridge_fit` - the closed-form least-squares readout of one-hot targets with an intercept:
  ``W = (Xc^T Xc + n l2 I)^-1 Xc^T Yc`` on column-centred ``X`` and ``Y`` (the minimiser of
  ``(1/n) |X W + b - Y|^2 + l2 |W|^2``), for several ``l2`` at the cost of one eigendecomposition
  of the ``D x D`` matrix ``Xc^T Xc`` (float64).
* :func:`weighted_knn` - the weighted k-nearest-neighbour classifier of Z. Wu, Y. Xiong, S. Yu,
  D. Lin, "Unsupervised Feature Learning via Non-Parametric Instance Discrimination" (CVPR 2018),
  as solo-learn's ``WeightedKNNClassifier``: each query's ``k`` most similar memory items vote for
  their class with weight ``exp(s / T)`` (cosine similarity ``s`` of L2-normalised rows) or
  ``1 / (d + eps)`` (Euclidean distance ``d``, ``eps = 1e-5``, no temperature); the class with the
  largest sum wins (ties: the lower class code). Neighbours are exact, from tiles of matrix
  products (never a ``Q x N`` matrix); equal similarities go to the lower memory index. On CPUs
  with fast bfloat16 the cosine search screens candidates with a bfloat16 product and a proven
  bound on its rounding, then re-scores them in float32
  (:class:`simtool.metrics.retrieval.Bf16Screen`).
* :func:`rsa_cka_bootstrap` - RSA (:func:`simtool.metrics.similarity.rsa`) and linear CKA
  (:func:`simtool.metrics.similarity.linear_cka`) of items resampled with replacement. A
  resample's RSA is the Spearman correlation over its pairs of *distinct* items (a pair of copies
  of one item has distance 0 in both representations and would inflate it); it is computed
  exactly from weights on the pairs of the original items (pair ``(i, j)`` occurs ``c_i c_j``
  times when item ``i`` was drawn ``c_i`` times), with average ranks of the weighted multiset, so
  no resample is materialised. A resample's CKA is likewise HSIC over its pairs of positions
  except those holding two copies of one item (copies would add an item's similarity with itself
  as evidence and bias CKA upwards), from the Gram matrices centred over the resample (``m x m``,
  float64: callers pass at most a few thousand items).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from simtool.metrics.retrieval import Bf16Screen, _exact_rows, _index_of, _keys, _value_of, bf16_pays, prepare, screen_candidates
from simtool.metrics.similarity import _np64, cosine_distance_triangle, linear_cka, rsa

__all__ = ["LogisticFit", "logistic_fit", "logistic_predict", "ridge_fit", "linear_predict", "standardize", "knn_neighbours", "weighted_knn",
           "rsa_cka_bootstrap", "accuracy_and_se"]

_CHUNK_ELEMENTS = 1 << 22  # logits per chunk of rows (16 MiB of float32)
KNN_EPS = 1e-5


def accuracy_and_se(correct: np.ndarray) -> tuple[float | None, float | None]:
    """Mean of 0/1 values and its binomial standard error ``sqrt(p (1 - p) / n)``."""
    n = len(correct)
    if n == 0:
        return None, None
    p = float(np.mean(correct))
    return p, math.sqrt(p * (1 - p) / n)


def standardize(train: Tensor, *others: Tensor) -> list[Tensor]:
    """Every tensor minus the train part's column means, divided by its column sds (a constant
    column is only centred): float32 copies, ``[train, *others]``."""
    x = train.double()
    mean = x.mean(0)
    sd = x.std(0, unbiased=False)
    sd = torch.where(sd > 0, sd, torch.ones_like(sd))
    return [((t.double() - mean) / sd).float() for t in (train, *others)]


# -- multinomial logistic regression ---------------------------------------------------------------


@dataclass
class LogisticFit:
    weight: Tensor  # (D, C) float32
    bias: Tensor  # (C,)
    l2: float
    iterations: int
    loss: float
    grad_max: float  # largest absolute gradient entry at the end
    converged: bool  # grad_max <= tol


def _loss_grad(x: Tensor, y: Tensor, w: Tensor, b: Tensor, l2: float, gw: Tensor, gb: Tensor, rows: int) -> float:
    """Objective at (w, b); its gradient into (gw, gb). Chunks of ``rows`` rows."""
    n = x.shape[0]
    gw.zero_()
    gb.zero_()
    total = 0.0
    for s in range(0, n, rows):
        xc, yc = x[s : s + rows], y[s : s + rows]
        z = torch.addmm(b, xc, w)  # (m, C) logits
        top = z.amax(1, keepdim=True)
        right = z.gather(1, yc.unsqueeze(1))
        p = z.sub_(top).exp_()  # one exponential pass: exp(z - max), in place
        total_exp = p.sum(1, keepdim=True)
        total += float((total_exp.log() + top - right).double().sum())  # CE = logsumexp(z) - z_y
        p.div_(total_exp)  # softmax
        p[torch.arange(len(yc)), yc] -= 1.0  # d CE / d z
        gw.addmm_(xc.T, p)
        gb.add_(p.sum(0))
    gw.div_(n).add_(w, alpha=l2)
    gb.div_(n)
    return total / n + 0.5 * l2 * float((w.double() ** 2).sum())


def _loss_grad_at_zero(x: Tensor, y: Tensor, n_classes: int, gw: Tensor, gb: Tensor) -> float:
    """:func:`_loss_grad` at W = 0, b = 0 without a matrix product: every softmax is uniform, so the
    loss is log C and d CE / d z = 1/C - onehot(y), whose products with X are column and class sums."""
    n = x.shape[0]
    class_sums = torch.zeros(n_classes, x.shape[1], dtype=x.dtype, device=x.device).index_add_(0, y, x)
    gw.copy_((x.sum(0, keepdim=True) / n_classes - class_sums).T).div_(n)
    counts = torch.bincount(y, minlength=n_classes).to(gb.dtype)
    gb.copy_((n / n_classes - counts) / n)
    return float(np.log(n_classes))


def logistic_fit(x: Tensor, y: Tensor, n_classes: int, l2: float, max_iter: int = 100, tol: float = 1e-4,
                 init: LogisticFit | None = None, history: int = 10) -> LogisticFit:
    """Multinomial logistic regression (see the module docstring).

    Args:
        x: ``(n, D)`` features (any float dtype; float32 copy).
        y: ``(n,)`` int class codes in ``0..n_classes-1``.
        l2: penalty strength ``>= 0`` (scikit-learn's ``C = 1 / (l2 * n)``).
        max_iter: most L-BFGS iterations; tol: stop when every gradient entry is at most this
            (scipy's L-BFGS-B with ``gtol=tol``, ``ftol=64 eps``, 50 line-search steps, as
            scikit-learn calls it).
        init: warm start (e.g. the fit of a neighbouring ``l2``).
    """
    from scipy.optimize import minimize

    x = x.detach().float().contiguous()
    y = torch.as_tensor(y, dtype=torch.int64, device=x.device)
    n, d = x.shape
    if n == 0 or len(y) != n:
        raise ValueError(f"need (n, D) features and n labels, got {tuple(x.shape)} and {len(y)}")
    size = d * n_classes
    w, b = torch.zeros(d, n_classes, device=x.device), torch.zeros(n_classes, device=x.device)
    gw, gb = torch.zeros_like(w), torch.zeros_like(b)
    rows = max(1, _CHUNK_ELEMENTS // max(1, n_classes))
    grad = np.empty(size + n_classes)

    last: dict = {}

    def fun(theta: np.ndarray):
        w.copy_(torch.from_numpy(theta[:size].reshape(d, n_classes)))
        b.copy_(torch.from_numpy(theta[size:]))
        if np.any(theta):
            loss = _loss_grad(x, y, w, b, float(l2), gw, gb, rows)
        else:  # the usual start: one pass of sums instead of two matrix products
            loss = _loss_grad_at_zero(x, y, n_classes, gw, gb)
        grad[:size] = gw.cpu().numpy().reshape(-1)
        grad[size:] = gb.cpu().numpy()
        last.update(theta=theta.copy(), loss=loss, grad=grad.copy())
        return loss, last["grad"]

    theta0 = np.zeros(size + n_classes)
    if init is not None:
        theta0[:size] = init.weight.cpu().double().numpy().reshape(-1)
        theta0[size:] = init.bias.cpu().double().numpy()
    res = minimize(fun, theta0, jac=True, method="L-BFGS-B",
                   options={"maxiter": int(max_iter), "maxls": 50, "gtol": float(tol), "ftol": 64 * np.finfo(float).eps, "maxcor": int(history)})
    if last and np.array_equal(last["theta"], res.x):  # (w, b) already hold res.x: no extra pass over the data
        loss, g = last["loss"], last["grad"]
    else:
        loss, g = fun(res.x)
    gmax = float(np.abs(g).max()) if len(g) else 0.0
    return LogisticFit(w.clone(), b.clone(), float(l2), int(res.nit), float(loss), gmax, gmax <= tol)


def linear_predict(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """``(N,)`` int64 argmax of ``x W + b`` (ties: the lower class), in row chunks."""
    x = x.detach().to(weight.dtype)
    rows = max(1, _CHUNK_ELEMENTS // max(1, weight.shape[1]))
    out = torch.empty(x.shape[0], dtype=torch.int64)
    for s in range(0, x.shape[0], rows):
        out[s : s + rows] = torch.addmm(bias, x[s : s + rows], weight).argmax(1).cpu()
    return out


def logistic_predict(x: Tensor, fit: LogisticFit) -> Tensor:
    return linear_predict(x, fit.weight, fit.bias)


# -- closed-form ridge readout -----------------------------------------------------------------------


def ridge_fit(x: Tensor, y: Tensor, n_classes: int, l2s) -> list[tuple[Tensor, Tensor]]:
    """Ridge readouts of one-hot targets (see the module docstring): ``[(W (D, C), b (C,))]`` float64, one per ``l2`` of ``l2s``."""
    x = x.detach().double().cpu()
    y = torch.as_tensor(y, dtype=torch.int64).cpu()
    n = x.shape[0]
    mean = x.mean(0)
    xc = x - mean
    onehot = F.one_hot(y, n_classes).double()
    ymean = onehot.mean(0)
    xty = xc.T @ (onehot - ymean)  # (D, C)
    s, v = torch.linalg.eigh(xc.T @ xc)
    s = s.clamp(min=0)
    proj = v.T @ xty
    out = []
    for l2 in l2s:
        if l2 < 0 or (l2 == 0 and bool((s <= 0).any())):
            raise ValueError(f"ridge needs l2 > 0 for rank-deficient features, got {l2}")
        w = v @ (proj / (s + n * float(l2)).unsqueeze(1))
        out.append((w, ymean - mean @ w))
    return out


# -- weighted kNN ------------------------------------------------------------------------------------


def knn_neighbours(query: Tensor, memory: Tensor, k: int, distance: str = "cosine", query_block: int | None = None,
                   ref_block: int | None = None, screen: bool | None = None) -> tuple[Tensor, Tensor]:
    """Exact ``k`` nearest memory items of every query: ``(indices (Q, k) int64, scores (Q, k) float32)``,
    most similar first, equal scores to the lower memory index, on the CPU.

    ``distance``: ``cosine`` (scores are the cosine similarities) or ``euclidean`` (scores are
    ``q.x - |x|^2 / 2``, which order like the distances; see :func:`simtool.metrics.retrieval.prepare`).
    Each ``query_block x ref_block`` tile of scores keeps its ``k + 1`` largest per query, merged
    across tiles; a query whose ``k``-th and ``(k+1)``-th kept scores are equal (a tie across the
    cut) is redone with a plain exact tile-by-tile top-k that breaks ties by index. (The group-maximum
    shortcut of :func:`simtool.metrics.retrieval.knn_chunks` does not pay here: with k = 20 and
    D = 512 re-scoring the candidates costs more than the top-k it saves.)

    ``screen`` (cosine on the CPU only): find candidates with a bfloat16 product first and prove
    them complete (:class:`~simtool.metrics.retrieval.Bf16Screen`); ``None`` does so where this CPU
    multiplies bfloat16 at least twice as fast as float32 (measured once per process). The
    neighbours are exact either way; scores can differ in float32's last bit, as they can between
    tile shapes.
    """
    n, q_n = memory.shape[0], query.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k must be in 1..{n} (the memory size), got {k}")
    if query.shape[1] != memory.shape[1]:
        raise ValueError(f"query and memory need the same dimension, got {query.shape[1]} and {memory.shape[1]}")
    on_cpu = query.device.type == "cpu" and memory.device.type == "cpu"
    if distance == "cosine" and on_cpu and q_n and screen_candidates(k, n) < n and (screen if screen is not None else bf16_pays(memory.shape[1])):
        idx, val, redo = _knn_screened(query, memory, k, query_block, ref_block)
        if len(redo):
            idx[redo], val[redo] = _knn_exact(query[redo], memory, k, distance, query_block, ref_block)
        return idx, val
    return _knn_exact(query, memory, k, distance, query_block, ref_block)


def _knn_exact(query: Tensor, memory: Tensor, k: int, distance: str, query_block: int | None, ref_block: int | None) -> tuple[Tensor, Tensor]:
    n, q_n = memory.shape[0], query.shape[0]
    qp, _ = prepare(query, distance)
    _, ref = prepare(memory, distance)
    ref = ref.to(qp.device)
    cuda = qp.device.type == "cuda"
    # CPU tiles of 512 x 4096 scores (8 MiB) keep the top-k passes in cache: about 10 % faster than
    # 1024 x 8192 at 10,000 x 100,000 x 512 on 2 cores (benchmarks/bench_probes.py; runs vary by ±0.3 s)
    bq = int(query_block or (4096 if cuda else 512))
    br = int(ref_block or (16384 if cuda else 4096))
    kk = min(k + 1, n)
    idx_out = torch.empty(q_n, k, dtype=torch.int64)
    val_out = torch.empty(q_n, k, dtype=torch.float32)
    for qs in range(0, q_n, bq):
        q = qp[qs : qs + bq]
        best_v = best_i = None
        for rs in range(0, n, br):
            s = q @ ref[rs : rs + br].T
            t = s.topk(min(kk, s.shape[1]), dim=1)
            v, i = t.values, t.indices + rs
            if best_v is not None:
                v, j = torch.cat([best_v, v], 1).topk(min(kk, best_v.shape[1] + v.shape[1]), dim=1)
                i = torch.cat([best_i, i], 1).gather(1, j)
            best_v, best_i = v, i
        keys = _keys(best_v, best_i).sort(1, descending=True).values  # (score desc, index asc)
        if kk > k:
            sv = _value_of(keys)
            tie = (sv[:, k - 1] == sv[:, k]).nonzero().flatten()
            keys = keys[:, :k].clone()
            if len(tie):
                keys[tie] = _exact_rows(q[tie], ref, torch.full((len(tie),), -1, device=q.device), k, br)
        idx_out[qs : qs + len(q)] = _index_of(keys).cpu()
        val_out[qs : qs + len(q)] = _value_of(keys).cpu()
    return idx_out, val_out


def _knn_screened(query: Tensor, memory: Tensor, k: int, query_block: int | None, ref_block: int | None) -> tuple[Tensor, Tensor, Tensor]:
    """Exact cosine ``k`` nearest neighbours through the bfloat16 screen of
    :class:`simtool.metrics.retrieval.Bf16Screen`: ``(indices (Q, k), scores (Q, k), queries to redo)``;
    the rows to redo (queries the screen's bound cannot clear; rare on real embeddings: many items
    within about 0.005 of the k-th similarity) hold no answer. Where most of the first block of
    queries fails, the screen stops and leaves the rest to the exact path too.

    Memory: the screen's bfloat16 copy of the normalised memory (half of the float32 copy the exact
    path makes); the ``2k + 8`` candidates are re-normalised from the input rows for re-scoring.
    """
    n, d = memory.shape
    q_n = query.shape[0]
    c = screen_candidates(k, n)
    memory = memory.detach().float()
    query = query.detach().float()
    norms = torch.empty(n)
    screen = Bf16Screen(n, d)
    for s in range(0, n, 2048):
        rows = memory[s : s + 2048]
        norms[s : s + 2048] = torch.linalg.vector_norm(rows, dim=1).clamp_min(1e-12)
        screen.add(rows / norms[s : s + 2048, None])
    bq = int(query_block or 512)
    br = int(ref_block or 8192)  # 512 x 8192 bfloat16 tiles (8 MiB); 16384 is about 10 % faster but raises the peak by 30 MB
    idx_out = torch.zeros(q_n, k, dtype=torch.int64)
    val_out = torch.zeros(q_n, k, dtype=torch.float32)
    failed = []
    for qs in range(0, q_n, bq):
        qn = query[qs : qs + bq]
        qn = qn / torch.linalg.vector_norm(qn, dim=1).clamp_min(1e-12)[:, None]
        m = len(qn)

        def rescore(cand: Tensor, qn=qn) -> Tensor:
            f = torch.empty(cand.shape)
            for s in range(0, len(cand), 64):
                part = cand[s : s + 64]
                rows = memory[part.flatten()].view(len(part), c, d).div_(norms[part][..., None])
                f[s : s + 64] = torch.bmm(rows, qn[s : s + len(part), :, None]).squeeze(-1)
            return f

        keys, ok = screen.search(qn, k, c, rescore, br)
        idx_out[qs : qs + m] = _index_of(keys)
        val_out[qs : qs + m] = _value_of(keys)
        bad = (~ok).nonzero().flatten() + qs
        failed.append(bad)
        if qs == 0 and len(bad) > m // 2:  # the screen does not pay on these embeddings
            failed.append(torch.arange(qs + m, q_n))
            break
    return idx_out, val_out, torch.cat(failed)


def weighted_knn(query: Tensor, memory: Tensor, memory_labels, n_classes: int, k: int = 20, temperature: float = 0.07,
                 distance: str = "cosine", **blocks) -> Tensor:
    """``(Q,)`` int64 predicted class of every query by the weighted vote of its ``k`` nearest memory
    items (see the module docstring); ``memory_labels`` ``(N,)`` class codes ``0..n_classes-1``."""
    labels = torch.as_tensor(np.asarray(memory_labels), dtype=torch.int64)
    k = min(int(k), memory.shape[0])
    idx, score = knn_neighbours(query, memory, k, distance, **blocks)
    if distance == "cosine":
        weight = (score.double() / float(temperature)).exp()
    else:  # score = q.x - |x|^2 / 2 = (|q|^2 - d^2) / 2
        q2 = (query.detach().double().cpu() ** 2).sum(1, keepdim=True)
        d = (q2 - 2 * score.double()).clamp(min=0).sqrt()
        weight = 1.0 / (d + KNN_EPS)
    out = torch.empty(len(idx), dtype=torch.int64)
    rows = max(1, _CHUNK_ELEMENTS // max(1, n_classes))  # (rows, C) float64 votes at a time
    for s in range(0, len(idx), rows):
        votes = torch.zeros(len(idx[s : s + rows]), n_classes, dtype=torch.float64)
        votes.scatter_add_(1, labels[idx[s : s + rows]], weight[s : s + rows])
        out[s : s + rows] = votes.argmax(1)
    return out


# -- bootstrap intervals of RSA and CKA over items -------------------------------------------------------


class _RankPlan:
    """What the weighted ranks of one representation's pair distances need, computed once: the
    sort order of the pairs, their items in that order, and the runs of equal distances."""

    def __init__(self, dist: np.ndarray, iu: np.ndarray, ju: np.ndarray):
        self.order = np.argsort(dist, kind="stable")
        self.iu, self.ju = iu[self.order], ju[self.order]
        sv = dist[self.order]
        change = np.ones(len(sv), dtype=bool)
        change[1:] = sv[1:] != sv[:-1]
        self.ties = not bool(change.all())
        self.starts = np.flatnonzero(change)
        self.run = np.cumsum(change) - 1

    def ranks(self, c: np.ndarray) -> np.ndarray:
        """Average ranks, in pair order, of the multiset where pair (i, j) occurs c_i c_j times."""
        ws = c[self.iu] * c[self.ju]
        if self.ties:
            gw = np.add.reduceat(ws, self.starts)
            sorted_ranks = (np.cumsum(gw) - (gw - 1) / 2)[self.run]
        else:
            sorted_ranks = np.cumsum(ws) - (ws - 1) / 2
        out = np.empty(len(ws))
        out[self.order] = sorted_ranks
        return out


def _weighted_pearson(a: np.ndarray, b: np.ndarray, w: np.ndarray) -> float:
    tot = w.sum()
    a = a - (w @ a) / tot
    b = b - (w @ b) / tot
    wa = w * a
    den = math.sqrt(float((wa @ a) * ((w * b) @ b)))
    return float((wa @ b) / den) if den > 0 else float("nan")


def _weighted_cka(kx: np.ndarray, ky: np.ndarray, c: np.ndarray) -> float:
    """Linear CKA of a resample (item ``i`` drawn ``c_i`` times) from the Gram matrices ``kx = x x^T``
    and ``ky``: HSIC of the Gram matrices centred over the resample, summed over its pairs of
    positions except those holding two copies of one item (each position with itself stays)."""
    u = c / c.sum()
    hx, hy = _centre_gram(kx, u), _centre_gram(ky, u)
    cc = np.outer(c, c)
    np.fill_diagonal(cc, c)
    cross, den = (cc * hx * hy).sum(), np.sqrt((cc * hx * hx).sum() * (cc * hy * hy).sum())
    return float(cross / den) if den > 0 else float("nan")


def _centre_gram(k: np.ndarray, u: np.ndarray) -> np.ndarray:
    """``H K H`` for the weighted mean ``u`` (weights summing to 1) of the rows."""
    ku = k @ u
    return k - ku[:, None] - ku[None, :] + float(u @ ku)


def rsa_cka_bootstrap(x, y, n_boot: int = 1000, seed: int = 0) -> dict:
    """RSA and linear CKA of ``x`` (m, p) and ``y`` (m, q), same rows, with ``n_boot`` seeded
    resamples of the items (see the module docstring).

    Returns ``{"rsa", "cka"}`` (the point estimates) and ``{"rsa_boot", "cka_boot"}`` (float64
    arrays of the resamples' values; NaN where a resample has no variation). The resamples are
    ``numpy.random.default_rng(seed).integers(0, m, m)``, one after another.
    """
    x, y = _np64(x), _np64(y)
    m = len(x)
    if len(y) != m:
        raise ValueError(f"x and y must have the same rows, got {m} and {len(y)}")
    out = {"rsa": rsa(x, y), "cka": linear_cka(x, y), "rsa_boot": np.full(max(0, n_boot), np.nan), "cka_boot": np.full(max(0, n_boot), np.nan)}
    if m < 3 or n_boot <= 0:
        return out
    iu, ju = np.triu_indices(m, k=1)
    px, py = _RankPlan(cosine_distance_triangle(x), iu, ju), _RankPlan(cosine_distance_triangle(y), iu, ju)
    kx, ky = x @ x.T, y @ y.T
    rng = np.random.default_rng(seed)
    for r in range(n_boot):
        c = np.bincount(rng.integers(0, m, m), minlength=m).astype(np.float64)
        w = c[iu] * c[ju]
        if w.sum() > 0:
            out["rsa_boot"][r] = _weighted_pearson(px.ranks(c), py.ranks(c), w)
        out["cka_boot"][r] = _weighted_cka(kx, ky, c)
    return out
