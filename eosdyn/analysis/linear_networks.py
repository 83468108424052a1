r"""The step-size stability interval of gradient descent on linear networks.

Crăciun & Ghoshdastidar (2024, arXiv:2402.13108, "On the stability of gradient
descent for large learning rate"; v2/v3 "On the convergence of gradient descent for
large learning rates") show for deep linear networks with the squared loss that the
global minima form a smooth manifold M, that the GD map is non-singular, and that if
the step size exceeds the critical value

    η* = 2 / min_{θ ∈ M} λ_max(∇²L(θ))

then every minimum is linearly unstable and the set of initialisations from which
GD converges (to a critical point) has Lebesgue measure zero. Below η*, the minima
of sharpness < 2/η form a non-empty (and bounded) set of linearly stable fixed
points, each attracting a neighbourhood: GD converges from a set of positive
measure. So the interval of step sizes in which GD still converges is (0, η*).

This module computes η* for any loss whose minima form a manifold (DeepLinear,
ScalarNet, …) and measures the empirical convergence fraction versus η
(:func:`convergence_fraction`), which drops to 0 at η*.

For the depth-D scalar network ½(∏wᵢ − y)² the minimum sharpness is attained at
the balanced point |wᵢ| = |y|^{1/D}: λ_min-sharp = D·|y|^{2(D−1)/D}, so
η* = 2/(D |y|^{2(D−1)/D}) (AM–GM; derived in ``theory/scalar_net.py``).

**Numerics of the minimum.** Each start is moved onto M by saddle-free Newton steps
with a line search (:func:`project_to_minimum`). Then λ_max is minimised over M in
charts: at a minimum θ, with T and N orthonormal bases of the tangent space (the null
space of ∇²L) and of the normal space, s ↦ π(θ + Ts) where π solves Nᵀ∇L(θ + Ts + Nc)
= 0 for c by Newton (its Jacobian NᵀHN is positive definite near M). λ_max(∇²L(π(·)))
is minimised over s by Nelder–Mead — derivative-free, since λ_max is not smooth
where the top eigenvalue is multiple — and the chart is re-centred until a round no
longer improves. Several starts are tried; the smallest value is kept.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .._validate import finite_matrix, nonneg_int, positive
from ..rules import GD
from ._common import check_loss, positive_array, run_rules


def project_to_minimum(loss, theta, tol: float = 1e-13, max_iter: int = 200):
    """Descend from θ onto the set of minima: returns (θ_min, ok).

    Each iteration takes the saddle-free Newton step d = −Σ_{|λᵢ|>δ} vᵢvᵢᵀ∇L/|λᵢ| (eigenpairs
    (λᵢ, vᵢ) of ∇²L, δ = 1e-10·max|λ|: the pseudo-inverse step near a minimum, a descent
    direction near a saddle; Dauphin et al., NIPS 2014) with backtracking on L, falling
    back to a gradient step. It lands on *a* nearby minimum — not the orthogonal
    projection: off M the null directions of ∇²L pick up O(‖θ − M‖) curvature and the
    step drifts along M (:func:`min_manifold_sharpness` uses a chart for that reason).
    ok is True when ‖∇L‖ ≤ 1e3·tol·max(1, ‖θ‖) and, if ``loss.min_value`` is finite,
    L(θ) − L* ≤ 1e-9·max(1, |L*|) (a minimum, not a saddle).
    """
    th = np.array(theta, dtype=float)
    f = loss.value(th)
    for _ in range(max_iter):
        g = loss.grad(th)
        if not (np.all(np.isfinite(g)) and np.isfinite(f)):
            return th, False
        if np.linalg.norm(g) <= tol * max(1.0, np.linalg.norm(th)):
            break
        lam, V = np.linalg.eigh(loss.hess(th))
        big = np.abs(lam) > 1e-10 * max(np.abs(lam).max(), 1e-300)
        c = V.T @ g
        d = -(V[:, big] @ (c[big] / np.abs(lam[big])))
        moved = False
        for direction in (d, -g):
            t = 1.0
            for _ in range(60):
                cand = th + t * direction
                fc = loss.value(cand)
                if np.isfinite(fc) and fc <= f:
                    th, f, moved = cand, fc, True
                    break
                t *= 0.5
            if moved:
                break
        if not moved:
            break
    g = loss.grad(th)
    ok = bool(np.all(np.isfinite(th))) and np.linalg.norm(g) <= 1e3 * tol * max(1.0, np.linalg.norm(th))
    if ok and np.isfinite(loss.min_value):
        ok = loss.value(th) - loss.min_value <= 1e-9 * max(1.0, abs(loss.min_value))
    return th, bool(ok)


def _chart(loss, theta, null_tol):
    """(T, Q): orthonormal bases of the tangent (null space of ∇²L) and normal spaces at a minimum."""
    e, V = np.linalg.eigh(loss.hess(theta))
    null = np.abs(e) <= null_tol * max(np.abs(e).max(), 1e-300)
    return V[:, null], V[:, ~null]


def _normal_projection(loss, u, Q, tol=1e-13, max_iter=30):
    """Solve Qᵀ∇L(u + Qc) = 0 for c by Newton (Jacobian QᵀHQ, positive definite near M).

    Stops at ‖Qᵀ∇L‖ ≤ tol·max(1, ‖θ‖) or when a step no longer reduces it (round-off).
    """
    grad_fn, hess_fn, params = loss.grad_fn, loss.hess_fn, loss.params
    th = np.array(u, dtype=float)
    r = Q.T @ grad_fn(th, params)
    nr = np.linalg.norm(r)
    for _ in range(max_iter):
        if not np.isfinite(nr):
            return th, False
        if nr <= tol * max(1.0, np.linalg.norm(th)):
            break
        A = Q.T @ hess_fn(th, params) @ Q
        try:
            dc = np.linalg.solve(A, -r)
        except np.linalg.LinAlgError:
            return th, False
        t = 1.0
        for _ in range(20):
            cand = th + Q @ (t * dc)
            rc = Q.T @ grad_fn(cand, params)
            nrc = np.linalg.norm(rc)
            if nrc < nr:
                break
            t *= 0.5
        else:
            break  # no decrease: at the round-off floor (or lost); judged below
        th, r, nr = cand, rc, nrc
    ok = np.all(np.isfinite(th)) and np.linalg.norm(grad_fn(th, params)) <= 1e-9 * max(1.0, np.linalg.norm(th))
    if ok and np.isfinite(loss.min_value):
        ok = loss.value_fn(th, params) - loss.min_value <= 1e-9 * max(1.0, abs(loss.min_value))
    return th, bool(ok)


@dataclass
class ManifoldSharpness:
    """min over the minimum manifold of λ_max(∇²L): ``sharpness``, the minimiser
    ``theta``, the value reached from each start ``values`` (NaN where it failed),
    ``manifold_dim`` the dimension of the manifold (null space of ∇²L there)."""

    sharpness: float
    theta: np.ndarray
    values: np.ndarray
    n_failed: int
    manifold_dim: int


def _manifold_loss(loss):
    """``loss`` if :func:`min_manifold_sharpness` can work on it, else TypeError naming the expected type."""
    from ..losses import SqrtLoss

    loss = check_loss(loss)
    expected = ("loss must be a DeepLinear or a ScalarNet (a network whose global minima form a manifold), "
                "or another twice-differentiable Loss with a finite min_value L*")
    if isinstance(loss, SqrtLoss):
        raise TypeError(f"{expected}; got a SqrtLoss, which is not twice differentiable on its minima "
                        f"(its Hessian blows up there): pass its base loss (loss.base) instead")
    if not np.isfinite(loss.min_value):
        raise TypeError(f"{expected}, which tells the minima from saddles and local minima; got "
                        f"{type(loss).__name__} with min_value = {loss.min_value} (where L* is known, "
                        f"give it, e.g. from_sympy(..., min_value=0.0))")
    return loss


def min_manifold_sharpness(loss, theta0s=None, n_starts: int = 4, seed: int = 0, scale: float = 1.0,
                           max_rounds: int = 50, maxfev: int = 3000, null_tol: float = 1e-8,
                           xatol: float = 1e-7) -> ManifoldSharpness:
    """Minimum of the sharpness λ_max(∇²L) over the manifold of minima (see module docstring).

    ``theta0s`` (n, d) are the starts (default: ``n_starts`` normal draws with standard
    deviation ``scale``, numpy PCG64 seeded with ``seed``); each is first moved onto
    the manifold by :func:`project_to_minimum`. Then, in rounds, the tangent space T
    (null space of ∇²L, eigenvalues ≤ ``null_tol``·λ_max) and normal space N at the
    current minimum θ give a chart s ↦ π(θ + Ts), π solving Nᵀ∇L(θ + Ts + Nc) = 0 for c
    by Newton; Nelder–Mead (derivative-free, since λ_max is not smooth where it is
    multiple) minimises λ_max over s, and the chart is re-centred at the result until a
    round no longer improves.

    ``loss`` must be a loss whose global minima form a smooth manifold and whose minimum
    value L* (``loss.min_value``) is known, so that a minimum can be told from a saddle
    or a local minimum: a :class:`~eosdyn.losses.DeepLinear` or a
    :class:`~eosdyn.losses.ScalarNet` (or another twice-differentiable Loss with a finite
    ``min_value``, e.g. ``from_sympy("(x*y - 1)**2/2", "x y", min_value=0.0)``). Any other
    loss (a LogisticCubic, whose L* is −inf; a from_sympy loss without ``min_value``; a
    SqrtLoss, not twice differentiable on its minima) raises TypeError.
    """
    from scipy.optimize import minimize

    loss = _manifold_loss(loss)
    d = loss.dim
    if theta0s is None:
        rng = np.random.default_rng(nonneg_int("seed", seed))
        theta0s = positive("scale", scale) * rng.standard_normal((nonneg_int("n_starts", n_starts, minimum=1), d))
    theta0s = finite_matrix("theta0s", theta0s, d)
    max_rounds = nonneg_int("max_rounds", max_rounds, minimum=1)

    def lam_max(th):
        return float(np.linalg.eigvalsh(loss.hess_fn(th, loss.params))[-1])

    values = np.full(theta0s.shape[0], np.nan)
    best, best_th, kdim = np.inf, None, 0
    for i, u0 in enumerate(theta0s):
        th, ok = project_to_minimum(loss, u0)
        if not ok:
            continue
        cur = lam_max(th)
        T, Q = _chart(loss, th, null_tol)
        for _ in range(max_rounds):
            T, Q = _chart(loss, th, null_tol)
            k = T.shape[1]
            if k == 0:
                break  # an isolated minimum: nothing to move along
            base = th

            def f(sv, base=base, T=T, Q=Q):
                t2, good = _normal_projection(loss, base + T @ sv, Q)
                return lam_max(t2) if good else 1e300

            sim = np.vstack([np.zeros(k), 0.1 * max(1.0, np.linalg.norm(th)) * np.eye(k)])
            res = minimize(f, np.zeros(k), method="Nelder-Mead",
                           options={"initial_simplex": sim, "xatol": xatol, "fatol": 1e-15 * max(1.0, cur),
                                    "maxfev": maxfev, "adaptive": True})
            new_th, good = _normal_projection(loss, base + T @ res.x, Q)
            if not good:
                break
            new = lam_max(new_th)
            if new >= cur * (1 - 1e-13):
                break
            th, cur = new_th, new
        values[i] = cur
        if cur < best:
            best, best_th, kdim = cur, th, T.shape[1]
    n_failed = int(np.isnan(values).sum())
    if best_th is None:
        raise ValueError("could not reach the minimum manifold from any start; pass theta0s near it")
    return ManifoldSharpness(sharpness=best, theta=best_th, values=values, n_failed=n_failed, manifold_dim=kdim)


@dataclass
class LinearNetworkStability:
    """``critical_lr`` η* = 2/``min_sharpness``; ``interval`` = (0, η*), the step sizes at
    which GD converges from a set of positive measure (Crăciun & Ghoshdastidar 2024);
    ``analytic_min_sharpness`` the closed form where known (scalar network), else None."""

    min_sharpness: float
    critical_lr: float
    interval: tuple
    minimizer: np.ndarray
    analytic_min_sharpness: float | None = None
    details: ManifoldSharpness | None = field(default=None, repr=False)


def linear_network_stability(loss, theta0s=None, n_starts: int = 4, seed: int = 0, scale: float = 1.0,
                             **kwargs) -> LinearNetworkStability:
    """The critical step size η* = 2/min_M λ_max and the convergence interval (0, η*).

    For a :class:`~eosdyn.losses.ScalarNet` the closed form D·|y|^{2(D−1)/D} is also
    reported (``analytic_min_sharpness``). Other arguments: :func:`min_manifold_sharpness`.
    """
    loss = check_loss(loss)
    ms = min_manifold_sharpness(loss, theta0s=theta0s, n_starts=n_starts, seed=seed, scale=scale, **kwargs)
    analytic = None
    if hasattr(loss, "balanced_sharpness") and hasattr(loss, "depth") and hasattr(loss, "target"):
        analytic = float(loss.depth * abs(loss.target) ** (2.0 * (loss.depth - 1) / loss.depth))
    crit = 2.0 / ms.sharpness
    return LinearNetworkStability(min_sharpness=ms.sharpness, critical_lr=crit, interval=(0.0, crit),
                                  minimizer=ms.theta, analytic_min_sharpness=analytic, details=ms)


@dataclass
class ConvergenceCurve:
    """``fraction`` (m,) of starts with L − L* ≤ tol after ``steps`` GD steps at each of
    ``lrs`` (m,); ``diverged`` (m,) fraction that blew up; ``final_loss`` (m, n)."""

    lrs: np.ndarray
    fraction: np.ndarray
    diverged: np.ndarray
    final_loss: np.ndarray
    steps: int
    tol: float


def convergence_fraction(loss, lrs, theta0s, steps: int = 5000, tol: float = 1e-10,
                         blowup: float = 1e8) -> ConvergenceCurve:
    """Fraction of the starts ``theta0s`` (n, d) from which GD converges to the minimum value.

    Runs GD at each step size of ``lrs`` from every start (one batched kernel call)
    and counts the runs that end with L(θ) − L* ≤ tol·max(1, |L*|) (needs a finite
    ``loss.min_value``).
    """
    loss = check_loss(loss)
    if not np.isfinite(loss.min_value):
        raise ValueError("convergence_fraction needs a loss with a finite min_value L*")
    lrs = positive_array("lrs", lrs)
    S = finite_matrix("theta0s", theta0s, loss.dim)
    steps = nonneg_int("steps", steps, minimum=1)
    tol = positive("tol", tol)
    m, n = lrs.size, S.shape[0]
    rules = [GD(float(v)) for v in lrs for _ in range(n)]
    starts = np.tile(S, (m, 1))
    out, _, div = run_rules(loss, rules, starts, steps, 1, blowup=positive("blowup", blowup))
    final = out[:, 0, :]
    fl = np.full(m * n, np.inf)
    for k in range(m * n):
        if div[k] < 0:
            fl[k] = loss.value(final[k])
    fl = fl.reshape(m, n)
    conv = (fl - loss.min_value) <= tol * max(1.0, abs(loss.min_value))
    return ConvergenceCurve(lrs=lrs, fraction=conv.mean(axis=1), diverged=(div.reshape(m, n) >= 0).mean(axis=1),
                            final_loss=fl, steps=steps, tol=tol)
