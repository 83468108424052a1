r"""Phase portraits of 2-D losses under a rule's map: displacement field, nullclines, basins, orbits.

For a map F on R² (GD: F(θ) = θ − η∇L(θ)) the phase portrait shows

* the displacement field D(θ) = F(θ) − θ on a grid (for GD, −η∇L: its direction does
  not depend on η, its length does);
* the nullclines: the zero sets of D's components, D₁ = 0 and D₂ = 0 (for GD, ∂L/∂x = 0
  and ∂L/∂y = 0); fixed points lie on their intersections;
* basins: which of a list of minima each start of a grid reaches, or whether it
  diverges (the fractal basin boundaries of GD at large step size: e.g. Kong & Tao,
  NeurIPS 2020, "Stochasticity of deterministic gradient descent: large learning rate
  for multiscale objective function");
* orbits of chosen starts.

The rule is given as a float (GD's step size) or a Rule instance whose state is
empty (a map on θ alone, so the phase plane is the whole state space); the rule's
noise is off. Displacement fields, nullclines and basins iterate the deterministic map F
(exact curvature at every step); :func:`orbits` follows the rule's own curvature
schedule unless asked otherwise. Iterations run in the stepping core (:mod:`eosdyn.engine`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._validate import choice, finite_matrix, finite_vector, nonneg_int, positive, seed_value
from ._common import as_rule, check_loss, run_rules


def _grid(grid):
    try:
        xs, ys = grid
    except (TypeError, ValueError):
        raise ValueError("grid must be a pair (xs, ys) of 1-D coordinate arrays") from None
    xs = finite_vector("grid[0]", xs)
    ys = finite_vector("grid[1]", ys)
    if xs.size < 2 or ys.size < 2:
        raise ValueError("grid coordinates need at least 2 points each")
    return xs, ys


def _plane(loss, rule, name="rule"):
    loss = check_loss(loss)
    if loss.dim != 2:
        raise ValueError(f"phase portraits need a 2-D loss, got loss.dim = {loss.dim}")
    r = as_rule(name, rule)
    if r.state_size(2) != 0:
        raise ValueError(f"{name} must be a map on θ alone (no optimizer state) for a phase plane; "
                         f"{type(r).__name__} carries state of size {r.state_size(2)}")
    return loss, r


@dataclass
class VectorField:
    """X, Y (ny, nx) grid coordinates; U, V (ny, nx) the displacement F(θ) − θ."""

    X: np.ndarray
    Y: np.ndarray
    U: np.ndarray
    V: np.ndarray

    @property
    def magnitude(self) -> np.ndarray:
        return np.hypot(self.U, self.V)


def displacement_field(loss, rule, grid) -> VectorField:
    """D(θ) = F(θ) − θ of ``rule`` (a GD step size or a stateless Rule) on ``grid`` = (xs, ys)."""
    loss, r = _plane(loss, rule)
    xs, ys = _grid(grid)
    X, Y = np.meshgrid(xs, ys)
    starts = np.column_stack([X.ravel(), Y.ravel()])
    out, _, _ = run_rules(loss, [r] * starts.shape[0], starts, 1, 1, blowup=np.inf)
    D = out[:, 0, :] - starts
    return VectorField(X=X, Y=Y, U=D[:, 0].reshape(X.shape), V=D[:, 1].reshape(X.shape))


@dataclass
class Nullclines:
    """Polylines (each a (k, 2) array of points) of D₁ = 0 (``u_zero``) and D₂ = 0 (``v_zero``)."""

    u_zero: list
    v_zero: list
    field: VectorField


def _contour0(xs, ys, Z):
    import contourpy

    gen = contourpy.contour_generator(xs, ys, Z, line_type=contourpy.LineType.Separate)
    return [np.asarray(seg) for seg in gen.lines(0.0)]


def nullclines(loss, rule, grid) -> Nullclines:
    """Zero contours of the displacement's components on ``grid`` (marching squares, contourpy)."""
    f = displacement_field(loss, rule, grid)
    xs, ys = f.X[0], f.Y[:, 0]
    return Nullclines(u_zero=_contour0(xs, ys, f.U), v_zero=_contour0(xs, ys, f.V), field=f)


BASIN_DIVERGED = -1
BASIN_UNDECIDED = -2


def basins(loss, lr, grid, minima, steps: int = 1000, tol: float = 1e-6, blowup: float = 1e6):
    """Basin labels on a grid: the index of the minimum each start reaches.

    Parameters
    ----------
    lr : GD step size or a stateless Rule.
    grid : (xs, ys).
    minima : (k, 2) the candidate limits.
    steps : iterations per start.
    tol : a start is in basin i if after ``steps`` it lies within tol·max(1, ‖m_i‖) of
        minimum i (the nearest one).
    blowup : |θ| beyond this counts as diverged.

    Returns
    -------
    labels : (ny, nx) int array: i ≥ 0 the minimum reached, −1 diverged, −2 undecided
        (neither: e.g. caught on a period-2 orbit, or slower than ``steps``).
    """
    loss, r = _plane(loss, lr, "lr")
    xs, ys = _grid(grid)
    m = finite_matrix("minima", minima, 2)
    steps = nonneg_int("steps", steps, minimum=1)
    tol = positive("tol", tol)
    X, Y = np.meshgrid(xs, ys)
    starts = np.column_stack([X.ravel(), Y.ravel()])
    out, _, div = run_rules(loss, [r] * starts.shape[0], starts, steps, 1, blowup=positive("blowup", blowup))
    final = out[:, 0, :]
    labels = np.full(starts.shape[0], BASIN_UNDECIDED, dtype=np.int64)
    labels[div >= 0] = BASIN_DIVERGED
    ok = div < 0
    dist = np.linalg.norm(final[ok, None, :] - m[None, :, :], axis=2)
    near = np.argmin(dist, axis=1)
    thr = tol * np.maximum(1.0, np.linalg.norm(m, axis=1))
    hit = dist[np.arange(dist.shape[0]), near] <= thr[near]
    lab_ok = np.where(hit, near, BASIN_UNDECIDED)
    labels[ok] = lab_ok
    return labels.reshape(X.shape)


def orbits(loss, lr, starts, steps: int, blowup: float = 1e100, *, curvature: str = "rule",
           seed: int = 0) -> np.ndarray:
    """Iterates θ_0 … θ_steps of each start: (n, steps + 1, d); NaN from a divergence on.

    ``lr`` is GD's step size or any Rule (stateful rules start from ``init_state``; their
    state is not returned); its noise is off. Works in any dimension, not only 2-D.

    ``curvature`` says which map is iterated for a curvature-aware rule (EoS-Ada, DCAO):

    - ``"rule"`` (default): the rule's own probe schedule (its estimator, refreshed every
      ``curvature_every`` steps, random Lanczos starts drawn from the stream (seed, i)),
      so orbit i is θ of ``eosdyn.simulate(loss, rule, starts[i], steps, seed=seed,
      stream_index=i)`` for a noise-free rule, bit for bit;
    - ``"exact"``: the deterministic map F of the analysis (exact top eigenvalues at every
      step, :meth:`eosdyn.rules.Rule.map`) — the map whose fixed points, stability and
      bifurcations :mod:`eosdyn.analysis` computes.

    Rules that probe no curvature give the same orbits either way.
    """
    loss = check_loss(loss)
    r = as_rule("lr", lr)
    S = finite_matrix("starts", starts, loss.dim)
    steps = nonneg_int("steps", steps)
    curvature = choice("curvature", curvature, ("rule", "exact"))
    out, _, _ = run_rules(loss, [r] * S.shape[0], S, steps, steps + 1, blowup=blowup, curvature=curvature,
                          seed=seed_value(seed))
    return out
