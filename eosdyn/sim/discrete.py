"""`simulate` (one trajectory, full record) and `ensemble` (n trajectories, decimated).

Both are the stepping core (:mod:`eosdyn.engine`) with a record: :func:`simulate` records
everything at every ``record_every`` steps, :func:`ensemble` the loss, the step size and
the sharpness (and θ on request) and picks the blocked, SIMD-across-trajectories kernel
where it applies. See :mod:`eosdyn.engine.core` for the recording, divergence and noise
conventions.
"""
from __future__ import annotations

import numpy as np

from .._validate import choice, finite_matrix, finite_vector, nonneg_int, positive, seed_value, step_count
from ..engine import RunInterrupted, run_map
from ..losses.base import Loss
from ..rules.base import Rule
from .results import EnsembleResult, Trajectory

KERNELS = ("auto", "blocked", "trajectory")


def check_run(loss, rule, steps, record_every, seed):
    """The checks every entry point of the map shares: types, step count, stride, seed."""
    if not isinstance(loss, Loss):
        raise TypeError(f"loss must be an eosdyn Loss, got {type(loss).__name__}")
    if not isinstance(rule, Rule):
        raise TypeError(f"rule must be an eosdyn Rule (e.g. eosdyn.rules.GD(lr)), got {type(rule).__name__}")
    steps = step_count("steps", steps)
    record_every = nonneg_int("record_every", record_every, minimum=1)
    return steps, record_every, seed_value(seed)


#: the dimension up to which the simulators track the sharpness by default
TRACK_MAX_DIM = 64


def _finished(what, out, steps, result):
    """``result``, or RunInterrupted carrying it if Ctrl-C stopped the run (its records from there
    on are NaN, and ``params["interrupted_after_step"]`` says where it stopped)."""
    if out.interrupted:
        result.params["interrupted_after_step"] = out.steps_done - 1
        raise RunInterrupted(f"{what} interrupted after {out.steps_done - 1} of {steps} steps; "
                             "the records so far are in exc.partial", result)
    return result


def default_tracking(track_sharpness, loss) -> bool:
    """``track_sharpness`` with None meaning "for d ≤ 64" (every simulator's default)."""
    return loss.dim <= TRACK_MAX_DIM if track_sharpness is None else bool(track_sharpness)


def noise_plan(noise, loss, theta0, convention="sgd"):
    """The core's :class:`~eosdyn.engine.NoisePlan` of a noise model (None for no noise) under
    ``convention`` ("sgd" or "proposal", checked even without noise)."""
    from ..sde.noise import NoiseModel, noise_convention

    convention = noise_convention(convention)
    if noise is None:
        return None

    if not isinstance(noise, NoiseModel):
        raise TypeError(f"noise must be an eosdyn.sde noise model (Isotropic, ConstantMatrix, HessianAligned, "
                        f"CallableNoise, MinibatchNoise) or None, got {type(noise).__name__}")
    return noise.plan(loss, theta0, convention=convention)


def run_params(loss, rule, steps, record_every, seed, **more):
    """The ``params`` every result of the map carries."""
    p = {"loss": type(loss).__name__, "dim": loss.dim, "rule": type(rule).__name__,
         "steps": steps, "record_every": record_every, "seed": seed}
    p.update({f"rule_{k}": v for k, v in rule.hyperparameters().items()})
    p.update(more)
    return p


def _status_names(out):
    from ..engine.core import STATUS_NAMES

    return STATUS_NAMES.get(int(out.status[0]), "failed")


def simulate(loss, rule, theta0, steps, record_every=1, seed=0, *, track_sharpness=None,
             stream_index=0, blowup=1e100, record_theta=True, noise=None, convention="sgd",
             progress=None) -> Trajectory:
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
    seed : int in [0, 2**63)
        Seed of the random stream (used by stochastic rules, random probes and noise).
        The stream of a run is keyed on (seed, stream_index).
    track_sharpness : bool, optional
        Record λ₁ and λ₂ of the Hessian (exact eigh) and, for preconditioned
        rules, λ_max(P⁻¹H), at every record. Default: for d ≤ 64 (as in
        :func:`ensemble` and :func:`eosdyn.sde.simulate`).
    blowup : float
        A trajectory is declared diverged when |θᵢ| ≥ blowup or a loss/gradient
        value is not finite (or computing one raises); it stops there, its records
        from that step on are NaN and ``final_theta`` is the last state that passed.
    noise : an :mod:`eosdyn.sde` noise model, optional
        Adds c_t·B(θ_t)ξ_t to every step, η_t the step size in force (:mod:`eosdyn.engine.noise`).
    convention : {"sgd", "proposal"}
        The noise's per-step scale, as in :mod:`eosdyn.sde`: ``"sgd"`` (default) c_t = η_t,
        covariance η_t²Σ(θ_t) per step — SGD's scale, so ``MinibatchNoise(data, B)`` adds SGD's
        η²Σ_B (Li, Malladi & Arora, arXiv 2102.12470); ``"proposal"`` c_t = √η_t, covariance
        η_tΣ(θ_t) — the EoS-Ada proposal's dθ = −η∇L dt + √(ηΣ) dW (t in steps), whose
        stationary covariance is 1/η times larger. With GD either is the noisy GD map of
        :func:`eosdyn.sde.noisy_gd` under the same convention (equal up to rounding: noisy_gd
        folds η into Σ). Any other value raises ValueError.
    progress : callable(done, total), optional
        Called between the kernel calls a long run is cut into (states done, total).

    Returns
    -------
    Trajectory
        ``step``, ``theta``, ``loss``, ``grad_norm``, ``sharpness``, ``lambda2``,
        ``lr`` (the step size in force at each record), ``preconditioned_sharpness``,
        ``batch_loss`` (minibatch rules on a finite sum — :class:`eosdyn.rules.SGD` — else None:
        L_B(θ_s) on the batch that steps θ_s; ``loss`` is always the full loss L(θ_s)),
        ``diverged``, ``diverged_at``, ``status``; ``.to_xarray()``.

    Ctrl-C stops the run between kernel calls and raises
    :class:`eosdyn.engine.RunInterrupted`, whose ``partial`` is the Trajectory so far.
    """
    steps, record_every, seed = check_run(loss, rule, steps, record_every, seed)
    track_sharpness = default_tracking(track_sharpness, loss)
    stream_index = seed_value(stream_index, "stream_index")
    blowup = positive("blowup", blowup)
    theta = finite_vector("theta0", theta0, loss.dim)[None, :]
    pre = bool(rule.preconditioned and track_sharpness)
    batched = rule.minibatch(loss) is not None
    records = ["loss", "grad_norm", "lr"] + (["theta"] if record_theta else []) + (
        ["sharpness", "lambda2"] + (["psharp"] if pre else []) if track_sharpness else []) + (
        ["batch_loss"] if batched else [])
    out = run_map(loss, rule, theta, steps, record_every=record_every, records=records, seed=seed,
                  index0=stream_index, blowup=blowup, noise=noise_plan(noise, loss, theta[0], convention),
                  kernel="trajectory", progress=progress)
    rec = out.records
    div = int(out.fail_at[0]) if out.status[0] != 0 else -1
    tr = Trajectory(
        step=out.step, loss=rec["loss"][0],
        theta=rec["theta"][0] if record_theta else None,
        grad_norm=rec["grad_norm"][0],
        sharpness=rec["sharpness"][0] if track_sharpness else None,
        lambda2=rec["lambda2"][0] if track_sharpness else None,
        lr=rec["lr"][0],
        preconditioned_sharpness=rec["psharp"][0] if pre else None,
        batch_loss=rec["batch_loss"][0] if batched else None,
        diverged=div >= 0, diverged_at=div, final_theta=out.thetas[0], status=_status_names(out),
        params=run_params(loss, rule, steps, record_every, seed, stream_index=stream_index, wall_time=out.wall,
                          generated_kernel=out.generated,
                          noise=None if noise is None else repr(noise),
                          noise_convention=None if noise is None else convention),
    )
    return _finished("simulate", out, steps, tr)


def ensemble(loss, rule, theta0s, steps, record_every=None, seed=0, *, record_theta=False,
             track_sharpness=None, blowup=1e100, kernel="auto", noise=None, convention="sgd",
             progress=None) -> EnsembleResult:
    """Run n trajectories of the map in parallel (:mod:`eosdyn.engine.threads`), recording decimated statistics.

    ``theta0s`` has shape (n, d), n ≥ 1. Trajectory i uses the random stream (seed, i)
    and is bit-identical to ``simulate(..., seed=seed, stream_index=i)``, for any
    number of threads. Records every ``record_every`` steps (default ``steps // 100``, at
    least 1, as in :func:`eosdyn.sde.simulate`): ``loss``, ``lr`` and (if
    ``track_sharpness``, by default for d ≤ 64) ``sharpness`` as (n, R) arrays; full paths
    θ (n, R, d) only with ``record_theta=True``; for :class:`eosdyn.rules.SGD` on a finite sum also
    ``batch_loss`` (n, R), the loss of the batch that steps each recorded state. A trajectory
    that overflows, produces NaN or raises is flagged in ``diverged``/``diverged_at``/``status``
    and stopped; its records from then on are NaN and :meth:`EnsembleResult.mean` ignores them;
    every other trajectory is computed. ``noise``, ``convention`` and ``progress`` are as in
    :func:`simulate`.

    ``kernel`` picks the compiled loop; the results are bit-identical either way:

    - ``"trajectory"``: one trajectory per task, any loss and rule;
    - ``"blocked"``: blocks of trajectories in structure-of-arrays layout, with the
      gradient and the step vectorised (SIMD) across the block. Needs a loss with
      ``grad_block_fn`` (Quadratic, ScalarNet, from_sympy losses, …) and a rule with
      ``step_block_fn`` and no in-run curvature probe (GD, HeavyBall, Nesterov, NormalizedGD,
      Adam), and no noise; raises ValueError otherwise;
    - ``"auto"`` (default): blocked where possible, else trajectory.

    ``params["kernel"]`` of the result says which one ran.
    """
    if record_every is None:
        record_every = max(1, nonneg_int("steps", steps) // 100)
    steps, record_every, seed = check_run(loss, rule, steps, record_every, seed)
    track_sharpness = default_tracking(track_sharpness, loss)
    blowup = positive("blowup", blowup)
    kernel = choice("kernel", kernel, KERNELS)
    thetas = finite_matrix("theta0s", theta0s, loss.dim)
    if thetas.shape[0] == 0:
        raise ValueError("theta0s must hold at least one start: shape (n, d) with n >= 1, got (0, d)")
    batched = rule.minibatch(loss) is not None
    records = ["loss", "lr"] + (["theta"] if record_theta else []) + (["sharpness"] if track_sharpness else []) + (
        ["batch_loss"] if batched else [])
    out = run_map(loss, rule, thetas, steps, record_every=record_every, records=records, seed=seed,
                  blowup=blowup, noise=noise_plan(noise, loss, thetas[0], convention), kernel=kernel,
                  progress=progress)
    rec = out.records
    div = np.where(out.status != 0, out.fail_at, -1)
    res = EnsembleResult(
        step=out.step, final_theta=out.thetas, loss=rec["loss"],
        sharpness=rec["sharpness"] if track_sharpness else None,
        diverged=out.status != 0, diverged_at=div, lr=rec["lr"],
        theta=rec["theta"] if record_theta else None, status=out.status,
        batch_loss=rec["batch_loss"] if batched else None,
        params=run_params(loss, rule, steps, record_every, seed, n=thetas.shape[0], wall_time=out.wall,
                          kernel=out.kernel, generated_kernel=out.generated,
                          noise=None if noise is None else repr(noise),
                          noise_convention=None if noise is None else convention),
    )
    return _finished("ensemble", out, steps, res)
