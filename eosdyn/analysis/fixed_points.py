r"""Fixed points and periodic orbits of a map by Newton's method from many starts.

A period-p point of a map F solves G(x) = Fᵖ(x) − x = 0. Newton's method iterates

    x ← x − DG(x)⁻¹ G(x),   DG(x) = J(F^{p−1}x) ⋯ J(Fx) J(x) − I

(chain rule), with a backtracking line search on ‖G‖. Roots found from many
uniformly drawn starts in a box are de-duplicated, grouped into orbits
{x, Fx, …, F^{p−1}x}, and points whose *minimal* period is a proper divisor of p are
dropped (a fixed point also solves F²(x) = x). Each orbit is classified by the
spectral radius of its monodromy matrix DFᵖ = J(x_{p−1})⋯J(x_0): the orbit is a
linearly stable attractor iff ρ < 1 (Elaydi, *An Introduction to Difference
Equations*, 3rd ed., §1.6 and Thm 4.20).

For gradient descent, the period-2 orbits are the edge-of-stability oscillation
(the 2-cycle born when the step size crosses 2/λ; for the logistic-conjugate cubic
it is the logistic map's 2-cycle, ``theory/cubic_logistic.py``).

Where DG is singular (or so ill-conditioned that its solve is meaningless, cond >
``singular_cond``) Newton's step is undefined: the start is *reported*
(``singular_starts``) and skipped, never a crash. This happens, for instance, on a
manifold of minima, where ∇²L — hence DG = −η∇²L for GD — has a null space.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .._validate import nonneg_int, positive
from ..rules.base import Rule
from ._common import as_rule, check_loss
from .stability import classify


@dataclass
class Orbit:
    """One periodic orbit: ``points`` (p, n), ``multipliers`` (eigenvalues of DFᵖ),
    ``spectral_radius``, ``classification`` ("stable" | "marginal" | "unstable")."""

    points: np.ndarray
    multipliers: np.ndarray
    spectral_radius: float
    classification: str

    @property
    def period(self) -> int:
        return self.points.shape[0]


@dataclass
class FixedPointResult:
    """What Newton's method found from ``n_starts`` starts for period ``period``.

    ``orbits``: distinct orbits of minimal period ``period`` (sorted by their first
    coordinate); ``points`` (m, n): all their points stacked; ``spectral_radius`` and
    ``classification`` per orbit; ``n_converged``: starts that reached a root;
    ``n_lower_period``: converged starts whose root has a smaller minimal period
    (dropped); ``n_failed``: starts where Newton did not converge in ``max_iter``
    iterations or left every bounded region; ``n_singular`` / ``singular_starts``: starts
    skipped because DG was singular (see the module docstring).
    """

    period: int
    orbits: list
    n_starts: int
    n_converged: int
    n_lower_period: int
    n_failed: int
    n_singular: int
    singular_starts: np.ndarray
    tol: float
    dim: int
    params: dict = field(default_factory=dict)

    @property
    def points(self) -> np.ndarray:
        if not self.orbits:
            return np.zeros((0, self.dim))
        return np.concatenate([o.points for o in self.orbits])

    @property
    def spectral_radius(self) -> np.ndarray:
        return np.array([o.spectral_radius for o in self.orbits])

    @property
    def classification(self) -> list:
        return [o.classification for o in self.orbits]

    @property
    def singular(self) -> bool:
        """True if any start met a singular Newton matrix."""
        return self.n_singular > 0

    def stable_orbits(self) -> list:
        return [o for o in self.orbits if o.classification == "stable"]


def _box(box, n=None):
    b = np.array(box, dtype=float)
    if b.ndim == 1 and b.shape[0] == 2:
        b = b[None, :]
    if b.ndim != 2 or b.shape[1] != 2:
        raise ValueError(f"box must be (n, 2) rows [low, high] per coordinate, got shape {b.shape}")
    if n is not None and b.shape[0] != n:
        raise ValueError(f"box must have one [low, high] row per state coordinate ({n}), got {b.shape[0]}")
    if not np.all(np.isfinite(b)) or np.any(b[:, 1] < b[:, 0]):
        raise ValueError("box rows must be finite with low <= high")
    return b


class _Singular(Exception):
    pass


def _compose(map_fn, jac_fn, x, p):
    """(F^p(x), DF^p(x), orbit points x_0..x_{p-1})."""
    n = x.size
    M = np.eye(n)
    pts = []
    y = x
    for _ in range(p):
        pts.append(y)
        J = np.asarray(jac_fn(y), dtype=float).reshape(n, n)
        M = J @ M
        y = np.asarray(map_fn(y), dtype=float).reshape(n)
    return y, M, np.array(pts)


def _newton(map_fn, jac_fn, x0, p, tol, max_iter, singular_cond, bound):
    """Returns (x, status): status 'ok' | 'failed'; raises _Singular."""
    x = x0.copy()
    n = x.size
    I = np.eye(n)
    with np.errstate(all="ignore"):
        y, M, _ = _compose(map_fn, jac_fn, x, p)
        G = y - x
        gn = np.linalg.norm(G)
        for _ in range(max_iter):
            if not np.isfinite(gn):
                return x, "failed"
            if gn <= tol * max(1.0, np.linalg.norm(x)):
                return _polish(map_fn, jac_fn, x, p, gn), "ok"
            DG = M - I
            if not np.all(np.isfinite(DG)):
                return x, "failed"
            c = np.linalg.cond(DG)
            if not np.isfinite(c) or c > singular_cond:
                raise _Singular
            try:
                dx = np.linalg.solve(DG, -G)
            except np.linalg.LinAlgError:
                raise _Singular from None
            t = 1.0
            accepted = False
            for _ in range(40):
                xn = x + t * dx
                yn, Mn, _ = _compose(map_fn, jac_fn, xn, p)
                Gn = yn - xn
                gnn = np.linalg.norm(Gn)
                if np.isfinite(gnn) and gnn < gn:
                    accepted = True
                    break
                t *= 0.5
            if not accepted:
                return x, "failed"
            x, y, M, G, gn = xn, yn, Mn, Gn, gnn
            if np.linalg.norm(x) > bound:
                return x, "failed"
        if gn <= tol * max(1.0, np.linalg.norm(x)):
            return _polish(map_fn, jac_fn, x, p, gn), "ok"
    return x, "failed"


def _polish(map_fn, jac_fn, x, p, gn, n_steps=3):
    """Up to n_steps extra full Newton steps, kept while they reduce ‖G‖ (quadratic
    convergence takes a root found to ``tol`` down to round-off)."""
    n = x.size
    for _ in range(n_steps):
        y, M, _ = _compose(map_fn, jac_fn, x, p)
        G = y - x
        try:
            xn = x + np.linalg.solve(M - np.eye(n), -G)
        except np.linalg.LinAlgError:
            break
        yn, _, _ = _compose(map_fn, jac_fn, xn, p)
        gnn = np.linalg.norm(yn - xn)
        if not (np.isfinite(gnn) and gnn < gn):
            break
        x, gn = xn, gnn
    return x


def fixed_points(map_fn, jac_fn, box, n_starts: int = 64, seed: int = 0, period: int = 1,
                 tol: float = 1e-10, max_iter: int = 100, dedupe_tol: float = 1e-6,
                 stability_tol: float = 1e-8, singular_cond: float = 1e12) -> FixedPointResult:
    """Period-``period`` orbits of a map, by Newton on Fᵖ(x) − x from random starts in ``box``.

    Parameters
    ----------
    map_fn : callable x (n,) -> F(x) (n,).
    jac_fn : callable x -> ∂F/∂x (n, n).
    box : (n, 2) rows [low, high]: starts are drawn uniformly in it (numpy's PCG64
        seeded with ``seed``).
    n_starts, seed, period : number of starts, their seed, the period p ≥ 1.
    tol : Newton stops when ‖Fᵖ(x) − x‖ ≤ tol·max(1, ‖x‖).
    dedupe_tol : two roots closer than dedupe_tol·max(1, ‖x‖) are one point; the same
        tolerance decides whether a root has a smaller minimal period.
    stability_tol : the "marginal" band |ρ − 1| ≤ stability_tol.
    singular_cond : a Newton matrix with condition number above this is singular.
    """
    if not callable(map_fn) or not callable(jac_fn):
        raise TypeError("map_fn and jac_fn must be callables x -> F(x) and x -> ∂F/∂x")
    b = _box(box)
    n = b.shape[0]
    n_starts = nonneg_int("n_starts", n_starts, minimum=1)
    seed = nonneg_int("seed", seed)
    p = nonneg_int("period", period, minimum=1)
    tol = positive("tol", tol)
    max_iter = nonneg_int("max_iter", max_iter, minimum=1)
    dedupe_tol = positive("dedupe_tol", dedupe_tol)
    stability_tol = positive("stability_tol", stability_tol, allow_zero=True)
    singular_cond = positive("singular_cond", singular_cond)
    rng = np.random.default_rng(seed)
    starts = b[:, 0] + (b[:, 1] - b[:, 0]) * rng.random((n_starts, n))
    x_probe = starts[0]
    if np.shape(map_fn(x_probe.copy())) not in ((n,),):
        raise ValueError(f"map_fn must return a vector of length {n} (one per box row), "
                         f"got shape {np.shape(map_fn(x_probe.copy()))}")
    if np.shape(jac_fn(x_probe.copy())) != (n, n):
        raise ValueError(f"jac_fn must return a square ({n}, {n}) matrix, got shape {np.shape(jac_fn(x_probe.copy()))}")
    bound = 1e6 * max(1.0, float(np.abs(b).max()))

    roots, singular = [], []
    n_failed = n_lower = 0
    for x0 in starts:
        try:
            x, status = _newton(map_fn, jac_fn, x0, p, tol, max_iter, singular_cond, bound)
        except _Singular:
            singular.append(x0)
            continue
        if status != "ok":
            n_failed += 1
            continue
        roots.append(x)
    n_conv = len(roots)

    def close(a, c):
        return np.linalg.norm(a - c) <= dedupe_tol * max(1.0, np.linalg.norm(a))

    orbits: list[Orbit] = []
    for x in roots:
        # minimal period: the smallest q | p with F^q(x) = x
        minimal = p
        y = x
        for q in range(1, p):
            y = np.asarray(map_fn(y), dtype=float).reshape(n)
            if p % q == 0 and close(y, x):
                minimal = q
                break
        if minimal < p:
            n_lower += 1
            continue
        if any(any(close(x, q) for q in o.points) for o in orbits):
            continue
        _, M, pts = _compose(map_fn, jac_fn, x, p)
        # put the orbit in a canonical order: start at its lexicographically smallest point
        k = min(range(p), key=lambda i: tuple(pts[i]))
        if k:
            _, M, pts = _compose(map_fn, jac_fn, pts[k], p)
        mult = np.linalg.eigvals(M)
        mult = mult[np.argsort(-np.abs(mult), kind="stable")]
        rho = float(np.abs(mult).max())
        orbits.append(Orbit(points=pts, multipliers=mult, spectral_radius=rho,
                            classification=classify(rho, stability_tol)))
    orbits.sort(key=lambda o: tuple(o.points[0]))
    return FixedPointResult(period=p, orbits=orbits, n_starts=n_starts, n_converged=n_conv,
                            n_lower_period=n_lower, n_failed=n_failed, n_singular=len(singular),
                            singular_starts=np.array(singular).reshape(-1, n), tol=tol, dim=n,
                            params={"box": b.tolist(), "seed": seed, "n_starts": n_starts})


def _rule_map(loss, rule):
    """The rule's noise-free map and its Jacobian on the full state (Rule.map switches noise off)."""

    def F(z):
        return rule.map(loss, z)

    def J(z):
        return rule.jacobian(loss, z)

    return F, J


def gd_fixed_points(loss, lr, box, n_starts: int = 64, seed: int = 0, period: int = 1, **kwargs):
    """Fixed points (``period=1``) or period-p orbits of GD θ ↦ θ − η∇L(θ), J = I − η∇²L(θ).

    The fixed points of GD are the critical points of L; their class under GD depends on
    η (a minimum with sharpness λ is stable iff η < 2/λ). See :func:`fixed_points`.
    """
    loss = check_loss(loss)
    eta = positive("lr", lr)
    d = loss.dim

    def F(x):
        return x - eta * loss.grad(x)

    def J(x):
        return np.eye(d) - eta * loss.hess(x)

    return fixed_points(F, J, _box(box, d), n_starts=n_starts, seed=seed, period=period, **kwargs)


def periodic_orbits(loss, lr, box, period: int = 2, n_starts: int = 64, seed: int = 0, **kwargs):
    """Orbits of minimal period ``period`` (default 2, the EoS oscillation) of a rule's map.

    ``lr`` is GD's step size (float) or any Rule instance; for a rule with optimizer
    state the map acts on the full state z = (θ, state) and ``box`` must have one row
    per coordinate of z (``rule.jacobian`` gives the Jacobian). See :func:`fixed_points`.
    """
    loss = check_loss(loss)
    rule = as_rule("lr", lr)
    if isinstance(lr, Rule):
        F, J = _rule_map(loss, rule)
        n = loss.dim + rule.state_size(loss.dim)
        return fixed_points(F, J, _box(box, n), n_starts=n_starts, seed=seed, period=period, **kwargs)
    return gd_fixed_points(loss, rule.lr, box, n_starts=n_starts, seed=seed, period=period, **kwargs)
