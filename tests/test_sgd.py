"""The stochastic edge on finite sums: SGD's mean-square threshold, batch sharpness, heavy-ball noise.

References: closed forms (1-D threshold 2h̄/((1−p)h̄² + p·mean hᵢ²); B = n is GD), the second-moment
operator built by enumerating every batch (not through the mixture identity), Monte-Carlo
ensembles of the SGD error map in plain numpy, scipy's discrete Lyapunov solver, the AR(2)
Yule–Walker derivation in theory/noisy_gd.py.
"""
from __future__ import annotations

import itertools
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.linalg import solve_discrete_lyapunov

from eosdyn.analysis import (
    batch_sharpness,
    sgd_moment_operator,
    sgd_threshold,
    stationary_covariance,
    stationary_variance_per_mode,
)
from eosdyn.losses import LeastSquares, Quadratic

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from theory import noisy_gd  # noqa: E402


def regression(n=7, d=3, seed=0, noise=0.0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    return LeastSquares(X, X @ np.ones(d) + noise * rng.standard_normal(n))


def enumerated_operator(X, eta, B, beta=0.0):
    """E[A_B ⊗ A_B] averaged over every batch of size B (uniform without replacement)."""
    n, d = X.shape
    acc = 0.0
    batches = list(itertools.combinations(range(n), B))
    for b in batches:
        Xb = X[list(b)]
        Hb = Xb.T @ Xb / B
        if beta == 0.0:
            A = np.eye(d) - eta * Hb
        else:
            A = np.block([[(1 + beta) * np.eye(d) - eta * Hb, -beta * np.eye(d)], [np.eye(d), np.zeros((d, d))]])
        acc = acc + np.kron(A, A)
    return acc / len(batches)


# ----------------------------------------------------------------------------- the operator
@pytest.mark.parametrize("B", [1, 2, 3, 7])
@pytest.mark.parametrize("beta", [0.0, 0.6])
def test_mixture_operator_equals_the_average_over_every_batch(B, beta):
    ls = regression()
    T = sgd_moment_operator(ls, 0.3, B, momentum=beta)
    np.testing.assert_allclose(T, enumerated_operator(ls.X, 0.3, B, beta), atol=1e-12)


def test_operator_predicts_the_monte_carlo_second_moment():
    """E‖e_T‖² from the operator equals the mean over 200 000 SGD error paths, within 4 standard errors."""
    ls = regression(n=10)
    X, n, B = ls.X, 10, 2
    eta = 0.8 * sgd_threshold(ls, B).threshold
    e0 = np.ones(3) / np.sqrt(3)
    m = np.outer(e0, e0).ravel()
    T = sgd_moment_operator(ls, eta, B)
    for _ in range(10):
        m = T @ m
    g = np.random.default_rng(1)
    S = 200_000
    e = np.tile(e0, (S, 1))
    for _ in range(10):
        Xb = X[np.argsort(g.random((S, n)), axis=1)[:, :B]]
        e = e - eta / B * np.einsum("sbd,sb->sd", Xb, np.einsum("sbd,sd->sb", Xb, e))
    sq = np.sum(e * e, axis=1)
    assert abs(sq.mean() - np.trace(m.reshape(3, 3))) < 4 * sq.std() / math.sqrt(S)


# ----------------------------------------------------------------------------- the threshold
@settings(max_examples=25, deadline=None)
@given(st.integers(2, 9), st.data())
def test_one_dimensional_threshold_is_the_closed_form(n, data):
    B = data.draw(st.integers(1, n))
    x = np.asarray(data.draw(st.lists(st.floats(0.2, 3.0), min_size=n, max_size=n)))[:, None]
    ls = LeastSquares(x, x[:, 0])
    h = x[:, 0] ** 2
    p = (n - B) / (B * (n - 1))
    want = 2 * h.mean() / ((1 - p) * h.mean() ** 2 + p * (h**2).mean())
    r = sgd_threshold(ls, B)
    assert r.threshold == pytest.approx(want, rel=1e-9)
    assert r.wu_ma_e_sufficient == pytest.approx(want, rel=1e-9)  # in 1-D the sufficient condition is exact
    assert r.threshold <= r.wu_ma_e_necessary * (1 + 1e-9)       # and the "necessary" one bounds it


@pytest.mark.parametrize("beta", [0.0, 0.5])
def test_full_batch_is_gd_and_the_radius_is_one_at_the_threshold(beta):
    ls = regression(n=9)
    lam = np.linalg.eigvalsh(ls.H)[-1]
    full = sgd_threshold(ls, 9, momentum=beta)
    assert full.threshold == pytest.approx(2 * (1 + beta) / lam, rel=1e-9) and full.p == 0.0
    for B in (1, 2, 4):
        r = sgd_threshold(ls, B, momentum=beta)
        rho = np.abs(np.linalg.eigvals(sgd_moment_operator(ls, r.threshold, B, momentum=beta))).max()
        assert rho == pytest.approx(1.0, abs=1e-8)
        below = np.abs(np.linalg.eigvals(sgd_moment_operator(ls, 0.99 * r.threshold, B, momentum=beta))).max()
        assert below < 1.0


def test_threshold_rises_with_the_batch_between_wu_ma_e_sufficient_and_gd():
    ls = regression(n=12, d=4, seed=3)
    prev = 0.0
    above_necessary = []
    for B in range(1, 13):
        r = sgd_threshold(ls, B)
        assert prev < r.threshold <= r.gd_threshold * (1 + 1e-12)
        assert r.wu_ma_e_sufficient <= r.threshold * (1 + 1e-9)
        assert r.wu_ma_e_necessary <= r.gd_threshold * (1 + 1e-12)
        assert r.p == pytest.approx((12 - B) / (B * 11))
        above_necessary.append(r.threshold > r.wu_ma_e_necessary * (1 + 1e-6))
        prev = r.threshold
    # Wu, Ma & E's "necessary" min(2/a, 1/(s√p)) is not a bound in d > 1: here the exact edge lies above it
    assert any(above_necessary)
    assert sgd_threshold(ls, 12).threshold == pytest.approx(sgd_threshold(ls, 12).gd_threshold, rel=1e-9)


def test_with_replacement_the_mixture_probability_is_one_over_b():
    ls = regression(n=5)
    r = sgd_threshold(ls, 8, replacement=True)  # B > n is fine with replacement
    assert r.p == pytest.approx(1 / 8) and r.threshold < r.gd_threshold


def test_overparameterised_regression_leaves_the_null_space_out():
    """n < d: H is singular; the null directions are neutral and the threshold comes from the rest."""
    ls = regression(n=3, d=6)
    r = sgd_threshold(ls, 3)
    lam = np.linalg.eigvalsh(ls.H)[-1]
    assert r.threshold == pytest.approx(2 / lam, rel=1e-9)
    assert 0 < sgd_threshold(ls, 1).threshold < r.threshold


# ----------------------------------------------------------------------------- batch sharpness
def direct_batch_sharpness(X, y, theta, B):
    vals, num, den = [], [], []
    for b in itertools.combinations(range(X.shape[0]), B):
        Xb, yb = X[list(b)], y[list(b)]
        g = Xb.T @ (Xb @ theta - yb) / B
        Hb = Xb.T @ Xb / B
        vals.append(g @ Hb @ g / (g @ g))
        num.append(g @ Hb @ g)
        den.append(g @ g)
    return np.mean(vals), np.sum(num) / np.sum(den)


def test_exact_batch_sharpness_equals_a_direct_computation():
    ls = regression(n=12, d=4, seed=5, noise=0.3)
    theta = np.array([0.3, -1.0, 2.0, 0.5])
    r = batch_sharpness(ls, theta, 3)
    want, inside = direct_batch_sharpness(ls.X, ls.y, theta, 3)
    assert r.exact and r.n_batches == math.comb(12, 3)
    assert r.value == pytest.approx(want, rel=1e-12)
    assert r.expectation_inside == pytest.approx(inside, rel=1e-12)
    # a mean of Rayleigh quotients of the H_B: between their extreme eigenvalues
    ev = [np.linalg.eigvalsh(ls.X[list(b)].T @ ls.X[list(b)] / 3) for b in itertools.combinations(range(12), 3)]
    assert min(e[0] for e in ev) <= r.value <= max(e[-1] for e in ev)


def test_monte_carlo_interval_covers_the_exact_value():
    ls = regression(n=10, d=3, seed=2, noise=0.5)
    theta = np.array([1.5, 0.2, -0.7])
    exact = batch_sharpness(ls, theta, 3).value
    hits = 0
    for seed in range(100):
        r = batch_sharpness(ls, theta, 3, exact=False, seed=seed, rel_std_error=0.025)
        assert not r.exact and r.reached_target and 10 <= r.n_batches <= 1000  # the adaptive stop, as used
        hits += r.ci95[0] <= exact <= r.ci95[1]
    assert hits >= 93


# ----------------------------------------------------------------------------- heavy-ball under noise
@pytest.mark.parametrize("beta", [0.0, 0.3, 0.9])
def test_heavyball_stationary_covariance_solves_its_lyapunov_equation(beta):
    rng = np.random.default_rng(4)
    A0 = rng.standard_normal((3, 3))
    H = A0 @ A0.T + 0.5 * np.eye(3)
    S = np.diag([0.3, 0.1, 0.2])
    eta = 1.5 * (1 + beta) / np.linalg.eigvalsh(H)[-1]
    C = stationary_covariance(H, S, eta, "map", momentum=beta, convention="proposal")
    I, Z = np.eye(3), np.zeros((3, 3))
    A = np.block([[(1 + beta) * I - eta * H, -beta * I], [I, Z]])
    Q = np.block([[eta * S, Z], [Z, Z]])
    Cz = solve_discrete_lyapunov(A, Q)
    np.testing.assert_allclose(C, Cz[:3, :3], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(A @ Cz @ A.T + Q, Cz, atol=1e-8)


@pytest.mark.parametrize("eta_lam, beta", [(0.5, 0.5), (2.5, 0.5), (1.0, 0.9)])
def test_heavyball_variance_closed_form_theory_and_ensemble(eta_lam, beta):
    lam, s2 = 2.0, 0.4
    eta = eta_lam / lam
    v = stationary_variance_per_mode(lam, s2, eta, "map", momentum=beta, convention="proposal")
    assert v == pytest.approx((1 + beta) * s2 / ((1 - beta) * lam * (2 + 2 * beta - eta * lam)), rel=1e-14)
    assert v == pytest.approx(noisy_gd.variance_heavyball(lam, eta * s2, eta, beta), rel=1e-12)
    assert stationary_covariance([[lam]], s2, eta, "map", momentum=beta, convention="proposal")[0, 0] == pytest.approx(v, rel=1e-10)
    # an independent ensemble of θ_{t+1} = θ_t − ηλθ_t + β(θ_t − θ_{t−1}) + √η σ ξ
    g = np.random.default_rng(7)
    S, burn, keep = 4000, 600, 400
    x = np.zeros(S)
    xp = np.zeros(S)
    samples = []
    for t in range(burn + keep):
        x, xp = x - eta * lam * x + beta * (x - xp) + math.sqrt(eta * s2) * g.standard_normal(S), x
        if t >= burn and t % 20 == 0:
            samples.append(x.var())
    assert np.mean(samples) == pytest.approx(v, rel=0.05)


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("call, err, match", [
    (lambda ls: sgd_threshold(ls, 0), ValueError, "batch_size"),
    (lambda ls: sgd_threshold(ls, 8), ValueError, "batch_size must be in \\[1, n_examples = 7\\]"),
    (lambda ls: sgd_threshold(ls, 2, momentum=1.0), ValueError, "momentum"),
    (lambda ls: sgd_threshold(Quadratic(eigs=[2.0, 1.0]), 2), TypeError, "finite-sum"),
    (lambda ls: batch_sharpness(Quadratic(eigs=[2.0, 1.0]), [1, 1], 2), TypeError, "finite-sum"),
    (lambda ls: batch_sharpness(ls, ls.minimizer, 2), ValueError, "zero gradient"),
    (lambda ls: batch_sharpness(ls, np.ones(3), 7, exact=True, max_exact=0), ValueError, "max_exact"),
    (lambda ls: stationary_covariance(np.eye(2), 0.1, 0.5, "sde", momentum=0.5), ValueError, "kind='map'"),
    (lambda ls: stationary_covariance(np.eye(2), 0.1, 3.5, "map", momentum=0.5), ValueError, "2 \\+ 2·momentum"),
    (lambda ls: stationary_variance_per_mode(1.0, 0.1, 3.0, "map", momentum=0.5), ValueError, "\\(0, 3\\)"),
])
def test_bad_input_is_refused_clearly(call, err, match):
    with pytest.raises(err, match=match):
        call(regression())


# ----------------------------------------------------------------------------- torch models
def _linear_model(ls, theta):
    torch = pytest.importorskip("torch")
    model = torch.nn.Linear(ls.dim, 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.as_tensor(theta)[None, :])
    data = (torch.as_tensor(ls.X), torch.as_tensor(ls.y))
    loss_fn = lambda out, y: 0.5 * ((out[:, 0] - y) ** 2).mean()  # LeastSquares' ℓᵢ
    return model, loss_fn, data


def test_torch_batch_sharpness_agrees_with_the_toy_exact_value():
    import eosdyn.bridge as bridge

    ls = regression(n=10, d=3, seed=2, noise=0.5)
    theta = np.array([1.5, 0.2, -0.7])
    model, loss_fn, data = _linear_model(ls, theta)
    full = bridge.batch_sharpness(model, loss_fn, data, 10)  # one possible batch: no sampling error
    assert full.value == pytest.approx(batch_sharpness(ls, theta, 10).value, rel=1e-10)
    assert full.n_batches == 10 and full.n_hvp == 10 and full.rel_std_error < 1e-12
    exact = batch_sharpness(ls, theta, 3)
    r = bridge.batch_sharpness(model, loss_fn, data, 3, rel_std_error=0.03, seed=1)
    assert r.reached_target and r.rel_std_error <= 0.03
    assert r.n_hvp == r.n_batches and 10 <= r.n_batches <= 1000
    se = r.rel_std_error * abs(r.value)
    assert abs(r.value - exact.value) <= 4 * se
    # the interval is the Student-t one of the stated standard error
    from scipy import stats

    half = stats.t.ppf(0.975, r.n_batches - 1) * se
    assert r.ci95 == pytest.approx((r.value - half, r.value + half), rel=1e-12)


def test_torch_batch_sharpness_refuses_a_zero_gradient_and_bad_sizes():
    import eosdyn.bridge as bridge

    ls = regression(n=6)
    model, loss_fn, (X, _) = _linear_model(ls, np.zeros(3))
    zero_targets = (X, X[:, 0] * 0)
    with pytest.raises(ValueError, match="zero"):
        bridge.batch_sharpness(model, loss_fn, zero_targets, 2)
    with pytest.raises(ValueError, match="batch_size"):
        bridge.batch_sharpness(model, loss_fn, zero_targets, 7)
    with pytest.raises(TypeError, match="pair of tensors"):
        bridge.batch_sharpness(model, loss_fn, [zero_targets], 2)


def test_running_out_of_batches_warns_and_says_so():
    ls = regression(n=10, d=3, seed=2, noise=0.5)
    with pytest.warns(RuntimeWarning, match="max_batches = 20"):
        r = batch_sharpness(ls, np.array([1.5, 0.2, -0.7]), 3, exact=False, max_batches=20)
    assert not r.reached_target and r.n_batches == 20 and r.rel_std_error > 0.005


def test_torch_batch_sharpness_leaves_batchnorm_statistics_alone():
    torch = pytest.importorskip("torch")
    import eosdyn.bridge as bridge

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Tanh(),
                                torch.nn.Linear(8, 3)).double().train()
    X = torch.randn(40, 4, dtype=torch.float64)
    Y = torch.randint(0, 3, (40,))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    r = bridge.batch_sharpness(model, torch.nn.functional.cross_entropy, (X, Y), 8, max_batches=30,
                               rel_std_error=0.5)
    assert np.isfinite(r.value) and r.n_hvp == r.n_batches
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
