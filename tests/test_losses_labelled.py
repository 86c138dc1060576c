"""Triplet-label (``labelled``) losses against brute-force loop implementations: value and gradient,
float64, directed and odd-one-out, with and without degenerate triplets, 2-D and (B, R, D) embeddings.

Every loss registered with convention ``labelled`` must have an entry in :data:`REFERENCES` (its
reference and the option settings tested): the tests are parametrized over the registry, so a new
loss without a reference fails, naming it (and ``test_every_registered_loss_has_a_reference`` in
``tests/test_losses_relational.py`` checks the table against the registry)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import pytest
import torch
import torch.nn.functional as F

from simtool.errors import UserError
from simtool.losses import LOSSES, create_loss

KINDS = ["directed", "odd-one-out"]
LABELLED = [name for name in LOSSES.names() if LOSSES[name].convention == "labelled"]  # from the registry


# ------------------------------------------------------------------------------ references
def ref_dist(e, i, j):
    """safe_sqrt(||e_i - e_j||^2), summed component by component."""
    sq = sum((e[i, k] - e[j, k]) ** 2 for k in range(e.shape[1]))
    return torch.sqrt(torch.clamp(sq, min=1e-12))


def ref_dot(e, i, j):
    return sum(e[i, k] * e[j, k] for k in range(e.shape[1]))


def softplus(x):
    return torch.log(1 + torch.exp(x))


def relu(x):
    return torch.clamp(x, min=0.0)


# One triplet's loss, written from the formulas of the method reference (section 4.1): (opts, e, a, b, c, kind) -> scalar.
def ref_ste(opts, e, a, b, c, kind):
    tau = opts.get("tau", 0.005)
    s = [ref_dot(e, a, b), ref_dot(e, a, c), ref_dot(e, b, c)]
    terms = s[:2] if kind == "directed" else s
    p = torch.exp(s[0] / tau) / sum(torch.exp(x / tau) for x in terms)
    if opts.get("floor") is not None:  # the original's -log(max(p, 1e-12))
        p = torch.clamp(p, min=opts["floor"])
    return -torch.log(p)


def ref_triplet(opts, e, a, b, c, kind):
    m = opts.get("margin", 0.2)
    d01, d02, d12 = ref_dist(e, a, b), ref_dist(e, a, c), ref_dist(e, b, c)
    if kind == "directed":
        return relu(d01 - d02 + m)
    return (relu(d01 - d02 + m) + relu(d01 - d12 + m)) / 2


def ref_double_margin(opts, e, a, b, c, kind):
    beta, m = opts.get("beta", 1.2), opts.get("margin", 0.2)
    d01, d02, d12 = ref_dist(e, a, b), ref_dist(e, a, c), ref_dist(e, b, c)

    def g(dp, dn):
        return relu(dp - (beta - m)) + relu((beta + m) - dn)

    return g(d01, d02) if kind == "directed" else (g(d01, d02) + g(d01, d12)) / 2


def ref_double_contrastive(opts, e, a, b, c, kind):
    mp, mn = opts.get("margin_positive", 0.0), opts.get("margin_negative", 1.0)
    d01, d02, d12 = ref_dist(e, a, b), ref_dist(e, a, c), ref_dist(e, b, c)
    if kind == "directed":
        return (relu(d01 - mp) + relu(mn - d02)) / 2
    return (relu(d01 - mp) + relu(mn - d02) + relu(mn - d12)) / 3


def ref_double_multisimilarity(opts, e, a, b, c, kind):
    lam, alpha, beta = opts.get("lam", 0.5), opts.get("alpha", 2.0), opts.get("beta", 40.0)
    s01, s02, s12 = ref_dot(e, a, b), ref_dot(e, a, c), ref_dot(e, b, c)

    def f(sp, sn):
        return softplus(alpha * (lam - sp)) / alpha + softplus(beta * (sn - lam)) / beta

    return f(s01, s02) if kind == "directed" else (f(s01, s02) + f(s01, s12)) / 2


class Reference(NamedTuple):
    """A labelled loss's brute-force reference (one triplet's loss) and the option settings it is tested with."""

    per_triplet: Callable
    options: list[dict]


REFERENCES: dict[str, Reference] = {
    "ste": Reference(ref_ste, [{}, {"tau": 0.5}, {"tau": 0.02, "floor": 1e-6}]),
    "triplet": Reference(ref_triplet, [{}, {"margin": 0.5}]),
    "double_margin": Reference(ref_double_margin, [{}, {"beta": 1.0, "margin": 0.3}]),
    "double_contrastive": Reference(ref_double_contrastive, [{}, {"margin_positive": 0.3, "margin_negative": 1.2}]),
    "double_multisimilarity": Reference(ref_double_multisimilarity, [{}, {"lam": 0.2, "alpha": 3.0, "beta": 10.0}]),
}


def reference(name: str) -> Reference:
    """The reference of the labelled loss ``name``; fails, naming it, when it has none."""
    assert name in REFERENCES, f"the labelled loss {name!r} has no reference: add one to REFERENCES in tests/test_losses_labelled.py"
    return REFERENCES[name]


def ref_loss(name, opts, emb, triplets, kind):
    """Mean over triplets; (B, R, D) embeddings: sum over repetitions of each one's mean."""
    if emb.dim() == 2:
        emb, triplets = emb.unsqueeze(1), triplets.unsqueeze(0)
    r = emb.shape[1]
    if triplets.dim() == 2:
        triplets = triplets.unsqueeze(0).expand(r, -1, -1)
    total = 0.0
    for rep in range(r):
        e = emb[:, rep]
        terms = [reference(name).per_triplet(opts, e, int(a), int(b), int(c), kind) for a, b, c in triplets[rep].tolist()]
        total = total + sum(terms) / len(terms)
    return total


def unit(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=torch.float64), dim=-1)


def some_triplets(b, t, seed=0, degenerate=False):
    g = torch.Generator().manual_seed(seed)
    trip = torch.stack([torch.randperm(b, generator=g)[:3] for _ in range(t)])
    if degenerate:
        trip = torch.cat([trip, torch.tensor([[0, 0, 1], [2, 3, 3], [4, 5, 4], [1, 1, 1]])])
    return trip


# ------------------------------------------------------------------------------------- tests
def test_registered_defaults():
    assert create_loss("ste").tau == 0.005 and create_loss("triplet").margin == 0.2
    dm = create_loss("double_margin")
    assert (dm.beta, dm.margin) == (1.2, 0.2)
    dc = create_loss("double_contrastive")
    assert (dc.margin_positive, dc.margin_negative) == (0.0, 1.0)
    ms = create_loss("double_multisimilarity")
    assert (ms.lam, ms.alpha, ms.beta) == (0.5, 2.0, 40.0)


@pytest.mark.parametrize("name", LABELLED)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("degenerate", [False, True])
def test_matches_loop_reference_value_and_gradient(name, kind, degenerate):
    for k, opts in enumerate(reference(name).options):
        emb = unit(8, 5, seed=k).requires_grad_(True)
        trip = some_triplets(8, 10, seed=k, degenerate=degenerate)
        loss = create_loss(name, **opts)
        got = loss(emb, trip, kind)
        (g_got,) = torch.autograd.grad(got, emb)
        want = ref_loss(name, opts, emb, trip, kind)
        (g_want,) = torch.autograd.grad(want, emb)
        assert got.dtype == torch.float64
        assert got.item() == pytest.approx(want.item(), rel=1e-10, abs=1e-12), (name, kind, opts)
        assert torch.allclose(g_got, g_want, rtol=1e-8, atol=1e-10), (name, kind, opts)
        assert torch.isfinite(g_got).all()


@pytest.mark.parametrize("name", LABELLED)
@pytest.mark.parametrize("kind", KINDS)
def test_repetitions_sum_of_their_own_means(name, kind):
    emb = unit(9, 3, 4, seed=3).requires_grad_(True)  # (B, R, D)
    shared = some_triplets(9, 7, seed=4, degenerate=True)
    per_rep = torch.stack([some_triplets(9, 6, seed=10 + r) for r in range(3)])  # (R, T, 3)
    opts = reference(name).options[-1]
    loss = create_loss(name, **opts)
    for trip in (shared, per_rep):
        got = loss(emb, trip, kind)
        want = ref_loss(name, opts, emb, trip, kind)
        assert got.item() == pytest.approx(want.item(), rel=1e-10)
        g_got, g_want = torch.autograd.grad(got, emb)[0], torch.autograd.grad(want, emb)[0]
        assert torch.allclose(g_got, g_want, rtol=1e-8, atol=1e-10)
    # each repetition's gradient is that of its own loss alone
    single = emb[:, 1].detach().clone().requires_grad_(True)
    (g_single,) = torch.autograd.grad(loss(single, shared, kind), single)
    (g_all,) = torch.autograd.grad(loss(emb, shared, kind), emb)
    assert torch.allclose(g_all[:, 1], g_single, atol=1e-12)
    per = loss.per_triplet(emb, shared, kind)
    assert per.shape == (3, len(shared)) and loss.per_triplet(emb[:, 0], shared, kind).shape == (len(shared),)


@pytest.mark.parametrize("name", LABELLED)
def test_gradcheck_fused_gather(name):
    emb = unit(6, 4, seed=5).requires_grad_(True)
    trip = some_triplets(6, 5, seed=6)
    loss = create_loss(name, **reference(name).options[-1])
    for kind in KINDS:
        assert torch.autograd.gradcheck(lambda e, kind=kind: loss(e, trip, kind), (emb,), eps=1e-6, atol=1e-5)


def test_blocks_on_cpu_equal_one_block(monkeypatch):
    from simtool.losses import _geometry

    emb = unit(50, 2, 8, seed=7).requires_grad_(True)
    trip = some_triplets(50, 300, seed=8, degenerate=True)
    loss = create_loss("ste", tau=0.1)
    v1 = loss(emb, trip, "odd-one-out")
    (g1,) = torch.autograd.grad(v1, emb)
    monkeypatch.setattr(_geometry, "_CPU_TRIPLET_BLOCK", 7)
    v2 = loss(emb, trip, "odd-one-out")
    (g2,) = torch.autograd.grad(v2, emb)
    assert v1.item() == pytest.approx(v2.item(), rel=1e-12) and torch.allclose(g1, g2, atol=1e-14)


def test_float32_close_to_float64_and_autocast():
    emb64 = unit(10, 6, seed=9)
    trip = some_triplets(10, 20, seed=9)
    for name in LABELLED:
        loss = create_loss(name)
        a = loss(emb64, trip, "odd-one-out").item()
        b = loss(emb64.float(), trip, "odd-one-out")
        assert b.dtype == torch.float32 and b.item() == pytest.approx(a, rel=1e-4, abs=1e-5)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            c = loss(emb64.float(), trip, "odd-one-out")
        assert c.dtype == torch.float32 and c.item() == pytest.approx(a, rel=1e-4, abs=1e-5)


def test_ste_odd_one_out_is_the_choice_probability():
    # -log of the softmax probability of the labelled pair, computed independently
    emb = unit(3, 4, seed=11)
    loss = create_loss("ste", tau=0.5)
    s = emb @ emb.t()
    p = torch.softmax(torch.stack([s[0, 1], s[0, 2], s[1, 2]]) / 0.5, 0)[0]
    assert loss(emb, torch.tensor([[0, 1, 2]]), "odd-one-out").item() == pytest.approx(-math.log(p.item()), rel=1e-12)
    pd = torch.softmax(torch.stack([s[0, 1], s[0, 2]]) / 0.5, 0)[0]
    assert loss(emb, torch.tensor([[0, 1, 2]]), "directed").item() == pytest.approx(-math.log(pd.item()), rel=1e-12)


def test_no_triplets_and_errors():
    emb = unit(4, 3, seed=1).requires_grad_(True)
    zero = create_loss("triplet")(emb, torch.zeros(0, 3, dtype=torch.int64), "directed")
    assert zero.item() == 0.0 and zero.requires_grad
    with pytest.raises(UserError, match="Unknown triplet kind"):
        create_loss("ste")(emb, torch.tensor([[0, 1, 2]]), "undirected")
    with pytest.raises(UserError, match="tau"):
        create_loss("ste", tau=0)
    with pytest.raises(UserError, match="margin"):
        create_loss("triplet", margin=-1)
    with pytest.raises(UserError, match="does not accept"):
        create_loss("ste", margin=0.2)
    with pytest.raises(IndexError):
        create_loss("ste")(emb, torch.tensor([[0, 1, 9]]), "directed")


@pytest.mark.parametrize("rows,count", [(30, 40), (300, 400), (2000, 300)])
def test_the_three_dot_product_paths_agree(rows, count, monkeypatch):
    """Dense Gram matrix, sparse SDDMM/SpMM and row gathering: the same values and gradients."""
    from simtool.losses import _geometry

    emb = unit(rows, 2, 6, seed=rows).requires_grad_(True)
    trip = torch.randint(0, rows, (count, 3), generator=torch.Generator().manual_seed(count))
    loss = create_loss("double_multisimilarity")
    results = {}
    for path in ("dense", "sparse", "gather"):
        monkeypatch.setattr(_geometry, "_FORCE_PATH", path)
        v = loss(emb, trip, "odd-one-out")
        results[path] = (v.item(), torch.autograd.grad(v, emb)[0])
    for path in ("sparse", "gather"):
        assert results[path][0] == pytest.approx(results["dense"][0], rel=1e-12), path
        assert torch.allclose(results[path][1], results["dense"][1], atol=1e-12), path
    if count <= 40:
        assert results["dense"][0] == pytest.approx(ref_loss("double_multisimilarity", {}, emb, trip, "odd-one-out").item(), rel=1e-10)
    monkeypatch.setattr(_geometry, "_FORCE_PATH", None)
    assert _geometry._dots_path(1854, 3333, torch.device("cpu")) == "sparse"
    assert _geometry._dots_path(40, 3000, torch.device("cpu")) == "dense"
    assert _geometry._dots_path(1854, 100, torch.device("cpu")) == "gather"


def test_ste_floor_gives_no_gradient_to_a_badly_violated_triplet():
    """The original's -log(max(p, 1e-12)) at tau = 0.005: a directed triplet violated by 0.2 in cosine
    has p ~ e^-40 < 1e-12, so it contributes no gradient; the stable form keeps one of order 1/tau."""
    e = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.8, 0.6]], dtype=torch.float64, requires_grad=True)  # s01 = 0.6, s02 = 0.8
    trip = torch.tensor([[0, 1, 2]])
    floored = create_loss("ste", tau=0.005, floor=1e-12)(e, trip, "directed")
    floored.backward()
    assert floored.item() == pytest.approx(-math.log(1e-12)) and torch.count_nonzero(e.grad) == 0
    e.grad = None
    stable = create_loss("ste", tau=0.005)(e, trip, "directed")
    stable.backward()
    assert stable.item() == pytest.approx(0.2 / 0.005, rel=1e-6) and e.grad.abs().max() > 100
    with pytest.raises(UserError, match="floor"):
        create_loss("ste", floor=2.0)
