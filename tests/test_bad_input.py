"""Bad input, across the public API: a clear ValueError/TypeError naming the parameter.

One table of cases (every entry point joins it), and a hypothesis fuzzer that throws odd
values at the main entry points and accepts only a result or a ValueError/TypeError — never
a SystemError from a kernel, an OverflowError, an IndexError or a silent NaN.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import eosdyn
from eosdyn import analysis, sde
from eosdyn.losses import DeepLinear, Quadratic, ScalarNet
from eosdyn.rules import DCAO, GD, Adam, EoSAda, HeavyBall

Q = Quadratic(eigs=[2.0, 1.0])


def _cases():
    return [
        # (what, call, exception, message)
        ("steps overflow", lambda: eosdyn.simulate(Q, GD(0.1), [1, 1], 2 ** 64), ValueError, r"steps .*2\*\*62"),
        ("steps that never end", lambda: eosdyn.simulate(Q, GD(0.1), [1, 1], 2 ** 63 - 1, record_every=2 ** 62),
         ValueError, r"steps must be an integer in \[0, 2\*\*62\]"),
        ("seed overflow", lambda: eosdyn.simulate(Q, GD(0.1), [1, 1], 3, seed=2 ** 64), ValueError, "seed"),
        ("stream_index overflow", lambda: eosdyn.simulate(Q, GD(0.1), [1, 1], 3, stream_index=2 ** 63), ValueError,
         "stream_index"),
        ("a memory request that cannot succeed", lambda: eosdyn.simulate(Q, GD(0.1), [1, 1], 10 ** 12), ValueError,
         "record_every"),
        ("complex theta0", lambda: eosdyn.simulate(Q, GD(0.1), [1j, 1], 3), TypeError, "theta0 must be real"),
        ("complex H", lambda: Quadratic(np.eye(2) * (1 + 1j)), TypeError, "H must be real"),
        ("theta0=None", lambda: eosdyn.simulate(Q, GD(0.1), None, 3), TypeError, "theta0 .*got None"),
        ("an empty ensemble", lambda: eosdyn.ensemble(Q, GD(0.1), np.zeros((0, 2)), 3), ValueError,
         "at least one start"),
        ("Quadratic(eigs=[])", lambda: Quadratic(eigs=[]), ValueError, "eigs"),
        ("DCAO k > d", lambda: eosdyn.simulate(Q, DCAO(variant="v1", k=3), [1, 1], 3), ValueError, "k <= 2"),
        ("Adam(betas=0.9)", lambda: Adam(0.1, betas=0.9), TypeError, "betas must be a pair"),
        ("DCAO(lr_factor_range=1.0)", lambda: DCAO(lr_factor_range=1.0), TypeError, "lr_factor_range must be a pair"),
        ("gd_threshold(0)", lambda: analysis.gd_threshold(0), ValueError, "lam"),
        ("gd_threshold(-1)", lambda: analysis.gd_threshold(-1), ValueError, "lam"),
        ("a zero in P", lambda: analysis.preconditioned_sharpness(np.eye(2), [0.0, 1.0]), ValueError, "P must be > 0"),
        ("stationary variance past the edge",
         lambda: analysis.stationary_variance_per_mode([1.0, 3.0], 1.0, 1.0, kind="map"), ValueError, "lr"),
        ("min_manifold_sharpness of a loss without a known minimum",
         lambda: analysis.min_manifold_sharpness(eosdyn.losses.LogisticCubic()), TypeError, "loss"),
        ("an unknown rule", lambda: analysis.threshold(Q, "sgdx", [0, 0]), ValueError, "known rules"),
        ("an empty spec group", lambda: eosdyn.specs.loss_from_spec("quadratic:eigs=10,1;;"), ValueError,
         "empty parameter group"),
        ("a string expression with attribute access",
         lambda: eosdyn.losses.from_sympy("x.__class__", ["x"]), ValueError, "__class__"),
        ("SDE with a non-GD rule", lambda: sde.simulate(Q, HeavyBall(0.1), sde.Isotropic(0.1), [[1, 1]], 0.1, 3),
         TypeError, "drift is −η∇L"),
        ("SDE noise that is not a model", lambda: sde.noisy_gd(Q, 0.1, 0.5, [[1, 1]], 3), TypeError, "noise"),
        ("ensemble noise that is not a model", lambda: eosdyn.ensemble(Q, GD(0.1), [[1, 1]], 3, noise=0.5), TypeError,
         "noise"),
        ("an unknown deprecated keyword", lambda: sde.simulate(Q, 0.1, sde.Isotropic(0.1), [[1, 1]], 0.1, 3, foo=1),
         TypeError, "foo"),
        ("both an old and a new keyword",
         lambda: sde.simulate(Q, 0.1, sde.Isotropic(0.1), [[1, 1]], 0.1, 3, record_theta=True, record_paths=True),
         TypeError, "both"),
        ("EoS-Ada with a negative eps", lambda: EoSAda(eps=-1e-8), ValueError, "eps"),
    ]


CASES = _cases()


@pytest.mark.parametrize("what, call, exc, msg", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gets_a_clear_error(what, call, exc, msg):
    with pytest.raises(exc, match=msg):
        call()


def test_deprecated_sde_names_still_work_and_warn():
    with pytest.warns(DeprecationWarning, match="record_paths"):
        a = sde.simulate(Q, 0.1, sde.Isotropic(0.1), [[1.0, 1.0]], 0.1, 5, record_every=1, record_paths=True)
    with pytest.warns(DeprecationWarning, match="lr=.*deprecated"):
        b = sde.simulate(Q, lr=0.1, noise=sde.Isotropic(0.1), theta0s=[[1.0, 1.0]], dt=0.1, steps=5, record_every=1,
                         record_theta=True)
    np.testing.assert_array_equal(a.theta, b.theta)
    c = sde.simulate(Q, GD(0.1), sde.Isotropic(0.1), [[1.0, 1.0]], 0.1, 5, record_every=1, record_theta=True)
    np.testing.assert_array_equal(a.theta, c.theta)


_odd = st.one_of(st.none(), st.booleans(), st.integers(-2 ** 70, 2 ** 70), st.floats(allow_nan=True),
                 st.complex_numbers(), st.text(max_size=3), st.lists(st.floats(allow_nan=True), max_size=3))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=_odd, record_every=_odd, seed=_odd, blowup=_odd)
def test_fuzz_the_simulators_scalar_arguments(steps, record_every, seed, blowup):
    """Odd values for steps/record_every/seed/blowup: a result or a clean ValueError/TypeError."""
    for fn in (lambda: eosdyn.simulate(Q, GD(0.1), [1.0, 1.0], steps, record_every=record_every, seed=seed,
                                       blowup=blowup),
               lambda: eosdyn.ensemble(Q, GD(0.1), [[1.0, 1.0]], steps, record_every=record_every, seed=seed,
                                       blowup=blowup)):
        try:
            r = fn()
        except (ValueError, TypeError):
            continue
        assert r.loss.shape[-1] >= 1 and np.isfinite(r.loss[..., 0]).all()


@settings(max_examples=40, deadline=None)
@given(theta0=st.lists(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 5)),
                       min_size=0, max_size=4))
def test_fuzz_the_start(theta0):
    for loss in (Q, ScalarNet(2, 1.0)):
        try:
            tr = eosdyn.simulate(loss, GD(0.01), theta0, 3)
        except (ValueError, TypeError):
            continue
        assert len(theta0) == loss.dim and np.all(np.isfinite(theta0))
        assert np.isfinite(tr.loss[0])


def test_deep_linear_shapes_are_checked():
    with pytest.raises(ValueError):
        DeepLinear(np.ones((3, 2)), np.ones((4, 1)), [2])
