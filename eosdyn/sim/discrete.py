"""`simulate` (one trajectory, full record) and `ensemble` (n trajectories, decimated).

Both run the kernels of :mod:`eosdyn.sim.kernels` (``ensemble`` picks the blocked,
SIMD-across-trajectories one where it applies); see that module for the recording and
divergence conventions.
"""
from __future__ import annotations

import time

import numpy as np

from .._validate import choice, finite_matrix, finite_vector, nonneg_int, positive
from ..losses.base import Loss
from ..rules.base import Rule
from .kernels import BLOCK, ensemble_kernel
from .results import EnsembleResult, Trajectory


def _check(loss, rule, steps, record_every, seed):
    if not isinstance(loss, Loss):
        raise TypeError(f"loss must be an eosdyn Loss, got {type(loss).__name__}")
    if not isinstance(rule, Rule):
        raise TypeError(f"rule must be an eosdyn Rule (e.g. eosdyn.rules.GD(lr)), got {type(rule).__name__}")
    steps = nonneg_int("steps", steps)
    record_every = nonneg_int("record_every", record_every, minimum=1)
    seed = nonneg_int("seed", seed)
    return steps, record_every, seed


KERNELS = ("auto", "blocked", "trajectory")


def _blocked_unsupported(loss, rule, ck):
    """Why the blocked kernel cannot run this (loss, rule) pair, or '' if it can."""
    why = []
    if getattr(loss, "grad_block_fn", None) is None:
        why.append(f"{type(loss).__name__} has no grad_block_fn")
    if getattr(rule, "step_block_fn", None) is None:
        why.append(f"{type(rule).__name__} has no step_block_fn")
    if ck > 0:
        why.append(f"{type(rule).__name__} probes the curvature during the run")
    return "; ".join(why)


def _run(loss, rule, thetas, steps, record_every, seed, index_offset, track_sharpness,
         record_theta, full_series, blowup, states=None, kernel="trajectory"):
    n, d = thetas.shape
    R = steps // record_every + 1
    S = rule.state_size(d)
    if states is None:
        states = np.zeros((n, S))
        if type(rule).init_state is not Rule.init_state:  # the default state is zeros
            for i in range(n):
                states[i] = rule.init_state(thetas[i])
    cmethod, ck = rule.resolved_curvature(d)
    pre = bool(rule.preconditioned)

    def arr(on, *shape):
        return np.full((n,) + (shape if on else (0,) * len(shape)), np.nan)

    out_theta = arr(record_theta, R, d)
    out_loss = np.full((n, R), np.nan)
    out_gn = arr(full_series, R)
    out_sharp = arr(track_sharpness, R)
    out_l2 = arr(track_sharpness and full_series, R)
    out_lr = np.full((n, R), np.nan)
    out_psharp = arr(track_sharpness and pre, R)
    diverged_at = np.full(n, -1, np.int64)
    value_fn, grad_into_fn, hess_fn, hvp_fn, params = loss.kernel_functions()
    why = _blocked_unsupported(loss, rule, ck)
    if kernel == "blocked" and why:
        raise ValueError(f"kernel='blocked' cannot run this pair: {why}; use kernel='auto' or 'trajectory'")
    used = "blocked" if (kernel == "blocked" or (kernel == "auto" and not why and n > 1)) else "trajectory"
    t0 = time.perf_counter()
    if used == "blocked":
        run = ensemble_kernel(value_fn, loss.grad_block_fn, hess_fn, rule.step_fn, rule.step_block_fn,
                              rule.precond_fn, kind="blocked")
        run(params, rule.hyper, thetas, states, steps, record_every, bool(track_sharpness), pre,
            float(blowup), BLOCK, out_theta, out_loss, out_gn, out_sharp, out_l2, out_lr, out_psharp,
            diverged_at)
    else:
        run = ensemble_kernel(value_fn, grad_into_fn, hess_fn, hvp_fn, rule.step_fn, rule.precond_fn)
        run(params, rule.hyper, thetas, states, steps, record_every, np.uint64(seed),
            np.uint64(index_offset), cmethod, ck, rule.curvature_every, rule.lanczos_steps,
            rule.hutchinson_samples, bool(track_sharpness), pre, float(blowup),
            out_theta, out_loss, out_gn, out_sharp, out_l2, out_lr, out_psharp, diverged_at)
    wall = time.perf_counter() - t0
    step_idx = np.arange(R) * record_every
    return dict(thetas=thetas, states=states, step=step_idx, theta=out_theta, loss=out_loss,
                grad_norm=out_gn, sharpness=out_sharp, lambda2=out_l2, lr=out_lr,
                psharp=out_psharp, diverged_at=diverged_at, wall=wall, kernel=used)


def _params(loss, rule, steps, record_every, seed, **more):
    p = {"loss": type(loss).__name__, "dim": loss.dim, "rule": type(rule).__name__,
         "steps": steps, "record_every": record_every, "seed": seed}
    p.update({f"rule_{k}": v for k, v in rule.hyperparameters().items()})
    p.update(more)
    return p


def simulate(loss, rule, theta0, steps, record_every=1, seed=0, *, track_sharpness=True,
             stream_index=0, blowup=1e100, record_theta=True) -> Trajectory:
    """Run the discrete map θ_{t+1} = F(θ_t) of ``rule`` on ``loss`` from ``theta0``.

    Parameters
    ----------
    loss : eosdyn.losses.Loss
    rule : eosdyn.rules.Rule
    theta0 : (d,) array, finite
    steps : int >= 0
        Number of updates.
    record_every : int >= 1
        Record the state after every k-th update (records at 0, k, 2k, … ≤ steps).
    seed : int >= 0
        Seed of the random stream (used by stochastic rules and random probes).
        The stream of a run is keyed on (seed, stream_index).
    track_sharpness : bool
        Record λ₁ and λ₂ of the Hessian (exact eigh) and, for preconditioned
        rules, λ_max(P⁻¹H), at every record.
    blowup : float
        A trajectory is declared diverged when |θᵢ| ≥ blowup or a loss/gradient
        value is not finite; it stops there and later records are NaN.

    Returns
    -------
    Trajectory
        ``step``, ``theta``, ``loss``, ``grad_norm``, ``sharpness``, ``lambda2``,
        ``lr`` (the step size in force at each record), ``preconditioned_sharpness``,
        ``diverged``, ``diverged_at``; ``.to_xarray()``.
    """
    steps, record_every, seed = _check(loss, rule, steps, record_every, seed)
    stream_index = nonneg_int("stream_index", stream_index)
    blowup = positive("blowup", blowup)
    theta = finite_vector("theta0", theta0, loss.dim)[None, :].copy()
    out = _run(loss, rule, theta, steps, record_every, seed, stream_index, track_sharpness,
               record_theta, True, blowup)
    div = int(out["diverged_at"][0])
    pre = rule.preconditioned and track_sharpness
    return Trajectory(
        step=out["step"], loss=out["loss"][0],
        theta=out["theta"][0] if record_theta else None,
        grad_norm=out["grad_norm"][0],
        sharpness=out["sharpness"][0] if track_sharpness else None,
        lambda2=out["lambda2"][0] if track_sharpness else None,
        lr=out["lr"][0],
        preconditioned_sharpness=out["psharp"][0] if pre else None,
        diverged=div >= 0, diverged_at=div, final_theta=out["thetas"][0],
        params=_params(loss, rule, steps, record_every, seed, stream_index=stream_index,
                       wall_time=out["wall"]),
    )


def ensemble(loss, rule, theta0s, steps, record_every=1, seed=0, *, record_theta=False,
             track_sharpness=True, blowup=1e100, kernel="auto") -> EnsembleResult:
    """Run n trajectories of the map in parallel (numba ``prange``), recording decimated statistics.

    ``theta0s`` has shape (n, d). Trajectory i uses the random stream (seed, i)
    and is bit-identical to ``simulate(..., seed=seed, stream_index=i)``, for any
    number of threads. Records every ``record_every`` steps: ``loss``, ``lr`` and
    (if ``track_sharpness``) ``sharpness`` as (n, R) arrays; full paths θ (n, R, d)
    only with ``record_theta=True``. A trajectory that overflows or produces NaN
    is flagged in ``diverged``/``diverged_at`` and stopped; its later records are
    NaN and :meth:`EnsembleResult.mean` ignores them.

    ``kernel`` picks the compiled loop; the results are bit-identical either way:

    - ``"trajectory"``: one trajectory per task, any loss and rule;
    - ``"blocked"``: blocks of trajectories in structure-of-arrays layout, with the
      gradient and the step vectorised (SIMD) across the block. Needs a loss with
      ``grad_block_fn`` (Quadratic, ScalarNet, from_sympy losses, …) and a rule with
      ``step_block_fn`` and no in-run curvature probe (GD, HeavyBall, Nesterov, NormalizedGD,
      Adam);
      raises ValueError otherwise;
    - ``"auto"`` (default): blocked where possible, else trajectory.

    ``params["kernel"]`` of the result says which one ran.
    """
    steps, record_every, seed = _check(loss, rule, steps, record_every, seed)
    blowup = positive("blowup", blowup)
    kernel = choice("kernel", kernel, KERNELS)
    thetas = finite_matrix("theta0s", theta0s, loss.dim).copy()
    out = _run(loss, rule, thetas, steps, record_every, seed, 0, track_sharpness,
               record_theta, False, blowup, kernel=kernel)
    div = out["diverged_at"]
    return EnsembleResult(
        step=out["step"], final_theta=out["thetas"], loss=out["loss"],
        sharpness=out["sharpness"] if track_sharpness else None,
        diverged=div >= 0, diverged_at=div, lr=out["lr"],
        theta=out["theta"] if record_theta else None,
        params=_params(loss, rule, steps, record_every, seed, n=thetas.shape[0],
                       wall_time=out["wall"], kernel=out["kernel"]),
    )
