"""The numba curvature module (eosdyn/curvature/kernels.py) every kernel probes with, against
independent references: numpy ``eigh`` and eosdyn.curvature.top_eigenpairs (the numpy/torch
Lanczos), and its preconditioned Hessian against the combinator ``curvature.preconditioned``.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eosdyn._rng import stream
from eosdyn.curvature import dense_operator, preconditioned, top_eigenpairs
from eosdyn.curvature.kernels import (
    EXACT,
    HUTCHINSON,
    LANCZOS,
    MEAN,
    POWER,
    mean_curvature,
    preconditioned_hessian,
    probe,
    record_curvature,
    top_eigs_exact,
)
from eosdyn.losses import Quadratic


def _spd(seed, d, gap=1.0):
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    w = np.concatenate([[10.0 + gap, 10.0], rng.uniform(-2.0, 8.0, d - 2)])
    return Q @ np.diag(w) @ Q.T, np.sort(w)[::-1]


def _probe(H, method, k, m=None, nsamp=1, seed=0):
    loss = Quadratic(H)
    out = np.zeros(k)
    warm = np.zeros(H.shape[0])
    probe(method, loss.hess_fn, loss.hvp_fn, np.zeros(H.shape[0]), loss.params, k, m or H.shape[0], nsamp,
          stream(seed, 0), warm, out)
    return out, warm


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), d=st.integers(3, 30), k=st.integers(1, 3))
def test_in_kernel_lanczos_agrees_with_top_eigenpairs_and_eigh(seed, d, k):
    """Full Lanczos (m = d steps) finds the top-k exactly; so do the numpy Lanczos and eigh."""
    H, w = _spd(seed, d)
    got, warm = _probe(H, LANCZOS, k)
    ref = top_eigenpairs(dense_operator(H), d, k=k, tol=1e-12).eigenvalues
    np.testing.assert_allclose(got, w[:k], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-9)
    # the warm start is the top Ritz vector: an eigenvector of λ₁
    np.testing.assert_allclose(H @ warm, w[0] * warm, atol=1e-7 * np.linalg.norm(warm))


def test_exact_power_and_means_against_eigh():
    H, w = _spd(1, 12, gap=3.0)
    np.testing.assert_allclose(_probe(H, EXACT, 3)[0], w[:3], rtol=1e-12)
    np.testing.assert_allclose(_probe(H, POWER, 1, m=400)[0], w[:1], rtol=1e-8)
    out = np.zeros(2)
    mean_curvature(H, 2, out)
    np.testing.assert_allclose(out, np.trace(H) / 12, rtol=1e-14)
    np.testing.assert_allclose(_probe(H, MEAN, 1)[0], np.trace(H) / 12, rtol=1e-14)
    # Hutchinson: unbiased for tr(H)/d over fresh streams
    est = np.array([_probe(H, HUTCHINSON, 1, nsamp=4, seed=s)[0][0] for s in range(2000)])
    assert abs(est.mean() - np.trace(H) / 12) < 4 * est.std(ddof=1) / np.sqrt(est.size)
    ev = np.zeros(14)
    top_eigs_exact(H, 14, ev)           # k > d pads with zeros
    np.testing.assert_allclose(ev[:12], np.sort(np.linalg.eigvalsh(H))[::-1], rtol=1e-12)
    assert np.all(ev[12:] == 0.0)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), d=st.integers(2, 20))
def test_preconditioned_hessian_is_the_combinators_operator(seed, d):
    """The numba P^{-1/2} H P^{-1/2} (simulators' records) and eosdyn.curvature.preconditioned
    (analysis, bridge, trainer) are the same operator: same matrix, eigenvalues of P⁻¹H."""
    H, _ = _spd(seed, d)
    P = np.random.default_rng(seed + 1).uniform(0.1, 10.0, d)
    S = preconditioned_hessian(H, P)
    op = preconditioned(dense_operator(H), P)
    np.testing.assert_allclose(S, np.column_stack([op(e) for e in np.eye(d)]), rtol=1e-12, atol=1e-12)
    lam = np.sort(np.linalg.eigvals(np.diag(1 / P) @ H).real)[-1]
    np.testing.assert_allclose(np.linalg.eigvalsh(S)[-1], lam, rtol=1e-10)


def test_records_are_nan_where_the_curvature_is_undefined():
    sharp, l2, ps = np.zeros(1), np.zeros(1), np.zeros(1)
    H = np.diag([3.0, 1.0])
    record_curvature(H, np.array([1.0, 0.0]), 0, sharp, l2, ps)   # a zero in P
    assert sharp[0] == 3.0 and l2[0] == 1.0 and np.isnan(ps[0])
    record_curvature(np.array([[np.inf, 0.0], [0.0, 1.0]]), np.ones(2), 0, sharp, l2, ps)
    assert np.isnan(sharp[0]) and np.isnan(l2[0]) and np.isnan(ps[0])
    assert np.isnan(preconditioned_hessian(H, np.array([1.0, -1.0]))).all()
    ps[0] = 7.0   # no preconditioner (pre None): λ₁, λ₂ recorded, the preconditioned record untouched
    record_curvature(H, None, 0, sharp, l2, ps)
    assert sharp[0] == 3.0 and l2[0] == 1.0 and ps[0] == 7.0


@pytest.mark.parametrize("method", ["lanczos", "power", "exact"])
def test_a_rules_probe_in_simulate_is_this_module(method):
    """EoS-Ada's step 1/η = λ_max(H) + ε from the in-kernel probe, against eigh."""
    import eosdyn
    from eosdyn.rules import EoSAda

    H, w = _spd(7, 10, gap=2.0)
    tr = eosdyn.simulate(Quadratic(H), EoSAda(alpha=1.0, eps=0.0, curvature=method,
                                              lanczos_steps=10 if method != "power" else 400),
                         np.ones(10), 2)
    np.testing.assert_allclose(1.0 / tr.lr, w[0], rtol=1e-8)
