"""Toy losses: derivatives against sympy and finite differences, minimum values against
closed forms / independent solvers, kernel sharing, and input validation."""
from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import sympy as sp
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from numba import njit

from eosdyn.losses import (
    DeepLinear,
    LogisticCubic,
    Loss,
    Quadratic,
    ScalarNet,
    SqrtLoss,
    SympyLoss,
    ZhuMinimalist,
    cubic_logistic,
    from_sympy,
    reduced_rank_optimum,
)

HYP = settings(max_examples=25, deadline=None)


def coords(d, lo=-1.5, hi=1.5):
    return st.lists(st.floats(lo, hi, allow_nan=False), min_size=d, max_size=d).map(np.array)


# ---------------------------------------------------------------------------------
# generic derivative checks
# ---------------------------------------------------------------------------------
def fd_grad(loss, th, h=1e-6):
    return np.array([(loss.value(th + h * e) - loss.value(th - h * e)) / (2 * h) for e in np.eye(loss.dim)])


def fd_jac_grad(loss, th, h=1e-6):
    """Central finite-difference Jacobian of the gradient (column j = ∂g/∂θ_j)."""
    return np.array([(loss.grad(th + h * e) - loss.grad(th - h * e)) / (2 * h) for e in np.eye(loss.dim)]).T


def close(a, b, rtol=1e-6):
    a, b = np.asarray(a, float), np.asarray(b, float)
    scale = 1.0 + np.abs(b).max()
    np.testing.assert_allclose(a, b, rtol=0, atol=rtol * scale)


def check_derivatives(loss, th, ref=None, seed=0):
    """grad = ref grad = FD grad; H symmetric = ref H = FD Jacobian of grad; hvp = H v."""
    g, H = loss.grad(th), loss.hess(th)
    assert g.shape == (loss.dim,) and H.shape == (loss.dim, loss.dim)
    np.testing.assert_array_equal(H, H.T)
    if ref is not None:
        val_r, g_r, H_r = ref(th)
        close(loss.value(th), val_r, 1e-12)
        close(g, g_r, 1e-10)
        close(H, H_r, 1e-10)
    close(g, fd_grad(loss, th), 1e-6)
    close(H, fd_jac_grad(loss, th), 1e-6)
    v = np.random.default_rng(seed).normal(size=loss.dim)
    close(loss.hvp(th, v), H @ v, 1e-12)


def sympy_reference(expr, syms):
    """value, gradient and Hessian of a sympy expression, lambdified (independent of eosdyn)."""
    grad = [sp.diff(expr, s) for s in syms]
    hess = sp.hessian(expr, syms)
    f = sp.lambdify(syms, expr, "numpy")
    fg = sp.lambdify(syms, grad, "numpy")
    fh = sp.lambdify(syms, hess, "numpy")
    return lambda th: (float(f(*th)), np.array(fg(*th), float), np.array(fh(*th), float))


# ---------------------------------------------------------------------------------
# ScalarNet
# ---------------------------------------------------------------------------------
def scalar_net_ref(depth, target):
    w = sp.symbols(f"w0:{depth}", real=True)
    return sympy_reference(sp.Rational(1, 2) * (sp.Mul(*w) - target) ** 2, w)


SN_REF = {(d, y): scalar_net_ref(d, y) for d, y in [(1, 1.0), (2, 1.0), (3, -2.0), (5, 0.5)]}


@pytest.mark.parametrize("depth,target", list(SN_REF))
@HYP
@given(data=st.data())
def test_scalar_net_derivatives(depth, target, data):
    th = data.draw(coords(depth))
    check_derivatives(ScalarNet(depth, target), th, SN_REF[(depth, target)])


def test_scalar_net_derivatives_with_zero_weights():
    # prefix/suffix products must not divide by w_i
    L = ScalarNet(4, 1.5)
    for th in ([0.0, 1.2, -0.7, 2.0], [0.0, 0.0, 1.0, 3.0], [0.0, 0.0, 0.0, 0.0]):
        check_derivatives(L, np.array(th), SN_REF.get((4, 1.5)) or scalar_net_ref(4, 1.5))


@pytest.mark.parametrize("depth,target", [(1, 2.0), (2, 1.0), (3, -2.0), (6, 3.0), (4, 0.0)])
def test_scalar_net_balanced_minimum(depth, target):
    L = ScalarNet(depth, target)
    w = L.balanced_minimum()
    assert L.min_value == 0.0
    assert L.value(w) == pytest.approx(0.0, abs=1e-28)
    lam = np.linalg.eigvalsh(L.hess(w))[-1]
    closed = depth * abs(target) ** (2 * (depth - 1) / depth)
    assert L.balanced_sharpness() == pytest.approx(closed, rel=1e-14)
    assert lam == pytest.approx(closed, rel=1e-12, abs=1e-14)


@pytest.mark.parametrize("depth,target", [(2, 1.0), (3, 2.0), (5, -1.5)])
@HYP
@given(data=st.data())
def test_scalar_net_manifold_sharpness_vs_eigh(depth, target, data):
    free = data.draw(st.lists(st.floats(0.3, 2.0) | st.floats(-2.0, -0.3), min_size=depth - 1, max_size=depth - 1))
    w = np.array(free + [target / np.prod(free)]) if depth > 1 else np.array([target])
    L = ScalarNet(depth, target)
    lam = np.linalg.eigvalsh(L.hess(w))[-1]
    assert L.manifold_sharpness(w) == pytest.approx(lam, rel=1e-10)
    # and it is never below the balanced (flattest) value
    assert L.manifold_sharpness(w) >= L.balanced_sharpness() * (1 - 1e-12)


def test_scalar_net_depth2_is_xy_minus_one():
    L = ScalarNet(2, 1.0)
    x, y = 2.0, 0.5  # on xy = 1: sharpness x² + y²
    assert L.sharpness([x, y]) == pytest.approx(x * x + y * y, rel=1e-13)


# ---------------------------------------------------------------------------------
# DeepLinear
# ---------------------------------------------------------------------------------
def deep_linear_ref(X, Y, widths):
    """Sympy value/grad/Hessian of 1/(2n) Σ‖W_N⋯W_1 x_i − y_i‖², θ = W_1 first, row-major."""
    dims = [X.shape[1], *widths, Y.shape[1]]
    syms, Ws = [], []
    for k in range(len(dims) - 1):
        r, c = dims[k + 1], dims[k]
        s = sp.symbols(f"W{k}_0:{r * c}")
        syms += list(s)
        Ws.append(sp.Matrix(r, c, s))
    P = Ws[0]
    for W in Ws[1:]:
        P = W * P
    R = sp.Matrix(X) * P.T - sp.Matrix(Y)
    expr = sum(R[i, j] ** 2 for i in range(R.rows) for j in range(R.cols)) / (2 * X.shape[0])
    return sympy_reference(expr, syms)


_rng = np.random.default_rng(12)
DL_CASES = {
    "linear": (_rng.normal(size=(5, 2)), _rng.normal(size=(5, 2)), []),
    "one_hidden": (_rng.normal(size=(4, 2)), _rng.normal(size=(4, 2)), [3]),
    "two_hidden_bottleneck": (_rng.normal(size=(4, 3)), _rng.normal(size=(4, 2)), [2, 1]),
}


@functools.cache
def dl_ref(case):  # built on first use (a few seconds of sympy for the larger cases)
    return deep_linear_ref(*DL_CASES[case])


@pytest.mark.parametrize("case", list(DL_CASES))
@HYP
@given(data=st.data())
def test_deep_linear_derivatives_vs_sympy(case, data):
    L = DeepLinear(*DL_CASES[case])
    th = data.draw(coords(L.dim))
    check_derivatives(L, th, dl_ref(case))


def test_deep_linear_derivatives_deeper_fd():
    rng = np.random.default_rng(3)
    L = DeepLinear(rng.normal(size=(9, 4)), rng.normal(size=(9, 3)), [5, 2, 4])
    assert L.depth == 4 and L.dim == 4 * 5 + 5 * 2 + 2 * 4 + 4 * 3
    for s in range(3):
        check_derivatives(L, 0.7 * rng.normal(size=L.dim), seed=s)


def test_deep_linear_flattening_order():
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(6, 3)), rng.normal(size=(6, 2))
    L = DeepLinear(X, Y, [4])
    th = rng.normal(size=L.dim)
    W1, W2 = th[:12].reshape(4, 3), th[12:].reshape(2, 4)  # W_1 first, row-major
    for A, B in zip(L.unflatten(th), (W1, W2)):
        np.testing.assert_array_equal(A, B)
    np.testing.assert_array_equal(L.flatten([W1, W2]), th)
    ref = np.sum((X @ (W2 @ W1).T - Y) ** 2) / (2 * 6)
    assert L.value(th) == pytest.approx(ref, rel=1e-13)


def test_deep_linear_min_value_full_rank_vs_lstsq_and_gd():
    rng = np.random.default_rng(1)
    X, Y = rng.normal(size=(20, 3)), rng.normal(size=(20, 2))
    L = DeepLinear(X, Y, [4])
    B, *_ = np.linalg.lstsq(X, Y, rcond=None)
    lstsq_opt = np.sum((X @ B - Y) ** 2) / (2 * 20)
    assert L.min_value == pytest.approx(lstsq_opt, rel=1e-12)
    th = L.minimizer()
    assert L.value(th) == pytest.approx(L.min_value, rel=1e-12)
    assert np.abs(L.grad(th)).max() < 1e-12
    # plain GD from a random init reaches L*
    th = 0.5 * rng.normal(size=L.dim)
    for _ in range(4000):
        th = th - 0.1 * L.grad(th)
    assert L.value(th) == pytest.approx(L.min_value, rel=1e-8)


def test_deep_linear_min_value_rank_restricted():
    rng = np.random.default_rng(2)
    n, r = 6, 1
    # whitened inputs X = I: L* is the Eckart–Young tail of Y itself
    Y = rng.normal(size=(n, 3))
    L = DeepLinear(np.eye(n), Y, [r])
    s = np.linalg.svd(Y, compute_uv=False)
    assert L.min_value == pytest.approx(np.sum(s[r:] ** 2) / (2 * n), rel=1e-12)
    # general X: closed form vs GD on the network, and L* is strictly above the OLS optimum
    X, Y = rng.normal(size=(30, 4)), rng.normal(size=(30, 3))
    L = DeepLinear(X, Y, [3, 1, 2])
    B, *_ = np.linalg.lstsq(X, Y, rcond=None)
    assert L.min_value > np.sum((X @ B - Y) ** 2) / 60 + 1e-3
    assert L.value(L.minimizer()) == pytest.approx(L.min_value, rel=1e-12)
    np.testing.assert_allclose(np.linalg.matrix_rank(L.end_to_end(L.minimizer())), 1)
    best = np.inf
    for seed in range(3):
        th = 0.5 * np.random.default_rng(seed).normal(size=L.dim)
        for _ in range(6000):
            th = th - 0.05 * L.grad(th)
        best = min(best, L.value(th))
        assert L.value(th) >= L.min_value * (1 - 1e-10)  # never below the closed form
    assert best == pytest.approx(L.min_value, rel=1e-6)


def test_reduced_rank_optimum_vs_brute_force():
    # rank-1 P = u vᵀ: minimise over (u, v) with scipy from several starts
    from scipy.optimize import minimize

    rng = np.random.default_rng(5)
    X, Y = rng.normal(size=(15, 3)), rng.normal(size=(15, 2))
    Lstar, Pstar = reduced_rank_optimum(X, Y, 1)

    def f(z):
        P = np.outer(z[:2], z[2:])
        return np.sum((X @ P.T - Y) ** 2) / 30

    vals = [minimize(f, rng.normal(size=5), method="BFGS", options={"gtol": 1e-12}).fun for _ in range(5)]
    assert min(vals) == pytest.approx(Lstar, rel=1e-8)
    assert min(vals) >= Lstar * (1 - 1e-10)
    assert f(np.r_[0, 0, 0, 0, 0]) > Lstar
    assert np.sum((X @ Pstar.T - Y) ** 2) / 30 == pytest.approx(Lstar, rel=1e-12)


def test_deep_linear_rank_deficient_X():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(8, 2)) @ rng.normal(size=(2, 3))  # rank 2 < d_in = 3
    Y = rng.normal(size=(8, 2))
    L = DeepLinear(X, Y, [])
    B, *_ = np.linalg.lstsq(X, Y, rcond=None)
    assert L.min_value == pytest.approx(np.sum((X @ B - Y) ** 2) / 16, rel=1e-10)
    assert L.value(L.minimizer()) == pytest.approx(L.min_value, rel=1e-10)


def test_kernels_shared_within_a_family():
    rng = np.random.default_rng(0)
    a = DeepLinear(rng.normal(size=(4, 2)), rng.normal(size=(4, 1)), [3])
    b = DeepLinear(rng.normal(size=(7, 5)), rng.normal(size=(7, 2)), [1, 4])
    assert a.kernel_functions()[:4] == b.kernel_functions()[:4]
    assert ScalarNet(2, 1.0).grad_fn is ScalarNet(7, -3.0).grad_fn
    s1, s2 = SqrtLoss(ScalarNet(2, 1.0)), SqrtLoss(ScalarNet(3, 2.0), eps=0.1)
    assert s1.kernel_functions()[:4] == s2.kernel_functions()[:4]
    assert SqrtLoss(Quadratic(eigs=[1.0])).value_fn is not s1.value_fn


@njit
def _gd_kernel(grad_fn, params, theta, eta, steps):
    for _ in range(steps):
        theta = theta - eta * grad_fn(theta, params)
    return theta


def test_kernel_functions_callable_from_numba():
    for loss, th0 in [(ScalarNet(3, 1.0), np.array([1.2, 0.9, 0.8])),
                      (SqrtLoss(ScalarNet(3, 1.0), eps=1e-2), np.array([1.2, 0.9, 0.8])),
                      (from_sympy("(x*y - c)**2/2", "x y", {"c": 1.0}), np.array([1.5, 0.3]))]:
        th = _gd_kernel(loss.grad_fn, loss.params, th0, 0.05, 200)
        ref = th0.copy()
        for _ in range(200):
            ref = ref - 0.05 * loss.grad(ref)
        np.testing.assert_allclose(th, ref, rtol=1e-12, atol=1e-14)


# ---------------------------------------------------------------------------------
# SqrtLoss
# ---------------------------------------------------------------------------------
_w = sp.symbols("w0:3")  # no real=True: keeps sqrt(u**2) from becoming |u| (whose Hessian has a DiracDelta)
SQRT_SN_REF = sympy_reference(sp.sqrt(sp.Rational(1, 2) * (_w[0] * _w[1] * _w[2] - 2) ** 2), _w)
SQRT_SN_EPS_REF = sympy_reference(sp.sqrt(sp.Rational(1, 2) * (_w[0] * _w[1] * _w[2] - 2) ** 2 + sp.Rational(1, 10)), _w)
_q = sp.symbols("q0:2", real=True)
SQRT_Q_REF = sympy_reference(sp.sqrt((_q[0] - 1) ** 2 / 2 + 3 * (_q[1] + 0.5) ** 2 / 2 + (_q[0] - 1) * (_q[1] + 0.5) / 2), _q)


@HYP
@given(th=coords(3))
def test_sqrt_loss_derivatives(th):
    base = ScalarNet(3, 2.0)
    s = base.value(th)
    assume(s > 1e-2)  # away from the kink √0 so finite differences are meaningful
    check_derivatives(SqrtLoss(base), th, SQRT_SN_REF)
    check_derivatives(SqrtLoss(base, eps=0.1), th, SQRT_SN_EPS_REF)


@HYP
@given(th=coords(2))
def test_sqrt_loss_over_quadratic(th):
    base = Quadratic(H=[[1.0, 0.5], [0.5, 3.0]], center=[1.0, -0.5])
    assume(base.value(th) > 1e-2)
    check_derivatives(SqrtLoss(base), th, SQRT_Q_REF)


def test_sqrt_loss_over_deep_linear():
    rng = np.random.default_rng(7)
    base = DeepLinear(rng.normal(size=(6, 2)), rng.normal(size=(6, 2)), [1])  # L* > 0 (rank-restricted)
    L = SqrtLoss(base)
    assert base.min_value > 0 and L.min_value == 0.0
    for s in range(3):
        th = rng.normal(size=L.dim)
        sq = np.sqrt(base.value(th) - base.min_value)
        assert L.value(th) == pytest.approx(sq, rel=1e-12)
        close(L.grad(th), base.grad(th) / (2 * sq), 1e-12)
        check_derivatives(L, th, seed=s)
    assert L.value(base.minimizer()) < 1e-7  # √(rounding of L − L*)


def test_sqrt_loss_generic_bases():
    # a base whose hvp is an in-memory closure (hvp_from_hess) takes the uncached path;
    # a SqrtLoss of a SqrtLoss imports the generated module of the inner one
    q = Quadratic(H=[[2.0, 0.3], [0.3, 1.0]])
    plain = Loss(q.value_fn, q.grad_fn, q.hess_fn, None, q.params, 2, 0.0)
    th, v = np.array([0.4, -1.1]), np.array([1.0, 2.0])
    a, b = SqrtLoss(plain), SqrtLoss(q)
    assert a.value_fn is not b.value_fn
    np.testing.assert_allclose(a.hvp(th, v), b.hvp(th, v), rtol=1e-14)
    np.testing.assert_allclose(a.hess(th), b.hess(th), rtol=1e-14)
    nested = SqrtLoss(SqrtLoss(q))
    assert nested.value(th) == pytest.approx(q.value(th) ** 0.25, rel=1e-14)
    check_derivatives(nested, th)


def test_sqrt_loss_at_the_minimum():
    base = Quadratic(eigs=[1.0, 4.0], center=[0.5, 0.0])
    L = SqrtLoss(base)
    c = np.array([0.5, 0.0])
    assert L.min_value == 0.0
    assert L.value(c) == 0.0
    np.testing.assert_array_equal(L.grad(c), [0.0, 0.0])          # subgradient 0
    H = L.hess(c)
    assert np.all(np.isposinf(H)) and not np.any(np.isnan(H))     # +inf curvature, no NaN
    assert np.all(np.isposinf(L.hvp(c, [1.0, 0.0])))
    assert L.sharpness(c) == math.inf
    # the curvature really diverges: λ_max ~ λ_max(H_b)/(2√s) along the minor axis
    th = c + np.array([1e-6, 0.0])
    assert L.sharpness(th) == pytest.approx(4.0 / (2 * np.sqrt(base.value(th))), rel=1e-6)
    # eps > 0: finite, min value √eps attained at the base minimiser
    Le = SqrtLoss(base, eps=1e-4)
    assert Le.min_value == pytest.approx(1e-2)
    assert Le.value(c) == pytest.approx(Le.min_value, rel=1e-15)
    np.testing.assert_allclose(Le.hess(c), base.hess(c) / (2 * 1e-2), rtol=1e-14)


def test_sqrt_loss_base_min_and_validation():
    with pytest.raises(ValueError, match="min_value"):
        SqrtLoss(LogisticCubic())                      # L* = -inf
    L = SqrtLoss(LogisticCubic(), base_min=0.0)
    assert L.value([0.3]) == pytest.approx(np.sqrt(0.3 ** 2 / 2 - 0.3 ** 3 / 3))
    with pytest.raises(TypeError, match="base"):
        SqrtLoss(lambda th: th @ th)
    with pytest.raises(ValueError, match="eps"):
        SqrtLoss(ScalarNet(2), eps=-1.0)
    with pytest.raises(ValueError, match="base_min"):
        SqrtLoss(ScalarNet(2), base_min=float("nan"))


# ---------------------------------------------------------------------------------
# LogisticCubic
# ---------------------------------------------------------------------------------
_x = sp.Symbol("x", real=True)
CUBIC_REF = sympy_reference(_x ** 2 / 2 - _x ** 3 / 3, [_x])


@HYP
@given(th=coords(1, -3, 3))
def test_cubic_derivatives(th):
    check_derivatives(LogisticCubic(), th, CUBIC_REF)


@pytest.mark.parametrize("eta", [0.5, 1.5, 2.2, 2.8, 2.95])
def test_cubic_gd_is_conjugate_to_logistic_map(eta):
    L = cubic_logistic()
    assert isinstance(L, LogisticCubic)
    r = LogisticCubic.logistic_r(eta)
    assert r == 1 + eta
    x = 0.37
    y = LogisticCubic.to_logistic(x, eta)
    assert 0 < y < 1
    for _ in range(30):  # chaotic for r > 3.57: rounding grows like e^{0.6 t}, still < 1e-8 at t = 30
        x_new = x - eta * L.grad([x])[0]                 # GD on f
        assert x_new == pytest.approx(float(LogisticCubic.gd_map(x, eta)), rel=1e-14, abs=1e-15)
        x = x_new
        y = r * y * (1 - y)                               # logistic map
        assert LogisticCubic.to_logistic(x, eta) == pytest.approx(y, abs=1e-7)
        assert LogisticCubic.from_logistic(y, eta) == pytest.approx(x, abs=1e-6 * (1 + 1 / eta))


def test_cubic_gd_map_and_two_cycle():
    L = LogisticCubic()
    rng = np.random.default_rng(0)
    xs = rng.uniform(-0.5, 1.2, size=10)
    np.testing.assert_allclose(LogisticCubic.gd_map(xs, 0.7), xs - 0.7 * (xs - xs ** 2), rtol=1e-14, atol=1e-16)
    np.testing.assert_allclose(LogisticCubic.from_logistic(LogisticCubic.to_logistic(xs, 1.3), 1.3), xs, rtol=1e-14)
    # η = 2.2 > 2 = 2/f''(0): GD leaves the minimum for the period-2 orbit of the logistic map
    eta, r = 2.2, 3.2
    x = 0.05
    for _ in range(2000):
        x = LogisticCubic.gd_map(x, eta)
    orbit = sorted([float(x), float(LogisticCubic.gd_map(x, eta))])
    ypm = [(r + 1 + s * np.sqrt((r - 3) * (r + 1))) / (2 * r) for s in (+1, -1)]
    np.testing.assert_allclose(orbit, sorted(LogisticCubic.from_logistic(np.array(ypm), eta)), rtol=1e-10, atol=1e-14)


def test_cubic_min_value_and_local_minimum():
    L = LogisticCubic()
    assert L.min_value == -math.inf
    assert L.value([L.local_minimizer]) == L.local_min_value == 0.0
    assert L.grad([0.0])[0] == 0.0 and L.hess([0.0])[0, 0] == 1.0
    assert L.value([10.0]) == pytest.approx(50 - 1000 / 3, rel=1e-15)  # unbounded below
    assert L.value([1e3]) < -3e8
    with pytest.raises(ValueError, match="eta"):
        LogisticCubic.to_logistic(0.1, 0.0)


# ---------------------------------------------------------------------------------
# ZhuMinimalist
# ---------------------------------------------------------------------------------
_a, _b = sp.symbols("a b", real=True)
ZHU_REF = sympy_reference(sp.Rational(1, 4) * (_a ** 2 * _b ** 2 - 1) ** 2, [_a, _b])


@HYP
@given(th=coords(2))
def test_zhu_derivatives(th):
    check_derivatives(ZhuMinimalist(), th, ZHU_REF)


@HYP
@given(x=st.floats(0.2, 4.0), sx=st.sampled_from([1.0, -1.0]), sy=st.sampled_from([1.0, -1.0]))
def test_zhu_manifold_sharpness_vs_eigh(x, sx, sy):
    L = ZhuMinimalist()
    th = np.array([sx * x, sy / x])
    assert L.value(th) == pytest.approx(0.0, abs=1e-28)
    lam = np.linalg.eigvalsh(L.hess(th))[-1]
    assert L.manifold_sharpness(th) == pytest.approx(lam, rel=1e-12)
    assert lam == pytest.approx(2 * (x * x + 1 / (x * x)), rel=1e-12)


@pytest.mark.parametrize("eta", [0.5, 0.3, 0.1, 0.01])
def test_zhu_eos_minimum(eta):
    L = ZhuMinimalist()
    th = L.eos_minimum(eta)
    assert L.value(th) == pytest.approx(0.0, abs=1e-24)
    assert L.sharpness(th) == pytest.approx(2.0 / eta, rel=1e-10)
    x, y = th
    assert (x * x - y * y) ** 2 == pytest.approx(eta ** -2 - 4, abs=1e-8 * eta ** -2)
    with pytest.raises(ValueError, match="eta"):
        L.eos_minimum(0.6)


# ---------------------------------------------------------------------------------
# from_sympy
# ---------------------------------------------------------------------------------
SYM_EXPR = "a*x**2/2 + (x*y - 1)**2/2 + b*sin(x)*exp(y/3)"


@HYP
@given(th=coords(2))
def test_from_sympy_matches_lambdify(th):
    L = from_sympy(SYM_EXPR, ["x", "y"], params={"a": 0.3, "b": -1.2})
    x, y, a, b = sp.symbols("x y a b")
    e = sp.sympify(SYM_EXPR).subs({a: 0.3, b: -1.2})
    ref = sympy_reference(e, [x, y])
    check_derivatives(L, th, ref)


def test_from_sympy_params_share_code_and_take_effect():
    x, y = sp.symbols("x y")
    c = sp.Symbol("c")
    L1 = from_sympy((x * y - c) ** 2 / 2, [x, y], params={c: 1.0}, min_value=0.0)
    L2 = L1.with_params({"c": 2.0}, min_value=0.0)
    L3 = from_sympy("(x*y - c)**2/2", "x, y", params={"c": 5.0})
    assert isinstance(L1, SympyLoss) and isinstance(L1, Loss)
    assert L1.value_fn is L2.value_fn is L3.value_fn and L1.hess_fn is L3.hess_fn
    assert L1.value([1.0, 1.0]) == 0.0 and L2.value([1.0, 1.0]) == 0.5 and L3.value([1.0, 1.0]) == 8.0
    assert L1.min_value == 0.0 and math.isnan(L3.min_value)
    # same loss as the hand-written family
    sn = ScalarNet(2, 2.0)
    th = np.array([0.7, -1.3])
    assert L2.value(th) == pytest.approx(sn.value(th), rel=1e-14)
    np.testing.assert_allclose(L2.hess(th), sn.hess(th), rtol=1e-14)


def test_from_sympy_symbol_order_and_names():
    L = from_sympy("x - 2*y", ["y", "x"])                # θ = (y, x)
    np.testing.assert_array_equal(L.grad([0.0, 0.0]), [-2.0, 1.0])
    L = from_sympy("beta*x**2 + gamma", ["x"], params={"beta": 2.0, "gamma": 1.0})  # sympy names as constants
    assert L.value([1.0]) == 3.0
    L = from_sympy("x**2", ["x", "unused"])            # a variable the loss ignores
    assert L.dim == 2 and L.grad([1.0, 5.0])[1] == 0.0


def test_from_sympy_almost_everywhere_hessian():
    L = from_sympy("Abs(x) + x**2", ["x"])
    assert L.grad([-1.0])[0] == -3.0
    assert L.hess([-1.0])[0, 0] == 2.0                 # DiracDelta dropped


def test_from_sympy_errors():
    with pytest.raises(ValueError, match=r"free symbols \['z'\]"):
        from_sympy("x + z", ["x"])
    with pytest.raises(ValueError, match=r"\['k', 'z'\]"):
        from_sympy(sp.sympify("k*x + z"), ["x"])
    with pytest.raises(ValueError, match="could not be parsed"):
        from_sympy("x +* ", ["x"])
    with pytest.raises(ValueError, match="could not be parsed"):
        from_sympy("x + (", ["x"])
    with pytest.raises(ValueError, match="'besselj' is not allowed"):  # strings: a whitelist of functions
        from_sympy("besselj(0, x)", ["x"])
    with pytest.raises(ValueError, match="cannot be compiled"):
        from_sympy(sp.besselj(0, sp.Symbol("x")), ["x"])
    with pytest.raises(ValueError, match="'f' is not allowed"):
        from_sympy("f(x)", ["x"])
    with pytest.raises(ValueError, match="undefined functions"):
        from_sympy(sp.Function("f")(sp.Symbol("x")), ["x"])
    with pytest.raises(ValueError, match="real"):
        from_sympy("I*x", ["x"])
    with pytest.raises(ValueError, match="distinct"):
        from_sympy("x", ["x", "x"])
    with pytest.raises(ValueError, match="at least one"):
        from_sympy("1", [])
    with pytest.raises(ValueError, match="also listed in symbols"):
        from_sympy("a*x", ["x", "a"], params={"a": 1.0})
    with pytest.raises(ValueError, match="finite"):
        from_sympy("a*x", ["x"], params={"a": math.nan})
    with pytest.raises(TypeError, match="params"):
        from_sympy("a*x", ["x"], params=[("a", 1.0)])
    with pytest.raises(TypeError, match="params"):
        from_sympy("a*x", ["x"], params={"a": "1"})
    with pytest.raises(TypeError, match="expr"):
        from_sympy(object(), ["x"])
    with pytest.raises(ValueError, match="'>' is not allowed"):
        from_sympy("x > 1", ["x"])
    with pytest.raises(TypeError, match="expr"):
        from_sympy(sp.Symbol("x") > 1, ["x"])
    with pytest.raises(TypeError, match="symbols"):
        from_sympy("x", [1])
    with pytest.raises(TypeError, match="min_value"):
        from_sympy("x", ["x"], min_value="0")
    L = from_sympy("a*x", ["x"], params={"a": 1.0})
    with pytest.raises(ValueError, match="unknown params"):
        L.with_params({"b": 1.0})


# ---------------------------------------------------------------------------------
# input validation shared by all losses
# ---------------------------------------------------------------------------------
def test_bad_inputs():
    with pytest.raises(ValueError, match="symmetric"):
        Quadratic(H=[[1.0, 2.0], [0.0, 1.0]])
    L = ScalarNet(3)
    with pytest.raises(ValueError, match="theta"):
        L.value([1.0, 2.0])
    with pytest.raises(ValueError, match="theta"):
        L.grad(np.ones((3, 1)))
    with pytest.raises(ValueError, match="theta"):
        L.hess([1.0, np.nan, 1.0])
    with pytest.raises(ValueError, match="theta"):
        L.value([1.0, np.inf, 1.0])
    with pytest.raises(ValueError, match="v"):
        L.hvp([1.0, 1.0, 1.0], [1.0, 1.0])
    with pytest.raises(ValueError, match="depth"):
        ScalarNet(0)
    with pytest.raises(TypeError, match="depth"):
        ScalarNet(2.5)
    with pytest.raises(ValueError, match="target"):
        ScalarNet(2, math.nan)
    with pytest.raises(TypeError, match="target"):
        ScalarNet(2, "1")
    X, Y = np.ones((4, 2)), np.ones((4, 1))
    with pytest.raises(ValueError, match="widths"):
        DeepLinear(X, Y, [3, 0])
    with pytest.raises(TypeError, match="widths"):
        DeepLinear(X, Y, [1.5])
    with pytest.raises(TypeError, match="widths"):
        DeepLinear(X, Y, 3)
    with pytest.raises(ValueError, match="Y"):
        DeepLinear(X, np.ones((5, 1)), [2])
    with pytest.raises(ValueError, match="X"):
        DeepLinear(np.ones((4, 2, 1)), Y, [2])
    with pytest.raises(ValueError, match="X"):
        DeepLinear([[1.0, np.nan]], [1.0], [])
    DeepLinear(X, np.ones(4), [2])  # 1-D Y is accepted as d_out = 1
    with pytest.raises(ValueError, match="weights"):
        DeepLinear(X, Y, [2]).flatten([np.ones((2, 2))])


# --- the blocked gradient (structure-of-arrays, SIMD across trajectories) -------------
def _block_vs_columns(loss, X):
    """grad_block_fn on a (d, B) block against grad_into_fn column by column: bit-identical."""
    d, B = X.shape
    G = np.full((d, B), np.nan)
    loss.grad_block_fn(np.ascontiguousarray(X), loss.params, G, np.empty((d, B)))
    for b in range(B):
        out = np.empty(d)
        loss.grad_into_fn(np.ascontiguousarray(X[:, b]), loss.params, out)
        assert np.array_equal(out, G[:, b], equal_nan=True), (b, out, G[:, b])
        np.testing.assert_allclose(out, loss.grad(X[:, b]), rtol=1e-12, atol=1e-300)


@settings(max_examples=15)
@given(depth=st.integers(1, 8), B=st.integers(1, 40), seed=st.integers(0, 2**31 - 1))
def test_scalar_net_grad_block_is_bitwise_columnwise(depth, B, seed):
    X = np.random.default_rng(seed).normal(0.0, 1.5, (depth, B))
    X[:, 0] = 0.0  # exact zeros: the prefix/suffix products must not divide
    _block_vs_columns(ScalarNet(depth, -0.7), X)


def test_scalar_net_deep_uses_the_looped_block_and_stays_bitwise():
    from eosdyn.losses import scalar_net

    deep = ScalarNet(scalar_net.UNROLL_MAX_DEPTH + 3, 2.0)
    assert deep.grad_block_fn is scalar_net._sn_grad_block
    _block_vs_columns(deep, np.random.default_rng(1).normal(1.0, 0.05, (deep.dim, 19)))


@pytest.mark.parametrize("d", [1, 7, 12, 14])  # unrolled (d <= 12) and looped
def test_quadratic_grad_block_is_bitwise_columnwise(rng, d):
    from eosdyn.losses import quadratic

    A = rng.standard_normal((d, d))
    loss = Quadratic(A @ A.T, center=rng.standard_normal(d))
    assert (loss.grad_block_fn is quadratic._grad_block) == (d > quadratic.UNROLL_MAX_DIM)
    _block_vs_columns(loss, rng.standard_normal((d, 33)))
    # θ = −0.0 with c = 0 and H ≥ 0 diagonal: every term is −0.0; grad_into's sum starts from
    # 0.0 and gives +0.0, and the block must too (bitwise, signed zeros included)
    X = np.full((d, 3), -0.0)
    _block_vs_columns(Quadratic(eigs=np.arange(1.0, d + 1)), X)


def test_sympy_grad_block_is_bitwise_columnwise(rng):
    loss = from_sympy("log(1 + x**2) + a*cos(y)*x + exp(-x*y)/3", ["x", "y"], params={"a": 0.7})
    _block_vs_columns(loss, rng.normal(0.0, 2.0, (2, 50)))


def test_toy_grad_blocks_are_bitwise_columnwise(rng):
    _block_vs_columns(LogisticCubic(), rng.normal(0.0, 2.0, (1, 37)))
    _block_vs_columns(ZhuMinimalist(), rng.normal(0.0, 1.5, (2, 37)))


# --- the gradient-flow solution of a scalar network (GFS) ----------------------------
@settings(max_examples=8)
@given(depth=st.integers(2, 4), target=st.sampled_from([1.3, -0.7, 0.5]),
       seed=st.integers(0, 2**31 - 1))
def test_scalar_net_gradient_flow_solution_vs_integrating_the_flow(depth, target, seed):
    from scipy.integrate import solve_ivp

    L = ScalarNet(depth, target)
    w0 = np.random.default_rng(seed).uniform(0.3, 1.6, depth)
    if target < 0:
        w0[0] = -w0[0]  # sign(prod w) = sign(y): the flow never has to cross prod w = 0
    sol = solve_ivp(lambda t, w: -L.grad(w), (0.0, 1e4), w0, method="LSODA", rtol=1e-12, atol=1e-14)
    w_end = sol.y[:, -1]
    assert abs(np.prod(w_end) - target) < 1e-9  # the flow did reach the minimum manifold
    w_gf = L.gradient_flow_solution(w0)
    np.testing.assert_allclose(w_gf, w_end, rtol=1e-7, atol=1e-9)
    assert np.prod(w_gf) == pytest.approx(target, rel=1e-13)
    # the balance w_i^2 - w_j^2 is conserved exactly by construction
    np.testing.assert_allclose(np.diff(w_gf ** 2), np.diff(w0 ** 2), rtol=1e-12, atol=1e-13)
    assert L.gfs_sharpness(w0) == pytest.approx(L.sharpness(w_end), rel=1e-6)


def test_scalar_net_gradient_flow_solution_crosses_zero_and_bad_input():
    from scipy.integrate import solve_ivp

    L = ScalarNet(3, 1.0)
    # a wrong-signed product: the smallest weight passes through 0 and flips, the rest keep sign
    w0 = np.array([1.4, -0.3, 0.9])
    sol = solve_ivp(lambda t, w: -L.grad(w), (0.0, 1e4), w0, method="LSODA", rtol=1e-12, atol=1e-14)
    w_gf = L.gradient_flow_solution(w0)
    assert w_gf[1] > 0
    np.testing.assert_allclose(w_gf, sol.y[:, -1], rtol=1e-7, atol=1e-9)
    with pytest.raises(ValueError, match="zero weights"):
        L.gradient_flow_solution([0.0, 0.0, 1.0])
    with pytest.raises(ValueError, match="saddle"):
        L.gradient_flow_solution([-0.5, 0.5, 2.0])
    with pytest.raises(ValueError, match="theta"):
        L.gradient_flow_solution([1.0, 1.0])


@pytest.mark.parametrize("d", [3, 11, 12, 40])
def test_quadratic_gradient_is_the_ordered_row_sum_at_every_dimension(d):
    """From d = AXPY_MIN_DIM on, Quadratic's gradient (and the SDE kernels' built-in linear
    gradient, which reads Hᵀ) run as axpys over j: still Σⱼ Hᵢⱼ(θ − c)ⱼ summed left to right, so
    bit-identical to the dot products below that size (issue 16)."""
    from eosdyn.losses import quadratic as Q
    from eosdyn.sde import kernels as SK

    rng = np.random.default_rng(d)
    A = rng.standard_normal((d, d))
    q = Quadratic(H=A + A.T, center=rng.standard_normal(d))
    theta = rng.standard_normal(d)
    want = np.empty(d)
    for i in range(d):
        acc = 0.0
        for j in range(d):
            acc += q.H[i, j] * (theta[j] - q.center[j])
        want[i] = acc
    got = np.empty(d)
    Q._grad_into(theta, q.params, got)
    np.testing.assert_array_equal(got, want)
    b = rng.standard_normal(d)
    got2 = np.empty(d)
    SK._linear_grad(theta, got2, np.ascontiguousarray(A.T), q.center, b, np.empty(d))
    want2 = np.empty(d)
    for i in range(d):
        acc = -b[i]
        for j in range(d):
            acc += A[i, j] * (theta[j] - q.center[j])
        want2[i] = acc
    np.testing.assert_array_equal(got2, want2)
