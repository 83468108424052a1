"""Tests of the torch bridge (eosdyn.bridge): HVPs, device Lanczos, optimizers, trainer, data.

References: torch.autograd.functional.hessian (dense Hessian by autograd), numpy eigh,
the toy rules of eosdyn.rules run by eosdyn.simulate, closed-form losses.
"""
from __future__ import annotations

import io
import math
import os
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")

import eosdyn  # noqa: E402
import eosdyn.bridge as B  # noqa: E402
from eosdyn.bridge.hvp import HessianOperator  # noqa: E402
from eosdyn.losses.quadratic import Quadratic  # noqa: E402
from eosdyn.rules import adaptive  # noqa: E402

F64 = torch.float64


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # tiny models: one thread is fastest, and the test machines are shared
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ----------------------------------------------------------------------------- helpers
def tiny_problem(seed=0, n=24, act="tanh", dtype=F64):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = B.MLP(3, (5,), 2, act).to(dtype)
    x = torch.randn(n, 3, generator=g, dtype=dtype)
    y = torch.randn(n, 2, generator=g, dtype=dtype)
    return model, x, y


def dense_hessian(model, loss_fn, x, y):
    """Hessian of the full-data loss by torch.autograd.functional.hessian (the reference)."""
    named = [(k, p) for k, p in model.named_parameters()]
    names, params = [k for k, _ in named], [p for _, p in named]

    def f(flat):
        ps, i = [], 0
        for p in params:
            ps.append(flat[i:i + p.numel()].view_as(p))
            i += p.numel()
        return loss_fn(torch.func.functional_call(model, dict(zip(names, ps)), (x,)), y)

    flat = torch.cat([p.detach().reshape(-1) for p in params])
    return torch.autograd.functional.hessian(f, flat)


def flat_params(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).clone()


# ----------------------------------------------------------------------------- hvp
@pytest.mark.parametrize("method", ["func", "double_backward", "graph", "auto"])
def test_hvp_matches_autograd_hessian(method):
    model, x, y = tiny_problem()
    H = dense_hessian(model, B.mse_loss, x, y)
    n = H.shape[0]
    V = torch.randn(n, 4, generator=torch.Generator().manual_seed(1), dtype=F64)
    for j in range(4):
        hv, info = B.hvp(model, B.mse_loss, (x, y), V[:, j], method=method, return_info=True)
        assert hv.dtype == F64 and hv.shape == (n,)
        assert torch.allclose(hv, H @ V[:, j], rtol=0, atol=1e-10 * max(1.0, float(H.abs().max())))
    assert info.method == ("double_backward" if method == "auto" else method)   # auto on the CPU
    assert info.mode == "train" and info.batchnorm is False and info.n_examples == 24


def test_graph_hvp_reuses_its_graph_and_rebuilds_after_a_parameter_update():
    model, x, y = tiny_problem()
    batches = [(x[:10], y[:10]), (x[10:], y[10:])]
    op = B.HessianOperator(model, B.mse_loss, batches, method="graph")
    v = torch.randn(op.dim, generator=torch.Generator().manual_seed(2), dtype=F64)
    first = op.matvec(v)
    graphs = dict(op._graphs)
    assert len(graphs) == 2
    second = op.matvec(v)
    assert torch.equal(first, second)
    assert all(op._graphs[i] is graphs[i] for i in graphs)          # no rebuild at fixed θ
    with torch.no_grad():
        next(model.parameters()).add_(0.1)
    moved = op.matvec(v)
    H = dense_hessian(model, B.mse_loss, x, y)
    assert torch.allclose(moved, H @ v, rtol=0, atol=1e-10 * max(1.0, float(H.abs().max())))
    assert not torch.allclose(moved, first)


def test_hvp_batches_weighted_by_share_of_examples():
    model, x, y = tiny_problem(n=23)
    H = dense_hessian(model, B.cross_entropy_loss, x, y.argmax(1))
    v = torch.randn(H.shape[0], dtype=F64)
    lab = y.argmax(1)
    batches = [(x[:3], lab[:3]), (x[3:13], lab[3:13]), (x[13:], lab[13:])]  # unequal sizes
    hv = B.hvp(model, B.cross_entropy_loss, batches, v)
    assert torch.allclose(hv, H @ v, rtol=0, atol=1e-12)
    # an unweighted mean over batches would be wrong: guard that the test can tell
    naive = sum(B.hvp(model, B.cross_entropy_loss, [b], v) for b in batches) / 3
    assert (naive - H @ v).abs().max() > 1e-4


@settings(max_examples=15, deadline=None)
@given(cuts=st.lists(st.integers(1, 22), max_size=5, unique=True), seed=st.integers(0, 2**16))
def test_hvp_identities_any_batch_split(cuts, seed):
    """H is symmetric (uᵀHv = vᵀHu), linear in v, and the same for every split into batches."""
    model, x, y = tiny_problem(n=23)
    g = torch.Generator().manual_seed(seed)
    n = sum(p.numel() for p in model.parameters())
    u, v = torch.randn(n, generator=g, dtype=F64), torch.randn(n, generator=g, dtype=F64)
    edges = [0] + sorted(cuts) + [23]
    split = [(x[a:b], y[a:b]) for a, b in zip(edges[:-1], edges[1:])]
    op = HessianOperator(model, B.mse_loss, split)
    Hu, Hv = op.matvec(u), op.matvec(v)
    assert float(u @ Hv) == pytest.approx(float(v @ Hu), rel=1e-10, abs=1e-12)
    assert torch.allclose(op.matvec(2.0 * u - 3.0 * v), 2.0 * Hu - 3.0 * Hv, atol=1e-12)
    assert torch.allclose(Hv, B.hvp(model, B.mse_loss, (x, y), v), atol=1e-12)
    assert op.n_hvp == 3 and op.info.n_batches == len(split)


def test_hvp_float32_keeps_dtype_and_records_mode():
    model, x, y = tiny_problem(dtype=torch.float32)
    model.eval()
    v = torch.randn(sum(p.numel() for p in model.parameters()))
    hv, info = B.hvp(model, B.mse_loss, (x.double(), y.double()), v.double(), return_info=True)
    assert hv.dtype == torch.float32  # the model's dtype, whatever the data's
    assert info.mode == "eval" and info.dtype == "float32" and info.device == "cpu"
    H = dense_hessian(model.double(), B.mse_loss, x.double(), y.double())
    assert torch.allclose(hv.double(), H @ v.double(), rtol=1e-4, atol=1e-5)


def test_hvp_batchnorm_train_mode_no_side_effects():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Tanh(),
                                torch.nn.Linear(4, 2)).double()
    x, y = torch.randn(16, 3, dtype=F64), torch.randn(16, 2, dtype=F64)
    rm = model[1].running_mean.clone()
    n = sum(p.numel() for p in model.parameters())
    v = torch.randn(n, dtype=F64)
    hv, info = B.hvp(model, B.mse_loss, (x, y), v, return_info=True)
    assert info.batchnorm and info.mode == "train"
    assert torch.equal(model[1].running_mean, rm) and int(model[1].num_batches_tracked) == 0
    # train-mode BN Hessian uses batch statistics: compare with autograd's dense Hessian
    H = dense_hessian(model, B.mse_loss, x, y)
    assert torch.allclose(hv, H @ v, atol=1e-10)
    model.eval()
    hv_eval, info = B.hvp(model, B.mse_loss, (x, y), v, return_info=True)
    assert info.mode == "eval" and info.method == "double_backward"
    assert torch.allclose(hv_eval, dense_hessian(model, B.mse_loss, x, y) @ v, atol=1e-10)


# ----------------------------------------------------------------------------- sharpness
def test_sharpness_matches_eigh_of_full_hessian():
    model, x, y = tiny_problem(n=40)
    H = dense_hessian(model, B.mse_loss, x, y).numpy()
    w, U = np.linalg.eigh(H)
    res = B.sharpness(model, B.mse_loss, (x, y), k=3, tol=1e-10)
    assert res.converged and res.which == "LA"
    np.testing.assert_allclose(res.eigenvalues, w[::-1][:3], rtol=1e-9, atol=1e-11)
    assert res.eigenvectors.shape == (H.shape[0], 3) and res.eigenvectors.dtype == F64
    for j in range(3):
        overlap = abs(float(U[:, -1 - j] @ res.eigenvectors[:, j].numpy()))
        assert overlap == pytest.approx(1.0, abs=1e-8)
    assert np.all(res.residual_norms <= 1e-9 * np.abs(res.eigenvalues) + 1e-12)
    assert res.gap == pytest.approx(w[-1] - w[-2], rel=1e-8)
    assert res.hvp_info["mode"] == "train" and res.n_hvp > 0
    # warm start from the eigenvectors: far fewer HVPs, same answer
    warm = B.sharpness(model, B.mse_loss, (x, y), k=3, v0=res.eigenvectors, tol=1e-10)
    np.testing.assert_allclose(warm.eigenvalues, res.eigenvalues, rtol=1e-9)
    assert warm.n_hvp < res.n_hvp


def test_sharpness_largest_algebraic_on_indefinite_hessian():
    # away from a minimum the Hessian is indefinite; λ_max must be the largest *algebraic*
    model, x, y = tiny_problem(n=10, seed=3)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(4.0)
    H = dense_hessian(model, B.mse_loss, x, y).numpy()
    w = np.linalg.eigvalsh(H)
    assert w[0] < 0
    res = B.sharpness(model, B.mse_loss, (x, y), k=1, tol=1e-10)
    assert res.sharpness == pytest.approx(w[-1], rel=1e-9)


def test_preconditioned_sharpness_adam_matches_dense():
    model, x, y = tiny_problem(n=30)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, eps=1e-6)
    for _ in range(4):
        opt.zero_grad()
        B.mse_loss(model(x), y).backward()
        opt.step()
    H = dense_hessian(model, B.mse_loss, x, y).numpy()
    # PyTorch Adam's denominator: sqrt(v / (1 - b2^t)) + eps
    P = np.concatenate([
        (np.sqrt(opt.state[p]["exp_avg_sq"].numpy() / (1 - 0.999 ** 4)) + 1e-6).ravel()
        for p in model.parameters()])
    ref = np.sort(np.linalg.eigvals(np.diag(1 / P) @ H).real)[::-1]
    res = B.preconditioned_sharpness(model, B.mse_loss, (x, y), opt, k=2, tol=1e-10)
    np.testing.assert_allclose(res.eigenvalues, ref[:2], rtol=1e-8)
    # the same with the diagonal given explicitly
    res2 = B.preconditioned_sharpness(model, B.mse_loss, (x, y), torch.as_tensor(P), k=1, tol=1e-10)
    assert res2.sharpness == pytest.approx(ref[0], rel=1e-8)
    with pytest.raises(ValueError, match="preconditioner"):
        B.preconditioned_sharpness(model, B.mse_loss, (x, y), -torch.as_tensor(P))
    fresh = torch.optim.Adam(model.parameters())
    with pytest.raises(ValueError, match="exp_avg_sq"):
        B.preconditioned_sharpness(model, B.mse_loss, (x, y), fresh)


# ----------------------------------------------------------------------------- optimizers vs toy
def _linear_problem(d=5, n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=F64) * torch.linspace(3.0, 0.3, d, dtype=F64)
    y = torch.randn(n, 1, generator=g, dtype=F64)
    H = (X.T @ X / n).numpy()
    # ½·mean‖Xw − y‖² = ½(w − w*)ᵀH(w − w*) + const, w* the least-squares solution
    wstar = np.linalg.solve(H, (X.T @ y / n).numpy().ravel())
    return X, y, Quadratic(H=H, center=wstar)


def _run_bridge(opt_factory, X, y, theta0, steps):
    model = torch.nn.Linear(X.shape[1], 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.as_tensor(theta0)[None])
    opt = opt_factory(model.parameters())
    thetas, lrs = [flat_params(model).numpy()], []
    for _ in range(steps):
        opt.step(lambda: B.mse_loss(model(X), y))
        thetas.append(flat_params(model).numpy())
        lrs.append(opt.lr_in_force[0])
    return np.array(thetas), np.array(lrs), opt


@pytest.mark.parametrize("curv", ["lanczos", "exact"])
def test_eosada_bridge_matches_toy_rule(curv):
    X, y, loss = _linear_problem()
    theta0 = np.linspace(1.0, -1.0, 5)
    steps = 60
    # toy side: exact eigh; bridge side: Lanczos with as many steps as parameters (exact
    # in exact arithmetic for d = 5), or the dense Hessian from 5 HVPs
    rule = adaptive.EoSAda(alpha=1.9, eps=1e-3, curvature="exact")
    traj = eosdyn.simulate(loss, rule, theta0, steps)
    th, lrs, opt = _run_bridge(lambda p: B.EoSAda(p, alpha=1.9, eps=1e-3, curvature=curv, lanczos_steps=5),
                               X, y, theta0, steps)
    np.testing.assert_allclose(th, traj.theta, rtol=0, atol=1e-8)
    np.testing.assert_allclose(lrs, traj.lr[:-1], rtol=1e-8)
    assert opt.n_probes == steps  # default: a probe every step, as the toy rule
    assert lrs[-1] == pytest.approx(1.9 / (loss.lambda_max + 1e-3), rel=1e-12)


@pytest.mark.parametrize("variant", ["refined", "v1"])
def test_dcao_bridge_matches_toy_rule(variant):
    X, y, loss = _linear_problem(seed=1)
    theta0 = np.linspace(-1.0, 2.0, 5)
    steps = 80
    kw = dict(lr=0.05, momentum=0.45, weight_decay=0.01, alpha=0.2, k=2, curvature_every=7,
              variant=variant, gap_ref=0.5, wd_gain=0.5)
    traj = eosdyn.simulate(loss, adaptive.DCAO(curvature="exact", **kw), theta0, steps)
    th, lrs, opt = _run_bridge(lambda p: B.DCAO(p, lanczos_steps=5, **kw), X, y, theta0, steps)
    assert np.abs(th).max() > 0.1  # a non-trivial trajectory
    np.testing.assert_allclose(th, traj.theta, rtol=0, atol=1e-8)
    np.testing.assert_allclose(lrs, traj.lr[:-1], rtol=1e-8)
    assert opt.n_probes == math.ceil(steps / 7)
    # the schedule is the shared one
    np.testing.assert_allclose(opt.schedule(), adaptive.DCAO(curvature="exact", **kw).schedule(opt.eigenvalues),
                               rtol=0, atol=0)


def test_optimizer_without_closure_uses_grad_between_probes():
    X, y, _ = _linear_problem()
    model = torch.nn.Linear(5, 1, bias=False).double()
    opt = B.DCAO(model.parameters(), lr=0.05, curvature_every=3)
    closure = lambda: B.mse_loss(model(X), y)  # noqa: E731
    assert opt.needs_closure
    opt.step(closure)
    for _ in range(2):
        assert not opt.needs_closure
        opt.zero_grad()
        B.mse_loss(model(X), y).backward()
        assert opt.step() is None
    with pytest.raises(ValueError, match="needs a closure at step 3"):
        opt.step()


# ----------------------------------------------------------------------------- state round trip
def _net_problem():
    X, Y = B.gaussian_mixture(n=64, dim=4, n_classes=3, seed=2, dtype=F64)
    return X, Y


def _make_net(seed=0):
    torch.manual_seed(seed)
    return B.MLP(4, (8,), 3, "tanh").double()


@pytest.mark.parametrize("kind", ["eosada", "dcao"])
def test_optimizer_state_dict_round_trip_bit_identical(kind):
    X, Y = _net_problem()

    def make(model):
        if kind == "eosada":  # noise on: the generator state must round-trip
            return B.EoSAda(model.parameters(), alpha=1.5, noise_scale=1e-3, noise_decay=0.1,
                            curvature_every=2, lanczos_steps=8, seed=7)
        return B.DCAO(model.parameters(), lr=0.1, weight_decay=1e-3, curvature_every=3, lanczos_steps=10)

    N = 7
    ref_model = _make_net()
    ref = make(ref_model)
    for _ in range(2 * N):
        ref.step(lambda: B.cross_entropy_loss(ref_model(X), Y))

    model = _make_net()
    opt = make(model)
    for _ in range(N):
        opt.step(lambda: B.cross_entropy_loss(model(X), Y))
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buf)
    buf.seek(0)
    ck = torch.load(buf, weights_only=True)
    model2 = _make_net(seed=123)  # different init: everything must come from the checkpoint
    opt2 = make(model2)
    model2.load_state_dict(ck["model"])
    opt2.load_state_dict(ck["opt"])
    for _ in range(N):
        opt2.step(lambda: B.cross_entropy_loss(model2(X), Y))
    assert torch.equal(flat_params(model2), flat_params(ref_model))
    np.testing.assert_array_equal(opt2.eigenvalues, ref.eigenvalues)
    assert opt2.n_hvp == ref.n_hvp and opt2.step_count == 2 * N
    with pytest.raises(ValueError, match="eosdyn"):
        opt2.load_state_dict({k: v for k, v in ck["opt"].items() if k != "eosdyn"})


def test_train_checkpoint_resume_bit_identical(tmp_path):
    X, Y = _net_problem()
    N = 10

    def run(steps, path, resume):
        model = _make_net()
        opt = B.EoSAda(model.parameters(), alpha=1.0, noise_scale=1e-3, curvature_every=3, lanczos_steps=8)
        tr = B.train(model, B.cross_entropy_loss, (X, Y), opt, steps, track_every=4,
                     checkpoint_every=N if path else None, checkpoint_path=path, resume=resume)
        return tr, model

    straight, m_ref = run(2 * N, None, False)
    path = str(tmp_path / "ck.pt")
    first, _ = run(N, path, False)
    assert os.path.exists(path)
    resumed, m_res = run(2 * N, path, True)
    assert torch.equal(flat_params(m_res), flat_params(m_ref))
    for name in ("loss", "sharpness", "lambda2", "lr", "grad_norm"):
        np.testing.assert_array_equal(getattr(resumed, name), getattr(straight, name), err_msg=name)
    np.testing.assert_array_equal(resumed.extra["accuracy"], straight.extra["accuracy"])
    np.testing.assert_array_equal(resumed.extra["hvp_optimizer"], straight.extra["hvp_optimizer"])
    np.testing.assert_array_equal(first.loss, straight.loss[:N + 1])
    assert resumed.params["resumed_from"] == N


# ----------------------------------------------------------------------------- trainer
def test_train_records_and_tracks_true_sharpness():
    X, Y = B.digits(n=120, dtype=F64)
    torch.manual_seed(0)
    model = B.MLP(64, (12,), 10, "tanh").double()
    opt = torch.optim.SGD(model.parameters(), lr=0.3)
    tr = B.train(model, B.mse_loss, (X, Y), opt, 12, track_every=4, track_tol=1e-10)
    assert isinstance(tr, eosdyn.sim.results.Trajectory)
    assert tr.step.tolist() == list(range(13)) and not tr.diverged
    tracked = ~np.isnan(tr.sharpness)
    assert tracked.tolist() == [t % 4 == 0 for t in range(13)]
    np.testing.assert_allclose(tr.extra["gap"][tracked], (tr.sharpness - tr.lambda2)[tracked])
    # the final record is θ_12: compare with an independent dense Hessian there
    H = dense_hessian(model, B.mse_loss, X, Y).numpy()
    w = np.linalg.eigvalsh(H)
    assert tr.sharpness[-1] == pytest.approx(w[-1], rel=1e-8)
    assert tr.lambda2[-1] == pytest.approx(w[-2], rel=1e-8)
    assert tr.loss[-1] == pytest.approx(float(B.mse_loss(model(X), Y).detach()), rel=1e-12)
    # full batch: the recorded loss is the tracked full-data loss
    np.testing.assert_allclose(tr.extra["track_loss"][tracked], tr.loss[tracked], rtol=1e-12)
    assert np.all(tr.lr == 0.3) and np.all(np.diff(tr.extra["hvp_tracking"]) >= 0)
    assert np.all(np.diff(tr.extra["time_curvature"]) >= 0) and tr.extra["time_train"][-1] > 0
    assert 0 <= np.nanmin(tr.extra["accuracy"]) and np.nanmax(tr.extra["accuracy"]) <= 1
    ds = tr.to_xarray()
    assert "sharpness" in ds and "accuracy" in ds and ds.attrs["optimizer"] == "SGD"


def test_train_adam_preconditioned_and_minibatches(capsys):
    X, Y = B.gaussian_mixture(n=48, dim=4, n_classes=3, seed=1, dtype=F64)
    model = _make_net()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=1e-2)
    tr = B.train(model, B.cross_entropy_loss, B.batches((X, Y), 16), opt, 6, track_every=3,
                 track_data=(X, Y), progress=True)
    assert tr.preconditioned_sharpness is not None
    assert np.isnan(tr.preconditioned_sharpness[0])  # no Adam state before the first step
    ref = B.preconditioned_sharpness(model, B.cross_entropy_loss, (X, Y), opt, tol=1e-10)
    assert tr.preconditioned_sharpness[-1] == pytest.approx(ref.sharpness, rel=1e-5)
    # minibatch losses: record t is the loss of batch t mod 3 at θ_t
    assert tr.loss[3] != tr.extra["track_loss"][3]


def test_dcao_in_trainer_counts_probe_hvps():
    X, Y = _net_problem()
    model = _make_net()
    opt = B.DCAO(model.parameters(), lr=0.1, curvature_every=5, lanczos_steps=6)
    tr = B.train(model, B.cross_entropy_loss, (X, Y), opt, 11, track_every=None)
    assert tr.sharpness is not None and np.all(np.isnan(tr.sharpness))
    assert opt.n_probes == 3 and tr.extra["hvp_optimizer"][-1] == opt.n_hvp <= 18
    assert np.all(np.isfinite(tr.lr)) and tr.params["curvature_every"] == 5


# ----------------------------------------------------------------------------- bad input
def test_bad_input_errors(tmp_path):
    model, x, y = tiny_problem()
    n = sum(p.numel() for p in model.parameters())
    with pytest.raises(ValueError, match="k must be"):
        B.sharpness(model, B.mse_loss, (x, y), k=n + 1)
    with pytest.raises(ValueError, match="k must be"):
        B.DCAO(model.parameters(), k=n + 1)
    with pytest.raises(ValueError, match="track_k"):
        B.train(model, B.mse_loss, (x, y), torch.optim.SGD(model.parameters(), lr=0.1), 1, track_k=n + 1)
    with pytest.raises(ValueError, match="at least one example"):
        B.hvp(model, B.mse_loss, (x[:0], y[:0]), torch.zeros(n, dtype=F64))
    with pytest.raises(ValueError, match="at least one example"):
        B.sharpness(model, B.mse_loss, [], k=1)
    with pytest.raises(ValueError, match="at least one example"):
        B.train(model, B.mse_loss, (x[:0], y[:0]), torch.optim.SGD(model.parameters(), lr=0.1), 1)
    with pytest.raises(ValueError, match="v must"):
        B.hvp(model, B.mse_loss, (x, y), torch.zeros(n + 1, dtype=F64))
    with pytest.raises(ValueError, match="scalar"):
        B.hvp(model, lambda o, t: (o - t) ** 2, (x, y), torch.zeros(n, dtype=F64))
    with pytest.raises(TypeError, match="data"):
        B.hvp(model, B.mse_loss, 3, torch.zeros(n, dtype=F64))
    with pytest.raises(ValueError, match="4 inputs but 5 targets"):
        B.hvp(model, B.mse_loss, (x[:4], y[:5]), torch.zeros(n, dtype=F64))
    with pytest.raises(TypeError, match="model"):
        B.hvp(lambda z: z, B.mse_loss, (x, y), torch.zeros(n, dtype=F64))
    with pytest.raises(ValueError, match="checkpoint_path"):
        B.train(model, B.mse_loss, (x, y), torch.optim.SGD(model.parameters(), lr=0.1), 1, checkpoint_every=1)
    with pytest.raises(ValueError, match="curvature"):
        B.EoSAda(model.parameters(), curvature="power")
    with pytest.raises(ValueError, match="alpha"):
        B.EoSAda(model.parameters(), alpha=-1.0)
    with pytest.raises(ValueError, match="momentum"):
        B.DCAO(model.parameters(), momentum=1.0)


def test_parameters_on_several_devices_rejected():
    model, x, y = tiny_problem()
    # simulate a split model: one parameter on the meta device (no data needed)
    model.net[2].bias = torch.nn.Parameter(torch.empty(2, dtype=F64, device="meta"))
    n = sum(p.numel() for p in model.parameters())
    with pytest.raises(ValueError, match="several devices"):
        B.hvp(model, B.mse_loss, (x, y), torch.zeros(n, dtype=F64))
    with pytest.raises(ValueError, match="several devices"):
        B.sharpness(model, B.mse_loss, (x, y))
    with pytest.raises(ValueError, match="several devices"):
        B.EoSAda(model.parameters())
    with pytest.raises(ValueError, match="several devices"):
        B.train(model, B.mse_loss, (x, y), torch.optim.SGD(model.parameters(), lr=0.1), 1)


def test_optimizer_closure_errors():
    model, x, y = tiny_problem()
    opt = B.EoSAda(model.parameters())
    with pytest.raises(ValueError, match="needs a closure at step 0"):
        opt.step()

    def standard_closure():  # calls backward itself: the graph is gone
        opt.zero_grad()
        loss = B.mse_loss(model(x), y)
        loss.backward()
        return loss

    with pytest.raises(ValueError, match="without calling backward"):
        opt.step(standard_closure)
    with pytest.raises(ValueError, match="autograd"):
        opt.step(lambda: B.mse_loss(model(x), y).detach())
    with pytest.raises(TypeError, match="scalar tensor"):
        opt.step(lambda: 1.0)


def test_optimizer_non_finite_loss_leaves_parameters():
    model, x, y = tiny_problem()
    opt = B.DCAO(model.parameters(), lr=0.1, curvature_every=2)
    before = flat_params(model)
    with pytest.raises(B.NonFiniteLossError, match="step 0") as ei:
        opt.step(lambda: B.mse_loss(model(x), y) * float("nan"))
    assert ei.value.step == 0 and opt.step_count == 0
    assert torch.equal(flat_params(model), before)


def test_train_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    # linear model, float32, GD at 50/λ_max: the iterate grows ×49 per step and overflows
    X, y, loss = _linear_problem()
    X, y = X.float(), y.float()
    model = torch.nn.Linear(5, 1, bias=False)
    opt = torch.optim.SGD(model.parameters(), lr=50.0 / loss.lambda_max)
    path = tmp_path / "ck.pt"
    with pytest.warns(RuntimeWarning, match=r"non-finite loss .* at step (\d+)") as rec:
        tr = B.train(model, B.mse_loss, (X, y), opt, 200, track_every=None, checkpoint_every=2,
                     checkpoint_path=path)
    t = tr.diverged_at
    assert tr.diverged and 3 < t < 100 and f"step {t}" in str(rec[0].message)
    assert not math.isfinite(tr.loss[t]) and np.all(np.isfinite(tr.loss[:t]))
    assert np.all(np.isnan(tr.loss[t + 1:]))
    ck = torch.load(path, weights_only=True)
    assert ck["step"] <= t and ck["step"] % 2 == 0
    assert all(torch.isfinite(v).all() for v in ck["model"].values())
    assert f"step {ck['step']}" in str(rec[0].message)


# ----------------------------------------------------------------------------- models, losses, data
def test_mse_convention_and_losses():
    out = torch.tensor([[1.0, 2.0], [0.0, -1.0], [3.0, 3.0]], dtype=F64)
    tgt = torch.tensor([[0.0, 0.0], [1.0, 1.0], [3.0, 2.0]], dtype=F64)
    # ½ · (1/n) Σ_i ‖o_i − t_i‖² = ½ · (5 + 5 + 1)/3
    assert float(B.mse_loss(out, tgt)) == pytest.approx(11 / 6, rel=1e-15)
    lab = torch.tensor([1, 0, 1])
    onehot = torch.nn.functional.one_hot(lab, 2).to(F64)
    assert float(B.mse_loss(out, lab)) == float(B.mse_loss(out, onehot))
    ref = np.mean([-np.log(np.exp(o[c]) / np.exp(o).sum()) for o, c in zip(out.numpy(), lab.numpy())])
    assert float(B.cross_entropy_loss(out, lab)) == pytest.approx(ref, rel=1e-12)
    assert B.accuracy(out, lab) == pytest.approx(2 / 3)
    assert B.accuracy(out, onehot) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="same shape"):
        B.mse_loss(out, tgt[:, :1])


def test_models_shapes():
    assert B.MLP(6, (7, 5), 3, "relu")(torch.randn(4, 6)).shape == (4, 3)
    assert B.MLP(12, 4, 2)(torch.randn(3, 3, 2, 2)).shape == (3, 2)  # flattens images
    cnn = B.SmallCNN(3, 10, width=4, image_size=8, batchnorm=True)
    assert cnn(torch.randn(2, 3, 8, 8)).shape == (2, 10)
    with pytest.raises(ValueError, match="activation"):
        B.MLP(2, 2, 2, "sigmoidish")
    with pytest.raises(ValueError, match="image_size"):
        B.SmallCNN(image_size=10)


def test_offline_datasets():
    X, Y = B.digits()
    assert X.shape == (1797, 64) and Y.shape == (1797, 10) and X.dtype == torch.float32
    assert abs(float(X.mean())) < 1e-5 and float(X.std()) == pytest.approx(1.0, rel=1e-3)
    Xs, ys = B.digits(n=100, targets="labels", seed=3)
    assert Xs.shape == (100, 64) and ys.dtype == torch.int64 and set(ys.tolist()) <= set(range(10))
    a = B.teacher_student(n=50, in_dim=4, out_dim=2, seed=5)
    b = B.teacher_student(n=50, in_dim=4, out_dim=2, seed=5, dtype=F64)
    assert a[0].shape == (50, 4) and a[1].shape == (50, 2)
    assert torch.allclose(a[1].double(), b[1], atol=1e-6)  # same host draws for every dtype
    Xg, yg = B.gaussian_mixture(n=200, dim=3, n_classes=4, separation=6.0, seed=1)
    means = torch.stack([Xg[yg == c].mean(0) for c in range(4)])
    assert torch.allclose(means.norm(dim=1), torch.full((4,), 6.0), atol=0.8)
    Xf, yf = B.function_fitting(n=11, fn="sin", x_range=(0.0, 1.0))
    assert torch.allclose(yf[:, 0], torch.sin(Xf[:, 0]))
    assert [len(b[0]) for b in B.batches((Xf, yf), 4)] == [4, 4, 3]
    with pytest.raises(ValueError, match="n must be"):
        B.digits(n=5000)
    with pytest.raises(ValueError, match="x_range"):
        B.function_fitting(x_range=(1.0, 0.0))


def test_cifar10_reader_on_fake_files(tmp_path):
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    rng = np.random.default_rng(0)
    raw = {}
    for name, n in [("data_batch_1", 5), ("data_batch_2", 3), ("test_batch", 4)]:
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n).tolist()
        raw[name] = (data, labels)
        with open(d / name, "wb") as fh:
            pickle.dump({b"data": data, b"labels": labels, b"batch_label": name.encode()}, fh)
    X, y = B.cifar10(tmp_path, normalize=False)
    assert X.shape == (8, 3, 32, 32) and y.tolist() == raw["data_batch_1"][1] + raw["data_batch_2"][1]
    expect = np.concatenate([raw["data_batch_1"][0], raw["data_batch_2"][0]]).reshape(8, 3, 32, 32) / 255.0
    np.testing.assert_allclose(X.numpy(), expect, rtol=1e-6)
    Xt, yt = B.cifar10(d, train=False, targets="onehot", dtype=F64)  # the folder itself works too
    assert Xt.shape == (4, 3, 32, 32) and _onehot_matches(yt, raw["test_batch"][1])
    mean = np.asarray(B.data.CIFAR10_MEAN)[:, None, None]
    std = np.asarray(B.data.CIFAR10_STD)[:, None, None]
    np.testing.assert_allclose(Xt.numpy(), (raw["test_batch"][0].reshape(4, 3, 32, 32) / 255.0 - mean) / std,
                               rtol=1e-12)
    # and a small CNN trains on it
    model = B.SmallCNN(width=2)
    tr = B.train(model, B.cross_entropy_loss, B.cifar10(tmp_path), torch.optim.SGD(model.parameters(), lr=0.01),
                 2, track_every=2, track_k=1, track_tol=1e-3)
    assert np.isfinite(tr.sharpness[0])
    with pytest.raises(FileNotFoundError, match="never downloads"):
        B.cifar10(tmp_path / "nowhere")


def _onehot_matches(onehot, labels):
    return onehot.shape == (len(labels), 10) and onehot.argmax(1).tolist() == labels


# ----------------------------------------------------------------------------- GPU
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.gpu
@cuda
def test_gpu_hvp_sharpness_and_optimizer_on_device():
    model, x, y = tiny_problem(n=40)
    ref = B.sharpness(model, B.mse_loss, (x, y), k=2, tol=1e-10)
    v = torch.randn(sum(p.numel() for p in model.parameters()), dtype=F64)
    hv_cpu = B.hvp(model, B.mse_loss, (x, y), v)
    gm = model.to("cuda")
    hv_gpu, info = B.hvp(gm, B.mse_loss, (x, y), v, return_info=True)  # data moved by the bridge
    assert hv_gpu.device.type == "cuda" and info.device.startswith("cuda")
    assert torch.allclose(hv_gpu.cpu(), hv_cpu, atol=1e-10)
    res = B.sharpness(gm, B.mse_loss, (x.cuda(), y.cuda()), k=2, tol=1e-10)
    assert res.eigenvectors.device.type == "cuda"
    np.testing.assert_allclose(res.eigenvalues, ref.eigenvalues, rtol=1e-8)
    opt = B.EoSAda(gm.parameters(), noise_scale=1e-3, lanczos_steps=10)
    xc, yc = x.cuda(), y.cuda()
    for _ in range(3):
        opt.step(lambda: B.mse_loss(gm(xc), yc))
    sd = opt.state_dict()
    assert sd["eosdyn"]["generator_state"] is not None
    assert all(p.device.type == "cuda" for p in gm.parameters())


# ----------------------------------------------------------------------------- the Edge of Stability
@pytest.mark.slow
def test_edge_of_stability_full_batch_gd_mse_mlp():
    """Cohen et al. 2021: under full-batch GD the sharpness rises (progressive sharpening)
    until it reaches 2/η, then hovers there (within 10 % over the second half of the run)."""
    X, Y = B.digits(dtype=torch.float32)  # all 1797 digits, one-hot targets, MSE
    steps = 1200
    for lr in (0.25, 0.4):
        torch.manual_seed(0)
        model = B.MLP(64, (64, 64), 10, "tanh")
        tr = B.train(model, B.mse_loss, (X, Y), torch.optim.SGD(model.parameters(), lr=lr), steps,
                     track_every=20, track_k=1, track_tol=1e-4)
        assert not tr.diverged
        edge = 2.0 / lr
        s = tr.sharpness
        tracked = ~np.isnan(s)
        first = s[tracked][0]
        second_half = s[(tr.step >= steps // 2) & tracked]
        assert first < 0.75 * edge                      # starts well below the edge
        assert np.nanmax(s) > edge                      # rises to (and past) it
        assert np.all(np.abs(second_half / edge - 1.0) <= 0.10), (lr, second_half / edge)
        assert tr.loss[-1] < 0.5 * tr.loss[0]           # and training goes on
