r"""The semidefinite complementarity problem (SDCP) of central flows, solved in numpy.

Cohen, Damian, Talwalkar, Kolter & Lee ("Understanding Optimization in Deep Learning with
Central Flows", ICLR 2025, §3–4) determine the oscillation covariance X (k × k, in the
basis of the k tracked eigenvectors) as the solution of

    X ⪰ 0,    M(X) := A + B[X] ⪰ 0,    ⟨X, M(X)⟩ = 0,

where A is the symmetric k × k "stable" part (how far each edge eigenvalue is from
rising past the edge after one time step) and B a linear map on symmetric matrices that
is positive semidefinite for the Frobenius inner product (a Gram operator of third
derivatives). For such B the SDCP is the KKT system of the convex program

    min_{X ⪰ 0}  ½⟨X, B[X]⟩ + ⟨A, X⟩.

For k = 1 the solution is X = max(0, −A/B). For k > 1 :func:`solve_sdcp` runs a
primal log-barrier interior-point method with Newton steps in the k(k+1)/2 coordinates
of the symmetric matrices, then *polishes* on the face the iterate identified (the
range V of X): it solves Vᵀ M(V Y Vᵀ) V = 0 for Y exactly and keeps that point when it
is feasible. The KKT residuals are reported, relative to ‖A‖_F (the authors' code uses
CVXPY/CVXOPT instead; the test suite cross-checks against CVXPY where it is installed).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["SDCPSolution", "solve_sdcp", "sdcp_residuals"]


@dataclass
class SDCPSolution:
    """X and its KKT residuals (all relative to max(‖A‖_F, tiny)).

    ``primal``: max(0, −λ_min(X)); ``dual``: max(0, −λ_min(A + B[X])); ``complementarity``:
    |⟨X, A + B[X]⟩|; ``method``: "zero" (A ⪰ 0), "closed-form" (k = 1), "interior-point"
    or "interior-point+polish"; ``iterations``: Newton steps taken.
    """

    X: np.ndarray
    primal: float = 0.0
    dual: float = 0.0
    complementarity: float = 0.0
    method: str = "zero"
    iterations: int = 0
    info: dict = field(default_factory=dict)

    @property
    def max_residual(self) -> float:
        return max(self.primal, self.dual, self.complementarity)


def _sym_basis(k):
    """Orthonormal basis (Frobenius) of the k×k symmetric matrices, shape (m, k, k)."""
    basis = []
    for i in range(k):
        for j in range(i, k):
            E = np.zeros((k, k))
            if i == j:
                E[i, i] = 1.0
            else:
                E[i, j] = E[j, i] = 1.0 / np.sqrt(2.0)
            basis.append(E)
    return np.array(basis)


def _check(A, B):
    A = np.asarray(A, dtype=np.float64)
    if A.ndim != 2 or A.shape[0] != A.shape[1]:
        raise ValueError(f"A must be a square (k, k) matrix, got shape {A.shape}")
    k = A.shape[0]
    B = np.asarray(B, dtype=np.float64)
    if B.shape != (k, k, k, k):
        raise ValueError(f"B must have shape (k, k, k, k) = {(k, k, k, k)} (B[X]_ab = Σ_cd B_abcd X_cd), got {B.shape}")
    if not (np.all(np.isfinite(A)) and np.all(np.isfinite(B))):
        raise ValueError("A and B must be finite")
    return 0.5 * (A + A.T), B


def _apply(B, X):
    M = np.einsum("abcd,cd->ab", B, X)
    return 0.5 * (M + M.T)


def sdcp_residuals(A, B, X):
    """(primal, dual, complementarity) KKT residuals of X, relative to max(‖A‖_F, tiny)."""
    A, B = _check(A, B)
    X = 0.5 * (X + X.T)
    M = A + _apply(B, X)
    scale = max(float(np.linalg.norm(A)), 1e-300)
    primal = max(0.0, -float(np.linalg.eigvalsh(X)[0])) / scale if X.size else 0.0
    dual = max(0.0, -float(np.linalg.eigvalsh(M)[0])) / scale if M.size else 0.0
    comp = abs(float(np.sum(X * M))) / scale
    return primal, dual, comp


def _finish(A, B, X, method, iterations, **info):
    p, d, c = sdcp_residuals(A, B, X)
    return SDCPSolution(X, p, d, c, method, iterations, info)


def solve_sdcp(A, B, *, tol=1e-13, max_newton=200) -> SDCPSolution:
    """Solve X ⪰ 0, A + B[X] ⪰ 0, ⟨X, A + B[X]⟩ = 0 (module docstring).

    Parameters
    ----------
    A : (k, k) symmetric array
    B : (k, k, k, k) array, B[X]_ab = Σ_cd B_abcd X_cd, PSD as an operator on symmetric
        matrices (it is symmetrised; a B that is not PSD makes the problem nonconvex and
        the returned residuals will say so).
    tol : float
        Target for the barrier parameter, relative to the problem's scale.
    """
    A, B = _check(A, B)
    k = A.shape[0]
    if k == 0:
        return SDCPSolution(np.zeros((0, 0)))
    if float(np.linalg.eigvalsh(A)[0]) >= 0.0:
        return _finish(A, B, np.zeros((k, k)), "zero", 0)
    if k == 1:
        b = float(B[0, 0, 0, 0])
        if b <= 0.0:
            raise ValueError(f"the SDCP has no solution: A = {A[0, 0]:.3g} < 0 and B = {b:.3g} <= 0 "
                             "(the edge eigenvalue cannot be held by any oscillation)")
        return _finish(A, B, np.array([[-A[0, 0] / b]]), "closed-form", 0)

    E = _sym_basis(k)                                     # (k(k+1)/2, k, k)
    # matrix of B in the orthonormal basis, symmetrised (B is self-adjoint for a Gram operator)
    Bm = np.einsum("pab,abcd,qcd->pq", E, B, E)
    Bm = 0.5 * (Bm + Bm.T)
    a = np.einsum("pab,ab->p", E, A)
    scale_A = float(np.linalg.norm(A))
    bnorm = float(np.linalg.norm(Bm, 2))
    if bnorm <= 0.0:
        raise ValueError("the SDCP has no solution: A has a negative eigenvalue and B = 0")
    x_scale = scale_A / bnorm                             # natural size of X

    def mat(x):
        return np.einsum("p,pab->ab", x, E)

    x = np.einsum("pab,ab->p", E, np.eye(k) * x_scale)
    mu = scale_A * x_scale
    mu_final = tol * scale_A * x_scale
    with np.errstate(over="ignore", invalid="ignore"):
        x, its = _barrier(x, a, Bm, E, mat, mu, mu_final, scale_A, x_scale, max_newton)
    return _polish_or_raise(A, B, x, mat, x_scale, its)


def _barrier(x, a, Bm, E, mat, mu, mu_final, scale_A, x_scale, max_newton):
    """Log-barrier Newton on min ½xᵀBx + aᵀx − μ log det X, μ → mu_final (returns x, Newton steps)."""
    its = 0
    while True:
        for _ in range(max_newton):
            X = mat(x)
            try:
                Xi = np.linalg.inv(X)
            except np.linalg.LinAlgError:
                break
            grad = Bm @ x + a - mu * np.einsum("pab,ab->p", E, Xi)
            hess = Bm + mu * np.einsum("pab,bc,qcd,da->pq", E, Xi, E, Xi)
            try:
                dx = -np.linalg.solve(hess, grad)
            except np.linalg.LinAlgError:
                dx = -np.linalg.lstsq(hess, grad, rcond=None)[0]
            if not np.all(np.isfinite(dx)):
                break
            dec = float(-grad @ dx)
            t = 1.0
            while np.linalg.eigvalsh(mat(x + t * dx))[0] <= 0.0:
                t *= 0.5
                if t < 1e-12:
                    break

            def phi(y, mu=mu):
                return 0.5 * y @ Bm @ y + a @ y - mu * np.linalg.slogdet(mat(y))[1]
            f0 = phi(x)
            while t > 1e-12 and phi(x + t * dx) > f0 - 0.25 * t * dec:
                t *= 0.5
            x = x + t * dx
            its += 1
            if dec < 1e-14 * max(scale_A * x_scale, 1e-300):
                break
        if mu <= mu_final:
            break
        mu = max(mu * 0.05, mu_final)
    return x, its


def _polish_or_raise(A, B, x, mat, x_scale, its):
    k = A.shape[0]
    X_ip = 0.5 * (mat(x) + mat(x).T)
    with np.errstate(over="ignore", invalid="ignore"):
        unbounded = not np.all(np.isfinite(X_ip)) or np.abs(X_ip).max() > 1e8 * x_scale
    if unbounded:
        raise ValueError("the SDCP has no solution: the objective ½⟨X, B[X]⟩ + ⟨A, X⟩ is unbounded below on "
                         "X ⪰ 0 (A has a negative direction that B does not penalise: B is singular there)")
    best = _finish(A, B, X_ip, "interior-point", its)
    # polish on the face: X = V Y Vᵀ with V the range of X_ip; solve Vᵀ M V = 0 exactly
    w, Q = np.linalg.eigh(X_ip)
    keep = w > 1e-6 * max(float(w[-1]), 1e-300)
    r = int(np.count_nonzero(keep))
    if r == 0:
        cand = np.zeros((k, k))
    else:
        V = Q[:, keep]
        Er = _sym_basis(r)
        cols = []
        for F in Er:
            cols.append(np.einsum("ka,kl,lb->ab", V, _apply(B, V @ F @ V.T), V)[np.triu_indices(r)])
        Mlin = np.array(cols).T
        rhs = -np.einsum("ka,kl,lb->ab", V, A, V)[np.triu_indices(r)]
        y, *_ = np.linalg.lstsq(Mlin, rhs, rcond=None)
        Y = np.einsum("p,pab->ab", y, Er)
        cand = V @ Y @ V.T
        cand = 0.5 * (cand + cand.T)
    polished = _finish(A, B, cand, "interior-point+polish", its)
    if polished.max_residual <= best.max_residual:
        return polished
    return best
