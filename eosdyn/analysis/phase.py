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

The rule is given as a float (GD's step size) or a Rule instance; its noise is off.
Displacement fields, nullclines and basins iterate the deterministic map F (exact
curvature at every step); :func:`orbits` follows the rule's own curvature schedule unless
asked otherwise. Basins and orbits count steps from t = 1 like a simulation (this matters
only for a step that depends on t, Adam's bias correction); the displacement field is the
t → ∞ map of :meth:`eosdyn.rules.Rule.map` unless given ``t``. Iterations run in the
stepping core (:mod:`eosdyn.engine`).

**Rules with state** (heavy-ball's velocity, Adam's moments, …). Such a rule is a map
F(θ, s) = (θ', s') on the full state z = (θ, s) ∈ R^{2+S}, and the θ-plane is not its phase
space. The functions here then take a **slice**: the state is fixed to s(θ) at every grid
point, chosen by the keyword ``state``:

* ``"zero"`` — s = 0 (heavy-ball / Nesterov at rest, Adam with empty moments);
* ``"init"`` — s = ``rule.init_state(θ)``, the state every simulation starts from (zero for
  every built-in rule);
* ``"fixed_point"`` — s*(θ), the fixed point of the state's own update with θ held at the
  grid point: s*(θ) = S(θ, s*(θ)), found by iterating that update (geometric, rate β for
  momentum). At a fixed point (θ*, s*) of the full map this is its state s*, hence the name;
  for heavy-ball s*(θ) = ∇L(θ)/(1−β) (the terminal velocity), so the slice's displacement is
  −η∇L(θ)/(1−β): GD with the effective step η/(1−β) (the adiabatic, slow-manifold view);
* an array: one state (S,) for every grid point, or one per point (ny, nx, S).

:func:`displacement_field` and :func:`nullclines` then show D(θ) = θ-part of F(θ, s(θ)) − θ,
the first step from the slice. **A slice of a higher-dimensional map is not invariant**:
after one step the state is s' ≠ s(θ') in general, so the arrows are not tangent to
orbits, following them is not the dynamics, and a zero of D on the slice is a fixed point
of F only if s(θ*) is also the fixed point's state (true for ``"zero"``/``"fixed_point"``
at a critical point of heavy-ball: there s* = 0). :func:`basins` has no such caveat: it
labels each start z₀ = (θ, s(θ)) of the slice by where the *full* orbit of F goes (the
basins of F intersected with the slice). :func:`orbits` iterates the full map and returns
the **projection** of each orbit onto θ (the state is iterated but not returned).
For a stateless rule (GD, normalized GD) there is nothing to fix: ``state`` must be left
at None (the map is on θ alone and the portrait is exact).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from .._validate import choice, finite_matrix, finite_vector, nonneg_int, positive, seed_value
from ._common import as_rule, check_loss, run_rules

STATE_CHOICES = ("zero", "init", "fixed_point")


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
    return loss, as_rule(name, rule)


@njit(cache=False)
def _frozen_state_kernel(step_fn, thetas, states, G, C, hyper, t, max_iter, tol):
    """Iterate the state's update s ← S(θ, s) with θ put back after every step (θ frozen);
    returns a per-row flag: converged to max|Δs| ≤ tol·(1 + max|s|)."""
    n, d = thetas.shape
    ok = np.zeros(n, np.bool_)
    rng = np.zeros(4, np.uint64)
    work = np.zeros(d)
    for i in range(n):
        s = states[i].copy()
        for _ in range(max_iter):
            th = thetas[i].copy()
            old = s.copy()
            step_fn(th, s, G[i], C[i], hyper, t, rng, work)
            diff = 0.0
            scale = 0.0
            for j in range(s.shape[0]):
                diff = max(diff, abs(s[j] - old[j]))
                scale = max(scale, abs(s[j]))
            if not np.isfinite(diff):
                break
            if diff <= tol * (1.0 + scale):
                ok[i] = True
                break
        states[i] = s
    return ok


_FROZEN_KERNELS: dict = {}


def _frozen_kernel_for(step_fn):
    """The frozen-state kernel with ``step_fn`` bound as a global (disk-cached through
    :func:`eosdyn.codegen.specialise`), or None where it cannot be specialised (the generic
    kernel, compiled in this process, then runs)."""
    from ..codegen import NotSpecialisable, fallback_warning, specialise

    key = id(step_fn)
    if key not in _FROZEN_KERNELS:
        try:
            k = specialise({"step_fn": step_fn}, [(_frozen_state_kernel, "kernel")], "eosdyn_frozen_state")
        except NotSpecialisable as exc:
            fallback_warning("the frozen-state kernel", str(exc))
            k = None
        _FROZEN_KERNELS[key] = (step_fn, k)  # keep step_fn alive so its id stays unique
    return _FROZEN_KERNELS[key][1]


def frozen_state(loss, rule, thetas, *, max_iter: int = 200_000, tol: float = 1e-13) -> np.ndarray:
    """s*(θ) for each row of ``thetas`` (n, d): the fixed point of the rule's state update with θ
    held fixed, s* = S(θ, s*) (gradient and exact curvature at θ, noise off, step number t → ∞ as in
    :meth:`eosdyn.rules.Rule.map`). Heavy-ball: s* = ∇L(θ)/(1−β); Adam: m* = ∇L, v* = ∇L².

    Starts from ``rule.init_state``; ValueError if the iteration does not settle (to
    max|Δs| ≤ tol·(1 + max|s|)) within ``max_iter`` steps at some point (a state update that
    has no attracting fixed point for frozen θ).
    """
    loss = check_loss(loss)
    r = as_rule("rule", rule)
    T = finite_matrix("thetas", thetas, loss.dim)
    n, d = T.shape
    S = r.state_size(d)
    if S == 0:
        return np.zeros((n, 0))
    G = np.stack([np.asarray(loss.grad(th), float) for th in T])
    if r.curvature_k:
        C = np.stack([r._exact_curvature(loss, th) for th in T])
    else:
        C = np.zeros((n, 1))
    states = np.stack([np.asarray(r.init_state(th), float) for th in T])
    args = (T, states, G, C, np.asarray(r.deterministic_hyper(), float), np.int64(10**9), int(max_iter), float(tol))
    kern = _frozen_kernel_for(r.step_fn)
    ok = kern(*args) if kern is not None else _frozen_state_kernel(r.step_fn, *args)
    if not np.all(ok):
        bad = np.flatnonzero(~ok)
        raise ValueError(f"state='fixed_point': the state update of {type(r).__name__} with θ held fixed did "
                         f"not settle within {max_iter} steps at {bad.size} of {n} points (first at θ = "
                         f"{T[bad[0]].tolist()}); pass state='zero', 'init' or an explicit state array")
    return states


def _slice_states(loss, r, thetas, state, shape):
    """(n, S) states of the slice for the grid points ``thetas`` (n, 2) (see the module docstring)."""
    n = thetas.shape[0]
    S = r.state_size(loss.dim)
    if S == 0:
        if state is not None:
            raise ValueError(f"state must be None for {type(r).__name__}: it carries no optimizer state, "
                             "so the θ-plane is its whole phase space")
        return None
    if state is None:
        raise ValueError(f"{type(r).__name__} carries optimizer state of size {S}, so the θ-plane is only a "
                         f"slice of its phase space: pass state='zero', 'init' (rule.init_state), 'fixed_point' "
                         f"(the state's own fixed point for frozen θ) or an array of shape ({S},) or "
                         f"{shape + (S,)} to say which slice")
    if isinstance(state, str):
        state = choice("state", state, STATE_CHOICES)
        if state == "zero":
            return np.zeros((n, S))
        if state == "init":
            return np.stack([np.asarray(r.init_state(th), float) for th in thetas])
        return frozen_state(loss, r, thetas)
    a = np.asarray(state, dtype=float) if not isinstance(state, (bytes, dict)) else None
    if a is None or a.dtype.kind not in "fiu":
        raise TypeError(f"state must be 'zero', 'init', 'fixed_point' or an array, got {type(state).__name__}")
    if a.shape == (S,):
        a = np.broadcast_to(a, (n, S))
    elif a.shape == shape + (S,):
        a = a.reshape(n, S)
    else:
        raise ValueError(f"state array must have shape ({S},) or {shape + (S,)} for {type(r).__name__} on this "
                         f"grid, got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError("state must be finite (no NaN or inf)")
    return np.ascontiguousarray(a, dtype=float)


@dataclass
class VectorField:
    """X, Y (ny, nx) grid coordinates; U, V (ny, nx) the displacement F(θ) − θ (its θ-part).

    ``state`` (ny, nx, S) is the optimizer state of the slice the field was taken on, or None
    for a stateless rule (then the field is the exact phase portrait of the map)."""

    X: np.ndarray
    Y: np.ndarray
    U: np.ndarray
    V: np.ndarray
    state: np.ndarray | None = None

    @property
    def magnitude(self) -> np.ndarray:
        return np.hypot(self.U, self.V)


def displacement_field(loss, rule, grid, *, state=None, t: int | None = None) -> VectorField:
    """D(θ) = F(θ) − θ of ``rule`` (a GD step size or a Rule) on ``grid`` = (xs, ys).

    For a stateless rule F is the map on θ. For a rule with state, ``state`` ("zero", "init",
    "fixed_point" or an array; see the module docstring) picks the slice s = s(θ), and
    D(θ) = θ-part of F(θ, s(θ)) − θ: one step of the full map from the slice. The slice is
    not invariant under F (the next state is not s(θ')), so D is not the velocity of the
    dynamics on the plane. Heavy-ball (b ← βb + ∇L, θ ← θ − ηb): ``"zero"`` gives −η∇L(θ)
    (GD's field), ``"fixed_point"`` gives −η∇L(θ)/(1−β).

    ``t`` is the step number of the step taken: None (default) is the map F of the analysis,
    t → ∞ as in :meth:`eosdyn.rules.Rule.map` (no bias correction left); ``t=1`` is the
    first step of a run. It matters only for rules whose step depends on t (Adam's bias
    correction: from the ``"fixed_point"`` state m = ∇L, v = ∇L² the t → ∞ step is
    −η∇L/(|∇L| + ε) per coordinate).
    """
    loss, r = _plane(loss, rule)
    t0 = 10**9 - 1 if t is None else nonneg_int("t", t, minimum=1) - 1
    xs, ys = _grid(grid)
    X, Y = np.meshgrid(xs, ys)
    starts = np.column_stack([X.ravel(), Y.ravel()])
    s0 = _slice_states(loss, r, starts, state, X.shape)
    out, _, _ = run_rules(loss, [r] * starts.shape[0], starts, 1, 1, states0=s0, blowup=np.inf, t0=t0)
    D = out[:, 0, :] - starts
    st = None if s0 is None else s0.reshape(X.shape + (s0.shape[1],)).copy()
    return VectorField(X=X, Y=Y, U=D[:, 0].reshape(X.shape), V=D[:, 1].reshape(X.shape), state=st)


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


def nullclines(loss, rule, grid, *, state=None, t: int | None = None) -> Nullclines:
    """Zero contours of the displacement's components on ``grid`` (marching squares, contourpy).

    For a rule with state these are the nullclines of the slice's one-step displacement
    (``state`` as in :func:`displacement_field`): for heavy-ball at ``"zero"`` or
    ``"fixed_point"`` they are GD's (∂L/∂x = 0, ∂L/∂y = 0), since D ∝ −∇L on both slices.
    ``t`` as in :func:`displacement_field`.
    """
    f = displacement_field(loss, rule, grid, state=state, t=t)
    xs, ys = f.X[0], f.Y[:, 0]
    return Nullclines(u_zero=_contour0(xs, ys, f.U), v_zero=_contour0(xs, ys, f.V), field=f)


BASIN_DIVERGED = -1
BASIN_UNDECIDED = -2


def basins(loss, lr, grid, minima, steps: int = 1000, tol: float = 1e-6, blowup: float = 1e6, *, state=None):
    """Basin labels on a grid: the index of the minimum each start reaches.

    Parameters
    ----------
    lr : GD step size or a Rule.
    grid : (xs, ys).
    minima : (k, 2) the candidate limits.
    steps : iterations per start.
    tol : a start is in basin i if after ``steps`` it lies within tol·max(1, ‖m_i‖) of
        minimum i (the nearest one).
    blowup : |θ| beyond this counts as diverged.
    state : for a rule with state, the slice of starts z₀ = (θ, s(θ)) ("zero", "init",
        "fixed_point" or an array; see the module docstring); must be None for a stateless
        rule. The full map F is iterated from each z₀ and only θ is compared with the
        minima, so the labels are the basins of F on that slice of initial conditions:
        with ``"init"`` (zero velocity for heavy-ball) exactly what ``eosdyn.simulate`` from θ
        reaches.

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
    s0 = _slice_states(loss, r, starts, state, X.shape)
    out, _, div = run_rules(loss, [r] * starts.shape[0], starts, steps, 1, states0=s0,
                            blowup=positive("blowup", blowup))
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


#: default relative blow-up of :func:`orbits`: |θᵢ| ≥ ORBIT_BLOWUP_FACTOR·(1 + max|θ₀|) is divergence
ORBIT_BLOWUP_FACTOR = 1e3


@dataclass
class OrbitsResult:
    """Orbits with their divergence flags (``orbits(..., full_output=True)``).

    ``theta`` (n, steps + 1, d): θ_0 … θ_steps of each start, NaN from the first state that
    failed the divergence check on; ``diverged`` (n,) bool; ``diverged_at`` (n,) that state's
    index s (θ_s is the first NaN row) or −1; ``blowup`` the bound that was used."""

    theta: np.ndarray
    diverged: np.ndarray
    diverged_at: np.ndarray
    blowup: float


def default_orbit_blowup(starts) -> float:
    """ORBIT_BLOWUP_FACTOR·(1 + max over starts and coordinates of |θ₀|) = 1e3·(1 + ‖θ₀‖∞)."""
    S = np.asarray(starts, float)
    return float(ORBIT_BLOWUP_FACTOR * (1.0 + (np.abs(S).max() if S.size else 0.0)))


def orbits(loss, lr, starts, steps: int, blowup: float | None = None, *, curvature: str = "rule",
           seed: int = 0, full_output: bool = False):
    """Iterates θ_0 … θ_steps of each start: (n, steps + 1, d); NaN from a divergence on.

    ``lr`` is GD's step size or any Rule (stateful rules start from ``init_state`` and the full
    map on (θ, state) is iterated; what is returned is the **projection of each orbit onto θ** —
    the state is not returned); its noise is off. Works in any dimension, not only 2-D.

    **Divergence** is the simulator's one rule (:mod:`eosdyn.engine.core`): state s fails when
    some |θᵢ| ≥ ``blowup`` or θ, ∇L(θ) is not finite; the orbit is NaN from θ_s on. The default
    ``blowup=None`` is relative to the starts, 1e3·(1 + max|θ₀|) (:func:`default_orbit_blowup`),
    so a diverging orbit stops within three decades of where it began instead of growing to
    ~1e67 and flattening a plot's axes (``eosdyn.simulate``'s absolute 1e100 is for runs, where
    only the flag matters). Pass a float for an absolute bound (``np.inf``: only non-finite
    values count). ``full_output=True`` returns an :class:`OrbitsResult` with the flags.

    ``curvature`` says which map is iterated for a curvature-aware rule (EoS-Ada, DCAO):

    - ``"rule"`` (default): the rule's own probe schedule (its estimator, refreshed every
      ``curvature_every`` steps, random Lanczos starts drawn from the stream (seed, i)),
      so orbit i is θ of ``eosdyn.simulate(loss, rule, starts[i], steps, seed=seed,
      stream_index=i, blowup=blowup)`` for a noise-free rule, bit for bit;
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
    if blowup is None:
        bound = default_orbit_blowup(S)
    else:
        if isinstance(blowup, bool) or not isinstance(blowup, (int, float, np.floating, np.integer)):
            raise TypeError(f"blowup must be None (relative default) or a number > 0, got {type(blowup).__name__}")
        bound = float(blowup)
        if not bound > 0:  # also rejects NaN; inf is allowed
            raise ValueError(f"blowup must be > 0 (or np.inf, or None for the relative default), got {blowup!r}")
    out, _, div = run_rules(loss, [r] * S.shape[0], S, steps, steps + 1, blowup=bound, curvature=curvature,
                            seed=seed_value(seed))
    if full_output:
        return OrbitsResult(theta=out, diverged=div >= 0, diverged_at=div, blowup=bound)
    return out
