"""Tests of eosdyn.analysis: stability & thresholds, fixed points, Lyapunov spectra, bifurcations,
phase portraits, loss spectra, stationary covariances, linear-network stability intervals.

Every numeric result is compared with a closed form or an independent computation (numpy
roots/eigvals, scipy, a plain numpy loop). Reference values of the issue's table are the
named tests ``test_ref_*``.
"""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from numba import njit

from eosdyn.analysis import (BASIN_DIVERGED, basins, bifurcation_diagram, convergence_fraction, detect_period,
                             displacement_field, fixed_points, gd_fixed_points, linear_network_stability,
                             lyapunov_spectrum, lyapunov_spectrum_rule, min_manifold_sharpness, nullclines,
                             orbits, oscillation_spectrum, period_doubling_points, periodic_orbits, stability,
                             stationary_covariance, stationary_variance_per_mode, threshold)
from eosdyn.losses import DeepLinear, LogisticCubic, Quadratic, ScalarNet, from_sympy
from eosdyn.rules import DCAO, GD, EoSAda, HeavyBall, Nesterov

FEIGENBAUM = 4.669201609102990


# ================================================================== stability & threshold
def test_stability_gd_classification_at_the_edge():
    Q = Quadratic(eigs=[4.0, 1.0])
    z = np.zeros(2)
    assert stability(GD(0.49), Q, z).classification == "stable"
    assert stability(GD(0.5), Q, z).classification == "marginal"  # ρ = |1 − 0.5·4| = 1
    r = stability(GD(0.51), Q, z)
    assert r.classification == "unstable"
    np.testing.assert_allclose(r.spectral_radius, abs(1 - 0.51 * 4), rtol=1e-14)
    assert r.fixed_point_residual == 0.0 and r.exact


def test_stability_heavyball_multipliers_are_the_roots_of_the_mode_polynomial():
    lam = np.array([3.0, 0.7])
    Q = Quadratic(eigs=lam)
    eta, beta = 0.3, 0.6
    r = stability(HeavyBall(eta, beta), Q, np.zeros(2))
    expected = np.concatenate([np.roots([1.0, -(1 + beta - eta * l), beta]) for l in lam])
    got = np.sort_complex(r.eigenvalues)
    np.testing.assert_allclose(got, np.sort_complex(expected), atol=1e-12)
    assert r.jacobian.shape == (4, 4)


def test_stability_on_a_manifold_of_minima_reports_neutral_directions():
    S = ScalarNet(2, 1.0)  # minima xy = 1, sharpness x² + y² = 2 at (1, 1)
    r = stability(GD(0.4), S, [1.0, 1.0])
    assert r.classification == "marginal" and r.n_neutral == 1
    np.testing.assert_allclose(r.transverse_radius, abs(1 - 0.4 * 2.0), rtol=1e-12)
    r2 = stability(GD(1.1), S, [1.0, 1.0])
    np.testing.assert_allclose(r2.transverse_radius, abs(1 - 1.1 * 2.0), rtol=1e-12)


def test_stability_bad_input():
    Q = Quadratic(eigs=[1.0, 2.0])
    with pytest.raises(TypeError, match="rule"):
        stability("gd", Q, [0.0, 0.0])
    with pytest.raises(ValueError, match="theta"):
        stability(GD(0.1), Q, [0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="state"):
        stability(HeavyBall(0.1), Q, [0.0, 0.0], state=[0.0])


def test_ref_heavyball_threshold_numeric_equals_analytic():
    Q = Quadratic(H=[[3.0, 1.0], [1.0, 2.0]])
    r = threshold(Q, "heavyball", np.zeros(2), momentum=0.9)
    lam = np.linalg.eigvalsh(Q.H)[-1]
    assert r.analytic == pytest.approx(2 * 1.9 / lam, rel=1e-14)
    assert abs(r.numeric / r.analytic - 1) < 1e-6
    assert r.parameter == "lr"


@pytest.mark.parametrize("family, kwargs, formula", [
    ("gd", {}, lambda lam, a: 2 / lam),
    (HeavyBall, {"momentum": 0.5}, lambda lam, a: 2 * 1.5 / lam),
    ("nesterov", {"momentum": 0.9}, lambda lam, a: 3.8 / (2.8 * lam)),
    ("adam", {"betas": (0.8, 0.99)}, lambda lam, a: 3.6 / (0.2 * a)),
    (EoSAda, {"eps": 0.7}, lambda lam, a: 2 * (1 + 0.7 / lam)),
])
def test_threshold_numeric_matches_closed_form(family, kwargs, formula):
    rng = np.random.default_rng(1)
    A = rng.standard_normal((3, 3))
    H = A @ A.T + 0.1 * np.eye(3)
    center = np.array([0.5, -1.0, 2.0])
    Q = Quadratic(H=H, center=center)
    P = np.array([2.0, 0.5, 1.5])
    pre = {"preconditioner": P} if family == "adam" else {}
    r = threshold(Q, family, center, **pre, **kwargs)
    lam = np.linalg.eigvalsh(H)[-1]
    a = np.linalg.eigvals(np.diag(1 / P) @ H).real.max()  # independent of eosdyn's symmetric form
    assert r.analytic == pytest.approx(formula(lam, a), rel=1e-12)
    assert abs(r.ratio - 1) < 1e-6
    assert r.parameter == ("alpha" if family is EoSAda else "lr")


@given(st.floats(0.1, 10.0), st.floats(0.1, 10.0), st.floats(0.0, 0.95))
def test_threshold_identity_random_spectra(l1, l2, beta):
    Q = Quadratic(eigs=[l1, l2])
    for fam in ("heavyball", "nesterov"):
        r = threshold(Q, fam, np.zeros(2), momentum=beta)
        assert abs(r.ratio - 1) < 1e-6


def test_threshold_dcao_has_no_closed_form_but_is_the_stability_edge():
    Q = Quadratic(eigs=[2.0, 0.5])
    r = threshold(Q, DCAO, np.zeros(2), momentum=0.3, k=2)
    assert r.analytic is None and r.ratio is None
    lo, hi = r.bracket
    assert stability(DCAO(lr=lo, momentum=0.3, k=2), Q, np.zeros(2)).transverse_radius < 1
    assert stability(DCAO(lr=hi * (1 + 1e-6), momentum=0.3, k=2), Q, np.zeros(2)).transverse_radius > 1


def test_threshold_bad_input():
    Q = Quadratic(eigs=[1.0, 2.0])
    with pytest.raises(ValueError, match="critical point"):
        threshold(Q, "gd", [1.0, 0.0])
    with pytest.raises(ValueError, match="minimum"):
        threshold(Quadratic(eigs=[1.0, -1.0]), "gd", [0.0, 0.0])
    with pytest.raises(ValueError, match="ngd"):
        threshold(Q, "ngd", [0.0, 0.0])
    with pytest.raises(ValueError, match="rule_family"):
        threshold(Q, "sgd-with-magic", [0.0, 0.0])
    with pytest.raises(ValueError, match="preconditioner"):
        threshold(Q, "gd", [0.0, 0.0], preconditioner=[1.0, 1.0])
    with pytest.raises(ValueError, match="lr"):
        threshold(Q, "gd", [0.0, 0.0], lr=0.1)
    with pytest.raises(ValueError, match="preconditioner"):
        threshold(Q, "adam", [0.0, 0.0], preconditioner=[1.0, -1.0])


# ============================================================== fixed points and orbits
def test_gd_fixed_points_of_the_cubic_and_their_multipliers():
    eta = 2.3
    r = gd_fixed_points(LogisticCubic(), eta, [[-0.5, 1.5]], n_starts=40, seed=3)
    pts = sorted(float(o.points[0, 0]) for o in r.orbits)
    np.testing.assert_allclose(pts, [0.0, 1.0], atol=1e-14)
    mult = {round(float(o.points[0, 0])): o.multipliers[0].real for o in r.orbits}
    assert mult[0] == pytest.approx(1 - eta, rel=1e-12)  # f''(0) = 1
    assert mult[1] == pytest.approx(1 + eta, rel=1e-12)  # f''(1) = −1
    assert all(o.classification == "unstable" for o in r.orbits)


def test_periodic_orbits_period2_of_the_cubic_is_the_eos_oscillation():
    eta = 2.3
    r = periodic_orbits(LogisticCubic(), eta, [[-0.5, 1.2]], period=2, n_starts=40, seed=0)
    assert len(r.orbits) == 1 and r.n_lower_period > 0  # fixed points were found and dropped
    o = r.orbits[0]
    x = o.points[:, 0]
    g = lambda v: (1 - eta) * v + eta * v * v  # noqa: E731
    np.testing.assert_allclose(g(x), x[::-1], atol=1e-13)
    assert abs(x[0] - x[1]) > 0.1
    np.testing.assert_allclose(o.multipliers[0].real, np.prod(1 - eta + 2 * eta * x), rtol=1e-12)
    assert o.classification == "stable"


def test_fixed_points_generic_henon():
    a, b = 1.4, 0.3

    def F(v):
        return np.array([1 - a * v[0] ** 2 + v[1], b * v[0]])

    def J(v):
        return np.array([[-2 * a * v[0], 1.0], [b, 0.0]])

    r = fixed_points(F, J, [[-2, 2], [-1, 1]], n_starts=30, seed=1)
    xs = np.sort([o.points[0, 0] for o in r.orbits])
    expect = np.sort((-(1 - b) + np.array([-1, 1]) * math.sqrt((1 - b) ** 2 + 4 * a)) / (2 * a))
    np.testing.assert_allclose(xs, expect, atol=1e-12)
    for o in r.orbits:
        np.testing.assert_allclose(np.sort_complex(o.multipliers), np.sort_complex(np.linalg.eigvals(J(o.points[0]))))
        assert o.classification == "unstable"


def test_fixed_points_singular_jacobian_is_reported_not_raised():
    # GD on a degenerate quadratic: DG = −ηH is singular everywhere off the fixed line
    Q = Quadratic(eigs=[1.0, 0.0])
    r = gd_fixed_points(Q, 0.5, [[-1, 1], [-1, 1]], n_starts=10, seed=0)
    assert r.singular and r.n_singular == 10 and r.singular_starts.shape == (10, 2)
    assert r.orbits == []
    # the identity map: every point is fixed but Newton's matrix is zero
    r2 = fixed_points(lambda v: v + 0.0, lambda v: np.eye(1), [[0.5, 1.0]], n_starts=3)
    assert r2.n_converged == 3  # G = 0 at the start: converged before any solve
    r3 = fixed_points(lambda v: v + v ** 3, lambda v: np.diag(1 + 3 * v ** 2), [[0.0, 0.0]], n_starts=2)
    assert r3.n_converged == 2  # x = 0 is a root; nothing to solve
    r4 = fixed_points(lambda v: v + 1.0, lambda v: np.eye(1), [[0.0, 1.0]], n_starts=2)
    assert r4.n_singular == 2 and r4.orbits == []  # no fixed point, DG = 0


def test_fixed_points_bad_input():
    with pytest.raises(ValueError, match="box"):
        fixed_points(lambda v: v, lambda v: np.eye(1), [[1.0, 0.0]])
    with pytest.raises(ValueError, match="period"):
        fixed_points(lambda v: v, lambda v: np.eye(1), [[0.0, 1.0]], period=0)
    with pytest.raises(ValueError, match="box"):
        gd_fixed_points(Quadratic(eigs=[1.0, 2.0]), 0.1, [[0.0, 1.0]])
    with pytest.raises(ValueError, match="jac_fn must return a square"):
        fixed_points(lambda v: v, lambda v: np.ones((1, 2)), [[0.0, 1.0]])
    with pytest.raises(ValueError, match="map_fn"):
        fixed_points(lambda v: np.ones(2), lambda v: np.eye(1), [[0.0, 1.0]])


# ====================================================================== Lyapunov spectra
@njit(cache=True)
def _henon(v):
    out = np.empty(2)
    out[0] = 1.0 - 1.4 * v[0] * v[0] + v[1]
    out[1] = 0.3 * v[0]
    return out


@njit(cache=True)
def _henon_jac(v):
    J = np.empty((2, 2))
    J[0, 0] = -2.8 * v[0]
    J[0, 1] = 1.0
    J[1, 0] = 0.3
    J[1, 1] = 0.0
    return J


def test_ref_henon_exponents_and_their_sum():
    r = lyapunov_spectrum(_henon, _henon_jac, [0.1, 0.1], steps=10**6, transient=1000, record_every=1000)
    assert not r.diverged
    assert abs(r.exponents[0] - 0.4192) < 2e-3
    assert abs(r.exponents[1] + 1.6232) < 2e-3
    assert abs(r.sum - math.log(0.3)) < 1e-8
    assert r.running.shape == (1000, 2)
    np.testing.assert_allclose(r.running[-1, r.order], r.exponents, rtol=1e-12)


def test_lyapunov_python_path_equals_numba_path():
    a = lyapunov_spectrum(_henon, _henon_jac, [0.1, 0.1], steps=2000, transient=10)
    b = lyapunov_spectrum(lambda v: _henon(v), lambda v: _henon_jac(v), [0.1, 0.1], steps=2000, transient=10)
    np.testing.assert_allclose(a.exponents, b.exponents, rtol=1e-10)
    np.testing.assert_allclose(a.running, b.running, rtol=1e-9)


@pytest.mark.parametrize("compiled", [True, False])
def test_ref_diagonal_linear_map_gives_log_multipliers_exactly(compiled):
    m = np.array([0.5, -3.0, 1.7])

    def step(v):
        return m * v

    def jac(v):
        return np.diag(m)

    if compiled:
        step, jac = njit(step), njit(jac)
    r = lyapunov_spectrum(step, jac, [0.3, 0.2, 0.1], steps=1000)
    expect = np.sort(np.log(np.abs(m)))[::-1]
    np.testing.assert_allclose(r.exponents, expect, rtol=0, atol=4 * np.finfo(float).eps)


def test_ref_gd_on_logistic_conjugate_cubic_at_r4_has_exponent_ln2():
    # η = 3 ⇔ r = 4. Start inside the invariant interval [−1/3, 1] (logistic y ∈ (0, 1)).
    r = lyapunov_spectrum_rule(LogisticCubic(), GD(3.0), [0.1234], steps=200_000, transient=100,
                               record_every=1000)
    assert not r.diverged
    assert -1 / 3 - 1e-12 <= r.x_final[0] <= 1.0
    assert abs(r.exponents[0] - math.log(2)) < 2e-3


def test_lyapunov_rule_numba_jacobians_match_rule_jacobian():
    # the numba kernel's closed-form Jacobians against rule.jacobian (Python path via NormalizedGD-free
    # rules is not available for GD/HB/Nesterov, so compare with the generic Python Benettin on rule.map)
    S = ScalarNet(3, 1.5)
    for rule in (GD(0.2), HeavyBall(0.05, 0.7), Nesterov(0.05, 0.7)):
        z0 = rule.pack(np.array([0.9, 1.2, 1.1]), rule.init_state(np.zeros(3)))
        a = lyapunov_spectrum_rule(S, rule, z0[:3], steps=300)
        b = lyapunov_spectrum(lambda z: rule.map(S, z, 10**9), lambda z: rule.jacobian(S, z), z0, steps=300)
        np.testing.assert_allclose(a.running, b.running, rtol=1e-9, atol=1e-12)


def test_lyapunov_bad_input():
    with pytest.raises(ValueError, match="steps"):
        lyapunov_spectrum(_henon, _henon_jac, [0.1, 0.1], steps=0)
    with pytest.raises(ValueError, match="jacobian"):
        lyapunov_spectrum(lambda v: v, lambda v: np.eye(3), [0.1, 0.1], steps=5)
    with pytest.raises(ValueError, match="q0"):
        lyapunov_spectrum(lambda v: v, lambda v: np.eye(2), [0.1, 0.1], steps=5, q0=2 * np.eye(2))
    r = lyapunov_spectrum(lambda v: 10.0 * v ** 3, lambda v: np.diag(30.0 * v ** 2), [2.0], steps=100)
    assert r.diverged and r.diverged_at > 0


# ======================================================================== bifurcations
def test_detect_period():
    assert detect_period(np.ones(10)) == 1
    assert detect_period(np.tile([0.0, 1.0], 8)) == 2
    assert detect_period(np.tile([0.0, 1.0, 2.0, 5.0], 8)) == 4
    assert detect_period(np.tile([0.0, 1.0, 2.0], 8)) == 3
    x = np.random.default_rng(0).random(64)
    assert detect_period(x) == 0
    assert detect_period(np.array([1.0, np.nan, 1.0, 1.0])) == -1
    with pytest.raises(ValueError, match="max_period"):
        detect_period(np.ones(8), max_period=5)


def test_bifurcation_diagram_of_the_cubic_follows_the_logistic_map():
    etas = np.array([1.5, 2.3, 2.5, 2.55, 2.9, 3.2])  # r = 2.5, 3.3, 3.5, 3.55, 3.9, 4.2
    r = bifurcation_diagram(LogisticCubic(), etas, [0.1], transient=20_000, keep=64)
    np.testing.assert_array_equal(r.period, [1, 2, 4, 8, 0, -1])
    assert r.orbit.shape == (6, 64, 1) and r.parameter == "lr"
    # the default start (the local minimiser x* = 0 shifted by 0.1) is the start used here
    r_default = bifurcation_diagram(LogisticCubic(), etas, transient=20_000, keep=64)
    np.testing.assert_array_equal(r_default.orbit, r.orbit)
    np.testing.assert_allclose(r.orbit[0, :, 0], 0.0, atol=1e-12)  # the minimum, stable for η < 2
    lr, val = r.points()
    assert lr.shape == val.shape == (6 * 64,)


def test_bifurcation_diagram_with_momentum_matches_the_threshold():
    Q = Quadratic(eigs=[2.0, 0.5])
    thr = 2 * (1 + 0.5) / 2.0
    r = bifurcation_diagram(Q, [0.8 * thr, 1.2 * thr], [0.3, -0.2], transient=3000, keep=8, rule="heavyball",
                            momentum=0.5)
    np.testing.assert_array_equal(r.period, [1, -1])


def test_ref_period_doublings_of_gd_on_the_cubic_and_feigenbaum_ratio():
    d = period_doubling_points(LogisticCubic(), 1.5, 2.58, [0.1], n_scan=80, transient=100_000, keep=128,
                               max_period=32)
    r = 1 + d.lrs
    np.testing.assert_array_equal(d.from_period[:4], [1, 2, 4, 8])
    assert abs(r[0] - 3.0) < 1e-3
    assert abs(r[1] - (1 + math.sqrt(6))) < 1e-3
    ratios = d.feigenbaum_ratios
    assert ratios.size >= 2
    assert abs(ratios[-1] / FEIGENBAUM - 1) < 0.02


def test_bifurcation_bad_input():
    L = LogisticCubic()
    with pytest.raises(ValueError, match="lrs"):
        bifurcation_diagram(L, [0.5, 0.0], [0.1])
    with pytest.raises(ValueError, match="lrs"):
        bifurcation_diagram(L, [-1.0, 1.0], [0.1])
    with pytest.raises(ValueError, match="lr_lo"):
        period_doubling_points(L, 0.0, 2.0, [0.1])
    with pytest.raises(ValueError, match="lr_lo"):
        period_doubling_points(L, -1.0, 2.0, [0.1])
    with pytest.raises(ValueError, match="lr_hi"):
        period_doubling_points(L, 2.0, 1.0, [0.1])
    with pytest.raises(ValueError, match="keep"):
        bifurcation_diagram(L, [1.0], [0.1], keep=8, max_period=8)


# ======================================================================= phase portraits
def test_displacement_field_and_orbits_are_the_gd_map():
    S = ScalarNet(2, 1.0)
    xs, ys = np.linspace(-1.5, 1.5, 7), np.linspace(-1, 2, 5)
    f = displacement_field(S, 0.1, (xs, ys))
    for i in (0, 3):
        for j in (1, 6):
            g = S.grad([xs[j], ys[i]])
            np.testing.assert_allclose([f.U[i, j], f.V[i, j]], -0.1 * g, rtol=1e-14, atol=1e-15)
    starts = np.array([[0.5, 1.5], [2.0, -0.3]])
    o = orbits(S, 0.1, starts, 20)
    th = starts[1].copy()
    for _ in range(20):
        th = th - 0.1 * S.grad(th)
    np.testing.assert_allclose(o[1, -1], th, rtol=1e-13)
    np.testing.assert_allclose(o[:, 0], starts)


def test_nullclines_of_a_quadratic_are_its_axes():
    Q = Quadratic(H=[[2.0, 0.0], [0.0, 1.0]], center=[0.3, -0.4])
    n = nullclines(Q, 0.1, (np.linspace(-1, 1, 41), np.linspace(-1, 1, 31)))
    assert n.u_zero and n.v_zero
    for seg in n.u_zero:
        np.testing.assert_allclose(seg[:, 0], 0.3, atol=1e-12)
    for seg in n.v_zero:
        np.testing.assert_allclose(seg[:, 1], -0.4, atol=1e-12)


def test_basins_of_a_double_well():
    L = from_sympy("(x**2 - 1)**2/4 + y**2/2", ["x", "y"], min_value=0.0)
    xs, ys = np.linspace(-2, 2, 21), np.linspace(-1, 1, 5)
    lab = basins(L, 0.1, (xs, ys), minima=[[-1.0, 0.0], [1.0, 0.0]], steps=2000)
    X = np.meshgrid(xs, ys)[0]
    assert np.all(lab[X < -1e-9] == 0) and np.all(lab[X > 1e-9] == 1)
    # x = 0 is the stable manifold of the saddle: undecided, not a minimum
    assert np.all(lab[np.abs(X) < 1e-9] == -2)
    lab2 = basins(L, 2.5, (xs, ys), minima=[[-1.0, 0.0], [1.0, 0.0]], steps=200)
    # the y-mode has curvature 1 and multiplier 1 − 2.5 = −1.5: every start off y = 0 diverges
    assert np.all(lab2[ys != 0] == BASIN_DIVERGED)
    with pytest.raises(ValueError, match="2-D"):
        basins(Quadratic(eigs=[1.0]), 0.1, (xs, ys), minima=[[0.0]])
    with pytest.raises(ValueError, match="state"):
        displacement_field(L, HeavyBall(0.1), (xs, ys))


# ========================================================================= loss spectra
def test_oscillation_spectrum_pure_period_two_and_period_eight():
    n = np.arange(256)
    s = oscillation_spectrum(3.0 + 0.5 * (-1.0) ** n)
    assert s.dominant_period == 2 and s.period2_fraction == pytest.approx(1.0, abs=1e-12)
    s8 = oscillation_spectrum(1.0 + np.sin(2 * np.pi * n / 8), detrend="mean")
    assert s8.dominant_period == pytest.approx(8.0)
    assert s8.period2_fraction < 1e-20
    # Parseval: total power = variance of the detrended series
    x = np.random.default_rng(0).standard_normal(200)
    s = oscillation_spectrum(x, detrend="mean")
    assert s.total_power == pytest.approx(np.var(x), rel=1e-12)


def test_oscillation_spectrum_period2_fraction_with_noise_and_trend():
    rng = np.random.default_rng(5)
    n = np.arange(4096)
    amp, sig = 0.3, 0.2
    x = 10.0 - 0.001 * n + amp * (-1.0) ** n + sig * rng.standard_normal(n.size)
    s = oscillation_spectrum(x)
    expect = amp**2 / (amp**2 + sig**2)  # the alternating power over the total fluctuation power
    # white noise puts sig²·(1/N) in the Nyquist bin and spreads the rest: sampling error ~ sqrt(2/N)
    assert abs(s.period2_fraction - expect) < 5 * math.sqrt(2 / n.size)
    assert oscillation_spectrum(x[:-1]).n == 4094  # odd length: the first sample is dropped


def test_oscillation_spectrum_of_gd_at_the_edge_is_period_two():
    L = LogisticCubic()
    traj = orbits(L, 2.3, [[0.1]], 3000)[0, 1000:, 0]
    loss = 0.5 * traj**2 - traj**3 / 3
    s = oscillation_spectrum(loss)
    assert s.dominant_period == 2 and s.period2_fraction > 0.999


def test_oscillation_spectrum_bad_input():
    with pytest.raises(ValueError, match="loss_series"):
        oscillation_spectrum([1.0, 2.0])
    with pytest.raises(ValueError, match="loss_series"):
        oscillation_spectrum([1.0, np.nan, 2.0, 3.0])
    with pytest.raises(ValueError, match="loss_series"):
        oscillation_spectrum([1.0, -2.0, 2.0, 3.0], log=True)
    with pytest.raises(ValueError, match="detrend"):
        oscillation_spectrum([1.0, 2.0, 2.0, 3.0], detrend="quadratic")


# =============================================================== stationary covariance
def test_stationary_covariance_per_mode_closed_forms():
    lam = np.array([0.05, 0.5, 0.95])
    eta, s2 = 2.0, 0.3  # ηλ = 0.1, 1, 1.9
    for kind in ("sde", "map"):
        C = stationary_covariance(np.diag(lam), s2 * np.eye(3), eta, kind=kind)  # both default to "sgd"
        np.testing.assert_allclose(np.diag(C), stationary_variance_per_mode(lam, s2, eta, kind), rtol=1e-12)
        np.testing.assert_allclose(C - np.diag(np.diag(C)), 0, atol=1e-14)
    ratio = np.diag(stationary_covariance(np.diag(lam), s2, eta, "map")) / np.diag(
        stationary_covariance(np.diag(lam), s2, eta, "sde"))
    np.testing.assert_allclose(ratio, 2 / (2 - eta * lam), rtol=1e-12)


def test_stationary_covariance_solves_the_lyapunov_equations():
    rng = np.random.default_rng(2)
    A = rng.standard_normal((3, 3))
    H = A @ A.T + 0.5 * np.eye(3)
    B = rng.standard_normal((3, 3))
    S = B @ B.T
    eta = 1.0 / np.linalg.eigvalsh(H)[-1]
    C = stationary_covariance(H, S, eta, "sde", convention="proposal")
    np.testing.assert_allclose(eta * H @ C + C @ (eta * H), eta * S, atol=1e-12)
    M = np.eye(3) - eta * H
    Cm = stationary_covariance(H, S, eta, "map", convention="proposal")
    np.testing.assert_allclose(M @ Cm @ M.T + eta * S, Cm, atol=1e-12)


def test_stationary_covariance_of_the_map_matches_simulation():
    rng = np.random.default_rng(7)
    H = np.array([[1.2, 0.5], [0.5, 0.9]])
    Sig = np.array([[0.5, 0.1], [0.1, 0.2]])
    eta = 1.9 / np.linalg.eigvalsh(H)[-1]  # top mode at ηλ = 1.9
    C = stationary_covariance(H, Sig, eta, "map", convention="proposal")
    n, steps = 20000, 600
    Lc = np.linalg.cholesky(Sig)
    th = np.zeros((n, 2))
    M = np.eye(2) - eta * H
    for _ in range(steps):
        th = th @ M.T + math.sqrt(eta) * rng.standard_normal((n, 2)) @ Lc.T
    emp = np.cov(th.T)
    se = np.sqrt((C**2 + np.outer(np.diag(C), np.diag(C))) / n)  # Gaussian sampling s.e. of a covariance
    assert np.all(np.abs(emp - C) < 5 * se)


def test_stationary_covariance_of_the_sde_matches_euler_maruyama():
    rng = np.random.default_rng(11)
    lam = np.array([0.5, 1.0])
    eta, s2, h = 1.0, 0.4, 0.01
    C = stationary_covariance(np.diag(lam), s2, eta, "sde")
    n, T = 20000, 8.0
    th = np.zeros((n, 2))
    for _ in range(int(T / h)):
        th = th - h * eta * lam * th + math.sqrt(h * eta * s2) * rng.standard_normal((n, 2))
    emp = th.var(axis=0)
    v = np.diag(C)
    bias = v * (h * eta * lam / 2) / (1 - h * eta * lam / 2)  # EM's stationary variance is s2/(λ(2 − hηλ))
    trans = v * np.exp(-2 * eta * lam * T)                      # not yet relaxed from θ = 0
    se = v * math.sqrt(2 / n)
    assert np.all(np.abs(emp - v) < 5 * se + bias + trans)


def test_stationary_covariance_bad_input():
    with pytest.raises(ValueError, match="H must be a square"):
        stationary_covariance(np.ones((2, 3)), np.eye(2), 0.1)
    with pytest.raises(ValueError, match="H must be symmetric"):
        stationary_covariance([[1.0, 0.2], [0.0, 1.0]], np.eye(2), 0.1)
    with pytest.raises(ValueError, match="noise_cov must be symmetric"):
        stationary_covariance(np.eye(2), [[1.0, 0.2], [0.0, 1.0]], 0.1)
    with pytest.raises(ValueError, match="noise_cov must be positive semi-definite"):
        stationary_covariance(np.eye(2), np.diag([1.0, -1.0]), 0.1)
    with pytest.raises(ValueError, match="noise_cov must have the shape"):
        stationary_covariance(np.eye(2), np.eye(3), 0.1)
    with pytest.raises(ValueError, match="lr"):
        stationary_covariance(np.eye(2), np.eye(2), 0.0)
    with pytest.raises(ValueError, match="stationary"):
        stationary_covariance(np.eye(2), np.eye(2), 2.0, "map")
    with pytest.raises(ValueError, match="positive definite"):
        stationary_covariance(np.diag([1.0, 0.0]), np.eye(2), 0.1, "sde")
    with pytest.raises(ValueError, match="kind"):
        stationary_covariance(np.eye(2), np.eye(2), 0.1, "ito")


# ======================================================== linear-network stability interval
def test_scalar_net_critical_step_size_and_convergence_interval():
    S = ScalarNet(3, 2.0)
    r = linear_network_stability(S, n_starts=2, seed=0)
    assert r.min_sharpness == pytest.approx(3 * 2 ** (4 / 3), rel=1e-9)
    assert r.analytic_min_sharpness == pytest.approx(r.min_sharpness, rel=1e-9)
    assert r.interval == (0.0, r.critical_lr)
    starts = np.random.default_rng(0).uniform(0.5, 2.0, (64, 3))
    c = convergence_fraction(S, r.critical_lr * np.array([0.5, 0.95, 1.02, 1.2]), starts, steps=20000)
    assert c.fraction[0] > 0.9 and c.fraction[1] > 0.5
    np.testing.assert_array_equal(c.fraction[2:], 0.0)


def test_convergence_fraction_agrees_with_eosdyn_ensemble():
    from eosdyn.sim import ensemble

    S = ScalarNet(2, 1.0)  # η* = 2/2 = 1
    starts = np.random.default_rng(2).uniform(0.3, 1.8, (24, 2))
    lrs = np.array([0.6, 0.95, 1.05])
    c = convergence_fraction(S, lrs, starts, steps=3000)
    for lr, frac in zip(lrs, c.fraction):
        res = ensemble(S, GD(float(lr)), starts, 3000, record_every=3000, track_sharpness=False, blowup=1e8)
        final = res.loss[:, -1]
        ok = np.isfinite(final) & (final <= 1e-10)
        assert frac == ok.mean()
    assert c.fraction[0] > 0.5 and c.fraction[-1] == 0.0


def test_deep_linear_bottleneck_min_sharpness_against_a_one_parameter_scan():
    # widths [1]: W1 = a (1×2), w2 = b; the minima are b·a = w*, a curve parametrised by b.
    # On it, ∇²L = JᵀJ/n with J = [b X, X aᵀ] — so min_M λ_max is a 1-D minimisation over b.
    from scipy.optimize import minimize_scalar

    rng = np.random.default_rng(3)
    X = rng.standard_normal((6, 2))
    w_star = np.array([1.5, -0.7])
    D = DeepLinear(X, X @ w_star, [1])
    Sxx = X.T @ X / 6

    def lam_b(b):
        a = w_star / b
        c = b * (Sxx @ a)
        H = np.block([[b * b * Sxx, c[:, None]], [c[None, :], np.array([[a @ Sxx @ a]])]])
        return np.linalg.eigvalsh(H)[-1]

    ref = minimize_scalar(lam_b, bounds=(0.05, 20.0), method="bounded", options={"xatol": 1e-12}).fun
    ms = min_manifold_sharpness(D, n_starts=3, seed=1)
    assert ms.sharpness == pytest.approx(ref, rel=1e-8)
    assert ms.manifold_dim == 1
    assert abs(D.value(ms.theta) - D.min_value) < 1e-12
    # GD converges (to minima no sharper than 2/η) below η* = 2/min sharpness and never above it
    crit = 2 / ms.sharpness
    starts = rng.uniform(0.3, 1.5, (32, 3)) * np.sign(rng.standard_normal((32, 3)))
    c = convergence_fraction(D, crit * np.array([0.5, 0.9, 1.05, 1.3]), starts, steps=4000)
    assert c.fraction[0] > 0.5 and c.fraction[1] > 0
    np.testing.assert_array_equal(c.fraction[2:], 0.0)
    ends = orbits(D, 0.5 * crit, starts, 4000)[:, -1]
    for th in ends:
        if abs(D.value(th) - D.min_value) < 1e-12:
            assert ms.sharpness * (1 - 1e-9) <= D.sharpness(th) <= 2 / (0.5 * crit) * (1 + 1e-6)


@pytest.mark.slow
def test_deep_linear_min_sharpness_is_consistent_and_bounds_gd_limits():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((5, 3))
    Y = X @ rng.standard_normal((3, 2))
    D = DeepLinear(X, Y, [2])
    ms = min_manifold_sharpness(D, n_starts=3, seed=1)
    vals = ms.values[np.isfinite(ms.values)]
    assert vals.size >= 2 and np.ptp(vals) < 1e-7 * ms.sharpness  # every start reaches the same minimum
    assert abs(D.value(ms.theta) - D.min_value) < 1e-12
    assert ms.sharpness <= D.sharpness(D.minimizer()) + 1e-9
    crit = 2 / ms.sharpness
    starts = 0.5 * rng.standard_normal((16, D.dim))
    out = orbits(D, 0.3 * crit, starts, 4000)[:, -1]
    reached = [th for th in out if abs(D.value(th) - D.min_value) < 1e-12]
    assert len(reached) >= 4
    for th in reached:
        assert ms.sharpness * (1 - 1e-9) <= D.sharpness(th) <= 2 / (0.3 * crit) * (1 + 1e-6)
    c = convergence_fraction(D, [1.05 * crit, 1.3 * crit], starts, steps=4000)
    np.testing.assert_array_equal(c.fraction, 0.0)


def test_linear_network_bad_input():
    with pytest.raises(ValueError, match="min_value"):
        convergence_fraction(LogisticCubic(), [0.1], [[0.1]])
    with pytest.raises(ValueError, match="lrs"):
        convergence_fraction(ScalarNet(2, 1.0), [0.0], [[1.0, 1.0]])
    with pytest.raises(ValueError, match="theta0s"):
        min_manifold_sharpness(ScalarNet(2, 1.0), theta0s=[[1.0, 1.0, 1.0]])
