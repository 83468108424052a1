"""eosdyn.curvature.preconditioned: the symmetric operator P^(-1/2) H P^(-1/2) of a diagonal P > 0.

References: numpy ``eigh`` of the dense diag(P)^(-1/2) H diag(P)^(-1/2), and numpy ``eigvals``
of the non-symmetric P⁻¹H (their spectra coincide: the matrices are similar; Cohen et al.
2022, "Adaptive gradient methods at the edge of stability", §3). numpy and torch float64.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eosdyn.curvature import (PreconditionedOperator, check_symmetric, dense_operator, hessian_operator,
                              preconditioned, top_eigenpairs)
from eosdyn.losses.quadratic import Quadratic

torch = pytest.importorskip("torch")
F64 = torch.float64


def random_problem(seed, n, spread, definite=True):
    """A symmetric H (SPD, or indefinite) and a positive diagonal P spanning 10^±spread."""
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((n, n))
    H = A @ A.T + 0.1 * np.eye(n) if definite else 0.5 * (A + A.T)
    P = 10.0 ** rng.uniform(-spread, spread, n)
    return H, P


def reference_spectra(H, P):
    """(eigh of diag(P)^-1/2 H diag(P)^-1/2, eigvals of P⁻¹H), both descending."""
    s = 1.0 / np.sqrt(P)
    sym = np.linalg.eigvalsh(s[:, None] * H * s[None, :])[::-1]
    nonsym = np.linalg.eigvals(np.diag(1.0 / P) @ H)
    assert np.max(np.abs(nonsym.imag)) <= 1e-8 * np.max(np.abs(nonsym.real))  # similar to symmetric
    return sym, np.sort(nonsym.real)[::-1]


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 9), spread=st.floats(0.0, 2.0),
       definite=st.booleans(), backend=st.sampled_from(["numpy", "torch"]))
def test_top_eigenvalues_are_those_of_P_inverse_H(seed, n, spread, definite, backend):
    H, P = random_problem(seed, n, spread, definite)
    sym, nonsym = reference_spectra(H, P)
    scale = np.max(np.abs(sym))
    k = min(2, n)
    if backend == "torch":
        op = preconditioned(dense_operator(torch.as_tensor(H)), torch.as_tensor(P))
        like = torch.empty(0, dtype=F64)
    else:
        op, like = preconditioned(H, P), None
    for method in ("exact", "lanczos"):
        res = top_eigenpairs(op, n, k=k, method=method, tol=1e-11, like=like)
        np.testing.assert_allclose(res.eigenvalues, sym[:k], rtol=1e-8, atol=1e-10 * scale)
        np.testing.assert_allclose(res.eigenvalues, nonsym[:k], rtol=1e-7, atol=1e-9 * scale)
    # an eigenvector u of the symmetric form gives the eigenvector P^(-1/2) u of P⁻¹H
    u = np.asarray(res.eigenvectors[:, 0], dtype=np.float64) / np.sqrt(P)
    lam = res.eigenvalues[0]
    np.testing.assert_allclose((H @ u) / P, lam * u, atol=1e-7 * scale * np.linalg.norm(u))


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 12), spread=st.floats(0.0, 3.0))
def test_product_equals_the_dense_symmetric_form_numpy_and_torch(seed, n, spread):
    H, P = random_problem(seed, n, spread)
    v = np.random.default_rng(seed + 1).standard_normal(n)
    s = 1.0 / np.sqrt(P)
    ref = (s[:, None] * H * s[None, :]) @ v
    tol = 1e-12 * np.abs(s[:, None] * H * s[None, :]).sum(1).max() * np.abs(v).max()
    out = preconditioned(H, P)(v)
    assert isinstance(out, np.ndarray) and out.dtype == np.float64
    np.testing.assert_allclose(out, ref, rtol=0, atol=tol)
    Ht, Pt = torch.as_tensor(H), torch.as_tensor(P)
    out_t = preconditioned(lambda x: Ht @ x, Pt)(torch.as_tensor(v))
    assert isinstance(out_t, torch.Tensor) and out_t.dtype == F64
    np.testing.assert_allclose(out_t.numpy(), ref, rtol=0, atol=tol)


def test_symmetric_and_has_its_dimension(rng):
    H, P = random_problem(3, 30, 2.0)
    op = preconditioned(H, P)
    assert isinstance(op, PreconditionedOperator) and op.dim == 30 and op.shape == (30, 30)
    assert check_symmetric(op, 30) < 1e-12
    with pytest.raises(ValueError, match="dim must match"):
        top_eigenpairs(op, 31)


def test_one_namespace_serves_the_other():
    """A numpy P scales torch vectors (in their dtype) and a torch P numpy vectors."""
    H, P = random_problem(5, 6, 1.0)
    v = np.linspace(-1.0, 1.0, 6)
    ref = preconditioned(H, P)(v)
    Ht = torch.as_tensor(H)
    mixed = preconditioned(lambda x: Ht.to(x.dtype) @ x, P)
    np.testing.assert_allclose(mixed(torch.as_tensor(v)).numpy(), ref, rtol=1e-14)
    out32 = mixed(torch.as_tensor(v, dtype=torch.float32))
    assert out32.dtype == torch.float32
    np.testing.assert_allclose(out32.numpy(), ref, rtol=1e-5)
    np.testing.assert_allclose(preconditioned(H, torch.as_tensor(P))(v), ref, rtol=1e-14)
    # a list is an array-like diagonal; integer tensors are read as float64
    np.testing.assert_allclose(preconditioned(H, list(P))(v), ref, rtol=0, atol=0)
    ones = preconditioned(Ht, torch.ones(6, dtype=torch.int64))
    np.testing.assert_allclose(ones(torch.as_tensor(v)).numpy(), H @ v, rtol=1e-14)


def test_identity_preconditioner_is_the_plain_operator():
    H, _ = random_problem(7, 8, 0.0, definite=False)
    res = top_eigenpairs(preconditioned(H, np.ones(8)), 8, k=3, tol=1e-11)
    np.testing.assert_allclose(res.eigenvalues, np.linalg.eigvalsh(H)[::-1][:3], rtol=1e-9)


def test_with_a_loss_hessian_operator():
    q = Quadratic(eigs=[9.0, 4.0, 1.0])
    P = np.array([3.0, 1.0, 0.5])
    op = preconditioned(hessian_operator(q, np.zeros(3)), P)
    H = np.diag([9.0, 4.0, 1.0])  # Quadratic(eigs=...) is diagonal in the standard basis
    assert top_eigenpairs(op, 3, tol=1e-12).eigenvalue == pytest.approx(max(np.diag(H) / P), rel=1e-10)
    with pytest.raises(ValueError, match="length 3"):
        preconditioned(hessian_operator(q, np.zeros(3)), np.ones(4))


@pytest.mark.parametrize("bad, match", [
    (np.array([1.0, 0.0, 2.0]), r"P must be > 0 elementwise.*a zero in P would make λ_max\(P⁻¹H\) undefined"),
    (np.array([1.0, -1.0, 2.0]), r"P must be > 0 elementwise.*got min P = -1.0"),
    (np.array([1.0, np.nan, 2.0]), r"P must be finite and > 0 elementwise.*1 NaN or infinite"),
    (np.array([1.0, np.inf, 2.0]), r"P must be finite"),
    (np.ones(4), r"P must have one entry per dimension of the operator, length 3, got length 4"),
    (np.ones((3, 1)), r"P must be a non-empty 1-D array"),
    (np.ones(0), r"P must be a non-empty 1-D array"),
    (torch.tensor([1.0, 0.0, 2.0], dtype=F64), r"P must be > 0 elementwise.*undefined"),
    (torch.tensor([1.0, float("nan"), 2.0]), r"P must be finite"),
])
def test_bad_preconditioner_is_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        preconditioned(np.eye(3), bad)


def test_bad_types_and_vectors_are_refused():
    with pytest.raises(TypeError, match="P must be real"):
        preconditioned(np.eye(2), np.array([1.0 + 1j, 1.0]))
    with pytest.raises(TypeError, match="P must be real"):
        preconditioned(np.eye(2), torch.tensor([1.0 + 1j, 1.0]))
    with pytest.raises(TypeError, match="P must be a 1-D array"):
        preconditioned(np.eye(2), ["a", "b"])
    with pytest.raises(TypeError, match="matvec must be a callable"):
        preconditioned("H", np.ones(2))
    op = preconditioned(lambda v: 2.0 * v, np.ones(3))  # a plain function: no dim to check P against
    with pytest.raises(ValueError, match=r"v must be a vector of length dim = len\(P\) = 3"):
        op(np.ones(4))
    with pytest.raises(ValueError, match="matvec must return a vector of length dim = 3"):
        preconditioned(lambda v: np.ones(5), np.ones(3))(np.ones(3))
    # a column of dim elements is flattened, as the solvers do
    col = preconditioned(lambda v: (4.0 * v).reshape(3, 1), np.full(3, 4.0))(np.ones(3))
    np.testing.assert_allclose(col, np.ones(3), rtol=1e-15)
