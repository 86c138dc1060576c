"""Offline probes against references on small generated data: the linear probe against
scikit-learn's LogisticRegression, the ridge readout against the closed-form solution, weighted kNN
against a brute-force loop, RSA against scipy's Spearman, CKA invariances, and the bootstrap
resamples against explicitly materialised resamples; then the three evaluators end to end."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
import torch
import torch.nn.functional as F
from scipy.spatial.distance import pdist
from scipy.stats import spearmanr

from simtool.errors import UserError
from simtool.evaluators import get_evaluator, load_builtin
from simtool.formats.embeddings import Embeddings, write_embeddings
from simtool.metrics.probes import knn_neighbours, linear_predict, logistic_fit, ridge_fit, rsa_cka_bootstrap, standardize, weighted_knn
from simtool.metrics.similarity import linear_cka
from tests.conftest import cli

load_builtin()


def blobs(n: int, classes: int, d: int, seed: int, spread: float = 0.8):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((classes, d))
    y = rng.integers(0, classes, n)
    return (spread * centres[y] + rng.standard_normal((n, d))).astype(np.float32), y


# -- linear probe --------------------------------------------------------------------------------------


@pytest.mark.parametrize("l2", [1e-1, 1e-3, 1e-5])
def test_logistic_probe_agrees_with_sklearn(l2):
    sklearn = pytest.importorskip("sklearn.linear_model")
    x, y = blobs(3000, 8, 16, seed=0)
    xt, yt, xs, ys = x[:2000], y[:2000], x[2000:], y[2000:]
    fit = logistic_fit(torch.from_numpy(xt), torch.from_numpy(yt), 8, l2)
    ours = (logistic_predict_np(xs, fit) == ys).mean()
    ref = sklearn.LogisticRegression(C=1.0 / (l2 * len(xt)), max_iter=100, tol=1e-4).fit(xt, yt)
    assert abs(ours - (ref.predict(xs) == ys).mean()) <= 0.005
    assert fit.converged
    theirs = objective(xt, yt, torch.from_numpy(ref.coef_.T.copy()), torch.from_numpy(ref.intercept_.copy()), l2)
    assert fit.loss == pytest.approx(theirs, rel=1e-4), "the same objective, minimised as far"


def objective(x, y, w, b, l2) -> float:
    """mean cross-entropy + l2/2 |W|^2, in float64 (scikit-learn's objective scaled by 1/n)."""
    w, b = w.double(), b.double()
    return float(F.cross_entropy(torch.from_numpy(x).double() @ w + b, torch.from_numpy(y)) + 0.5 * l2 * (w ** 2).sum())


def logistic_predict_np(x, fit):
    return linear_predict(torch.from_numpy(x), fit.weight, fit.bias).numpy()


def test_logistic_objective_is_the_penalised_mean_cross_entropy():
    x, y = blobs(400, 5, 6, seed=1)
    l2 = 0.01
    fit = logistic_fit(torch.from_numpy(x), torch.from_numpy(y), 5, l2, tol=1e-6, max_iter=500)
    w = fit.weight.double().requires_grad_(True)
    b = fit.bias.double().requires_grad_(True)
    loss = F.cross_entropy(torch.from_numpy(x).double() @ w + b, torch.from_numpy(y)) + 0.5 * l2 * (w ** 2).sum()
    loss.backward()
    assert float(loss.detach()) == pytest.approx(objective(x, y, fit.weight, fit.bias, l2))
    assert float(loss.detach()) == pytest.approx(fit.loss, rel=1e-5)
    # a minimum up to float32: L-BFGS stops once float32 rounding hides any further decrease (scipy's
    # ftol), with the largest gradient entry 1e-6 to 2e-5 depending on the CPU's summation order;
    # the start (W = 0) has 0.3
    assert max(float(w.grad.abs().max()), float(b.grad.abs().max())) < 1e-4, "the fit is a minimum of that objective"


def test_the_gradient_at_zero_without_matrix_products_equals_the_general_one():
    from simtool.metrics.probes import _loss_grad, _loss_grad_at_zero

    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(300, 7, generator=g), torch.randint(0, 5, (300,), generator=g)
    y[:5] = torch.arange(5)
    w, b = torch.zeros(7, 5), torch.zeros(5)
    gw, gb, gw0, gb0 = torch.zeros(7, 5), torch.zeros(5), torch.zeros(7, 5), torch.zeros(5)
    loss = _loss_grad(x, y, w, b, 0.3, gw, gb, rows=64)
    loss0 = _loss_grad_at_zero(x, y, 5, gw0, gb0)
    assert loss0 == pytest.approx(loss, rel=1e-6)
    assert torch.allclose(gw0, gw, atol=1e-6) and torch.allclose(gb0, gb, atol=1e-7)


def test_ridge_readout_is_the_closed_form_solution():
    x, y = blobs(300, 4, 7, seed=2)
    n, d = x.shape
    onehot = np.eye(4)[y]
    x1 = np.hstack([x.astype(np.float64), np.ones((n, 1))])
    pen = np.diag([1.0] * d + [0.0])  # the intercept is not penalised
    for l2, (w, b) in zip([1e-3, 0.1, 10.0], ridge_fit(torch.from_numpy(x), torch.from_numpy(y), 4, [1e-3, 0.1, 10.0])):
        ref = np.linalg.solve(x1.T @ x1 + n * l2 * pen, x1.T @ onehot)
        np.testing.assert_allclose(w.numpy(), ref[:d], atol=1e-10)
        np.testing.assert_allclose(b.numpy(), ref[d], atol=1e-10)


def test_standardize_uses_the_train_statistics():
    x = torch.randn(50, 3) * torch.tensor([1.0, 5.0, 0.0]) + 2
    t = torch.randn(10, 3)
    xs, ts = standardize(x, t)
    assert torch.allclose(xs.mean(0), torch.zeros(3), atol=1e-5) and torch.allclose(xs[:, :2].std(0, unbiased=False), torch.ones(2), atol=1e-5)
    sd = x.double().std(0, unbiased=False)
    sd[2] = 1.0
    assert torch.allclose(ts.double(), (t.double() - x.double().mean(0)) / sd, atol=1e-5)


# -- weighted kNN --------------------------------------------------------------------------------------


def brute_neighbours(scores: np.ndarray, k: int) -> np.ndarray:
    """Per query row: the k best columns, by score descending, then index ascending."""
    return np.stack([np.lexsort((np.arange(len(s)), -s))[:k] for s in scores])


def test_knn_neighbours_are_exact_with_ties_across_tiles():
    rng = np.random.default_rng(3)
    memory = rng.integers(0, 3, (157, 4)).astype(np.float32)  # few distinct rows: many exact ties
    query = rng.integers(0, 3, (41, 4)).astype(np.float32)
    # euclidean on small integers: q.x - |x|^2 / 2 is exact in float32, so ties are exact too
    ref = brute_neighbours(query.astype(np.float64) @ memory.T.astype(np.float64) - 0.5 * (memory.astype(np.float64) ** 2).sum(1), 9)
    for blocks in ({}, {"query_block": 7, "ref_block": 16}, {"query_block": 1, "ref_block": 5}, {"ref_block": 200}):
        idx, _ = knn_neighbours(torch.from_numpy(query), torch.from_numpy(memory), 9, "euclidean", **blocks)
        np.testing.assert_array_equal(idx.numpy(), ref)


@pytest.mark.parametrize("distance", ["cosine", "euclidean"])
def test_weighted_knn_equals_a_brute_force_loop(distance):
    x, y = blobs(700, 6, 12, seed=4, spread=0.6)
    mem, ymem, qry = torch.from_numpy(x[:500]), y[:500], torch.from_numpy(x[500:])
    pred = weighted_knn(qry, mem, ymem, 6, k=20, temperature=0.07, distance=distance, query_block=17, ref_block=64)
    ref = []
    for q in qry:
        if distance == "cosine":
            s = (F.normalize(mem, dim=1) @ F.normalize(q, dim=0)).double().numpy()
            top = np.lexsort((np.arange(len(s)), -s))[:20]
            w = np.exp(s[top] / 0.07)
        else:
            dist = np.sqrt(((mem.double() - q.double()) ** 2).sum(1).numpy())
            top = np.lexsort((np.arange(len(dist)), dist))[:20]
            w = 1.0 / (dist[top] + 1e-5)
        votes = np.zeros(6)
        np.add.at(votes, ymem[top], w)
        ref.append(int(np.argmax(votes)))
    np.testing.assert_array_equal(pred.numpy(), np.array(ref))


def brute_cosine(query: np.ndarray, memory: np.ndarray, k: int) -> np.ndarray:
    """The exact cosine top-k (float64 dot products of the float32-normalised rows), ties to the lower index."""
    q = F.normalize(torch.from_numpy(query), dim=1).double().numpy()
    m = F.normalize(torch.from_numpy(memory), dim=1).double().numpy()
    return brute_neighbours(q @ m.T, k)


@pytest.mark.parametrize("blocks", [{}, {"query_block": 13, "ref_block": 96}, {"query_block": 1, "ref_block": 1000}])
def test_bfloat16_screen_finds_the_exact_cosine_neighbours(blocks):
    x, _ = blobs(1300, 9, 24, seed=5, spread=0.7)
    x[700:720] = x[650]  # exact duplicates: equal scores, broken by the lower index
    qry, mem = torch.from_numpy(x[1000:]), torch.from_numpy(x[:1000])
    qry[:5] = mem[650]  # queries whose 20 nearest include a run of 21 equal scores
    ref = brute_cosine(qry.numpy(), mem.numpy(), 20)
    sim = F.normalize(qry, dim=1).double() @ F.normalize(mem, dim=1).double().T
    rows = torch.arange(len(qry))[:, None]
    for screen in (True, False):
        idx, val = knn_neighbours(qry, mem, 20, screen=screen, **blocks)
        # the float64 neighbours, in their order except where float32 rounding cannot tell two apart
        torch.testing.assert_close(sim[rows, idx], sim[rows, torch.from_numpy(ref)], rtol=0, atol=1e-6)
        assert (idx.numpy() == ref).mean() > 0.999
        np.testing.assert_array_equal(idx[:5].numpy(), ref[:5])  # the run of equal scores, by index
        torch.testing.assert_close(val.double(), sim[rows, idx], rtol=0, atol=1e-6)


def test_bfloat16_screen_hands_unproven_queries_to_the_exact_path():
    from simtool.metrics.probes import _knn_screened

    rng = np.random.default_rng(6)
    base = rng.standard_normal(32).astype(np.float32)
    near = base + 3e-2 * rng.standard_normal((60, 32)).astype(np.float32)  # 60 items within 1e-3 of cosine 1, 1e-5 apart
    far = rng.standard_normal((600, 32)).astype(np.float32)
    memory = torch.from_numpy(np.concatenate([far[:300], near, far[300:]]))
    query = torch.from_numpy(np.stack([base, far[0] + 0.1, -base]))
    _, _, redo = _knn_screened(query, memory, 10, None, None)
    assert 0 in redo.tolist()  # bfloat16 cannot order items closer than its rounding
    idx, _ = knn_neighbours(query, memory, 10, screen=True)
    np.testing.assert_array_equal(idx.numpy(), brute_cosine(query.numpy(), memory.numpy(), 10))


def test_bfloat16_product_error_is_within_the_screen_bound():
    """The bound Bf16Screen proves with assumes the bfloat16 product accumulates in float32 and
    rounds once; check it on this machine's kernel for every pair."""
    from simtool.metrics.retrieval import _U16

    x, _ = blobs(3000, 5, 96, seed=7, spread=1.5)
    xn = F.normalize(torch.from_numpy(x), dim=1)
    q, m = xn[:700], xn[700:]
    a = (q.bfloat16() @ m.bfloat16().T).double()
    exact = q.double() @ m.double().T
    g = 96 * 2.0**-24 / (1 - 96 * 2.0**-24)
    resid = torch.linalg.vector_norm(m - m.bfloat16().float(), dim=1).max().double()
    q_res = torch.linalg.vector_norm(q - q.bfloat16().float(), dim=1).double()[:, None]
    bound = _U16 * a.abs() / (1 - _U16) + (1 + _U16) * (resid + g * (1 + _U16)) + q_res + g
    assert ((exact - a).abs() <= bound).all()
    assert (exact - a).abs().max() > 1e-4  # the product really is rounded (a float32 product would not test the bound)


def test_knn_vote_ties_go_to_the_lower_class():
    mem = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    assert weighted_knn(torch.tensor([[1.0, 0.0]]), mem, [3, 1], 4, k=2).item() == 1


# -- RSA, CKA and their bootstrap ------------------------------------------------------------------------


@pytest.mark.parametrize("m, p, q", [(30, 5, 3), (12, 40, 30)])  # CKA from feature covariances, and from Gram matrices (m < p)
def test_bootstrap_resamples_equal_materialised_resamples(m, p, q):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((m, p))
    y = x @ rng.standard_normal((p, q)) + rng.standard_normal((m, q))
    res = rsa_cka_bootstrap(x, y, n_boot=4, seed=7)
    draws = np.random.default_rng(7)
    iu, ju = np.triu_indices(m, k=1)
    for r in range(4):
        idx = draws.integers(0, m, m)
        distinct = idx[iu] != idx[ju]  # pairs of copies of one item are left out
        ref = spearmanr(pdist(x[idx], "cosine")[distinct], pdist(y[idx], "cosine")[distinct]).statistic
        assert res["rsa_boot"][r] == pytest.approx(ref, abs=1e-12)
        assert res["cka_boot"][r] == pytest.approx(resample_cka(x, y, idx), abs=1e-12)


def resample_cka(x: np.ndarray, y: np.ndarray, idx: np.ndarray) -> float:
    """CKA of the materialised resample x[idx], y[idx]: HSIC in sample space over every pair of
    positions except two copies of one item (a position with itself stays)."""
    m = len(idx)
    h = np.eye(m) - np.ones((m, m)) / m
    kx, ky = h @ x[idx] @ x[idx].T @ h, h @ y[idx] @ y[idx].T @ h
    keep = (idx[:, None] != idx[None, :]) | np.eye(m, dtype=bool)
    hsic = lambda a, b: (a * b * keep).sum()  # noqa: E731
    return hsic(kx, ky) / np.sqrt(hsic(kx, kx) * hsic(ky, ky))


def test_bootstrap_without_copies_is_plain_cka():
    x = np.random.default_rng(4).standard_normal((9, 4))
    y = np.random.default_rng(5).standard_normal((9, 2))
    assert resample_cka(x, y, np.arange(9)) == pytest.approx(linear_cka(x, y), abs=1e-12)


def test_bootstrap_with_tied_distances():
    x = np.array([[1, 0], [0, 1], [1, 1], [1, 0], [0, 1], [2, 2], [1, -1]], dtype=float)
    y = np.random.default_rng(6).standard_normal((7, 3))
    res = rsa_cka_bootstrap(x, y, n_boot=3, seed=1)
    draws = np.random.default_rng(1)
    iu, ju = np.triu_indices(7, k=1)
    for r in range(3):
        idx = draws.integers(0, 7, 7)
        d = idx[iu] != idx[ju]
        ref = spearmanr(pdist(x[idx], "cosine")[d], pdist(y[idx], "cosine")[d]).statistic
        assert res["rsa_boot"][r] == pytest.approx(ref, abs=1e-12) or (np.isnan(ref) and np.isnan(res["rsa_boot"][r]))


# -- the evaluators ------------------------------------------------------------------------------------


def probe_embeddings(seed: int = 8, val: bool = True) -> Embeddings:
    x, y = blobs(600, 5, 10, seed=seed, spread=0.5)
    split = np.array(["train"] * 360 + (["val"] * 80 if val else ["train"] * 80) + ["test"] * 160)
    rows = pa.table({"id": [f"i{i}" for i in range(600)], "split": split.tolist(), "category": y.tolist(),
                     "room:semantic": (y % 2).tolist()})
    model = {"name": "m", "layers": ["a", "b"], "seed": 0, "preset": "m"}
    xa = torch.from_numpy(x).unsqueeze(1)
    xb = torch.from_numpy(np.tanh(x @ np.random.default_rng(1).standard_normal((10, 4))).astype(np.float32)).unsqueeze(1)
    return Embeddings(rows=rows, models=[model], tensors={"m/a": xa, "m/b": xb}, split="all", dataset={"fingerprint": "fp"})


def options(type_: str, **kw):
    from simtool.evaluators import EVALUATORS

    return EVALUATORS.get(type_).options.model_validate({"type": type_, **kw})


def test_linear_probe_evaluator_chooses_the_penalty_on_val_and_scores_test():
    emb = probe_embeddings()
    records = get_evaluator("linear-probe", "cpu").evaluate(emb, options("linear-probe", levels=["category"], l2_grid=[1.0, 1e-2, 1e-4]))
    acc = next(r for r in records if r["layer"] == "a" and r["metric"] == "accuracy")
    x = emb.tensor("m", "a")[:, 0]
    y = emb.column("category")
    tr, va, te = (np.flatnonzero(emb.column("split") == s) for s in ("train", "val", "test"))
    xt, xv, xs = standardize(x[tr], x[va], x[te])
    val_acc = {}
    for l2 in (1.0, 1e-2, 1e-4):
        fit = logistic_fit(xt, torch.from_numpy(y[tr]), 5, l2)
        val_acc[l2] = ((linear_predict(xv, fit.weight, fit.bias).numpy() == y[va]).mean(), fit)
    best = max(val_acc, key=lambda k: (val_acc[k][0], k))  # ties: the stronger penalty
    assert f"l2={best:g} " in acc["note"] and "chosen on the val rows" in acc["note"]
    fit = val_acc[best][1]
    want = (linear_predict(xs, fit.weight, fit.bias).numpy() == y[te]).mean()
    assert acc["value"] == pytest.approx(want, abs=2 / len(te)), "warm starts may move a test item or two"
    assert acc["n"] == len(te) and acc["se"] == pytest.approx(np.sqrt(acc["value"] * (1 - acc["value"]) / len(te)))
    assert acc["level"] == "category" and "sample" in acc


def test_linear_probe_ridge_given_penalty_and_levels():
    emb = probe_embeddings(val=False)
    records = get_evaluator("linear-probe", "cpu").evaluate(emb, options("linear-probe", solver="ridge", l2=0.1))
    assert {r["level"] for r in records} == {"context", "category"}
    rec = next(r for r in records if r["layer"] == "a" and r["level"] == "category" and r["metric"] == "accuracy")
    x = emb.tensor("m", "a")[:, 0]
    y = emb.column("category")
    tr, te = np.flatnonzero(emb.column("split") == "train"), np.flatnonzero(emb.column("split") == "test")
    xt, xs = standardize(x[tr], x[te])
    w, b = ridge_fit(xt, torch.from_numpy(y[tr]), 5, [0.1])[0]
    assert rec["value"] == pytest.approx((linear_predict(xs.double(), w, b).numpy() == y[te]).mean())
    assert rec["condition"] == "solver=ridge l2=0.1 rooms=semantic"


def test_knn_evaluator_equals_the_metric():
    emb = probe_embeddings()
    records = get_evaluator("knn", "cpu").evaluate(emb, options("knn", k=7, levels=["category", "context"]))
    rec = next(r for r in records if r["layer"] == "b" and r["level"] == "context")
    x = emb.tensor("m", "b")[:, 0]
    tr, te = np.flatnonzero(emb.column("split") == "train"), np.flatnonzero(emb.column("split") == "test")
    room = emb.column("room:semantic")
    pred = weighted_knn(x[te], x[tr], room[tr], 2, k=7)
    assert rec["value"] == pytest.approx((pred.numpy() == room[te]).mean())
    assert rec["condition"] == "k=7 T=0.07 rooms=semantic"
    assert {r["condition"] for r in records} == {"k=7 T=0.07 rooms=semantic"}, "one condition for every level of a model"


def test_layers_of_a_file_with_models_of_different_layers():
    """--layers names layers of several models at once: each model is probed at the named layers it
    has; a layer no model of the file has is still one sentence."""
    emb = probe_embeddings()
    other = {"name": "n", "layers": ["c"], "seed": 0, "preset": "n"}
    two = Embeddings(rows=emb.rows, models=[*emb.models, other], tensors={**emb.tensors, "n/c": emb.tensors["m/b"]},
                     split="all", dataset={"fingerprint": "fp"})
    records = get_evaluator("knn", "cpu").evaluate(two, options("knn", levels=["category"]), layers=["a", "c"])
    assert {(r["run"], r["layer"]) for r in records} == {("m", "a"), ("n", "c")}
    with pytest.raises(UserError, match="Layer 'd' is not in any model of the file; m's layers are: a, b"):
        get_evaluator("knn", "cpu").evaluate(two, options("knn", levels=["category"]), layers=["a", "d"])


def test_probes_need_train_and_test_rows():
    emb = probe_embeddings()
    only_test = Embeddings(rows=emb.rows.slice(440), models=emb.models,
                           tensors={k: v[440:] for k, v in emb.tensors.items()}, split="test")
    with pytest.raises(UserError, match="--split all"):
        get_evaluator("knn", "cpu").evaluate(only_test, options("knn"))
    with pytest.raises(UserError, match="no column 'colour'"):
        get_evaluator("linear-probe", "cpu").evaluate(emb, options("linear-probe", levels=["colour"]))


def test_rsa_evaluator_equals_scipy_on_the_shared_items(tmp_path):
    emb = probe_embeddings()
    x = emb.tensor("m", "a")[:, 0].double().numpy()
    rng = np.random.default_rng(9)
    keep = rng.permutation(600)[:150]  # the reference knows 150 of the items, in another order, plus others
    ref = np.tanh(x[keep] @ rng.standard_normal((10, 6))) + 0.3 * rng.standard_normal((150, 6))
    ids = np.array([f"i{i}" for i in keep] + ["other1", "other2"])
    path = tmp_path / "ref.npz"
    np.savez(path, ids=ids, embedding=np.vstack([ref, np.zeros((2, 6))]))
    records = get_evaluator("rsa", "cpu").evaluate(emb, options("rsa", reference=str(path), bootstrap=50))
    order = np.argsort(keep)  # the evaluator takes the shared items in the embeddings' row order
    want = spearmanr(pdist(x[keep[order]], "cosine"), pdist(ref[order], "cosine")).statistic
    rsa_rec = next(r for r in records if r["layer"] == "a" and r["metric"] == "rsa")
    assert rsa_rec["value"] == pytest.approx(want, abs=1e-10)
    assert rsa_rec["n"] == 150 and "95% interval" in rsa_rec["note"] and rsa_rec["se"] > 0
    cka_rec = next(r for r in records if r["layer"] == "a" and r["metric"] == "cka")
    assert cka_rec["value"] == pytest.approx(linear_cka(x[keep[order]], ref[order]), abs=1e-10)
    test = get_evaluator("rsa", "cpu").evaluate(emb, options("rsa", reference=str(path), bootstrap=0, split="test"))
    only = np.sort(keep[keep >= 440])  # the test rows are 440..599
    sel = np.searchsorted(keep[order], only)
    rec = next(r for r in test if r["layer"] == "a" and r["metric"] == "rsa")
    assert rec["n"] == len(only) and rec["condition"].endswith("split=test")
    assert rec["value"] == pytest.approx(spearmanr(pdist(x[only], "cosine"), pdist(ref[order][sel], "cosine")).statistic, abs=1e-10)


def test_cka_of_a_representation_with_itself_and_its_rotation_is_one(tmp_path):
    emb = probe_embeddings()
    x = emb.tensor("m", "a")[:, 0].double().numpy()
    q, _ = np.linalg.qr(np.random.default_rng(10).standard_normal((10, 10)))
    np.save(tmp_path / "rotated.npy", x @ q)
    rows = emb.rows.set_column(0, "id", pa.array([str(i) for i in range(600)]))  # a .npy reference's ids are its row numbers
    emb2 = Embeddings(rows=rows, models=emb.models, tensors=emb.tensors, split="all")
    rec = {r["metric"]: r for r in get_evaluator("rsa", "cpu").evaluate(emb2, options("rsa", reference=str(tmp_path / "rotated.npy"), bootstrap=0))
           if r["layer"] == "a"}
    assert rec["cka"]["value"] == pytest.approx(1.0, abs=1e-12)
    assert rec["rsa"]["value"] == pytest.approx(1.0, abs=1e-12), "a rotation keeps every cosine distance"
    write_embeddings(tmp_path / "self.safetensors", emb2)
    res = get_evaluator("rsa", "cpu").evaluate(emb2, options("rsa", reference=str(tmp_path / "self.safetensors"), reference_layer="a", bootstrap=20))
    same = {r["metric"]: r["value"] for r in res if r["layer"] == "a"}
    assert same["cka"] == pytest.approx(1.0, abs=1e-12) and same["rsa"] == pytest.approx(1.0, abs=1e-12)


def test_rsa_reference_problems_are_one_sentence(tmp_path):
    emb = probe_embeddings()
    with pytest.raises(UserError, match="--reference FILE"):
        get_evaluator("rsa", "cpu").evaluate(emb, options("rsa"))
    np.save(tmp_path / "r.npy", np.zeros((5, 2)))
    with pytest.raises(UserError, match="share 0 item id"):
        get_evaluator("rsa", "cpu").evaluate(emb, options("rsa", reference=str(tmp_path / "r.npy")))
    np.savez(tmp_path / "r.npz", a=np.zeros((5, 2)), b=np.zeros((5, 2)), ids=np.arange(5))
    with pytest.raises(UserError, match="reference_layer"):
        get_evaluator("rsa", "cpu").evaluate(emb, options("rsa", reference=str(tmp_path / "r.npz")))


def test_probe_and_rsa_commands_end_to_end(tmp_path):
    emb = probe_embeddings()
    path = tmp_path / "e.safetensors"
    write_embeddings(path, emb)
    np.savez(tmp_path / "ref.npz", ids=emb.ids, embedding=emb.tensor("m", "b")[:, 0].numpy())
    for args in (["--type", "linear-probe", "--set", "l2_grid=1,0.01"], ["--type", "knn", "--set", "k=5"],
                 ["--type", "rsa", "--reference", tmp_path / "ref.npz", "--set", "bootstrap=20"]):
        r = cli("evaluate", path, *args, "--out", tmp_path / f"{args[1]}.json")
        assert r.exit_code == 0, r.output
        doc = json.loads((tmp_path / f"{args[1]}.json").read_text())
        assert doc["records"] and all(rec["type"] == args[1] for rec in doc["records"])
    r = cli("compare", tmp_path / "linear-probe.json", tmp_path / "knn.json", tmp_path / "rsa.json", "--out", tmp_path / "cmp", "--no-figures")
    assert r.exit_code == 0, r.output
    table = (tmp_path / "cmp" / "comparison.md").read_text()
    assert "linear-probe" in table and "knn" in table and "rsa" in table
    bad = cli("evaluate", path, "--type", "knn", "--set", "solver=ridge")
    assert bad.exit_code == 2 and "does not apply to --type knn" in bad.output
