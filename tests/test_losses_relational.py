"""Teacher-student (relational) losses and the batch miners against brute-force loop implementations:
value and gradient in float64, with degenerate triples masked (default) and kept (the original's
choice), chunked == unchunked, a one-hot teacher's angle gradient, and the miners' sampling
distributions.

Every loss registered with convention ``relational`` must have an entry in :data:`REFERENCES` and
every registered miner one in :data:`MINER_REFERENCES`: the tests are parametrized over the
registries, so a new loss or miner without a reference fails, naming it.
:func:`test_every_registered_loss_has_a_reference` checks every registered loss, of all three
conventions, against the reference table of its convention (here, ``tests/test_losses_labelled.py``
and ``tests/test_ntxent.py``), and :func:`test_every_reference_is_a_registered_loss` the tables
against the registry."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import stats

from simtool.errors import UserError
from simtool.losses import CONVENTIONS, LOSSES, MINERS, create_loss, create_miner
from simtool.losses.miners import RelaxedSamplingMattersMiner
from tests.test_losses_labelled import REFERENCES as LABELLED_REFERENCES
from tests.test_ntxent import REFERENCES as PAIR_REFERENCES

RELATIONAL = [name for name in LOSSES.names() if LOSSES[name].convention == "relational"]  # from the registry


# ------------------------------------------------------------------------------ references
def norm(v):
    return torch.sqrt(sum(x * x for x in v))


def ref_distances(x):
    """B x B list of lists: safe_sqrt of the squared difference, 0 on the diagonal."""
    b = x.shape[0]
    zero = x.new_zeros(())
    out = [[zero] * b for _ in range(b)]
    for i in range(b):
        for j in range(b):
            if i != j:
                sq = sum((x[i, k] - x[j, k]) ** 2 for k in range(x.shape[1]))
                out[i][j] = torch.sqrt(torch.clamp(sq, min=1e-12))
    return out


def ref_teacher(t):
    """Per-run and mean teacher distances (no gradient)."""
    runs = [ref_distances(t[:, r].detach()) for r in range(t.shape[1])]
    b = t.shape[0]
    mean = [[sum(run[i][j] for run in runs) / len(runs) for j in range(b)] for i in range(b)]
    return runs, mean


def ref_unit_diff(x, i, j):
    if i == j:
        return x.new_zeros(x.shape[1])
    v = x[i] - x[j]
    return v / (norm(v) + 1e-12)


def ref_angle(x, i, j, k):
    return (ref_unit_diff(x, i, j) * ref_unit_diff(x, i, k)).sum()


def huber(v, delta=1.0):
    return 0.5 * v * v if abs(float(v.detach())) < delta else delta * (abs(v) - 0.5 * delta)


def relu(v):
    return torch.clamp(v, min=0.0)


def triples(b, keep):
    for a, p, n in itertools.product(range(b), repeat=3):
        if keep or (a != p and a != n and p != n):
            yield a, p, n


# One loss's value, written from the formulas of the method reference: (opts, s, t, keep[, mined]) -> scalar, where
# mined (for the losses with a miner) is a list of (a, p, n) triples replacing all the triples of the batch.
def ref_rkd(opts, s, t, keep, mined=None):
    b = s.shape[0]
    d = ref_distances(s)
    _, dbar = ref_teacher(t)
    wd, wa, delta = opts.get("distance_weight", 1.0), opts.get("angle_weight", 2.0), opts.get("delta", 1.0)
    mu = [sum(d[i]) / (b - 1) for i in range(b)]
    mub = [sum(dbar[i]) / (b - 1) for i in range(b)]
    pairs = [(i, j) for i in range(b) for j in range(b) if keep or i != j]
    l_dist = sum(huber(d[i][j] / mu[i] - dbar[i][j] / mub[i], delta) for i, j in pairs) / len(pairs)
    chosen = list(triples(b, keep)) if mined is None else mined
    l_angle = 0.0
    for i, j, k in chosen:
        abar = sum(ref_angle(t[:, r], i, j, k) for r in range(t.shape[1])) / t.shape[1]
        l_angle = l_angle + huber(ref_angle(s, i, j, k) - abar, delta)
    l_angle = l_angle / max(1, len(chosen))
    return wd * l_dist + wa * l_angle


def ref_relaxed_contrastive(opts, s, t, keep):
    b = s.shape[0]
    d = ref_distances(s)
    _, dbar = ref_teacher(t)
    m, tau = opts.get("margin", 1.0), opts.get("tau", 1.0)
    total = 0.0
    for i in range(b):
        mu = sum(d[i]) / (b if keep else b - 1)
        for j in range(b):
            if i == j:
                continue
            w = torch.exp(-dbar[i][j] ** 2 / tau)
            dh = d[i][j] / mu
            total = total + w * dh**2 + (1 - w) * relu(m - dh) ** 2
    return total / (b * (b - 1))


def ref_weighted_triples(term, s, t, keep, mined=None):
    """``sum W l / sum W`` over the triples (all, or the mined ones), with
    ``term(a, p, n, d, runs, dbar) -> (W l, W)``; 0 when no triple has weight."""
    d = ref_distances(s)
    runs, dbar = ref_teacher(t)
    num, den = 0.0, 0.0
    for a, p, n in list(triples(s.shape[0], keep)) if mined is None else mined:
        wl, w = term(a, p, n, d, runs, dbar)
        num, den = num + wl, den + w
    return num / den if den else s.sum() * 0


def ref_relaxed_triplet(opts, s, t, keep):
    m, m2, tau = opts.get("margin", 0.5), opts.get("margin2", 0.0), opts.get("tau", 0.25)

    def term(a, p, n, d, runs, dbar):
        if opts.get("weights", "triplets") == "triplets":
            w = torch.sigmoid((dbar[a][n] - dbar[a][p] - m2) / tau)
        else:
            wp = math.exp(-float(dbar[a][p]) / tau) if a != p else 0.0
            wn = 1 - math.exp(-float(dbar[a][n]) / tau) if a != n else 0.0
            w = wp * wn
        return w * relu(m - (d[a][n] - d[a][p])), float(torch.as_tensor(w).detach())

    return ref_weighted_triples(term, s, t, keep)


def ref_mtt(opts, s, t, keep):
    mt, m = opts.get("teacher_margin", 0.0), opts.get("margin", 0.2)

    def term(a, p, n, d, runs, dbar):
        votes = sum(1 for run in runs if float((run[a][n] - run[a][p]).detach()) > mt)
        return (relu(d[a][p] - d[a][n] + m), 1) if votes > len(runs) / 2 else (0.0, 0)

    return ref_weighted_triples(term, s, t, keep)


def ref_stmr(opts, s, t, keep, mined=None):
    """In the original's form with ``gamma = log(1/alpha - 1) / tau``."""
    tau, beta = opts.get("tau", 5.0), opts.get("beta", 0.5)

    def sp(x):
        return torch.log(1 + torch.exp(x))

    def term(a, p, n, d, runs, dbar):
        tm, tbar = d[a][n] - d[a][p], dbar[a][n] - dbar[a][p]
        alpha = torch.sigmoid(tbar / beta)
        gamma = torch.log(1 / alpha - 1) / tau
        return (alpha * sp(tau * (tbar - tm + gamma)) + (1 - alpha) * sp(tau * (tm - tbar - gamma))) / tau, 1

    return ref_weighted_triples(term, s, t, keep, mined)


def ref_relaxed_facenet(opts, s, t, keep):
    b = s.shape[0]
    d = ref_distances(s)
    _, dbar = ref_teacher(t)
    m, m2, tau = opts.get("margin", 0.5), opts.get("margin2", 0.0), opts.get("tau", 0.25)
    total, den = 0.0, 0.0
    for a in range(b):
        for p in range(b):
            if a == p:
                continue
            wap = torch.exp(-dbar[a][p] / tau)
            best = s.new_zeros(())
            for n in range(b):
                if not keep and n in (a, p):
                    continue
                loss = relu(d[a][p] - d[a][n] + m)
                if 0 < float(loss.detach()) <= m:
                    w = torch.sigmoid((dbar[a][n] - dbar[a][p] - m2) / tau)
                    if float((loss * w).detach()) > float(best.detach()):
                        best = loss * w
            total = total + wap * best
            den = den + wap
    return total / den


def ref_relaxed_infonce(opts, s, t, keep):
    b = s.shape[0]
    _, dbar = ref_teacher(t)
    tau = opts.get("tau", 0.5)
    sim = [[(s[i] * s[j]).sum() for j in range(b)] for i in range(b)]
    total, den = 0.0, 0.0
    for a in range(b):
        neg = sum((1 - torch.exp(-dbar[a][n] / tau)) * torch.exp(sim[a][n] / tau) for n in range(b) if n != a)
        for p in range(b):
            if p == a:
                continue
            w = torch.exp(-dbar[a][p] / tau)
            pos = torch.exp(sim[a][p] / tau)
            total = total + w * -torch.log(pos / (pos + neg))
            den = den + w
    return total / den


def ref_relaxed_multisimilarity(opts, s, t, keep):
    b = s.shape[0]
    _, dbar = ref_teacher(t)
    lam, tau, alpha, beta = opts.get("lam", 1.0), opts.get("tau", 1.0), opts.get("alpha", 1.0), opts.get("beta", 2.0)
    total = 0.0
    for a in range(b):
        pos, neg = 0.0, 0.0
        for j in range(b):
            sim = (s[a] * s[j]).sum()
            w = torch.exp(-dbar[a][j] ** 2 / tau) if j != a else 0.0
            if j != a:
                pos = pos + w * torch.exp(alpha * (lam - sim))
            if j != a or keep:
                neg = neg + (1 - w) * torch.exp(beta * (sim - lam))
        total = total + torch.log(1 + pos) / alpha + torch.log(1 + neg) / beta
    return total / b


class Reference(NamedTuple):
    """A relational loss's brute-force reference and the option settings it is tested with (each also with
    ``keep_degenerate`` false and true)."""

    value: Callable
    options: list[dict]


REFERENCES: dict[str, Reference] = {
    "rkd": Reference(ref_rkd, [{}, {"distance_weight": 0.5, "angle_weight": 1.0, "delta": 0.5}]),
    "relaxed_contrastive": Reference(ref_relaxed_contrastive, [{}, {"margin": 0.8, "tau": 0.5}]),
    "relaxed_triplet": Reference(ref_relaxed_triplet, [{}, {"weights": "pairs", "margin": 0.3, "tau": 0.5}]),
    "relaxed_facenet": Reference(ref_relaxed_facenet, [{}, {"margin": 0.8, "tau": 0.4, "margin2": 0.05}]),
    "relaxed_infonce": Reference(ref_relaxed_infonce, [{}, {"tau": 0.3}]),
    "relaxed_multisimilarity": Reference(ref_relaxed_multisimilarity, [{}, {"lam": 0.5, "alpha": 2.0, "beta": 3.0}]),
    "stmr": Reference(ref_stmr, [{}, {"tau": 2.0, "beta": 0.3}]),
    "mtt": Reference(ref_mtt, [{}, {"margin": 0.5, "teacher_margin": 0.05}]),
}


def reference(name: str) -> Reference:
    """The reference of the relational loss ``name``; fails, naming it, when it has none."""
    assert name in REFERENCES, f"the relational loss {name!r} has no reference: add one to REFERENCES in tests/test_losses_relational.py"
    return REFERENCES[name]


def ref_relational(name, opts, s, t, keep, mined=None):
    """The reference value of ``name`` (``mined``: the miner's triples, for the losses with a miner)."""
    fn = reference(name).value
    return fn(opts, s, t, keep) if mined is None else fn(opts, s, t, keep, mined=mined)


def inputs(b=6, e=4, r=3, dt=3, seed=0, nonneg_teacher=True):
    g = torch.Generator().manual_seed(seed)
    s = F.normalize(torch.randn(b, e, generator=g, dtype=torch.float64), dim=1).requires_grad_(True)
    t = torch.randn(b, r, dt, generator=g, dtype=torch.float64)
    if nonneg_teacher:
        t = t.abs()
    return s, F.normalize(t, dim=-1)


# ------------------------------------------------------------------------------------- tests
def reference_tables() -> dict[str, tuple[dict, str]]:
    """Convention -> (its table of reference tests, the test file holding it)."""
    return {
        "pair": (PAIR_REFERENCES, "tests/test_ntxent.py"),
        "labelled": (LABELLED_REFERENCES, "tests/test_losses_labelled.py"),
        "relational": (REFERENCES, "tests/test_losses_relational.py"),
    }


@pytest.mark.parametrize("name", LOSSES.names())
def test_every_registered_loss_has_a_reference(name):
    tables = reference_tables()
    assert set(tables) == set(CONVENTIONS), "a convention without a table of reference tests"
    convention = LOSSES[name].convention
    table, where = tables[convention]
    assert name in table, f"the registered loss {name!r} (convention {convention!r}) has no reference: add one to REFERENCES in {where}"


def test_every_reference_is_a_registered_loss():
    for convention, (table, where) in reference_tables().items():
        for name in table:
            assert name in LOSSES and LOSSES[name].convention == convention, f"REFERENCES in {where} has {name!r}, which is no registered {convention} loss"


def test_paper_defaults():
    rt = create_loss("relaxed_triplet")
    assert (rt.margin, rt.margin2, rt.tau, rt.weights) == (0.5, 0.0, 0.25, "triplets")
    st = create_loss("stmr")
    assert (st.tau, st.beta, st.miner, st.keep_degenerate) == (5.0, 0.5, None, False)
    mt = create_loss("mtt")
    assert (mt.teacher_margin, mt.margin) == (0.0, 0.2)
    rms = create_loss("relaxed_multisimilarity")
    assert (rms.lam, rms.tau, rms.alpha, rms.beta) == (1.0, 1.0, 1.0, 2.0)
    assert create_loss("relaxed_infonce").tau == 0.5
    rc = create_loss("relaxed_contrastive")
    assert (rc.margin, rc.tau) == (1.0, 1.0)
    rkd = create_loss("rkd")
    assert (rkd.distance_weight, rkd.angle_weight) == (1.0, 2.0)


@pytest.mark.parametrize("name", RELATIONAL)
@pytest.mark.parametrize("keep", [False, True])
def test_matches_loop_reference_value_and_gradient(name, keep):
    for k, opts in enumerate(reference(name).options):
        s, t = inputs(seed=k + (10 if keep else 0))
        loss = create_loss(name, keep_degenerate=keep, **opts)
        got = loss(s, t)
        (g_got,) = torch.autograd.grad(got, s)
        want = ref_relational(name, opts, s, t, keep)
        (g_want,) = torch.autograd.grad(want, s)
        assert got.dtype == torch.float64
        assert got.item() == pytest.approx(want.item(), rel=1e-9, abs=1e-12), (name, keep, opts)
        assert torch.allclose(g_got, g_want, rtol=1e-7, atol=1e-10), (name, keep, opts, (g_got - g_want).abs().max())


def test_degenerate_triples_change_the_dense_losses():
    s, t = inputs(seed=3)
    for name in ["rkd", "relaxed_triplet", "relaxed_facenet", "stmr", "mtt", "relaxed_multisimilarity", "relaxed_contrastive"]:
        a = create_loss(name)(s, t).item()
        b = create_loss(name, keep_degenerate=True)(s, t).item()
        assert a != pytest.approx(b, rel=1e-6), name


@pytest.mark.parametrize("name", ["rkd", "relaxed_triplet", "relaxed_facenet", "stmr", "mtt"])
@pytest.mark.parametrize("keep", [False, True])
def test_chunked_equals_unchunked(name, keep):
    s, t = inputs(b=11, e=5, r=2, dt=4, seed=4)
    whole = create_loss(name, chunk=11, keep_degenerate=keep)(s, t)
    (g_whole,) = torch.autograd.grad(whole, s)
    for chunk in (None, 1, 3, 50):
        v = create_loss(name, chunk=chunk, keep_degenerate=keep)(s, t)
        (g,) = torch.autograd.grad(v, s)
        assert v.item() == pytest.approx(whole.item(), rel=1e-12), (name, chunk)
        assert torch.allclose(g, g_whole, atol=1e-13), (name, chunk)


@pytest.mark.parametrize("name", ["rkd", "stmr", "relaxed_facenet", "relaxed_infonce"])
def test_gradcheck(name):
    s, t = inputs(b=5, e=3, r=2, dt=3, seed=5)
    loss = create_loss(name, chunk=2) if name != "relaxed_infonce" else create_loss(name)
    assert torch.autograd.gradcheck(lambda x: loss(x, t), (s,), eps=1e-6, atol=1e-5)


def test_no_grad_mode_gives_the_same_value():
    s, t = inputs(b=7, seed=6)
    for name in RELATIONAL:
        loss = create_loss(name)
        with torch.no_grad():
            v0 = loss(s, t)
        assert v0.item() == pytest.approx(loss(s, t).item(), rel=1e-12) and not v0.requires_grad


def test_one_hot_teacher_angle_term_has_gradients():
    # class datasets: the teacher is a one-hot class vector (B, 1, C); same-class rows coincide
    classes = torch.tensor([0, 0, 1, 1, 2, 3])
    t = F.one_hot(classes, 4).to(torch.float64).unsqueeze(1)
    s, _ = inputs(b=6, seed=7)
    angle_only = create_loss("rkd", distance_weight=0.0, angle_weight=1.0)
    v = angle_only(s, t)
    (g,) = torch.autograd.grad(v, s)
    assert g.abs().max() > 1e-3, "the student's angle term trains with a one-hot teacher"
    want = ref_relational("rkd", {"distance_weight": 0.0, "angle_weight": 1.0}, s, t, keep=False)
    assert v.item() == pytest.approx(want.item(), rel=1e-9)
    assert torch.allclose(g, torch.autograd.grad(want, s)[0], atol=1e-9)
    # the teacher's same-class distances are exactly 0, so mtt never votes for within-class margins
    assert create_loss("mtt")(s, t).item() > 0
    for name in RELATIONAL:
        assert torch.isfinite(create_loss(name)(s, t)), name


def test_teacher_mean_of_distance_matrices_not_of_embeddings():
    s, t = inputs(b=6, r=3, seed=8)
    loss = create_loss("relaxed_triplet")
    mean_embedding = t.mean(1, keepdim=True)
    assert loss(s, t).item() != pytest.approx(loss(s, mean_embedding).item(), rel=1e-6)
    same = torch.cat([t[:, :1]] * 3, dim=1)
    assert loss(s, same).item() == pytest.approx(loss(s, t[:, 0]).item(), rel=1e-12), "(B, D_t) is R = 1"


def test_large_batch_float32_runs_and_is_finite():
    # (batch 256 and its peak memory: benchmarks/bench_relational_losses.py)
    g = torch.Generator().manual_seed(0)
    s = F.normalize(torch.randn(96, 32, generator=g), dim=1).requires_grad_(True)
    t = F.normalize(torch.rand(96, 5, 16, generator=g), dim=-1)
    for name in ["rkd", "stmr"]:
        v = create_loss(name)(s, t)
        (grad,) = torch.autograd.grad(v, s)
        assert torch.isfinite(v) and torch.isfinite(grad).all() and grad.abs().sum() > 0


# ------------------------------------------------------------------------------------ miner
def ref_miner_probabilities(sd, td, dim, tau=0.4, lo=0.5, hi=math.sqrt(2)):
    """P(j | i) and P(k | i, j) (k not in {i, j}) from the formulas of method section 4.4."""
    b = sd.shape[0]

    def logq(x):
        return (dim - 2) * math.log(x) + 0.5 * (dim - 3) * math.log(1 - x * x / 4)

    pos = np.zeros((b, b))
    for i in range(b):
        for j in range(b):
            if i != j:
                pos[i, j] = math.exp(-float(td[i, j]) ** 2 / tau)
    neg = np.zeros((b, b, b))
    for i in range(b):
        for j in range(b):
            for k in range(b):
                if k not in (i, j):
                    dk = min(max(float(sd[i, k]), lo), 2 - 1e-6)
                    tk = min(max(float(td[i, k]), lo), hi)
                    neg[i, j, k] = math.exp(logq(tk) - logq(dk))
            if neg[i, j].sum() > 0:
                neg[i, j] /= neg[i, j].sum()
    valid = pos.max(1) >= 0.01
    pos = pos / np.maximum(pos.sum(1, keepdims=True), 1e-300)
    return valid, pos, neg


class MinerReference(NamedTuple):
    """A miner's reference sampling distribution ``probabilities(sd, td, dim) -> (valid (B,), P(j | i) (B, B),
    P(k | i, j) (B, B, B))`` (its default options), and the options that make it draw ``draws`` triples per anchor."""

    probabilities: Callable
    options: dict
    draws: int


MINER_REFERENCES: dict[str, MinerReference] = {
    "relaxed_sampling_matters": MinerReference(ref_miner_probabilities, {"per_anchor": 30000}, 30000),
}


def miner_reference(name: str) -> MinerReference:
    """The reference of the miner ``name``; fails, naming it, when it has none."""
    assert name in MINER_REFERENCES, f"the miner {name!r} has no reference: add one to MINER_REFERENCES in tests/test_losses_relational.py"
    return MINER_REFERENCES[name]


def miner_inputs(b=5, dim=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = F.normalize(torch.randn(b, dim, generator=g, dtype=torch.float64), dim=1)
    t = F.normalize(torch.rand(b, 2, 6, generator=g, dtype=torch.float64), dim=-1)
    from simtool.losses._geometry import pairwise_distances, teacher_run_distances

    return pairwise_distances(s), teacher_run_distances(t).mean(0), dim


@pytest.mark.parametrize("name", MINERS.names())
def test_every_miner_has_a_reference(name):
    miner_reference(name)


def test_miner_references_are_registered_miners():
    for name in MINER_REFERENCES:
        assert name in MINERS, f"MINER_REFERENCES has {name!r}, which is no registered miner"


def skewed_miner_inputs():
    """:func:`miner_inputs` where anchor 0 has no teacher-positive (``exp(-1.5^2 / 0.4) < 0.01``)."""
    sd, td, dim = miner_inputs()
    td[0, 1:] = td[1:, 0] = 1.5
    return sd, td, dim


@pytest.mark.parametrize("name", MINERS.names())
def test_miner_sampling_distribution(name):
    ref = miner_reference(name)
    sd, td, dim = skewed_miner_inputs()
    miner = create_miner(name, ref.options)
    a, p, n = miner(sd, td, dim, generator=torch.Generator().manual_seed(1))
    valid, pos, neg = ref.probabilities(sd, td, dim)
    anchors = np.flatnonzero(valid).tolist()
    assert set(a.tolist()) == set(anchors) and len(a) == len(anchors) * ref.draws
    b = sd.shape[0]
    for i in anchors:
        sel = a == i
        joint = np.zeros((b, b))
        np.add.at(joint, (p[sel].numpy(), n[sel].numpy()), 1)
        expected = pos[i][:, None] * neg[i]  # P(j, k | i)
        mask = expected > 0
        assert joint[~mask].sum() == 0
        chi = stats.chisquare(joint[mask], expected[mask] * ref.draws)
        assert chi.pvalue > 1e-3, (name, i, chi)
    # seeded: the same generator state gives the same triples; no generator uses the miner's own
    again = miner(sd, td, dim, generator=torch.Generator().manual_seed(1))
    assert all(torch.equal(x, y) for x, y in zip((a, p, n), again))
    state = torch.get_rng_state()
    create_miner(name, ref.options)(sd, td, dim)
    assert torch.equal(state, torch.get_rng_state()), "the global RNG is untouched"


def test_relaxed_sampling_matters_skips_anchors_and_degenerate_triples():
    sd, td, dim = skewed_miner_inputs()
    valid, _, _ = ref_miner_probabilities(sd, td, dim)
    assert not valid[0] and valid[1:].all()
    a, p, n = RelaxedSamplingMattersMiner(per_anchor=3000)(sd, td, dim, generator=torch.Generator().manual_seed(1))
    assert set(a.tolist()) == {1, 2, 3, 4} and len(a) == 4 * 3000
    assert not ((n == a) | (n == p) | (p == a)).any(), "no degenerate triple"
    state = torch.get_rng_state()
    create_miner("relaxed_sampling_matters", {"seed": 3})(sd, td, dim)
    assert torch.equal(state, torch.get_rng_state()), "the global RNG is untouched"


def test_miner_options_and_errors():
    sd, td, dim = miner_inputs(b=2)
    a, _, _ = RelaxedSamplingMattersMiner()(sd, td, dim)
    assert a.numel() == 0, "no third index for a negative"
    a, p, n = RelaxedSamplingMattersMiner(exclude_degenerate=False, min_positive_weight=0.0)(sd, td, dim)
    assert a.numel() == 2
    with pytest.raises(UserError, match="Unknown batch miner"):
        create_loss("stmr", miner="hard")
    with pytest.raises(UserError, match="does not accept miner_options"):
        create_loss("stmr", miner="relaxed_sampling_matters", miner_options={"temperature": 1})
    with pytest.raises(UserError, match="lower_cutoff < upper_cutoff"):
        RelaxedSamplingMattersMiner(lower_cutoff=1.5)


@pytest.mark.parametrize("name", ["rkd", "stmr"])
def test_mined_loss_matches_reference_on_the_mined_triples(name):
    s, t = inputs(b=7, e=4, r=2, seed=9)
    loss = create_loss(name, miner="relaxed_sampling_matters", miner_options={"tau": 1.0})
    got = loss(s, t, generator=torch.Generator().manual_seed(5))
    (g_got,) = torch.autograd.grad(got, s)
    from simtool.losses._geometry import pairwise_distances, teacher_run_distances

    miner = RelaxedSamplingMattersMiner(tau=1.0)
    a, p, n = miner(pairwise_distances(s.detach()), teacher_run_distances(t).mean(0), s.shape[1], torch.Generator().manual_seed(5))
    mined = list(zip(a.tolist(), p.tolist(), n.tolist()))
    assert len(mined) > 0
    want = ref_relational(name, {}, s, t, keep=False, mined=mined)
    assert got.item() == pytest.approx(want.item(), rel=1e-9)
    assert torch.allclose(g_got, torch.autograd.grad(want, s)[0], rtol=1e-7, atol=1e-10)
    # own generator when none is passed: seeded by miner_options.seed, and it advances
    own = create_loss(name, miner="relaxed_sampling_matters", miner_options={"tau": 1.0, "seed": 5})
    assert own(s, t).item() == pytest.approx(got.item(), rel=1e-12)


def test_errors():
    s, t = inputs()
    with pytest.raises(UserError, match="tau"):
        create_loss("stmr", tau=-1)
    with pytest.raises(UserError, match="weights"):
        create_loss("relaxed_facenet", weights="both")
    with pytest.raises(UserError, match="chunk"):
        create_loss("mtt", chunk=0)
    with pytest.raises(UserError, match="NaN"):
        create_loss("rkd")(s, torch.full_like(t, float("nan")))
    with pytest.raises(ValueError, match="teacher must be"):
        create_loss("rkd")(s, t[:3])
