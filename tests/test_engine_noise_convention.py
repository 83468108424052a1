"""The stepping core's noise takes the package's one named convention (issue 13).

``eosdyn.simulate`` / ``eosdyn.ensemble`` with ``noise=`` add c_t·B(θ)ξ per step with
c_t = η_t under ``convention="sgd"`` (the default, as in :mod:`eosdyn.sde` and
:mod:`eosdyn.analysis.stationary`) and c_t = √η_t under ``"proposal"``.
"""
import math

import numpy as np
import pytest

import eosdyn
from eosdyn import sde
from eosdyn.analysis import stationary_covariance
from eosdyn.losses import Quadratic
from eosdyn.rules import GD, EoSAda


def test_default_is_sgd_and_equals_noisy_gd_under_sgd():
    loss_eigs, loss_center = np.array([3.0, 1.0, 0.5]), np.array([0.1, 0.2, -0.3])
    loss = Quadratic(eigs=loss_eigs, center=loss_center)
    X = np.random.default_rng(5).standard_normal((6, 3))
    lr, noise = 0.2, sde.Isotropic(0.3)
    a = sde.noisy_gd(loss, lr, noise, X, 80, record_every=1, seed=9, record_theta=True)  # "sgd" by default
    c = eosdyn.ensemble(loss, GD(lr), X, 80, record_every=1, seed=9, noise=noise, record_theta=True)
    # noisy_gd folds η into Σ (B → √η·B, then √η·B); the core multiplies by η: equal up to rounding
    np.testing.assert_allclose(c.theta, a.theta, rtol=1e-12, atol=1e-14)
    assert c.params["noise_convention"] == "sgd"
    p = eosdyn.ensemble(loss, GD(lr), X, 80, record_every=1, seed=9, noise=noise, record_theta=True,
                        convention="proposal")
    # the same ξ: the noise parts of the first step differ by exactly the factor √η
    gd_step = X - lr * (X - loss_center) * loss_eigs
    np.testing.assert_allclose(c.theta[:, 1] - gd_step, math.sqrt(lr) * (p.theta[:, 1] - gd_step),
                               rtol=1e-10, atol=1e-15)


def test_a_varying_step_size_scales_the_noise_by_eta_t():
    """EoS-Ada on a quadratic with exact curvature: η_t = α/(λ_max + ε) is constant but not the
    rule's nominal lr, so "sgd" with Isotropic(σ) equals "proposal" with Isotropic(σ√η_t)."""
    loss = Quadratic(eigs=[4.0, 1.0])
    rule = EoSAda(alpha=1.0, noise_scale=0.0, curvature="exact")
    X = np.full((5, 2), 0.5)
    s = eosdyn.ensemble(loss, rule, X, 50, record_every=1, seed=3, noise=sde.Isotropic(0.2), record_theta=True)
    eta_t = s.lr[0, 0]
    np.testing.assert_allclose(s.lr[np.isfinite(s.lr)], eta_t, rtol=0, atol=0)
    assert eta_t == pytest.approx(1.0 / 4.0, rel=1e-6)
    p = eosdyn.ensemble(loss, rule, X, 50, record_every=1, seed=3, noise=sde.Isotropic(0.2 * math.sqrt(eta_t)),
                        record_theta=True, convention="proposal")
    np.testing.assert_allclose(s.theta, p.theta, rtol=1e-12, atol=1e-14)


def test_the_defaults_agree_stationary_variance_of_the_core_matches_the_lyapunov_answer():
    """One convention everywhere: the core's default noise and stationary_covariance's default
    describe the same process (an ensemble of noisy GD on a 2-D quadratic, per-step η²σ²)."""
    lam = np.array([1.0, 3.0])
    lr, sigma = 0.5, 0.7                                     # ηλ = 0.5, 1.5
    n, burn = 4000, 300
    r = eosdyn.ensemble(Quadratic(eigs=lam), GD(lr), np.zeros((n, 2)), burn, record_every=burn, seed=1,
                        noise=sde.Isotropic(sigma), track_sharpness=False)
    emp = r.final_theta.var(axis=0)
    want = np.diag(stationary_covariance(np.diag(lam), sigma ** 2, lr, "map"))
    np.testing.assert_allclose(want, lr ** 2 * sigma ** 2 / (lr * lam * (2 - lr * lam)), rtol=1e-12)
    se = want * math.sqrt(2.0 / n)                            # Gaussian s.e. of a variance
    assert np.all(np.abs(emp - want) < 5 * se), (emp, want)
    # and "proposal" is 1/η times larger, on both sides
    r2 = eosdyn.ensemble(Quadratic(eigs=lam), GD(lr), np.zeros((n, 2)), burn, record_every=burn, seed=1,
                         noise=sde.Isotropic(sigma), track_sharpness=False, convention="proposal")
    want2 = np.diag(stationary_covariance(np.diag(lam), sigma ** 2, lr, "map", convention="proposal"))
    np.testing.assert_allclose(want2, want / lr, rtol=1e-12)
    assert np.all(np.abs(r2.final_theta.var(axis=0) - want2) < 5 * want2 * math.sqrt(2.0 / n))


@pytest.mark.parametrize("bad", ["SGD", "lma", None, 1])
def test_unknown_convention_is_refused_naming_it(bad):
    loss = Quadratic(eigs=[1.0])
    with pytest.raises(ValueError, match="convention"):
        eosdyn.simulate(loss, GD(0.1), [1.0], 3, noise=sde.Isotropic(0.1), convention=bad)
    with pytest.raises(ValueError, match="convention"):
        eosdyn.ensemble(loss, GD(0.1), [[1.0]], 3, convention=bad)
