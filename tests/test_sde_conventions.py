"""The SDE's noise convention, named: ``"sgd"`` (default; per-step η²Σ, Li–Malladi–Arora) vs ``"proposal"``
(per-step ηΣ, the EoS-Ada proposal's dθ = −η∇L dt + √(ηΣ) dW with t in steps).

References: the map written out by hand on the regenerated normals (eosdyn.sde.increments); the same
model under the other convention with Σ rescaled by η (bit for bit where the rescaling is exact in
floating point); closed-form per-mode variances, checked on independent trajectories with the standard
error computed from the samples (z = 4.5, as in tests/test_sde.py).
"""
import numpy as np
import pytest
from numba import njit

from eosdyn.analysis import stationary_covariance, stationary_variance_per_mode
from eosdyn.losses import Quadratic
from eosdyn.losses.base import Loss
from eosdyn.sde import (
    CONVENTIONS,
    CallableNoise,
    ConstantMatrix,
    HessianAligned,
    Isotropic,
    LeastSquares,
    MinibatchNoise,
    compare_sde_and_map,
    increments,
    noisy_gd,
    simulate,
)


def _quad():
    return Quadratic(eigs=[3.0, 1.0, 0.5], center=[0.1, 0.2, -0.3])


def _ls(n=12, d=3, seed=1):
    rng = np.random.default_rng(seed)
    return LeastSquares(rng.standard_normal((n, d)), rng.standard_normal(n))


@njit(cache=True)
def _dw_value(theta, params):
    return 0.25 * np.sum((theta ** 2 - 1.0) ** 2)


@njit(cache=True)
def _dw_grad(theta, params):
    return theta * (theta ** 2 - 1.0)


@njit(cache=True)
def _dw_hess(theta, params):
    return np.diag(3.0 * theta ** 2 - 1.0)


@njit(cache=True)
def _diag_b(theta):
    return 0.2 + 0.1 * theta * theta


def test_the_default_is_sgd_and_results_say_which_ran():
    assert CONVENTIONS == ("sgd", "proposal")
    q, X = _quad(), np.random.default_rng(5).standard_normal((7, 3))
    a = noisy_gd(q, 0.2, Isotropic(0.3), X, 30, record_every=3, seed=9)
    b = noisy_gd(q, 0.2, Isotropic(0.3), X, 30, record_every=3, seed=9, convention="sgd")
    c = noisy_gd(q, 0.2, Isotropic(0.3), X, 30, record_every=3, seed=9, convention="proposal")
    np.testing.assert_array_equal(a.final_theta, b.final_theta)
    assert not np.array_equal(a.final_theta, c.final_theta)
    assert (a.params["convention"], c.params["convention"]) == ("sgd", "proposal")
    assert "lr*B xi" in a.params["equation"] and "sqrt(lr)*B xi" in c.params["equation"]
    s = simulate(q, 0.2, Isotropic(0.3), X, 0.5, 10, seed=9)
    assert s.params["convention"] == "sgd" and "lr*B dW" in s.params["equation"]
    np.testing.assert_array_equal(s.final_theta, simulate(q, 0.2, Isotropic(0.3), X, 0.5, 10, seed=9,
                                                          convention="sgd").final_theta)


def test_sgd_map_by_hand_and_as_the_euler_step_of_the_sde():
    """θ ← θ − η∇L + η·Bξ on the regenerated normals; noisy_gd ≡ simulate(dt=1, euler) bit for bit."""
    q = _quad()
    Bn = np.array([[0.6, 0.0], [0.3, 0.4], [-0.2, 0.5]])
    th0 = np.ones((5, 3))
    lr = 0.3
    a = noisy_gd(q, lr, ConstantMatrix(Bn), th0, 50, record_every=10, seed=8, record_theta=True)
    b = simulate(q, lr, ConstantMatrix(Bn), th0, 1.0, 50, method="euler", record_every=10, seed=8,
                 record_theta=True)
    np.testing.assert_array_equal(a.theta, b.theta)
    np.testing.assert_array_equal(a.loss, b.loss)
    th = th0[2].copy()
    dW = increments(8, 2, 50, 2, 1.0)
    for k in range(50):
        th = th - lr * q.grad(th) + lr * Bn @ dW[k]
    np.testing.assert_allclose(a.final_theta[2], th, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("sgd_model, proposal_model", [
    (lambda lr, ls: Isotropic(0.3), lambda lr, ls: Isotropic(0.3 * np.sqrt(lr))),
    (lambda lr, ls: ConstantMatrix([[0.6, 0.0], [0.3, 0.4], [-0.2, 0.5]]),
     lambda lr, ls: ConstantMatrix(np.array([[0.6, 0.0], [0.3, 0.4], [-0.2, 0.5]]) * np.sqrt(lr))),
    (lambda lr, ls: MinibatchNoise(ls, 4), lambda lr, ls: MinibatchNoise(ls, 4, scale=lr)),
    (lambda lr, ls: MinibatchNoise(ls, 4, sqrt="eigh"), lambda lr, ls: MinibatchNoise(ls, 4, scale=lr, sqrt="eigh")),
], ids=["isotropic", "matrix", "minibatch", "minibatch-eigh"])
def test_sgd_is_the_proposal_with_sigma_times_eta_bit_for_bit(sgd_model, proposal_model):
    """Per-step η²Σ = η·(ηΣ): the "sgd" run of Σ is the "proposal" run of ηΣ, on the same streams,
    in noisy_gd (the stepping core) and in simulate (the SDE kernel), bit for bit."""
    ls = _ls()
    lr = 0.1 if isinstance(sgd_model(1.0, ls), MinibatchNoise) else 0.2
    loss = ls if isinstance(sgd_model(1.0, ls), MinibatchNoise) else _quad()
    X = np.random.default_rng(3).standard_normal((9, 3))
    kw = dict(record_every=5, seed=2, record_theta=True)
    a = noisy_gd(loss, lr, sgd_model(lr, ls), X, 40, convention="sgd", **kw)
    b = noisy_gd(loss, lr, proposal_model(lr, ls), X, 40, convention="proposal", **kw)
    c = simulate(loss, lr, sgd_model(lr, ls), X, 1.0, 40, convention="sgd", **kw)
    for x in (b, c):
        np.testing.assert_array_equal(a.theta, x.theta)
        np.testing.assert_array_equal(a.theta_cov, x.theta_cov)
    d = simulate(loss, lr, sgd_model(lr, ls), X, 0.25, 40, method="euler", convention="sgd", **kw)
    e = simulate(loss, lr, proposal_model(lr, ls), X, 0.25, 40, method="euler", convention="proposal", **kw)
    np.testing.assert_array_equal(d.theta, e.theta)


def test_state_dependent_hessian_noise_rescales_too():
    """HessianAligned(c) under "sgd" is HessianAligned(c·η) under "proposal" (Σ = cH(θ) → ηcH(θ))."""
    loss = Loss(_dw_value, _dw_grad, _dw_hess, None, (np.zeros(1),), 2, 0.0)
    th0 = np.array([[1.0, -1.0], [0.9, 1.1], [-1.2, 0.8]])
    lr = 0.2
    a = noisy_gd(loss, lr, HessianAligned(0.05), th0, 30, record_every=3, seed=3, record_theta=True)
    b = noisy_gd(loss, lr, HessianAligned(0.05 * lr), th0, 30, record_every=3, seed=3, record_theta=True,
                 convention="proposal")
    np.testing.assert_array_equal(a.theta, b.theta)


def test_a_user_noise_function_gets_eta_instead_of_its_square_root():
    """CallableNoise cannot be rescaled in place: under "sgd" B(θ)dW is multiplied by η. noisy_gd
    then runs the SDE kernel's Euler step (dt = 1): checked against the map written out by hand."""
    q = Quadratic(eigs=[2.0, 0.5])
    th0 = np.array([[1.0, -0.5], [0.3, 0.7]])
    lr, steps = 0.3, 40
    noise = CallableNoise(_diag_b, kind="diagonal")
    a = noisy_gd(q, lr, noise, th0, steps, record_every=1, seed=6, record_theta=True)
    b = simulate(q, lr, noise, th0, 1.0, steps, method="euler", record_every=1, seed=6, record_theta=True)
    np.testing.assert_array_equal(a.theta, b.theta)
    assert a.params["convention"] == "sgd" and a.params["runner"].startswith("sde.simulate")
    for i in range(2):
        th = th0[i].copy()
        dW = increments(6, i, steps, 2, 1.0)
        for k in range(steps):
            th = th - lr * q.grad(th) + lr * _diag_b(th) * dW[k]
        np.testing.assert_allclose(a.final_theta[i], th, rtol=1e-12, atol=1e-13)


def test_per_mode_stationary_variance_under_sgd():
    """Σ = σ²I, η = 0.1, ηλ = 0.1, 1, 1.9: map ησ²/(λ(2 − ηλ)), SDE ησ²/(2λ) — η times the
    proposal's (closed forms with convention="sgd"). 10000 independent paths at k = 100
    (transient ≤ 0.9^200), z = 4.5; srk15 with dt = 0.05 (stationary bias 0.2 %)."""
    lr, sigma = 0.1, 0.5
    etalam = np.array([0.1, 1.0, 1.9])
    lam = etalam / lr
    n = 10000
    cmp = compare_sde_and_map(Quadratic(eigs=lam), lr, Isotropic(sigma), np.zeros((n, 3)), 100, dt=0.05,
                              record_every=50, seed=4)
    assert cmp.map.params["convention"] == cmp.sde.params["convention"] == "sgd"
    want_map = stationary_variance_per_mode(lam, sigma ** 2, lr, "map", convention="sgd")
    want_sde = stationary_variance_per_mode(lam, sigma ** 2, lr, "sde", convention="sgd")
    np.testing.assert_allclose(want_map, lr * sigma ** 2 / (lam * (2 - etalam)), rtol=1e-14)
    np.testing.assert_allclose(want_sde, lr * sigma ** 2 / (2 * lam), rtol=1e-14)
    for res, expect in [(cmp.sde, want_sde), (cmp.map, want_map)]:
        x = res.final_theta
        se = ((x - x.mean(axis=0)) ** 2).std(axis=0) / np.sqrt(n)
        assert np.all(np.abs(x.var(axis=0, ddof=1) - expect) < 4.5 * se)
        # the proposal's variance (1/η = 10 times larger) is rejected
        proposal = expect / lr
        assert np.all(np.abs(x.var(axis=0, ddof=1) - proposal) > 50 * se)


def test_stationary_covariance_takes_the_convention():
    rng = np.random.default_rng(4)
    A0 = rng.standard_normal((3, 3))
    H = A0 @ A0.T + 0.5 * np.eye(3)
    S = np.diag([0.3, 0.1, 0.2])
    eta = 0.5 / np.linalg.eigvalsh(H)[-1]
    for kind, beta in (("sde", 0.0), ("map", 0.0), ("map", 0.6)):
        p = stationary_covariance(H, S, eta, kind, momentum=beta, convention="proposal")
        g = stationary_covariance(H, S, eta, kind, momentum=beta, convention="sgd")
        np.testing.assert_array_equal(g, stationary_covariance(H, S, eta, kind, momentum=beta))  # the default: SGD's
        np.testing.assert_allclose(g, eta * p, rtol=1e-10, atol=1e-15)
        np.testing.assert_allclose(stationary_covariance(H, eta * S, eta, kind, momentum=beta, convention="proposal"),
                                   g, rtol=1e-10,
                                   atol=1e-15)
    lam = np.array([0.5, 2.0])
    np.testing.assert_allclose(stationary_variance_per_mode(lam, 0.4, 0.3, "map", momentum=0.5, convention="sgd"),
                               0.3 * stationary_variance_per_mode(lam, 0.4, 0.3, "map", momentum=0.5, convention="proposal"),
                               rtol=1e-14)


@pytest.mark.parametrize("bad", ["lma", "SGD", "seed", None, 1, ["sgd"]])
def test_an_unknown_convention_is_refused_naming_the_parameter_and_the_choices(bad):
    q = _quad()
    X = np.zeros((2, 3))
    msg = r"convention must be one of \['sgd', 'proposal'\]"
    calls = [lambda: simulate(q, 0.1, Isotropic(0.1), X, 0.1, 3, convention=bad),
             lambda: noisy_gd(q, 0.1, Isotropic(0.1), X, 3, convention=bad),
             lambda: compare_sde_and_map(q, 0.1, Isotropic(0.1), X, 3, convention=bad),
             lambda: stationary_covariance(np.eye(2), 0.1, 0.5, convention=bad),
             lambda: stationary_variance_per_mode(1.0, 0.1, 0.5, convention=bad)]
    for call in calls:
        with pytest.raises(ValueError, match=msg):
            call()
