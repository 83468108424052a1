"""The SDE engine: convergence orders, stationary covariances, noisy GD, sdeint, reproducibility.

Conventions checked here (see eosdyn/sde/simulate.py): time t is counted in GD
steps, dθ = −η∇L dt + c·B dW, and the noisy GD map θ ← θ − η∇L + c·Bξ is its
Euler–Maruyama scheme with dt = 1. The tests in this file that write √η out by hand pass
``convention="proposal"`` (c = √η, the form the engine had before the keyword); the
default ``"sgd"`` (c = η) is tested in tests/test_sde_conventions.py.

Sampling errors: every Monte Carlo comparison uses independent trajectories at one
time and the standard error computed from the samples themselves (for a covariance
entry S_ab, SE = std((x_a − x̄_a)(x_b − x̄_b))/√n, valid for any distribution with
finite fourth moments); tolerances are z·SE with the z stated in each test. The seeds
are fixed, so the tests are deterministic.
"""
import fractions
import itertools
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numba import njit
from scipy.linalg import solve_continuous_lyapunov, solve_discrete_lyapunov

from eosdyn._rng import normals
from eosdyn.losses import Quadratic
from eosdyn.losses.base import Loss
from eosdyn.sde import (
    CallableNoise,
    ConstantCovariance,
    ConstantMatrix,
    HessianAligned,
    Isotropic,
    LeastSquares,
    MinibatchNoise,
    SDEResult,
    coarsen_increments,
    compare_sde_and_map,
    increments,
    integrate,
    noisy_gd,
    simulate,
)
from eosdyn.sim.results import EnsembleResult, Trajectory


# ----------------------------------------------------------------------------- helpers
def _slope(hs, errs):
    return float(np.polyfit(np.log(hs), np.log(errs), 1)[0])


def _slope_se(hs, errs, ses):
    """Standard error of the OLS slope of log err on log h, from the per-level relative SEs."""
    x = np.log(hs)
    w = (x - x.mean()) / np.sum((x - x.mean()) ** 2)
    return float(np.sqrt(np.sum(w ** 2 * (np.asarray(ses) / np.asarray(errs)) ** 2)))


def _fine_path(M, kmax, T, seed):
    """Fine (ΔW, ΔZ) for M paths on 2^kmax steps, from eosdyn's own streams (version-stable)."""
    Nf = 2 ** kmax
    hf = T / Nf
    xi = normals(seed, 0, (2, Nf, M))
    return hf, np.sqrt(hf) * xi[0], 0.5 * hf ** 1.5 * (xi[0] + xi[1] / np.sqrt(3.0))


def _strong_errors(f, G, x0, exact_T, method, dWf, dZf, hf, T, kmin=3, kmax=10, **kw):
    """Mean |y_N − X(T)| over paths at h = 2^-kmin … 2^-kmax on one Brownian path per sample."""
    hs, errs = [], []
    for k in range(kmin, kmax + 1):
        N = 2 ** k
        dW, dZ = coarsen_increments(dWf, dWf.shape[0] // N, hf, dZf)
        y = integrate(f, G, x0, np.linspace(0.0, T, N + 1), method=method, dW=dW,
                      dZ=dZ if method == "srk15" else None, **kw)
        hs.append(T / N)
        errs.append(np.mean(np.abs(y[-1] - exact_T)))
    return np.array(hs), np.array(errs)


def _cov_and_se(X):
    """Sample covariance of the rows of X and the standard error of each entry."""
    Xc = X - X.mean(axis=0)
    n = X.shape[0]
    prod = Xc[:, :, None] * Xc[:, None, :]
    return prod.sum(axis=0) / (n - 1), prod.std(axis=0) / np.sqrt(n)


# ------------------------------------------------------------------- strong/weak orders
MU, SIG, T_GBM = 1.5, 1.0, 1.0


@pytest.fixture(scope="module")
def gbm_path():
    M = 2000
    hf, dWf, dZf = _fine_path(M, 10, T_GBM, seed=20240)
    x0 = np.ones(M)
    exact = x0 * np.exp((MU - 0.5 * SIG ** 2) * T_GBM + SIG * dWf.sum(axis=0))
    return hf, dWf, dZf, x0, exact


@pytest.mark.parametrize("method, order", [("euler", 0.5), ("milstein", 1.0), ("srk15", 1.5)])
def test_strong_order_gbm(gbm_path, method, order):
    """dX = μX dt + σX dW, X(T) = X0 exp((μ − σ²/2)T + σW_T); 2000 paths as one diagonal system."""
    hf, dWf, dZf, x0, exact = gbm_path
    hs, errs = _strong_errors(lambda y, t: MU * y, lambda y, t: SIG * y, x0, exact, method,
                              dWf, dZf, hf, T_GBM)
    assert abs(_slope(hs, errs) - order) < 0.1


@pytest.mark.parametrize("method, order", [("milstein", 1.0), ("srk15", 1.5)])
def test_strong_order_nonlinear_drift_and_diffusion(method, order):
    """dX = −a² sin X cos³X dt + a cos²X dW, X(t) = arctan(aW + tan X0) (Kloeden–Platen §4.4).

    The fitted srk15 slope here is ≈ 1.44: the coarse levels are pre-asymptotic (local slopes
    rise to ≈ 1.5 for h ≤ 2^-7); Kloeden–Platen's own explicit order-1.5 scheme gives ≈ 1.41
    on the same paths."""
    a, M, T = 0.8, 2000, 1.0
    hf, dWf, dZf = _fine_path(M, 10, T, seed=7)
    x0 = np.full(M, -0.5)
    exact = np.arctan(a * dWf.sum(axis=0) + np.tan(x0))
    hs, errs = _strong_errors(lambda y, t: -a * a * np.sin(y) * np.cos(y) ** 3,
                              lambda y, t: a * np.cos(y) ** 2, x0, exact, method, dWf, dZf, hf, T)
    assert abs(_slope(hs, errs) - order) < 0.1


def test_strong_order_sra1_additive_nonlinear_drift():
    """Additive noise, coupled nonlinear drift f(y) = Ay + cos(2y): SRA1 against its own run on a
    2^-13 grid of the same Brownian path (reference error ≈ 2^-4.5 of the finest level's)."""
    A = 0.3 * np.array([[-1.0, 2.0], [-0.5, -1.5]])
    b = np.array([2.0, 2.0])
    M, T = 250, 1.0
    hf, dWf, dZf = _fine_path(2 * M, 13, T, seed=11)          # column 2p + c: path p, coordinate c
    x0 = np.tile([1.0, -0.5], M)
    f = lambda y, t: (y.reshape(M, 2) @ A.T).reshape(-1) + np.cos(2.0 * y)
    Gv = np.tile(b, M)
    G = lambda y, t: Gv
    ref = integrate(f, G, x0, np.linspace(0.0, T, dWf.shape[0] + 1), method="srk15", dW=dWf, dZ=dZf,
                    noise_type="additive")[-1]
    hs, errs = _strong_errors(f, G, x0, ref, "srk15", dWf, dZf, hf, T, noise_type="additive")
    assert abs(_slope(hs, errs) - 1.5) < 0.1


def test_sra1_linear_additive_against_exact_solution():
    """2-D OU dX = AX dt + B dW, non-normal A; X(T) from the variation-of-constants formula on a
    2^-12 grid: ∫ e^{A(T−s)}B dW ≈ Σ e^{A(T−tᵢ)}[BΔWᵢ − AB(hΔWᵢ − ΔZᵢ)] (quadrature error ~1e-8).
    For linear drift the order-2 terms of the Itô–Taylor expansion are captured too (observed
    slope ≈ 2.0), so the check is slope ≥ 1.4 and a small absolute error."""
    from scipy.linalg import expm
    A = np.array([[-1.0, 2.0], [-0.5, -1.5]])
    b = np.array([0.8, 0.5])
    M, T, kref = 500, 1.0, 12
    hf, dWf, dZf = _fine_path(2 * M, kref, T, seed=11)
    x0 = np.tile([1.0, -0.5], M)
    Nf = dWf.shape[0]
    Wr = dWf.reshape(Nf, M, 2) * b
    Zr = dZf.reshape(Nf, M, 2) * b
    inc = Wr - (hf * Wr - Zr) @ A.T                           # BΔW − AB(hΔW − ΔZ), per step
    X = np.tile(expm(A * T) @ np.array([1.0, -0.5]), (M, 1))
    E = expm(A * hf)
    acc = np.zeros((M, 2))
    for i in range(Nf):                                       # Horner: acc ← e^{Ah}(acc + incᵢ)
        acc = (acc + inc[i]) @ E.T
    exact = (X + acc).reshape(-1)
    f = lambda y, t: (y.reshape(M, 2) @ A.T).reshape(-1)
    Gv = np.tile(b, M)
    hs, errs = _strong_errors(f, lambda y, t: Gv, x0, exact, "srk15", dWf, dZf, hf, T,
                              noise_type="additive")
    assert _slope(hs, errs) > 1.4
    assert errs[-1] < 1e-5


def test_weak_order_euler_gbm_mean():
    """EM weak order 1 on E[X_T] = X0 e^{μT}: E[X_N] − E[X_T] = E[X_N − X_T(W)] estimated with
    common random numbers (4 × 10000 paths); the slope's own SE is required to be < 0.05."""
    T, chunks, M = 1.0, 4, 10000
    rng = np.random.default_rng(3)
    hs, errs, ses = [], [], []
    for k in range(3, 11):
        N = 2 ** k
        h = T / N
        diffs = []
        for _ in range(chunks):
            dW = np.sqrt(h) * rng.standard_normal((N, M))
            y = integrate(lambda y, t: MU * y, lambda y, t: SIG * y, np.ones(M),
                          np.linspace(0.0, T, N + 1), dW=dW)
            diffs.append(y[-1] - np.exp((MU - 0.5 * SIG ** 2) * T + SIG * dW.sum(axis=0)))
        diff = np.concatenate(diffs)
        hs.append(h)
        errs.append(abs(diff.mean()))
        ses.append(diff.std() / np.sqrt(diff.size))
    assert _slope_se(hs, errs, ses) < 0.05
    assert abs(_slope(hs, errs) - 1.0) < 0.1


@pytest.mark.slow
def test_strong_order_scalar_noise_multidim():
    """d = 2, m = 1: dX = AX dt + σX dW with X(T) = exp((A − σ²/2)T) e^{σW_T} X0 (σI commutes)."""
    from scipy.linalg import expm
    A = np.array([[-0.5, 1.0], [-1.0, -0.3]])
    sig, T, M = 0.7, 1.0, 200
    hf, dWf, dZf = _fine_path(M, 10, T, seed=5)
    x0 = np.array([1.0, 0.5])
    P = expm((A - 0.5 * sig ** 2 * np.eye(2)) * T) @ x0
    for method, order in [("milstein", 1.0), ("srk15", 1.5)]:
        errs = np.zeros(8)
        for p in range(M):
            ex = P * np.exp(sig * dWf[:, p].sum())
            hs, e = _strong_errors(lambda y, t: A @ y, lambda y, t: sig * y[:, None], x0, ex, method,
                                   dWf[:, p:p + 1], dZf[:, p:p + 1], hf, T)
            errs += e / M
        assert abs(_slope(hs, errs) - order) < 0.1


def test_coarsened_increments_have_the_exact_joint_law():
    """(ΔW, ΔZ) summed over k fine steps: Var ΔW = H, Var ΔZ = H³/3, Cov = H²/2 (H = k h), exactly.

    coarsen_increments is linear in the fine normals; feeding it unit vectors (one per
    column) gives the coefficient matrix L, and the covariance is L Lᵀ."""
    k, h = 8, 0.01
    H = k * h
    eye = np.eye(2 * k)
    xi1, xi2 = eye[:k], eye[k:]
    dW = np.sqrt(h) * xi1
    dZ = 0.5 * h ** 1.5 * (xi1 + xi2 / np.sqrt(3.0))
    Wc, Zc = coarsen_increments(dW, k, h, dZ)
    assert np.sum(Wc ** 2) == pytest.approx(H, rel=1e-12)
    assert np.sum(Zc ** 2) == pytest.approx(H ** 3 / 3, rel=1e-12)
    assert np.sum(Wc * Zc) == pytest.approx(H ** 2 / 2, rel=1e-12)


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 4), st.integers(1, 4), st.integers(1, 3), st.integers(0, 2 ** 31))
def test_coarsening_composes(a, b, m, seed):
    """Coarsening by a then by b equals coarsening by a·b (for ΔW and ΔZ)."""
    rng = np.random.default_rng(seed)
    h = 0.01
    N = a * b * 3
    dW = np.sqrt(h) * rng.standard_normal((N, m))
    dZ = 0.5 * h ** 1.5 * (dW / np.sqrt(h) + rng.standard_normal((N, m)) / np.sqrt(3))
    Wa, Za = coarsen_increments(dW, a, h, dZ)
    W1, Z1 = coarsen_increments(Wa, b, a * h, Za)
    W2, Z2 = coarsen_increments(dW, a * b, h, dZ)
    np.testing.assert_allclose(W1, W2, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(Z1, Z2, rtol=1e-10, atol=1e-14)


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 6), st.integers(0, 2 ** 31), st.floats(0.0, 3.0))
def test_sqrt_psd_reconstructs_psd_matrices(d, seed, scale):
    """B = V diag(√(c·w₊)) satisfies B Bᵀ = c·S for PSD S (rank-deficient ones included)."""
    from eosdyn.sde.noise import sqrt_psd
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((d, max(1, d - 1)))
    S = A @ A.T
    B, lam, bad = sqrt_psd(S, scale)
    assert not bad
    np.testing.assert_allclose(B @ B.T, scale * S, atol=1e-10 * max(1.0, scale * np.abs(S).max()))


# ------------------------------------------------------------------------------ sdeint
def _nl_system():
    A = np.array([[-1.0, 0.3, 0.0], [0.2, -0.5, 0.1], [0.0, -0.4, -0.8]])

    def f(y, t):
        return A @ y + np.sin(y) * np.cos(t)

    def G(y, t):
        return np.array([[0.3 * y[0], 0.1], [0.2, 0.1 * np.cos(y[1])], [0.05 * y[2], 0.4]])

    return f, G


def test_euler_equals_sdeint_itoEuler_on_identical_dW():
    sdeint = pytest.importorskip("sdeint")
    f, G = _nl_system()
    tspan = np.linspace(0.0, 2.0, 401)
    dW = increments(4, 0, 400, 2, tspan[1] - tspan[0])
    y0 = np.array([1.0, -0.5, 0.3])
    ours = integrate(f, G, y0, tspan, method="itoEuler", dW=dW)
    ref = sdeint.itoEuler(f, G, y0, tspan, dW=dW)
    assert ours.shape == ref.shape == (401, 3)
    assert np.max(np.abs(ours - ref)) <= 1e-12


def test_scalar_sdeint_style_call():
    sdeint = pytest.importorskip("sdeint")
    f = lambda x, t: -0.5 * x
    G = lambda x, t: 0.3
    tspan = np.linspace(0.0, 1.0, 51)
    dW = increments(1, 0, 50, 1, 0.02)
    ours = integrate(f, G, 1.0, tspan, dW=dW)
    ref = sdeint.itoEuler(f, G, 1.0, tspan, dW=dW)
    assert np.max(np.abs(ours - ref)) <= 1e-12


def test_integrate_generates_documented_increments():
    """Without dW, integrate draws the stream (seed, index) of eosdyn.sde.increments."""
    f, G = _nl_system()
    tspan = np.linspace(0.0, 1.0, 101)
    y0 = np.array([1.0, 0.0, -1.0])
    a = integrate(f, G, y0, tspan, seed=9, index=3)
    b = integrate(f, G, y0, tspan, dW=increments(9, 3, 100, 2, 0.01))
    np.testing.assert_array_equal(a, b)
    dW, dZ = increments(9, 3, 100, 2, 0.01, dZ=True)
    G2 = lambda y, t: np.array([[0.1, 0.2], [0.0, 0.3], [0.2, 0.0]])
    c = integrate(f, G2, y0, tspan, method="srk15", seed=9, index=3, noise_type="additive")
    d = integrate(f, G2, y0, tspan, method="srk15", dW=dW, dZ=dZ, noise_type="additive")
    np.testing.assert_array_equal(c, d)


def test_increments_draw_order():
    """m even: the per-step fills are consecutive pairs of the stream, so the increments are
    √dt times the first steps·m normals of eosdyn._rng.normals(seed, index)."""
    dW = increments(5, 7, 50, 4, 0.25)
    np.testing.assert_array_equal(dW, 0.5 * normals(5, 7, (50, 4)))
    dW2, dZ = increments(5, 7, 50, 4, 0.25, dZ=True)
    xi = normals(5, 7, (50, 8))
    np.testing.assert_array_equal(dW2, 0.5 * xi[:, :4])
    np.testing.assert_allclose(dZ, 0.5 * 0.125 * (xi[:, :4] + xi[:, 4:] / np.sqrt(3)), rtol=1e-14)


def test_matrix_and_vector_diagonal_forms_agree():
    f = lambda y, t: -y + 0.1 * np.sin(t)
    tspan = np.linspace(0.0, 1.0, 65)
    y0 = np.array([0.5, -1.0, 2.0])
    for method in ["euler", "milstein", "srk15"]:
        v = integrate(f, lambda y, t: 0.3 * np.cos(y), y0, tspan, method=method, seed=2)
        M = integrate(f, lambda y, t: np.diag(0.3 * np.cos(y)), y0, tspan, method=method, seed=2)
        np.testing.assert_allclose(v, M, rtol=1e-12, atol=1e-14)
    b = np.array([0.2, 0.5, 0.1])
    v = integrate(f, lambda y, t: b * (1 + t), y0, tspan, method="srk15", seed=2, noise_type="additive")
    M = integrate(f, lambda y, t: np.diag(b * (1 + t)), y0, tspan, method="srk15", seed=2,
                  noise_type="additive")
    np.testing.assert_allclose(v, M, rtol=1e-12, atol=1e-14)


# ------------------------------------------------------------------------ bad input
def test_integrate_bad_input():
    f, G = _nl_system()
    y0 = np.zeros(3)
    t = np.linspace(0, 1, 11)
    with pytest.raises(ValueError, match="dt"):
        integrate(f, G, y0, t[::-1])
    with pytest.raises(ValueError, match="dt"):
        integrate(f, G, y0, np.zeros(5))
    with pytest.raises(ValueError, match="equally spaced"):
        integrate(f, G, y0, np.array([0.0, 0.1, 0.3, 0.4]))
    with pytest.raises(ValueError, match="diffusion"):
        integrate(f, lambda y, t: np.ones((2, 2)), y0, t)
    with pytest.raises(ValueError, match="drift"):
        integrate(lambda y, t: np.ones(2), G, y0, t)
    with pytest.raises(ValueError, match="dW"):
        integrate(f, G, y0, t, dW=np.zeros((10, 3)))
    with pytest.raises(ValueError, match="dW"):
        integrate(f, G, y0, t, dW=np.zeros((11, 2)))
    with pytest.raises(ValueError, match="dZ"):
        integrate(f, G, y0, t, method="srk15", dW=np.zeros((10, 2)), noise_type="additive")
    with pytest.raises(ValueError, match="dZ"):
        integrate(f, G, y0, t, method="srk15", dW=np.zeros((10, 2)), dZ=np.zeros((10, 1)),
                  noise_type="additive")
    with pytest.raises(ValueError, match="method"):
        integrate(f, G, y0, t, method="heun")
    with pytest.raises(ValueError, match="milstein"):
        integrate(f, G, y0, t, method="milstein")                # general 3x2 noise
    with pytest.raises(ValueError, match="noise_type"):
        integrate(f, G, y0, t, noise_type="scalar", method="milstein")
    with pytest.raises(ValueError, match="noise_type"):
        integrate(f, G, y0, t, noise_type="bogus")
    with pytest.raises(ValueError, match="noise_type='diagonal'"):
        integrate(f, lambda y, t: np.ones((3, 3)), y0, t, noise_type="diagonal")
    with pytest.raises(TypeError, match="drift"):
        integrate(3.0, G, y0, t)


# ----------------------------------------------------------- ensembles: OU covariances
def _ou_problem():
    rng = np.random.default_rng(0)
    Q, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    H = Q @ np.diag([2.0, 1.0, 0.5]) @ Q.T
    Bn = np.array([[0.6, 0.0], [0.3, 0.4], [-0.2, 0.5]])
    return Quadratic(H=H, center=[0.3, -0.2, 0.1]), ConstantMatrix(Bn), Bn


def test_ou_stationary_covariance_matches_continuous_lyapunov():
    """srk15 (SRA1), η = 1, dt = 0.025 (ηλ_max·dt = 0.05, discretisation bias < 0.1 %), t = 25:
    Cov(θ) vs solve_continuous_lyapunov(−ηH, −ηBBᵀ) within 4.5 SE per entry (20000 paths)."""
    loss, noise, Bn = _ou_problem()
    lr, n = 1.0, 20000
    r = simulate(loss, lr, noise, np.tile(loss.center, (n, 1)), 0.025, 1000, method="srk15",
                 record_every=1000, seed=1)
    C = solve_continuous_lyapunov(-lr * loss.H, -lr * Bn @ Bn.T)
    S, se = _cov_and_se(r.final_theta)
    assert np.all(np.abs(S - C) < 4.5 * se)
    np.testing.assert_allclose(r.theta_cov[-1], S, rtol=1e-9, atol=1e-12)   # in-kernel moments
    np.testing.assert_allclose(r.theta_mean[-1], r.final_theta.mean(axis=0), rtol=1e-9, atol=1e-12)


def test_ou_euler_stationary_covariance_matches_discrete_lyapunov():
    """EM with h = 0.5 (hηλ_max = 1): Cov = solve_discrete_lyapunov(I − hηH, h·ηBBᵀ), and the
    continuous covariance is rejected (the test can tell them apart)."""
    loss, noise, Bn = _ou_problem()
    lr, h, n = 1.0, 0.5, 20000
    r = simulate(loss, lr, noise, np.tile(loss.center, (n, 1)), h, 60, method="euler",
                 record_every=60, seed=2)
    Cd = solve_discrete_lyapunov(np.eye(3) - h * lr * loss.H, h * lr * Bn @ Bn.T)
    Cc = solve_continuous_lyapunov(-lr * loss.H, -lr * Bn @ Bn.T)
    S, se = _cov_and_se(r.final_theta)
    assert np.all(np.abs(S - Cd) < 4.5 * se)
    assert np.any(np.abs(S - Cc) > 10 * se)


@pytest.fixture(scope="module")
def mode_problem():
    lr, sigma = 0.1, 0.5
    etalam = np.array([0.1, 1.0, 1.9])
    return Quadratic(eigs=etalam / lr), lr, sigma, etalam


def test_noisy_gd_mode_variance(mode_problem):
    """Map θ ← θ − ηλθ + √η σ ξ: v = ησ²/(1 − (1 − ηλ)²) = σ²/(λ(2 − ηλ)), at ηλ = 0.1, 1, 1.9.
    Variance of 20000 independent trajectories at k = 400 (transient ≤ 0.9^800), z = 4.5."""
    loss, lr, sigma, etalam = mode_problem
    lam = etalam / lr
    n = 20000
    r = noisy_gd(loss, lr, Isotropic(sigma), np.zeros((n, 3)), 400, record_every=400, seed=3, convention="proposal")
    x = r.final_theta
    v = x.var(axis=0, ddof=1)
    se = ((x - x.mean(axis=0)) ** 2).std(axis=0) / np.sqrt(n)
    expect = sigma ** 2 / (lam * (2 - etalam))
    assert np.all(np.abs(v - expect) < 4.5 * se)
    # the ratio to the SDE's σ²/(2λ) is 2/(2 − ηλ): ~20 at ηλ = 1.9
    assert v[2] / (sigma ** 2 / (2 * lam[2])) > 15


def test_sde_mode_variance_and_side_by_side(mode_problem):
    """SDE per-mode variance σ²/(2λ) (srk15, dt = 0.05; SRA1's stationary bias at hηλ = 0.095
    is 0.2 %) at matched time t = k = 100 (τ = kη = 10), against the map's σ²/(λ(2 − ηλ))."""
    loss, lr, sigma, etalam = mode_problem
    lam = etalam / lr
    n = 10000
    cmp = compare_sde_and_map(loss, lr, Isotropic(sigma), np.zeros((n, 3)), 100, dt=0.05,
                              record_every=50, seed=4, convention="proposal")
    np.testing.assert_array_equal(cmp.k, [0, 50, 100])
    np.testing.assert_allclose(cmp.tau, [0.0, 5.0, 10.0])
    np.testing.assert_array_equal(cmp.sde.time, [0.0, 50.0, 100.0])
    for res, expect in [(cmp.sde, sigma ** 2 / (2 * lam)), (cmp.map, sigma ** 2 / (lam * (2 - etalam)))]:
        x = res.final_theta
        se = ((x - x.mean(axis=0)) ** 2).std(axis=0) / np.sqrt(n)
        assert np.all(np.abs(x.var(axis=0, ddof=1) - expect) < 4.5 * se)
    ratio = cmp.variance_ratio()[-1]
    assert ratio[2] > 10 and abs(ratio[0] - 2 / 1.9) < 0.1


# --------------------------------------------------- reproducibility and regeneration
def test_kernel_path_regenerates_with_integrate():
    """Trajectory i of simulate(...) equals integrate(f, G, ...) on increments(seed, i, ...)."""
    loss, noise, Bn = _ou_problem()
    lr, dt, steps, seed = 0.7, 0.05, 200, 12
    th0 = np.array([[1.0, 0.0, -1.0], [0.5, 0.5, 0.5], [-1.0, 2.0, 0.0]])
    f = lambda y, t: -lr * loss.grad(y)
    G = lambda y, t: np.sqrt(lr) * Bn
    for method in ["euler", "srk15"]:
        r = simulate(loss, lr, noise, th0, dt, steps, method=method, record_every=1, seed=seed,
                     record_theta=True, convention="proposal")
        for i in range(3):
            inc = increments(seed, i, steps, 2, dt, dZ=method == "srk15")
            dW, dZ = inc if method == "srk15" else (inc, None)
            y = integrate(f, G, th0[i], np.arange(steps + 1) * dt, method=method, dW=dW, dZ=dZ,
                          noise_type="additive")
            assert np.max(np.abs(r.theta[i] - y)) < 1e-12
    # isotropic noise uses m = d normals per step
    r = simulate(loss, lr, Isotropic(0.3), th0, dt, steps, record_every=1, seed=seed, record_theta=True,
                 convention="proposal")
    dW = increments(seed, 1, steps, 3, dt)
    y = integrate(f, lambda y, t: np.sqrt(lr) * 0.3 * np.eye(3), th0[1], np.arange(steps + 1) * dt, dW=dW)
    assert np.max(np.abs(r.theta[1] - y)) < 1e-12


def test_noisy_gd_is_euler_with_unit_step():
    loss, noise, _ = _ou_problem()
    th0 = np.ones((5, 3))
    a = noisy_gd(loss, 0.3, noise, th0, 50, record_every=10, seed=8, convention="proposal")
    b = simulate(loss, 0.3, noise, th0, 1.0, 50, method="euler", record_every=10, seed=8, convention="proposal")
    np.testing.assert_array_equal(a.final_theta, b.final_theta)
    np.testing.assert_array_equal(a.loss, b.loss)
    # and by hand: θ ← θ − η∇L + √η B ξ on the regenerated normals
    th = th0[2].copy()
    dW = increments(8, 2, 50, 2, 1.0)
    for k in range(50):
        th = th - 0.3 * loss.grad(th) + np.sqrt(0.3) * noise.B @ dW[k]
    np.testing.assert_allclose(a.final_theta[2], th, rtol=1e-12, atol=1e-13)


def test_seed_and_index_determine_a_trajectory():
    """Trajectory i of an ensemble depends on (seed, i) only, not on the other members."""
    loss, noise, _ = _ou_problem()
    th0 = np.random.default_rng(2).standard_normal((40, 3))
    a = simulate(loss, 0.5, noise, th0, 0.1, 100, seed=6)
    b = simulate(loss, 0.5, noise, th0[:7], 0.1, 100, seed=6)
    np.testing.assert_array_equal(a.final_theta[:7], b.final_theta)
    c = simulate(loss, 0.5, noise, th0, 0.1, 100, seed=7)
    assert not np.array_equal(a.final_theta, c.final_theta)


# ----------------------------------------------------------------- divergence, results
def test_divergence_is_flagged_and_kept_out_of_statistics():
    """ηλ = 2.5 on coordinate 0 (noise only on coordinate 1): trajectories started with θ₀ = 1
    grow as 1.5^k and cross blowup = 1e8 at k = 46; those started at 0 stay finite."""
    loss = Quadratic(eigs=[2.5, 0.5])
    th0 = np.zeros((20, 2))
    th0[:5, 0] = 1.0
    r = noisy_gd(loss, 1.0, ConstantMatrix([[0.0], [0.1]]), th0, 100, record_every=1, blowup=1e8, seed=0)
    np.testing.assert_array_equal(r.diverged, np.arange(20) < 5)
    np.testing.assert_array_equal(r.diverged_at, np.where(np.arange(20) < 5, 46, -1))
    np.testing.assert_allclose(r.final_theta[:5, 0], (-1.5) ** 45, rtol=1e-12)   # last good state
    assert np.all(np.isnan(r.loss[:5, 46:])) and np.all(np.isfinite(r.loss[:5, :46]))
    assert np.all(np.isfinite(r.loss[5:]))
    assert np.all(np.isfinite(r.mean("loss")))
    assert np.all(np.isfinite(r.theta_mean)) and np.all(np.isfinite(r.theta_cov))
    np.testing.assert_array_equal(r.n_alive, np.where(np.arange(101) < 46, 20, 15))
    np.testing.assert_allclose(r.theta_mean[-1], r.final_theta[5:].mean(axis=0), rtol=1e-12, atol=1e-15)


def test_result_forms(tmp_path):
    loss, noise, _ = _ou_problem()
    r = simulate(loss, 0.5, noise, np.ones((6, 3)), 0.1, 50, record_every=10, seed=1, record_theta=True)
    assert isinstance(r, EnsembleResult) and isinstance(r, SDEResult)
    assert r.loss.shape == (6, 6) and r.theta.shape == (6, 6, 3) and r.theta_cov.shape == (6, 3, 3)
    np.testing.assert_allclose(r.sharpness, loss.lambda_max)
    np.testing.assert_allclose(r.loss[:, -1], [loss.value(t) for t in r.final_theta], rtol=1e-12)
    np.testing.assert_allclose(r.extra["grad_norm"][:, -1],
                               [np.linalg.norm(loss.grad(t)) for t in r.final_theta], rtol=1e-12)
    ds = r.to_xarray()
    assert "theta_cov" in ds and "time" in ds.coords and ds["loss"].shape == (6, 6)
    r.save(tmp_path / "r.nc")
    import xarray as xr
    with xr.open_dataset(tmp_path / "r.nc") as back:
        np.testing.assert_allclose(back["theta_cov"].values, r.theta_cov)
        assert back.attrs["method"] == "euler" and back.attrs["noise_dim"] == 2
    tr = r.trajectory(2)
    assert isinstance(tr, Trajectory) and tr.theta.shape == (6, 3)
    # memory: without paths nothing grows with steps beyond the records
    q = simulate(loss, 0.5, noise, np.ones((6, 3)), 0.1, 5000, seed=1)
    assert q.theta is None and q.loss.shape == (6, 101)


# -------------------------------------------------------------------- minibatch noise
def _ls_data(n=6, d=2, seed=0):
    rng = np.random.default_rng(seed)
    return LeastSquares(rng.standard_normal((n, d)), rng.standard_normal(n))


def test_least_squares_loss():
    ls = _ls_data(8, 3, 1)
    th = np.array([0.3, -0.2, 0.5])
    X, y = ls.X, ls.y
    assert ls.value(th) == pytest.approx(0.5 * np.mean((X @ th - y) ** 2), rel=1e-13)
    np.testing.assert_allclose(ls.grad(th), X.T @ (X @ th - y) / 8, rtol=1e-12)
    np.testing.assert_allclose(ls.hess(th), X.T @ X / 8, rtol=1e-12)
    G = ls.per_example_grads(th)
    np.testing.assert_allclose(G.mean(axis=0), ls.grad(th), rtol=1e-12)
    eps = 1e-6
    for i in range(8):
        li = lambda t, i=i: 0.5 * (X[i] @ t - y[i]) ** 2
        fd = [(li(th + eps * e) - li(th - eps * e)) / (2 * eps) for e in np.eye(3)]
        np.testing.assert_allclose(G[i], fd, rtol=1e-6, atol=1e-9)
    assert ls.min_value == pytest.approx(ls.value(ls.minimizer), rel=1e-12)


@pytest.mark.parametrize("replace", [False, True])
def test_minibatch_covariance_by_enumeration(replace):
    """Cov of the minibatch mean over all batches (subsets, or ordered tuples with replacement)."""
    ls = _ls_data(6, 2, 0)
    th = np.array([0.4, -1.0])
    G = ls.per_example_grads(th)
    B = 2
    batches = (itertools.product(range(6), repeat=B) if replace else itertools.combinations(range(6), B))
    means = np.array([G[list(b)].mean(axis=0) for b in batches])
    exact = np.cov(means.T, bias=True)
    np.testing.assert_allclose(ls.minibatch_covariance(th, B, replace=replace), exact, rtol=1e-12, atol=1e-15)
    for sq in ("factor", "eigh"):
        nz = MinibatchNoise(ls, B, replace=replace, sqrt=sq)
        np.testing.assert_allclose(nz.covariance(th), exact, rtol=1e-10, atol=1e-14)
    assert MinibatchNoise(ls, B, sqrt="factor").matrix(th).shape == (2, 6)
    assert MinibatchNoise(ls, B, sqrt="eigh").matrix(th).shape == (2, 2)


def _sgd_moments(ls, lr, B, mu0, S0, steps):
    """Exact mean/second moment of SGD (batches of B without replacement) on least squares:
    θ' = (I − ηH)θ + ηb + ε, E[ε|θ] = 0, Cov(ε|θ) = η² f C(θ), f = (n−B)/(B(n−1)), and
    E[C(θ)] = (1/n)Σ xᵢxᵢᵀ E[rᵢ²] − E[ḡḡᵀ] with rᵢ = xᵢᵀθ − yᵢ, ḡ = Hθ − b."""
    X, y, H, b = ls.X, ls.y, ls.H, ls.b
    n, d = X.shape
    f = (n - B) / (B * (n - 1))
    A = np.eye(d) - lr * H
    mu, S = mu0.copy(), S0.copy()
    for _ in range(steps):
        Er2 = np.einsum("ij,jk,ik->i", X, S, X) - 2 * y * (X @ mu) + y ** 2
        EC = (X.T * Er2) @ X / n - (H @ S @ H - np.outer(H @ mu, b) - np.outer(b, H @ mu) + np.outer(b, b))
        S = (A @ S @ A.T + lr * np.outer(A @ mu, b) + lr * np.outer(b, A @ mu) + lr ** 2 * np.outer(b, b)
             + lr ** 2 * f * EC)
        mu = A @ mu + lr * b
    return mu, S - np.outer(mu, mu)


def test_minibatch_noise_reproduces_sgd_moments():
    """noisy_gd with MinibatchNoise(scale=lr) under "proposal", with MinibatchNoise() under the
    default "sgd", and real SGD (numpy, batches drawn without replacement) all match SGD's exact
    moment recursion after 30 steps (z = 4.5). ηλ_max = 0.38:
    SGD's second moments are stable there (they blow up long before GD's edge ηλ = 2)."""
    ls = _ls_data(6, 2, 3)
    lr, B, steps, n = 0.1, 2, 30, 20000
    th0 = np.array([1.0, -1.0])
    mu, C = _sgd_moments(ls, lr, B, th0, np.outer(th0, th0), steps)
    r = noisy_gd(ls, lr, MinibatchNoise(ls, B, scale=lr), np.tile(th0, (n, 1)), steps,
                 record_every=steps, seed=2, convention="proposal")
    r_sgd = noisy_gd(ls, lr, MinibatchNoise(ls, B), np.tile(th0, (n, 1)), steps, record_every=steps, seed=5)
    rng = np.random.default_rng(0)
    th = np.tile(th0, (n, 1))
    X, y = ls.X, ls.y
    for _ in range(steps):
        idx = np.argsort(rng.random((n, 6)), axis=1)[:, :B]
        Xb, yb = X[idx], y[idx]
        resid = np.einsum("nbd,nd->nb", Xb, th) - yb
        th = th - lr * np.einsum("nbd,nb->nd", Xb, resid) / B
    for sample in (r.final_theta, r_sgd.final_theta, th):
        m_se = sample.std(axis=0) / np.sqrt(n)
        assert np.all(np.abs(sample.mean(axis=0) - mu) < 4.5 * m_se)
        S, se = _cov_and_se(sample)
        assert np.all(np.abs(S - C) < 4.5 * se)


# -------------------------------------------------------------- state-dependent noise
@njit(cache=True)
def _dw_value(theta, params):
    return 0.25 * np.sum((theta ** 2 - 1.0) ** 2)


@njit(cache=True)
def _dw_grad(theta, params):
    return theta * (theta ** 2 - 1.0)


@njit(cache=True)
def _dw_hess(theta, params):
    return np.diag(3.0 * theta ** 2 - 1.0)


def _double_well(d=2):
    """L = Σ (θᵢ² − 1)²/4: minima at ±1 (H = 2I), indefinite Hessian near 0."""
    return Loss(_dw_value, _dw_grad, _dw_hess, None, (np.zeros(1),), d, 0.0)


def test_hessian_aligned_noise():
    loss = _double_well()
    lr, c, dt, steps = 0.2, 0.05, 0.1, 100
    th0 = np.array([[1.0, -1.0], [0.9, 1.1], [-1.2, 0.8]])
    noise = HessianAligned(c)
    r = simulate(loss, lr, noise, th0, dt, steps, record_every=1, seed=3, record_theta=True, convention="proposal")
    f = lambda y, t: -lr * loss.grad(y)
    G = lambda y, t: np.sqrt(lr) * noise.matrix(y, loss)
    for i in range(3):
        y = integrate(f, G, th0[i], np.arange(steps + 1) * dt, dW=increments(3, i, steps, 2, dt))
        assert np.max(np.abs(r.theta[i] - y)) < 1e-12
    np.testing.assert_allclose(noise.covariance(th0[1], loss), c * loss.hess(th0[1]), rtol=1e-12)
    np.testing.assert_allclose(r.sharpness[:, 0], [loss.sharpness(t) for t in th0], rtol=1e-12)
    # at θ = 0 the Hessian is −I: clip gives zero noise there, raise refuses
    np.testing.assert_array_equal(noise.matrix(np.zeros(2), loss), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="positive semidefinite"):
        simulate(loss, lr, HessianAligned(c, psd="raise"), np.zeros((2, 2)), dt, 5)
    with pytest.raises(ValueError, match="not PSD"):
        HessianAligned(c, psd="raise").matrix(np.zeros(2), loss)
    # on a quadratic the Hessian is constant: additive noise Σ = cH, srk15 allowed
    q = Quadratic(eigs=[2.0, 0.5])
    np.testing.assert_allclose(HessianAligned(0.3).covariance(np.zeros(2), q), 0.3 * q.H, atol=1e-15)
    simulate(q, 0.1, HessianAligned(0.3), np.zeros((2, 2)), 0.1, 5, method="srk15")


@njit(cache=True)
def _gbm_b(theta):
    return 2.0 * theta


def test_diagonal_callable_noise_srk15_kernel_matches_integrate():
    """GBM dθ = μθ dt + σθ dW through simulate: L = −(μ/η)θ²/2, b(θ) = (σ/√η)θ, srk15."""
    mu, sig, lr = 1.5, 1.0, 0.25
    loss = Quadratic(eigs=[-mu / lr])
    noise = CallableNoise(_gbm_b, kind="diagonal")          # √η·b = 2·0.5·θ = σθ
    th0 = np.array([[1.0], [0.5]])
    dt, steps = 1.0 / 64, 64
    r = simulate(loss, lr, noise, th0, dt, steps, method="srk15", record_every=1, seed=4, record_theta=True,
                 convention="proposal")
    for i in range(2):
        dW, dZ = increments(4, i, steps, 1, dt, dZ=True)
        y = integrate(lambda y, t: mu * y, lambda y, t: sig * y, th0[i], np.arange(steps + 1) * dt,
                      method="srk15", dW=dW, dZ=dZ)
        assert np.max(np.abs(r.theta[i] - y)) < 1e-12 * max(1.0, np.abs(y).max())


@pytest.mark.slow
def test_diagonal_callable_noise_milstein_and_matrix_kernels():
    mu, sig, lr = 1.5, 1.0, 0.25
    loss = Quadratic(eigs=[-mu / lr])
    th0 = np.array([[1.0], [0.5]])
    dt, steps = 1.0 / 64, 64
    r = simulate(loss, lr, CallableNoise(_gbm_b, kind="diagonal"), th0, dt, steps, method="milstein",
                 record_every=1, seed=4, record_theta=True, convention="proposal")
    for i in range(2):
        y = integrate(lambda y, t: mu * y, lambda y, t: sig * y, th0[i], np.arange(steps + 1) * dt,
                      method="milstein", dW=increments(4, i, steps, 1, dt))
        assert np.max(np.abs(r.theta[i] - y)) < 1e-12 * max(1.0, np.abs(y).max())

    @njit
    def bmat(theta):
        out = np.zeros((1, 2))
        out[0, 0] = theta[0]
        out[0, 1] = 1.0
        return out

    r = simulate(loss, lr, CallableNoise(bmat), th0, dt, steps, record_every=1, seed=4, record_theta=True,
                 convention="proposal")
    y = integrate(lambda y, t: mu * y, lambda y, t: np.sqrt(lr) * np.array([[y[0], 1.0]]), th0[1],
                  np.arange(steps + 1) * dt, dW=increments(4, 1, steps, 2, dt))
    assert np.max(np.abs(r.theta[1] - y)) < 1e-12 * max(1.0, np.abs(y).max())


# -------------------------------------------------------------------------- bad input
def test_simulate_bad_input():
    loss, noise, _ = _ou_problem()
    th = np.zeros((2, 3))
    with pytest.raises(ValueError, match="dt"):
        simulate(loss, 0.1, noise, th, 0.0, 10)
    with pytest.raises(ValueError, match="dt"):
        simulate(loss, 0.1, noise, th, -1.0, 10)
    with pytest.raises(ValueError, match="lr"):
        simulate(loss, -0.1, noise, th, 0.1, 10)
    with pytest.raises(ValueError, match="method"):
        simulate(loss, 0.1, noise, th, 0.1, 10, method="rk4")
    with pytest.raises(ValueError, match="theta0s"):
        simulate(loss, 0.1, noise, np.zeros((2, 4)), 0.1, 10)
    with pytest.raises(ValueError, match="record_every"):
        simulate(loss, 0.1, noise, th, 0.1, 10, record_every=0)
    with pytest.raises(ValueError, match=r"B must have shape \(d, m\)"):
        simulate(loss, 0.1, ConstantMatrix(np.ones((2, 2))), th, 0.1, 10)
    with pytest.raises(ValueError, match="positive semidefinite"):
        ConstantCovariance([[1.0, 2.0], [2.0, 1.0]])
    with pytest.raises(ValueError, match="symmetric"):
        ConstantCovariance([[1.0, 0.5], [0.0, 1.0]])
    with pytest.raises(TypeError, match="noise"):
        simulate(loss, 0.1, 0.5, th, 0.1, 10)
    with pytest.raises(TypeError, match="loss"):
        simulate("quadratic", 0.1, noise, th, 0.1, 10)
    with pytest.raises(ValueError, match="sigma"):
        Isotropic(-1.0)
    with pytest.raises(ValueError, match="psd"):
        HessianAligned(1.0, psd="ignore")
    with pytest.raises(ValueError, match="euler"):
        simulate(_ls_data(6, 3), 0.1, MinibatchNoise(_ls_data(6, 3), 2), th, 0.1, 10, method="milstein")
    with pytest.raises(ValueError, match="batch_size"):
        MinibatchNoise(_ls_data(6, 2), 7)
    with pytest.raises(TypeError, match="FiniteSumLoss"):
        MinibatchNoise(loss, 2)
    with pytest.raises(ValueError, match="dt"):
        compare_sde_and_map(loss, 0.1, noise, th, 10, dt=0.3)
    with pytest.raises(ValueError, match=r"shape \(d, m\)"):
        CallableNoise(lambda t: np.ones(3)).spec(loss)            # matrix kind, vector returned
    with pytest.raises(ValueError, match="kind"):
        CallableNoise(lambda t: t, kind="full")
    with pytest.raises(TypeError, match="numba"):
        CallableNoise(lambda t: fractions.Fraction(1, 3)).spec(loss)


@pytest.mark.slow
def test_generic_kernel_paths_match_builtin_ones():
    """The generic kernel (functions passed in) gives the same numbers as the built-in one:
    a FiniteSumLoss wrapping the least-squares functions, with its own per-example kernel,
    and a covariance-returning CallableNoise equal to a ConstantCovariance."""
    from eosdyn.losses.finite_sum import (
        FiniteSumLoss,
        _ls_grad,
        _ls_grad_into,
        _ls_hess,
        _ls_hvp,
        _ls_value,
        ls_per_example_grad,
    )

    @njit
    def pex(theta, params):
        return ls_per_example_grad(theta, params)

    ls = _ls_data(10, 3, 4)
    fs = FiniteSumLoss(_ls_value, _ls_grad, _ls_hess, _ls_hvp, ls.params, 3, ls.min_value, pex, 10,
                       grad_into_fn=_ls_grad_into)
    th0 = np.random.default_rng(0).standard_normal((8, 3))
    a = simulate(ls, 0.2, MinibatchNoise(ls, 3), th0, 0.5, 60, record_every=6, seed=2)
    b = simulate(fs, 0.2, MinibatchNoise(fs, 3), th0, 0.5, 60, record_every=6, seed=2)
    np.testing.assert_allclose(a.final_theta, b.final_theta, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(a.loss, b.loss, rtol=1e-12)
    np.testing.assert_allclose(a.sharpness, b.sharpness, rtol=1e-12)

    S = np.array([[0.5, 0.1, 0.0], [0.1, 0.3, 0.05], [0.0, 0.05, 0.2]])

    @njit
    def cov(theta):
        return S.copy()

    q = Quadratic(eigs=[1.0, 2.0, 3.0])
    c1 = simulate(q, 0.3, ConstantCovariance(S), th0, 0.1, 50, seed=1)
    c2 = simulate(q, 0.3, CallableNoise(cov, kind="covariance"), th0, 0.1, 50, seed=1)
    np.testing.assert_allclose(c1.final_theta, c2.final_theta, rtol=1e-12, atol=1e-14)


# ------------------------------------------ disk-cached specialisation of kernel_generic
@njit(cache=True)
def _toy_sq(x):
    return x * x


@njit(cache=True)
def _toy_cube(x):
    return x * x * x


@njit
def _toy_inner(x, f, g, k):
    if g is None:
        return f(x) * k
    else:
        return f(x) + g(x) * k


@njit
def _toy_kernel(a, f, xs, g):
    tot = 0.0
    for x in xs:
        tot += _toy_inner(x, f, g, a)
    return tot


@njit
def _toy_renaming(a, f, xs, g):
    return _toy_inner(xs[0], _toy_sq, g, a)   # a slot passed under another name


@njit
def _toy_outofline(h, a, f, xs, g):
    tot = 0.0
    for x in xs:
        tot += h(x, f, g, a)   # h holds _toy_inner: called through it, the slots go too
    return tot


def test_specialise_moves_slots_anywhere_to_globals():
    """Slots in any position are removed by name from definitions and from calls to the other
    specialised functions; ``if g is None`` is resolved either way; None slots bind None;
    what cannot be specialised says why (eosdyn.codegen.NotSpecialisable)."""
    import inspect

    from eosdyn.codegen import NotSpecialisable, specialise

    xs = np.array([0.5, -1.25, 2.0])
    parts = [(_toy_inner, None), (_toy_kernel, "kernel")]
    for g in (None, _toy_cube):
        k = specialise({"f": _toy_sq, "g": g}, parts, "eosdyn_test_toy")
        assert list(inspect.signature(k.py_func).parameters) == ["a", "xs"]
        src = inspect.getsource(sys.modules[k.py_func.__module__])
        assert "is None" not in src and "cache=True" in src
        assert k(3.0, xs) == _toy_kernel(3.0, _toy_sq, xs, g)
    closure = njit(lambda x: x + 1.0)
    with pytest.raises(NotSpecialisable, match="cannot be imported by name"):
        specialise({"f": closure, "g": None}, parts, "eosdyn_test_toy")
    with pytest.raises(NotSpecialisable, match="not passed as the slot"):
        specialise({"f": _toy_sq, "g": None}, [(_toy_inner, None), (_toy_renaming, "kernel")], "eosdyn_test_toy")
    with pytest.raises(NotSpecialisable, match="no part is named 'kernel'"):
        specialise({"f": _toy_sq, "g": None}, [(_toy_inner, None)], "eosdyn_test_toy")
    # a parameter holding a part (calls_through): calls to it lose that part's slots as well
    k = specialise({"f": _toy_sq, "g": _toy_cube}, [(_toy_inner, None), (_toy_outofline, "kernel")],
                   "eosdyn_test_toy", calls_through={"h": _toy_inner})
    inner = sys.modules[k.py_func.__module__]._toy_inner
    assert list(inspect.signature(k.py_func).parameters) == ["h", "a", "xs"]
    assert list(inspect.signature(inner.py_func).parameters) == ["x", "k"]
    assert k(inner, 3.0, xs) == _toy_kernel(3.0, _toy_sq, xs, _toy_cube)
    with pytest.raises(NotSpecialisable, match="not a part"):
        specialise({"f": _toy_sq, "g": None}, [(_toy_outofline, "kernel")], "eosdyn_test_toy",
                   calls_through={"h": _toy_inner})


def test_generic_kernel_falls_back_when_specialisation_fails(monkeypatch):
    """A generated kernel that fails to compile is dropped, with a warning, and the generic loop
    runs with the slots re-inserted (and, for a kind with an out-of-line callee, the generic
    callee); a run-time error propagates and keeps the generated kernel; closures never get a
    specialisation."""
    import eosdyn.codegen as CG
    from eosdyn.engine import kernels as EK
    from eosdyn.sde import kernels as K

    calls = []
    monkeypatch.setitem(EK._GENERIC, "sde", lambda *a: calls.append(a))
    monkeypatch.setitem(EK._GENERIC, "lyapunov", lambda *a: calls.append(a))
    monkeypatch.setattr(CG, "_WARNED", set())

    @njit
    def broken(*a):
        return a[0].no_such_attribute

    @njit
    def callee(i, b, x):
        if x > 0:
            raise ValueError("run-time failure")

    @njit
    def kernel(f, x, bounds, b0, b1):
        f(0, 0, x)

    @njit
    def plain(x):
        if x > 0:
            raise ValueError("run-time failure")
        return x

    slots = (1, None, None, 1, _dw_value, None, None, None, None, _gbm_b, None)
    bounds = np.zeros(2, np.int64)
    # a kind whose kernel calls its callee out of line: compiled (or not) before the call
    k = EK.Kernel("sde", slots, "the test kernel")
    k.generated, k.callee = broken, callee
    with pytest.warns(CG.GenericKernelWarning, match="did not compile"):
        k(7.0, bounds, 0, 1)
    assert k.generated is None and calls == [(K._run_traj, *slots, 7.0, bounds, 0, 1)]
    k.generated, k.callee = kernel, callee
    for _ in range(2):   # compiled on the first call, already compiled on the second
        with pytest.raises(ValueError, match="run-time failure"):
            k(7.0, bounds, 0, 1)
    assert k.generated is kernel and len(calls) == 1
    # a kind without a callee: an error before the kernel has compiled is a failure to compile
    calls.clear()
    k = EK.Kernel("lyapunov", slots[:6], "another test kernel")
    k.generated = broken
    with pytest.warns(CG.GenericKernelWarning, match="did not compile"):
        k(7.0)
    assert k.generated is None and calls == [(*slots[:6], 7.0)]
    k.generated = plain
    for _ in range(2):
        with pytest.raises(ValueError, match="run-time failure"):
            k(7.0)
    assert k.generated is plain and len(calls) == 1
    monkeypatch.setattr(EK, "_KERNELS", {})
    closure = njit(lambda theta: theta)
    with pytest.warns(CG.GenericKernelWarning, match="cannot be imported by name"):
        kern = K.generic_kernel((1, None, None, None), (_dw_value, None, None, None, None, closure, None), "a closure")
    assert kern.generated is None


@njit(cache=True)
def _pex_copy(theta, params):
    X, y = params[0], params[1]
    r = X @ theta - y
    return X * r.reshape(-1, 1)


@njit(cache=True)
def _umat(theta):
    out = np.zeros((theta.shape[0], 3))
    for j in range(theta.shape[0]):
        out[j, 0] = 0.3 * theta[j]
        out[j, 1 + j % 2] = 0.2
    return out


@njit(cache=True)
def _ucov(theta):
    d = theta.shape[0]
    S = 0.05 * np.eye(d)
    for j in range(d):
        S[j, j] += 0.1 * theta[j] ** 2
    return S


def _generated_vs_generic(monkeypatch, loss, noise, method, **kw):
    """simulate() through the generated kernel, then through kernel_generic: bit-identical."""
    import warnings

    from eosdyn.engine import kernels as EK

    th0 = np.array([[1.1, -0.9], [0.8, 1.2], [-1.0, 0.7], [0.95, 1.05], [0.6, -1.3]])
    args = (loss, 0.2, noise, th0, 0.1, 40)
    kw = dict(method=method, record_every=4, seed=11, record_theta=True, record_grad_norm=True,
              track_sharpness=True, **kw)
    with monkeypatch.context() as mp:
        mp.setattr(EK, "_KERNELS", {})
        a = simulate(*args, **kw)
        (k,) = [v[1] for v in EK._KERNELS.values()]
        assert k.generated is not None
    with monkeypatch.context() as mp:
        mp.setattr(EK, "_KERNELS", {})

        def refuse(*a, **k):
            raise EK.NotSpecialisable("forced by the test")

        mp.setattr(EK, "specialise", refuse)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            b = simulate(*args, **kw)
        (k,) = [v[1] for v in EK._KERNELS.values()]
        assert k.generated is None
    for name in ("final_theta", "loss", "sharpness", "diverged_at", "theta", "theta_mean",
                 "theta_var", "theta_cov", "n_alive"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            assert np.array_equal(x, y, equal_nan=True), name
    assert np.array_equal(a.extra["grad_norm"], b.extra["grad_norm"], equal_nan=True)
    assert np.isfinite(a.loss[:, -1]).any()


def test_generated_sde_kernel_bit_identical(monkeypatch):
    """Derived grad_into closure (re-derived as module code) + an importable user diagonal
    noise, srk15 (the default-budget case; the full matrix is the slow test below)."""
    _generated_vs_generic(monkeypatch, _double_well(), CallableNoise(_gbm_b, kind="diagonal"), "srk15")


@pytest.mark.slow
@pytest.mark.parametrize("case", ids="-".join, argvalues=[
    ("dw", "iso", "euler"), ("dw", "iso", "milstein"), ("dw", "iso", "srk15"),
    ("dw", "hess", "euler"), ("sn", "hess", "euler"), ("sn", "iso", "srk15"),
    ("dw", "mat", "euler"), ("dw", "cmat", "srk15"), ("dw", "diag", "euler"),
    ("dw", "diag", "milstein"), ("dw", "cov", "euler"), ("dw", "mb", "euler"),
    ("dw", "mb_eigh", "euler"), ("dw", "mb_pex", "euler"), ("pex", "iso", "euler")])
def test_generated_sde_kernel_bit_identical_matrix(monkeypatch, case):
    from eosdyn.losses.finite_sum import FiniteSumLoss, _ls_grad, _ls_hess, _ls_value
    from eosdyn.losses.scalar_net import ScalarNet

    ls = _ls_data(6, 2, 3)
    pex = FiniteSumLoss(_ls_value, _ls_grad, _ls_hess, None, ls.params, 2, 0.0, _pex_copy, 6)
    loss = {"dw": _double_well(), "sn": ScalarNet(2), "pex": pex}[case[0]]
    noise = {"iso": Isotropic(0.3), "hess": HessianAligned(0.05),
             "mat": CallableNoise(_umat), "cmat": ConstantMatrix(np.array([[0.2, 0.1], [0.0, 0.3]])),
             "diag": CallableNoise(_gbm_b, kind="diagonal"), "cov": CallableNoise(_ucov, kind="covariance"),
             "mb": MinibatchNoise(ls, 2, sqrt="factor"), "mb_eigh": MinibatchNoise(ls, 2, sqrt="eigh"),
             "mb_pex": MinibatchNoise(pex, 3)}[case[1]]
    _generated_vs_generic(monkeypatch, loss, noise, case[2])


# ----------------------------------------- thread count (last: reuses the disk cache)
_THREADS_SCRIPT = textwrap.dedent("""
    import hashlib, numpy as np
    from eosdyn.losses import Quadratic
    from eosdyn.sde import simulate, Isotropic, MinibatchNoise, LeastSquares
    h = hashlib.sha256()
    L = Quadratic(eigs=[2.0, 1.0, 0.5])
    th = np.random.default_rng(0).standard_normal((300, 3))
    for method in ["euler", "srk15"]:
        r = simulate(L, 0.5, Isotropic(0.7), th, 0.1, 200, method=method, record_every=20, seed=3)
        for a in (r.final_theta, r.loss, r.theta_cov, r.theta_mean):
            h.update(np.ascontiguousarray(a).tobytes())
    rng = np.random.default_rng(1)
    ls = LeastSquares(rng.standard_normal((12, 3)), rng.standard_normal(12))
    r = simulate(ls, 0.2, MinibatchNoise(ls, 3), th, 0.5, 100, record_every=10, seed=5)
    for a in (r.final_theta, r.loss, r.theta_cov):
        h.update(np.ascontiguousarray(a).tobytes())
    print(h.hexdigest())
""")


def test_bit_identical_for_any_thread_count():
    out = {}
    for nt in ("1", "2"):
        env = dict(os.environ, NUMBA_NUM_THREADS=nt, EOSDYN_MIN_PARALLEL_WORK="0")
        p = subprocess.run([sys.executable, "-c", _THREADS_SCRIPT], env=env, capture_output=True,
                           text=True, timeout=600)
        assert p.returncode == 0, p.stderr[-2000:]
        out[nt] = p.stdout.strip().splitlines()[-1]
    assert out["1"] == out["2"]


@pytest.mark.parametrize("method", ["euler", "srk15"])
def test_a_run_cut_into_calls_is_bit_identical_with_chunked_normals(method, monkeypatch):
    """A path draws the normals of up to 64 steps in one sampler call, never past the kernel call's
    last step: however the run is cut into calls (1, 7, 33, 64 steps, or one call), every path
    equals the one-call run bit for bit."""
    S = sys.modules["eosdyn.sde.simulate"]   # the module (the package exports the function under its name)
    loss = Quadratic(H=np.array([[1.5]]))
    th0 = np.linspace(-1.0, 1.0, 5).reshape(-1, 1)
    kw = dict(method=method, record_every=3, seed=9, record_theta=True)
    one = simulate(loss, 0.2, Isotropic(0.3), th0, 0.1, 150, **kw)
    plan = S.CallPlan
    for cut in (1, 7, 33, 64):
        monkeypatch.setattr(S, "CallPlan", lambda total, first, fixed, progress, c=cut: plan(total, first, c, progress))
        many = simulate(loss, 0.2, Isotropic(0.3), th0, 0.1, 150, **kw)
        for name in ("theta", "loss", "final_theta"):
            np.testing.assert_array_equal(getattr(one, name), getattr(many, name), err_msg=f"{cut} {name}")
