"""NT-Xent (SimCLR) loss against an explicit-loop float64 reference.

Every loss registered with convention ``pair`` must have an entry in :data:`REFERENCES` (its
reference and the option settings tested): the reference test is parametrized over the registry, so
a new pair loss without a reference fails, naming it (and ``test_every_registered_loss_has_a_reference``
in ``tests/test_losses_relational.py`` checks the table against the registry)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import pytest
import torch

from simtool.errors import UserError
from simtool.losses import LOSSES, NTXentLoss, create_loss, nt_xent


def reference_nt_xent(z1: np.ndarray, z2: np.ndarray, temperature: float) -> float:
    """Textbook NT-Xent with Python loops over items i and j, in float64."""
    z = np.concatenate([z1, z2]).astype(np.float64)
    n = len(z)
    b = n // 2
    unit = [row / math.sqrt(sum(v * v for v in row)) for row in z]

    def sim(i: int, j: int) -> float:
        return sum(float(p) * float(q) for p, q in zip(unit[i], unit[j])) / temperature

    total = 0.0
    for i in range(n):
        pos = (i + b) % n
        denom = 0.0
        for j in range(n):
            if j != i:
                denom += math.exp(sim(i, j))
        total += -math.log(math.exp(sim(i, pos)) / denom)
    return total / n


class Reference(NamedTuple):
    """A pair loss's loop reference ``value(z1, z2, **options) -> float`` (NumPy, float64) and the option settings tested."""

    value: Callable
    options: list[dict]


REFERENCES: dict[str, Reference] = {
    "ntxent": Reference(reference_nt_xent, [{"temperature": 0.1}, {"temperature": 0.5}, {"temperature": 1.0}, {"temperature": 0.07}]),
}
PAIR = [name for name in LOSSES.names() if LOSSES[name].convention == "pair"]  # from the registry


def reference(name: str) -> Reference:
    """The reference of the pair loss ``name``; fails, naming it, when it has none."""
    assert name in REFERENCES, f"the pair loss {name!r} has no reference: add one to REFERENCES in tests/test_ntxent.py"
    return REFERENCES[name]


@pytest.mark.parametrize("name", PAIR)
@pytest.mark.parametrize("b,d", [(1, 3), (2, 4), (3, 2), (5, 8), (8, 16)])
def test_matches_loop_reference(name, b, d):
    rng = np.random.default_rng(b * 100 + d)
    z1 = rng.normal(size=(b, d))
    z2 = rng.normal(size=(b, d))
    for opts in reference(name).options:
        expected = reference(name).value(z1, z2, **opts)
        loss = create_loss(name, **opts)
        got64 = loss(torch.from_numpy(z1), torch.from_numpy(z2))
        assert got64.dtype == torch.float64
        assert got64.item() == pytest.approx(expected, rel=1e-10, abs=1e-12), opts
        got32 = loss(torch.from_numpy(z1).float(), torch.from_numpy(z2).float())
        assert got32.dtype == torch.float32
        assert got32.item() == pytest.approx(expected, rel=1e-4, abs=1e-5), opts


@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_function_is_the_module(temperature):
    rng = np.random.default_rng(7)
    z1, z2 = torch.from_numpy(rng.normal(size=(5, 8))), torch.from_numpy(rng.normal(size=(5, 8)))
    assert torch.equal(nt_xent(z1, z2, temperature), NTXentLoss(temperature)(z1, z2))
    assert nt_xent(z1, z2, temperature).item() == pytest.approx(reference_nt_xent(z1.numpy(), z2.numpy(), temperature), rel=1e-10)


def test_gradcheck_float64():
    torch.manual_seed(0)
    z1 = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: nt_xent(a, b, 0.5), (z1, z2))


def test_invariant_to_input_scale():
    torch.manual_seed(1)
    z1, z2 = torch.randn(6, 5, dtype=torch.float64), torch.randn(6, 5, dtype=torch.float64)
    base = nt_xent(z1, z2, 0.2)
    scaled = nt_xent(z1 * 37.0, z2 * 0.01, 0.2)
    assert scaled.item() == pytest.approx(base.item(), rel=1e-12)


def test_aligned_well_separated_is_near_minimum():
    # Positives identical, items mutually orthogonal: every negative is at cosine 0, positive at 1.
    b, t = 8, 0.1
    z = torch.eye(b, dtype=torch.float64)
    loss = nt_xent(z, z.clone(), t).item()
    # Exact value for this configuration: log(1 + (2B - 2) exp(-1/t)).
    assert loss == pytest.approx(math.log1p((2 * b - 2) * math.exp(-1 / t)), rel=1e-10)
    assert loss < 1e-2
    # Any random configuration is far worse.
    torch.manual_seed(2)
    assert nt_xent(torch.randn(b, b), torch.randn(b, b), t).item() > 1.0


def test_batch_of_one_is_zero_by_hand():
    # B = 1: the only other item of each of the 2 items is its positive, so each term is
    # -log(exp(s/t) / exp(s/t)) = 0 whatever the embeddings; the gradient is zero too.
    z1 = torch.tensor([[1.0, 2.0, -0.5]], dtype=torch.float64, requires_grad=True)
    z2 = torch.tensor([[-3.0, 0.1, 0.7]], dtype=torch.float64, requires_grad=True)
    loss = nt_xent(z1, z2, 0.1)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.all(z1.grad == 0) and torch.all(z2.grad == 0)


def test_batch_of_two_by_hand():
    # B = 2 in 2-D: z1 = (e1, e2), z2 = (e1, -e2). Items: 0:e1, 1:e2, 2:e1, 3:-e2.
    # Item 0 (pos 2): sims to 1,2,3 = 0, 1, 0 -> l = -1/t + log(1 + e^{1/t} + 1).
    # Item 1 (pos 3): sims to 0,2,3 = 0, 0, -1 -> l = 1/t + log(2 + e^{-1/t}).
    # Item 2 (pos 0) mirrors item 0; item 3 (pos 1) mirrors item 1.
    t = 0.5
    z1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    z2 = torch.tensor([[1.0, 0.0], [0.0, -1.0]], dtype=torch.float64)
    l0 = -1 / t + math.log(2 + math.exp(1 / t))
    l1 = 1 / t + math.log(2 + math.exp(-1 / t))
    assert nt_xent(z1, z2, t).item() == pytest.approx((l0 + l1) / 2, rel=1e-12)


def test_bf16_autocast_computes_logits_in_float32():
    torch.manual_seed(3)
    z1, z2 = torch.randn(16, 32), torch.randn(16, 32)
    expected = nt_xent(z1.double(), z2.double(), 0.1).item()
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        got = nt_xent(z1, z2, 0.1)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(expected, rel=1e-5)
    # bf16 inputs are upcast: only the input rounding remains.
    got_bf16 = nt_xent(z1.bfloat16(), z2.bfloat16(), 0.1)
    assert got_bf16.dtype == torch.float32
    assert got_bf16.item() == pytest.approx(expected, rel=2e-2)


def test_bad_inputs():
    with pytest.raises(ValueError):
        nt_xent(torch.randn(3, 4), torch.randn(2, 4))
    with pytest.raises(ValueError):
        nt_xent(torch.randn(3), torch.randn(3))
    with pytest.raises(ValueError):
        nt_xent(torch.randn(0, 4), torch.randn(0, 4))
    with pytest.raises(ValueError):
        nt_xent(torch.randn(3, 4), torch.randn(3, 4), temperature=0.0)
    with pytest.raises(UserError):
        NTXentLoss(temperature=-1)


def test_registry():
    assert LOSSES["ntxent"] is NTXentLoss
    loss = create_loss("ntxent", temperature=0.3)
    assert isinstance(loss, NTXentLoss) and loss.temperature == 0.3
    with pytest.raises(UserError, match="ntxent"):
        create_loss("infonce")
    with pytest.raises(UserError, match="temperature"):
        create_loss("ntxent", temp=0.3)
