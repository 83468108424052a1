"""The sympy derivations of theory/ against eosdyn's numeric functions and against simulation.

``theory`` is a package at the repository root, not installed with eosdyn: put the root on
sys.path (documented in theory/README.md).
"""
import math
import pathlib
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from theory import cubic_logistic, eosada, noisy_gd, scalar_net, thresholds  # noqa: E402

from eosdyn import analysis  # noqa: E402
from eosdyn.analysis import (convergence_fraction, min_manifold_sharpness, orbits, period_doubling_points,  # noqa: E402
                             periodic_orbits, stationary_covariance, threshold)
from eosdyn.losses import LogisticCubic, Quadratic, ScalarNet  # noqa: E402
from eosdyn.rules import EoSAda, HeavyBall, Nesterov  # noqa: E402
from eosdyn.rules.schedules import eosada_lr  # noqa: E402


# ============================================================================ thresholds
def test_thresholds_derivation_gives_the_closed_forms():
    import sympy as sp

    d = thresholds.derive()
    for name, expr in thresholds.CLOSED_FORMS.items():
        assert sp.simplify(d[name]["threshold"] - expr) == 0
    # no μ = +1 crossing: 1 + a1 + a0 is ηλ times a positive factor for every rule
    b = thresholds.beta
    assert sp.simplify(d["heavyball"]["jury"]["1 + a1 + a0 > 0"] - thresholds.eta * thresholds.lam) == 0
    # |a0| < 1 at the threshold for 0 ≤ β < 1
    assert sp.simplify(d["nesterov"]["a0_at_threshold"] + b / (2 * b + 1)) == 0


@pytest.mark.parametrize("lam, beta", [(1.0, 0.0), (3.7, 0.5), (0.2, 0.9), (12.0, 0.99)])
def test_theory_thresholds_equal_eosdyn_numeric_and_formulas(lam, beta):
    Q = Quadratic(eigs=[lam, lam / 3])
    z = np.zeros(2)
    assert threshold(Q, "gd", z).numeric == pytest.approx(thresholds.gd_threshold(lam), rel=1e-6)
    assert threshold(Q, "heavyball", z, momentum=beta).numeric == pytest.approx(
        thresholds.heavyball_threshold(lam, beta), rel=1e-6)
    assert threshold(Q, "nesterov", z, momentum=beta).numeric == pytest.approx(
        thresholds.nesterov_threshold(lam, beta), rel=1e-6)
    P = np.array([0.5, 2.0])
    a = max(lam / 0.5, lam / 3 / 2.0)
    assert threshold(Q, "adam", z, preconditioner=P, betas=(beta, 0.999)).numeric == pytest.approx(
        thresholds.adam_threshold(a, beta), rel=1e-6)
    # eosdyn's own closed-form helpers agree with the derivation to round-off
    assert analysis.heavyball_threshold(lam, beta) == pytest.approx(thresholds.heavyball_threshold(lam, beta), rel=1e-14)
    assert analysis.nesterov_threshold(lam, beta) == pytest.approx(thresholds.nesterov_threshold(lam, beta), rel=1e-14)
    assert analysis.adam_threshold(a, beta) == pytest.approx(thresholds.adam_threshold(a, beta), rel=1e-14)


@pytest.mark.parametrize("rule_cls, formula", [(HeavyBall, thresholds.heavyball_threshold),
                                                (Nesterov, thresholds.nesterov_threshold)])
def test_momentum_thresholds_against_simulation(rule_cls, formula):
    lam, beta = 2.0, 0.6
    Q = Quadratic(eigs=[lam, 0.5])
    thr = formula(lam, beta)
    start = np.array([[0.3, -0.2]])
    below = orbits(Q, rule_cls(0.95 * thr, beta), start, 3000)[0, -1]
    above = orbits(Q, rule_cls(1.05 * thr, beta), start, 3000)[0, -1]
    assert np.linalg.norm(below) < 1e-8
    assert not np.all(np.isfinite(above)) or np.linalg.norm(above) > 1e3


def test_adam_frozen_threshold_against_simulation_of_the_frozen_map():
    H = np.array([[2.0, 0.3], [0.3, 1.0]])
    P = np.array([0.7, 1.3])
    b1 = 0.8
    a = np.linalg.eigvals(np.diag(1 / P) @ H).real.max()
    thr = thresholds.adam_threshold(a, b1)

    def run(eta, steps=4000):
        th, m = np.array([0.3, -0.2]), np.zeros(2)
        for _ in range(steps):
            m = b1 * m + (1 - b1) * (H @ th)
            th = th - eta * m / P
            if not np.all(np.isfinite(th)) or np.linalg.norm(th) > 1e6:
                return np.inf
        return np.linalg.norm(th)

    assert run(0.95 * thr) < 1e-6
    assert run(1.05 * thr) > 1e3


# ================================================================================ EoS-Ada
def test_eosada_effective_step_and_edge():
    for lam, eps, alpha in [(4.0, 0.5, 1.9), (0.3, 1e-3, 1.0), (10.0, 2.0, 2.2)]:
        assert eosada.effective_step(alpha, lam, eps) == pytest.approx(eosada_lr(lam, alpha, eps) * lam, rel=1e-14)
        assert eosada.edge_alpha(lam, eps) == pytest.approx(2 * (1 + eps / lam), rel=1e-14)
        Q = Quadratic(eigs=[lam, lam / 4])
        r = threshold(Q, "eosada", np.zeros(2), eps=eps)
        assert r.parameter == "alpha"
        assert r.numeric == pytest.approx(eosada.edge_alpha(lam, eps), rel=1e-6)


def test_eosada_edge_against_simulation():
    lam, eps = 4.0, 1.0
    edge = eosada.edge_alpha(lam, eps)  # 2.5: above GD's α = 2 thanks to ε
    Q = Quadratic(eigs=[lam, 1.0])
    start = np.array([[0.2, 0.1]])
    below = orbits(Q, EoSAda(alpha=0.98 * edge, eps=eps), start, 3000)[0, -1]
    above = orbits(Q, EoSAda(alpha=1.02 * edge, eps=eps), start, 3000)[0, -1]
    assert np.linalg.norm(below) < 1e-8
    assert not np.all(np.isfinite(above)) or np.linalg.norm(above) > 1e3


# ======================================================================= cubic / logistic
def test_conjugacy_matches_the_loss_helpers():
    d = cubic_logistic.derive()
    for eta in (0.5, 2.3, 3.0):
        a = float(d["a"].subs(cubic_logistic.eta, eta))
        b = float(d["b"].subs(cubic_logistic.eta, eta))
        ys = np.linspace(0.05, 0.95, 7)
        np.testing.assert_allclose(a * ys + b, LogisticCubic.from_logistic(ys, eta), rtol=1e-14)
        # and GD in x is the logistic map in y
        x = a * ys + b
        np.testing.assert_allclose(LogisticCubic.to_logistic(LogisticCubic.gd_map(x, eta), eta),
                                   (1 + eta) * ys * (1 - ys), rtol=1e-12)


@pytest.mark.parametrize("eta", [2.1, 2.3, 2.44])
def test_period2_orbit_against_newton_simulation_and_textbook(eta):
    lo, hi = cubic_logistic.period2_orbit(eta)
    r = periodic_orbits(LogisticCubic(), eta, [[-0.5, 1.2]], period=2, n_starts=30, seed=0)
    assert len(r.orbits) == 1
    np.testing.assert_allclose(np.sort(r.orbits[0].points[:, 0]), [lo, hi], atol=1e-12)
    assert r.orbits[0].multipliers[0].real == pytest.approx(cubic_logistic.period2_multiplier(eta), abs=1e-11)
    assert r.orbits[0].classification == ("stable" if eta < math.sqrt(6) else "unstable")
    # GD from the basin converges onto it (stable for 2 < η < √6)
    tail = orbits(LogisticCubic(), eta, [[0.1]], 20_000)[0, -2:, 0]
    np.testing.assert_allclose(np.sort(tail), [lo, hi], atol=1e-9)
    # logistic-map textbook form y± = (r + 1 ± √((r − 3)(r + 1)))/(2r)
    rr = 1 + eta
    y = (rr + 1 + np.array([1, -1]) * math.sqrt((rr - 3) * (rr + 1))) / (2 * rr)
    np.testing.assert_allclose(np.sort(LogisticCubic.from_logistic(y, eta)), [lo, hi], rtol=1e-12)


def test_doublings_theory_against_bisection():
    assert cubic_logistic.first_doubling_eta() == 2.0
    assert cubic_logistic.second_doubling_eta() == pytest.approx(math.sqrt(6), rel=1e-15)
    d = period_doubling_points(LogisticCubic(), 1.8, 2.5, [0.1], n_scan=30, transient=100_000, keep=32,
                               max_period=8)
    np.testing.assert_array_equal(d.from_period, [1, 2])
    np.testing.assert_allclose(1 + d.lrs, [1 + cubic_logistic.first_doubling_eta(),
                                           1 + cubic_logistic.second_doubling_eta()], atol=1e-3)


# ================================================================================ noisy GD
def test_noisy_gd_variances_against_lyapunov_solvers():
    s2 = 0.7
    for eta_lam in (0.1, 1.0, 1.9):
        lam, eta = 0.5, eta_lam / 0.5
        vm = stationary_covariance([[lam]], [[s2]], eta, "map", convention="proposal")[0, 0]
        vs = stationary_covariance([[lam]], [[s2]], eta, "sde", convention="proposal")[0, 0]
        assert vm == pytest.approx(noisy_gd.variance_map(lam, s2, eta), rel=1e-12)
        assert vs == pytest.approx(noisy_gd.variance_sde(lam, s2, eta), rel=1e-12)
        assert vm / vs == pytest.approx(2 / (2 - eta_lam), rel=1e-12)


@pytest.mark.parametrize("eta_lam", [0.1, 1.0, 1.9])
def test_noisy_gd_variance_against_simulation(eta_lam):
    rng = np.random.default_rng(int(eta_lam * 10))
    lam, s2 = 1.0, 0.5
    eta = eta_lam / lam
    v = noisy_gd.variance_map(lam, s2, eta)
    n = 40000
    relax = 1 - (1 - eta_lam) ** 2  # per-step contraction of the variance
    steps = int(np.ceil(40 / relax))
    th = np.zeros(n)
    for _ in range(steps):
        th = th - eta * lam * th + math.sqrt(eta * s2) * rng.standard_normal(n)
    assert abs(th.var() - v) < 5 * v * math.sqrt(2 / n)


# ============================================================================= scalar net
def test_scalar_net_rank_one_hessian_and_min_sharpness():
    for D, y in [(2, 1.0), (3, 2.0), (4, 0.7)]:
        S = ScalarNet(D, y)
        assert scalar_net.min_sharpness(D, y) == pytest.approx(S.balanced_sharpness(), rel=1e-13)
        # on a (non-balanced) manifold point, ∇²L = q qᵀ with λ_max = Σ y²/wᵢ²
        w = np.linspace(0.6, 1.4, D)
        w[-1] = y / np.prod(w[:-1])
        q = np.array([np.prod(np.delete(w, i)) for i in range(D)])
        np.testing.assert_allclose(S.hess(w), np.outer(q, q), atol=1e-12)
        assert S.sharpness(w) == pytest.approx(np.sum(y**2 / w**2), rel=1e-12)
        assert S.sharpness(w) > scalar_net.min_sharpness(D, y)
    assert scalar_net.derive(3)["rank_one_on_manifold"]


def test_scalar_net_min_sharpness_numeric_and_critical_step_in_simulation():
    D, y = 4, 1.5
    S = ScalarNet(D, y)
    ms = min_manifold_sharpness(S, n_starts=2, seed=4)
    assert ms.sharpness == pytest.approx(scalar_net.min_sharpness(D, y), rel=1e-8)
    np.testing.assert_allclose(np.abs(ms.theta), y ** (1 / D), rtol=1e-6)
    crit = scalar_net.critical_lr(D, y)
    starts = np.random.default_rng(1).uniform(0.6, 1.6, (48, D))
    c = convergence_fraction(S, crit * np.array([0.9, 1.05]), starts, steps=20000)
    assert c.fraction[0] > 0.3 and c.fraction[1] == 0.0


# ============================================================================== scripts
@pytest.mark.parametrize("module, expect", [("thresholds", "threshold (mu = -1)"),
                                             ("eosada", "alpha* ="),
                                             ("cubic_logistic", "1 + sqrt(6)"),
                                             ("noisy_gd", "sigma**2/(2*lambda)"),
                                             ("scalar_net", "4*y**(3/2)")])
def test_theory_modules_run_as_scripts(module, expect):
    out = subprocess.run([sys.executable, "-m", f"theory.{module}"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert expect in out.stdout
    assert "False" not in out.stdout  # every "equals the closed form" line is True


# ============================================================ Zhu et al. (ICLR 2023)
def test_zhu_minimalist_gd_converges_just_below_two_over_eta():
    """Zhu, Wang, Wang, Zhou & Ge (ICLR 2023) on L = ¼(x²y² − 1)²: GD started where the
    minima are sharper than 2/η still converges, to a minimum whose sharpness is just below
    2/η — next to the η-EoS minimum, the minimum of sharpness exactly 2/η. Checked on an
    ensemble of starts x₀² ∈ [1, 1.9]/η, y₀ ∈ {0.05, 0.1} (gradient flow from there would stop
    at sharpness ≈ 2x₀² ≥ 2/η), for η = 0.1 and 0.05: every run converges, the final
    sharpness lies in (0.99·2/η, 2/η), its gap below 2/η scales like η (halving η gives the
    ratio 0.55 measured: first order, not η² (0.25) nor constant (1)), and the final point is
    within 0.5% of the η-EoS minimum."""
    import eosdyn
    from eosdyn.losses import ZhuMinimalist
    from eosdyn.rules import GD

    loss = ZhuMinimalist()
    gaps = {}
    for eta in (0.1, 0.05):
        x0 = np.sqrt(np.linspace(1.0, 1.9, 8) / eta)
        th0 = np.array([[x, y] for x in x0 for y in (0.05, 0.1)])
        res = eosdyn.ensemble(loss, GD(eta), th0, 100_000, record_every=100_000)
        assert not res.diverged.any()
        assert np.all(res.loss[:, -1] < 1e-20)
        lam = res.sharpness[:, -1]
        assert np.all((lam > 0.99 * 2 / eta) & (lam < 2 / eta)), lam * eta / 2
        gaps[eta] = np.max(2 / eta - lam)
        eos = loss.eos_minimum(eta)
        rel = np.linalg.norm(np.abs(res.final_theta) - eos, axis=1) / np.linalg.norm(eos)
        assert np.all(rel < 5e-3), rel
    assert 0.4 < gaps[0.05] / gaps[0.1] < 0.7


# ===================================================== Kreisler et al. (ICML 2023)
@pytest.mark.parametrize("depth, eta, w0, at_edge", [
    (2, 0.5, [2.6, 0.45], True), (2, 0.5, [2.2, 1.5], False),
    (3, 0.4, [2.6, 0.45, 0.5], True), (3, 0.4, [3.0, 0.35, 0.6], True),
    (4, 0.3, [3.0, 0.35, 0.6, 0.7], True), (4, 0.3, [2.2, 1.5, 0.3, 0.9], True),
])
def test_kreisler_gd_decreases_the_gfs_sharpness_monotonically(depth, eta, w0, at_edge):
    """Kreisler, Nacson, Soudry & Carmon (ICML 2023): on scalar networks ½(∏wᵢ − y)², GD
    decreases the sharpness ψ of the gradient-flow solution at every step, even while
    the loss oscillates; GD's limit has sharpness ψ_∞ ≤ 2/η. Five starts have
    ψ(w₀) > 2/η (GD runs at the edge: the loss rises at some steps); one, ψ(w₀) = 3.27 below
    2/η = 4, is the control where the loss decreases throughout."""
    import eosdyn
    from eosdyn.rules import GD

    loss = ScalarNet(depth, 1.0)
    tr = eosdyn.simulate(loss, GD(eta), w0, 3000)
    assert not tr.diverged
    psi = np.array([loss.gfs_sharpness(w) for w in tr.theta])
    assert np.all(np.diff(psi) <= 1e-12 * psi[:-1])                 # monotone, up to rounding
    assert (psi[0] > 2 / eta) == at_edge
    assert np.any(np.diff(tr.loss) > 0) == at_edge                  # the loss is not monotone
    assert tr.loss[-1] < 1e-12 and psi[-1] <= 2 / eta
    assert tr.sharpness[-1] == pytest.approx(psi[-1], rel=1e-5)     # GD stops on a minimum
    assert psi[-1] < psi[0]
