"""Input that used to be accepted silently or fail with a raw numpy error (issue 17, "silently
accepted input"): Quadratic with no eigenvalue or complex data, min_manifold_sharpness of a
loss without a known manifold of minima, stationary_variance_per_mode outside 0 < ηλ < 2."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from eosdyn.analysis import linear_network_stability, min_manifold_sharpness
from eosdyn.analysis.stationary import stationary_covariance, stationary_variance_per_mode
from eosdyn.losses import LogisticCubic, Quadratic, ScalarNet, SqrtLoss, from_sympy


# ----------------------------------------------------------------------------- Quadratic
@pytest.mark.parametrize("kwargs, name", [
    ({"eigs": []}, "eigs"),
    ({"eigs": np.array([])}, "eigs"),
    ({"H": np.zeros((0, 0))}, "H"),
    ({"H": []}, "H"),
    ({"H": [[]]}, "H"),
])
def test_quadratic_without_eigenvalue_is_refused(kwargs, name):
    with pytest.raises(ValueError, match=rf"^{name} must hold at least one eigenvalue"):
        Quadratic(**kwargs)


@pytest.mark.parametrize("kwargs, name", [
    ({"eigs": [1 + 1j, 2.0]}, "eigs"),
    ({"eigs": np.array([1.0, 2.0], dtype=complex)}, "eigs"),  # even with zero imaginary parts
    ({"eigs": 1j}, "eigs"),
    ({"H": np.array([[2.0, 1j], [-1j, 3.0]])}, "H"),
    ({"H": np.eye(2, dtype=np.complex64)}, "H"),
    ({"eigs": [1.0, 2.0], "center": [0.0, 1j]}, "center"),
    ({"H": np.eye(2), "center": np.complex128(1.0)}, "center"),
])
def test_quadratic_complex_input_is_refused_naming_the_parameter(kwargs, name):
    with warnings.catch_warnings():  # refused before numpy's float conversion (which warns and drops it)
        warnings.simplefilter("error", np.exceptions.ComplexWarning)
        with pytest.raises(TypeError, match=rf"^{name} must be real"):
            Quadratic(**kwargs)


def test_quadratic_valid_inputs_unchanged():
    q = Quadratic(eigs=[3, 1], center=[1, 2])                 # ints and lists
    r = Quadratic(H=np.diag([3.0, 1.0]), center=np.array([1.0, 2.0], dtype=np.float32).astype(float))
    np.testing.assert_array_equal(q.H, r.H)
    np.testing.assert_array_equal(q.center, r.center)
    assert Quadratic(eigs=5).dim == 1 and Quadratic(H=[[2.0]]).lambda_max == 2.0


# ----------------------------------------------------------------------------- min_manifold_sharpness
@pytest.mark.parametrize("loss, got", [
    (LogisticCubic(), "LogisticCubic with min_value = -inf"),
    (Quadratic(eigs=[-1.0, 3.0]), "Quadratic with min_value = -inf"),
    (from_sympy("(x*y - 1)**2/2", "x y"), "SympyLoss with min_value = nan"),
    (SqrtLoss(ScalarNet(2, 1.0)), "SqrtLoss"),
])
def test_min_manifold_sharpness_refuses_losses_without_a_known_manifold_of_minima(loss, got):
    for fn in (min_manifold_sharpness, linear_network_stability):
        with pytest.raises(TypeError) as info:
            fn(loss, n_starts=1)
        msg = str(info.value)
        assert msg.startswith("loss must be a DeepLinear or a ScalarNet") and got in msg
    with pytest.raises(TypeError, match="loss must be an eosdyn Loss"):
        min_manifold_sharpness(object())


def test_min_manifold_sharpness_still_takes_other_losses_with_a_known_minimum():
    ms = min_manifold_sharpness(from_sympy("(x*y - 1)**2/2", "x y", min_value=0.0), n_starts=2, seed=0)
    assert ms.sharpness == pytest.approx(2.0, rel=1e-8) and ms.manifold_dim == 1
    assert min_manifold_sharpness(ScalarNet(2, 1.0), n_starts=2, seed=0).sharpness == pytest.approx(2.0, rel=1e-8)
    assert min_manifold_sharpness(Quadratic(eigs=[1.0, 3.0]), n_starts=1).sharpness == 3.0  # an isolated minimum


# ----------------------------------------------------------------------------- stationary variances
@pytest.mark.parametrize("lam, lr, kind, match", [
    ([-1.0, 1.0], 1.0, "sde", r"lam must be in \(0, inf\) for every mode.*lam = -1"),
    ([0.0, 1.0], 1.0, "map", r"lam must be in \(0, inf\) for every mode.*lam = 0"),
    ([1.0, 2.1], 1.0, "map", r"lr·lam must be in \(0, 2\).*lr·lam = 2.1"),
    ([1.0, 2.0], 1.0, "map", r"lr·lam must be in \(0, 2\).*lr·lam = 2 "),
    (0.5, 4.0, "map", r"lr·lam must be in \(0, 2\)"),
])
def test_stationary_variance_per_mode_refuses_where_no_stationary_distribution(lam, lr, kind, match):
    with pytest.raises(ValueError, match=match):
        stationary_variance_per_mode(lam, 1.0, lr, kind)
    with pytest.raises(ValueError):  # as the covariance does
        stationary_covariance(np.diag(np.atleast_1d(lam)), 1.0, lr, kind)


@pytest.mark.parametrize("args, exc, match", [
    (([1.0], -1.0, 1.0), ValueError, r"sigma2 must be in \[0, inf\)"),
    (([1.0], 1.0, 0.0), ValueError, "lr must be"),
    (([1.0], 1.0, -1.0), ValueError, "lr must be"),
    (([np.nan], 1.0, 1.0), ValueError, "lam must be finite"),
    (([1j], 1.0, 1.0), TypeError, "lam must be a real number"),
    (("a", 1.0, 1.0), TypeError, "lam must be a real number"),
    (([1.0], 1.0, 1.0, "ode"), ValueError, "kind must be one of"),
])
def test_stationary_variance_per_mode_other_bad_input(args, exc, match):
    with pytest.raises(exc, match=match):
        stationary_variance_per_mode(*args)


def test_stationary_variance_per_mode_valid_values_unchanged():
    lam = np.array([0.05, 0.5, 0.95])
    eta, s2 = 2.0, 0.3
    np.testing.assert_array_equal(stationary_variance_per_mode(lam, s2, eta, "map", convention="proposal"), s2 / (lam * (2.0 - eta * lam)))
    np.testing.assert_array_equal(stationary_variance_per_mode(lam, s2, eta, "sde", convention="proposal"), s2 / (2.0 * lam))
    assert stationary_variance_per_mode(0.5, 1.0, 1.0, "map") == 1.0 / (0.5 * 1.5)
    assert stationary_variance_per_mode([0.5], 0.0, 1.0)[0] == 0.0
