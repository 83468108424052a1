"""Tests of eosdyn.bridge.operators: Gauss–Newton and Fisher products, block sharpness,
trace and spectral density of a torch model, against dense matrices.

References, all independent of the code under test:
- J = ∂f/∂θ by torch.autograd.functional.jacobian, the output Hessian ∇²_f ℓ by
  torch.autograd.functional.hessian of the loss itself: GGN = Jᵀ ∇²_f ℓ J;
- the true Fisher Σ_i c J_iᵀ E_{y~p(·|f_i)}[∇_f φ ∇_f φᵀ] J_i, the expectation written out
  (a sum over the classes for cross-entropy; the identity covariance for the unit Gaussian);
- the empirical Fisher c Σ_i g_i g_iᵀ from per-example gradients g_i (a loop of jacobians);
- the dense Hessian by torch.autograd.functional.hessian, and numpy.linalg.eigvalsh.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

import eosdyn.bridge as B  # noqa: E402
from eosdyn.bridge.operators import KINDS, loss_form  # noqa: E402

F64 = torch.float64
N = 5


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ----------------------------------------------------------------------------- helpers
def tiny(out_dim=2, seed=0, n=N):
    """A 3 → 4 → out_dim tanh MLP in float64, n inputs, regression and class targets."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed + 100)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, out_dim)).to(F64)
    x = torch.randn(n, 3, generator=g, dtype=F64)
    y_reg = torch.randn(n, out_dim, generator=g, dtype=F64)
    y_cls = torch.randint(0, out_dim, (n,), generator=g)
    return model, x, y_reg, y_cls


class Dense:
    """Flat-parameter views of a model for dense references."""

    def __init__(self, model):
        self.model = model
        self.names = [k for k, _ in model.named_parameters()]
        self.params = [p.detach() for p in model.parameters()]
        self.flat = torch.cat([p.reshape(-1) for p in self.params])
        self.d = self.flat.numel()

    def f(self, flat, x):
        ps, i = [], 0
        for p in self.params:
            ps.append(flat[i:i + p.numel()].view_as(p))
            i += p.numel()
        return torch.func.functional_call(self.model, dict(zip(self.names, ps)), (x,))

    def jacobian(self, x):
        return torch.autograd.functional.jacobian(lambda t: self.f(t, x), self.flat)   # (n, C, d)

    def hessian(self, loss_fn, x, y):
        return torch.autograd.functional.hessian(lambda t: loss_fn(self.f(t, x), y), self.flat)


def dense_of(op):
    """The matrix of a CurvatureOperator, column by column (d products)."""
    return torch.stack([op.matvec(e) for e in torch.eye(op.dim, dtype=F64)], 1)


def c_of(loss_name, n, C):
    """The documented normalisation c_b (module docstring of eosdyn.bridge.operators)."""
    return {"bridge_mse": 1.0 / n, "MSELoss_mean": 2.0 / (n * C), "MSELoss_sum": 2.0,
            "F_mse": 2.0 / (n * C), "bridge_ce": 1.0 / n, "CE_mean": 1.0 / n, "CE_sum": 1.0}[loss_name]


LOSSES = {
    "bridge_mse": (lambda: B.mse_loss, "mse"),
    "MSELoss_mean": (lambda: nn.MSELoss(), "mse"),
    "MSELoss_sum": (lambda: nn.MSELoss(reduction="sum"), "mse"),
    "F_mse": (lambda: nn.functional.mse_loss, "mse"),
    "bridge_ce": (lambda: B.cross_entropy_loss, "ce"),
    "CE_mean": (lambda: nn.CrossEntropyLoss(), "ce"),
    "CE_sum": (lambda: nn.CrossEntropyLoss(reduction="sum"), "ce"),
}


def references(name, out_dim):
    """(model, data, loss_fn, dense GGN, dense true Fisher, dense empirical Fisher, dense Hessian)."""
    make, fam = LOSSES[name]
    loss_fn = make()
    model, x, y_reg, y_cls = tiny(out_dim)
    y = y_reg if fam == "mse" else y_cls
    D = Dense(model)
    J = D.jacobian(x)                                                    # (n, C, d)
    out = D.f(D.flat, x).detach()
    n, C = out.shape
    H_out = torch.autograd.functional.hessian(lambda f: loss_fn(f, y), out)   # (n, C, n, C)
    G = torch.einsum("iad,iajb,jbe->de", J, H_out, J)
    c = c_of(name, n, C)
    # true Fisher: the expectation over y ~ p(y | f_i) written out
    Fi = torch.zeros(D.d, D.d, dtype=F64)
    for i in range(n):
        if fam == "mse":
            cov = torch.eye(C, dtype=F64)                                # E[(f−y)(f−y)ᵀ], y ~ N(f, I)
        else:
            p = torch.softmax(out[i], 0)
            cov = sum(p[k] * torch.outer(p - torch.eye(C, dtype=F64)[k], p - torch.eye(C, dtype=F64)[k])
                      for k in range(C))
        Fi += c * J[i].T @ cov @ J[i]
    # empirical Fisher from per-example gradients g_i = ∇_θ φ(f(x_i), y_i)
    gs = []
    for i in range(n):
        if fam == "mse":
            phi = lambda t, i=i: 0.5 * ((D.f(t, x[i:i + 1]) - y[i:i + 1]) ** 2).sum()
        else:
            phi = lambda t, i=i: nn.functional.cross_entropy(D.f(t, x[i:i + 1]), y[i:i + 1], reduction="sum")
        gs.append(torch.autograd.functional.jacobian(phi, D.flat))
    g = torch.stack(gs)
    EF = c * g.T @ g
    H = D.hessian(loss_fn, x, y)
    return model, (x, y), loss_fn, G, Fi, EF, H


CASES = [(name, 2) for name in LOSSES] + [("MSELoss_mean", 3), ("F_mse", 3), ("CE_mean", 3)]


# ----------------------------------------------------------------------------- products
@pytest.mark.parametrize("name,out_dim", CASES)
@pytest.mark.parametrize("method", ["auto", "double_backward"])
def test_ggn_fisher_ef_match_dense(name, out_dim, method):
    """GGN, true Fisher and empirical Fisher products equal the dense matrices to 1e-10
    (float64), for every supported loss and reduction; with 3 outputs nn.MSELoss's element
    mean (c = 2/(nC)) differs from eosdyn's mse_loss (c = 1/n), so the normalisation is
    tested, not only the shape of the formula."""
    model, data, loss_fn, G, Fi, EF, H = references(name, out_dim)
    for kind, ref in (("ggn", G), ("fisher", Fi), ("empirical_fisher", EF), ("hessian", H)):
        op = B.curvature_operator(model, loss_fn, data, kind, method=method if kind != "hessian" else "auto")
        A = dense_of(op)
        scale = float(ref.abs().max())
        assert scale > 1e-3                                   # a non-trivial reference
        assert float((A - ref).abs().max()) <= 1e-10 * max(1.0, scale), (kind, float((A - ref).abs().max()))
        assert op.n_hvp == op.dim
    # the GGN-equivalence of the true Fisher, checked on independent dense references
    assert float((G - Fi).abs().max()) <= 1e-12 * max(1.0, float(G.abs().max()))


def test_ggn_is_gauss_newton_part_of_hessian_for_linear_model():
    """For a linear model (J constant, ∇²f = 0) and MSE the Hessian *is* the GGN."""
    torch.manual_seed(3)
    model = nn.Linear(3, 2).to(F64)
    x, y = torch.randn(7, 3, dtype=F64), torch.randn(7, 2, dtype=F64)
    A = dense_of(B.curvature_operator(model, B.mse_loss, (x, y), "ggn"))
    H = dense_of(B.curvature_operator(model, B.mse_loss, (x, y), "hessian"))
    assert float((A - H).abs().max()) <= 1e-13


def test_batches_weighted_like_the_hessian():
    """Several batches: Σ_b (n_b/N) G_b equals the one-batch GGN of a mean loss."""
    model, x, _, y = tiny(3, n=9)
    one = dense_of(B.curvature_operator(model, B.cross_entropy_loss, (x, y), "ggn"))
    split = [(x[:4], y[:4]), (x[4:], y[4:])]
    many = dense_of(B.curvature_operator(model, B.cross_entropy_loss, split, "ggn"))
    assert float((one - many).abs().max()) <= 1e-14
    ef1 = dense_of(B.curvature_operator(model, B.cross_entropy_loss, (x, y), "empirical_fisher"))
    efm = dense_of(B.curvature_operator(model, B.cross_entropy_loss, split, "empirical_fisher"))
    assert float((ef1 - efm).abs().max()) <= 1e-14


def test_info_records_conventions():
    model, x, y, _ = tiny()
    op = B.curvature_operator(model, nn.MSELoss(), (x, y), "fisher")
    info = op.info.to_dict()
    assert info["kind"] == "fisher" and info["loss"] == "torch.nn.MSELoss"
    assert "GGN equivalence" in info["fisher"] and "2/(n_b·C)" in info["normalisation"]
    assert info["mode"] == "train" and info["dtype"] == "float64" and info["n_examples"] == N
    assert B.curvature_operator(model, B.mse_loss, (x, y), "ggn").info.fisher is None


# ----------------------------------------------------------------------------- LinearOperator
@pytest.mark.parametrize("kind", KINDS)
def test_linear_operator_agrees_with_matvec(kind):
    import scipy.sparse.linalg as sla

    model, x, _, y = tiny(3)
    op = B.curvature_operator(model, nn.CrossEntropyLoss(), (x, y), kind)
    L = op.as_linear_operator()
    assert isinstance(L, sla.LinearOperator) and L.shape == (op.dim, op.dim) and L.dtype == np.float64
    v = np.random.default_rng(0).standard_normal(op.dim)
    want = op.matvec(torch.as_tensor(v)).numpy()
    np.testing.assert_allclose(L @ v, want, rtol=0, atol=1e-15 * max(1.0, np.abs(want).max()))
    np.testing.assert_allclose(L.rmatvec(v), want, rtol=0, atol=1e-15 * max(1.0, np.abs(want).max()))
    # and scipy's eigsh on it finds the dense top eigenvalue
    A = dense_of(op).numpy()
    top = sla.eigsh(L, k=1, which="LA", tol=1e-12)[0][0]
    assert top == pytest.approx(np.linalg.eigvalsh(0.5 * (A + A.T))[-1], rel=1e-9)


# ----------------------------------------------------------------------------- block sharpness
@pytest.mark.parametrize("kind", ["hessian", "ggn"])
@pytest.mark.parametrize("by", ["parameter", "module"])
def test_layer_sharpness_is_top_eigenvalue_of_dense_block(kind, by):
    model, x, y, _ = tiny(2)
    D = Dense(model)
    if kind == "hessian":
        A = D.hessian(B.mse_loss, x, y).numpy()
    else:
        A = references("bridge_mse", 2)[3].numpy()          # Jᵀ ∇²_f ℓ J from autograd jacobians
    res = B.layer_sharpness(model, B.mse_loss, (x, y), kind=kind, by=by, k=2)
    sizes = [p.numel() for p in model.parameters()]
    off = np.concatenate([[0], np.cumsum(sizes)])
    if by == "parameter":
        expect = {n: np.arange(off[i], off[i + 1]) for i, n in enumerate(D.names)}
    else:
        expect = {"0": np.arange(off[0], off[2]), "2": np.arange(off[2], off[4])}
    assert list(res) == list(expect)
    for name, idx in expect.items():
        ev = np.linalg.eigvalsh(A[np.ix_(idx, idx)])[::-1]
        r = res[name]
        assert r.dim == idx.size and r.converged
        np.testing.assert_allclose(r.eigenvalues, ev[:min(2, idx.size)], rtol=1e-8, atol=1e-12)
        assert r.sharpness == pytest.approx(ev[0], rel=1e-8)
        assert r.sharpness <= np.linalg.eigvalsh(A)[-1] + 1e-12        # Cauchy interlacing


# ----------------------------------------------------------------------------- trace and SLQ
@pytest.mark.parametrize("kind", ["ggn", "empirical_fisher"])
def test_trace_hutchpp_and_hutchinson_on_a_model(kind):
    model, x, _, y = tiny(3, n=12)
    A = dense_of(B.curvature_operator(model, B.cross_entropy_loss, (x, y), kind)).numpy()
    exact = float(np.trace(A))
    d = A.shape[0]
    # Hutch++ with m ≥ 3d: the sketch spans the whole space and the estimate is exact
    full = B.trace(model, B.cross_entropy_loss, (x, y), kind=kind, method="hutch++", n_matvecs=3 * d)
    assert full.estimate == pytest.approx(exact, rel=1e-10) and full.n_hvp == 3 * d
    for method in ("hutch++", "hutchinson"):
        t = B.trace(model, B.cross_entropy_loss, (x, y), kind=kind, method=method, n_matvecs=30, seed=1)
        assert t.method == method and t.n_hvp == 30 and t.dim == d and t.info["kind"] == kind
        assert abs(t.estimate - exact) <= 4 * t.standard_error + 1e-12


@pytest.mark.parametrize("kind", ["hessian", "ggn", "fisher", "empirical_fisher"])
def test_spectral_density_one_call(kind):
    """SLQ through the bridge: integrates to 1, its mean is the same-probe Hutchinson
    estimate / d exactly (Gauss quadrature is exact for λ), and within 4 standard errors
    of tr(A)/d; PSD kinds have no node below −1e-10·‖A‖."""
    from eosdyn.curvature import hutchinson_trace

    model, x, _, y = tiny(3, n=12)
    op = B.curvature_operator(model, B.cross_entropy_loss, (x, y), kind)
    A = dense_of(op).numpy()
    sd = B.spectral_density(model, B.cross_entropy_loss, (x, y), kind=kind, n_probes=40, n_steps=10, seed=2)
    assert isinstance(sd, B.ModelSpectralDensity) and sd.kind == kind and sd.info["kind"] == kind
    assert np.trapezoid(sd.density, sd.grid) == pytest.approx(1.0, abs=1e-6)
    same = hutchinson_trace(op.matvec, op.dim, 40, seed=2, like=torch.empty(0, dtype=F64))
    assert sd.integrate() == pytest.approx(same.estimate / op.dim, rel=1e-10)
    per = sd.probe_integrals()
    se = per.std(ddof=1) / math.sqrt(per.size)
    assert abs(per.mean() - np.trace(A) / op.dim) <= 4 * se + 1e-14
    if kind != "hessian":
        assert sd.nodes[sd.weights > 0].min() >= -1e-10 * np.abs(A).max()


# ----------------------------------------------------------------------------- curvlinops
@pytest.mark.parametrize("loss", ["mse", "ce"])
def test_ggn_matches_curvlinops(loss):
    curvlinops = pytest.importorskip("curvlinops")
    model, x, y_reg, y_cls = tiny(3)
    loss_fn, y = (nn.MSELoss(), y_reg) if loss == "mse" else (nn.CrossEntropyLoss(), y_cls)
    params = [p for p in model.parameters() if p.requires_grad]
    ref = curvlinops.GGNLinearOperator(model, loss_fn, params, [(x, y)])
    if hasattr(ref, "to_scipy"):
        ref = ref.to_scipy()
    d = sum(p.numel() for p in params)
    R = np.asarray(ref @ np.eye(d))
    A = dense_of(B.curvature_operator(model, loss_fn, (x, y), "ggn")).numpy()
    np.testing.assert_allclose(A, R, rtol=0, atol=1e-10 * max(1.0, np.abs(R).max()))


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("kind", ["ggn", "fisher", "empirical_fisher"])
def test_unsupported_loss_names_the_supported_ones(kind):
    model, x, y, _ = tiny()
    with pytest.raises(ValueError, match="Supported losses") as e:
        B.curvature_operator(model, nn.L1Loss(), (x, y), kind)
    for name in ("MSELoss", "CrossEntropyLoss", "eosdyn.bridge.mse_loss", "eosdyn.bridge.cross_entropy_loss"):
        assert name in str(e.value)
    # the Hessian takes any loss
    op = B.curvature_operator(model, nn.SmoothL1Loss(), (x, y), "hessian")
    assert op.matvec(torch.ones(op.dim, dtype=F64)).shape == (op.dim,)


def test_unsupported_loss_variants():
    model, x, _, y = tiny(3)
    for bad in (nn.CrossEntropyLoss(weight=torch.ones(3, dtype=F64)), nn.CrossEntropyLoss(label_smoothing=0.1),
                nn.CrossEntropyLoss(reduction="none"), nn.MSELoss(reduction="none"),
                lambda out, tgt: ((out - tgt) ** 2).mean()):
        with pytest.raises(ValueError, match="Supported losses"):
            B.curvature_operator(model, bad, (x, y), "ggn")
    y_ign = y.clone()
    y_ign[0] = -100
    op = B.curvature_operator(model, nn.CrossEntropyLoss(), (x, y_ign), "ggn")
    with pytest.raises(ValueError, match="ignore_index"):
        op.matvec(torch.ones(op.dim, dtype=F64))


def test_unknown_kind_lists_kinds():
    model, x, y, _ = tiny()
    with pytest.raises(ValueError, match="kind must be one of") as e:
        B.curvature_operator(model, B.mse_loss, (x, y), "gauss-newton")
    for k in KINDS:
        assert k in str(e.value)
    with pytest.raises(ValueError, match="method must be one of"):
        B.trace(model, B.mse_loss, (x, y), method="hutch+")
    with pytest.raises(ValueError, match="by must be one of"):
        B.layer_sharpness(model, B.mse_loss, (x, y), by="layer")


def test_bad_vectors():
    model, x, y, _ = tiny()
    op = B.curvature_operator(model, B.mse_loss, (x, y), "ggn")
    with pytest.raises(ValueError, match="shape"):
        op.matvec(torch.ones(op.dim + 1, dtype=F64))
    v = torch.ones(op.dim, dtype=F64)
    v[0] = float("nan")
    with pytest.raises(ValueError, match="finite"):
        op.matvec(v)
    assert loss_form(B.mse_loss).family == "mse"
