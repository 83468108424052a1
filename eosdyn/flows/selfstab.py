r"""Self-stabilization (Damian, Nichani & Lee, "Self-Stabilization: The Implicit Bias of
Gradient Descent at the Edge of Stability", ICLR 2023, arXiv 2209.15594).

GD at the edge follows the *constrained trajectory* θ†: projected GD onto

    M = {θ : S(θ) ≤ 2/η,  ∇L(θ)·u(θ) = 0},

with S = λ₁(∇²L) and u its eigenvector (paper §4, Eq. (5)). Around it, with v = θ − θ†,
x = u·v, y = ∇S⊥·v, α = −∇L·∇S⊥ (the progressive-sharpening rate) and β = ‖∇S⊥‖²
(∇S⊥ the part of ∇S = D³L[u, u] orthogonal to u), the dynamics reduce to (paper §4.1)

    x_{t+1} = −(1 + η y_t) x_t,     y_{t+1} = y_t + η(α_t − β_t x_t²/2),

so that S(θ_t) ≈ 2/η + y_t, L(θ_t) ≈ L(θ†_t) + x_t²/η, and the mean of x² over whole
cycles is δ² = 2α/β (the central flow's σ²).

The stochastic sharpness gap (Liao, Kolomvaki & Kyrillidis, arXiv 2604.21016): noise of
variance η²σ_u² per step along u moves the sharpness's mean to 2/η − ΔS with
ΔS = η·β·σ_u²/(4α) (:func:`stochastic_sharpness_gap`).
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from .._validate import finite_vector, nonneg_int, positive, seed_value, step_count
from ..losses.base import Loss
from ..sim.results import Trajectory

__all__ = ["self_stabilization", "project_to_stable_set", "stochastic_sharpness_gap", "reduced_system",
           "whole_cycle_mean"]


@njit(cache=True)
def reduced_step(x, y, eta, alpha, beta, kick):
    """One step of the reduced system (module docstring) plus an additive ``kick`` along u:
    (x, y) ↦ (−(1 + ηy)x + kick, y + η(α − βx²/2)). The one place the formula lives."""
    return -(1.0 + eta * y) * x + kick, y + eta * (alpha - beta * x * x / 2.0)


@njit(cache=True)
def _reduced_run(eta, alpha, beta, x, y, kicks, out_x, out_y):
    out_x[0], out_y[0] = x, y
    for t in range(kicks.shape[0]):
        x, y = reduced_step(x, y, eta, alpha, beta, kicks[t])
        out_x[t + 1], out_y[t + 1] = x, y
        if not (np.isfinite(x) and np.isfinite(y)):
            return t + 1
    return -1


def reduced_system(lr, alpha, beta, steps, *, x0, y0=0.0, noise_var=0.0, seed=0):
    """Iterate the reduced self-stabilization system with constant α, β, optionally noisy:

        x_{t+1} = −(1 + η y_t) x_t + η σ_u ξ_t,     y_{t+1} = y_t + η(α − β x_t²/2),

    ξ_t ~ N(0, 1) from eosdyn's keyed stream ``seed`` (noise of variance η²σ_u² = η²·``noise_var``
    per step along u, the setting of Liao, Kolomvaki & Kyrillidis, arXiv 2604.21016). y is the
    sharpness's distance from the edge, S ≈ 2/η + y. Returns (x, y), arrays of ``steps`` + 1
    states, NaN from a non-finite state on (the run stops there).

    Stationarity of y gives E[x²] = 2α/β exactly, with or without noise; stationarity of x² gives
    E[(2y + ηy²) x²] = −ησ_u² exactly. Where y and x² decorrelate and ηy² is negligible, the
    second is E[y] = −ηβσ_u²/(4α), :func:`stochastic_sharpness_gap`.
    """
    from .._rng import normals

    eta = positive("lr", lr)
    alpha = positive("alpha", alpha)
    beta = positive("beta", beta)
    steps = nonneg_int("steps", steps)
    noise_var = positive("noise_var", noise_var, allow_zero=True)
    seed = seed_value(seed)
    x0 = float(finite_vector("x0", [x0], 1)[0])
    y0 = float(finite_vector("y0", [y0], 1)[0])
    kicks = eta * math.sqrt(noise_var) * normals(seed, 0, steps) if noise_var > 0 else np.zeros(steps)
    xs, ys = np.full(steps + 1, np.nan), np.full(steps + 1, np.nan)
    _reduced_run(eta, alpha, beta, x0, y0, kicks, xs, ys)
    return xs, ys


def _top(loss, theta):
    H = loss.hess(theta)
    lam, V = np.linalg.eigh(H)
    return float(lam[-1]), V[:, -1]


def _geometry(loss, theta):
    """S, u, g = ∇L, ∇S, ∇S⊥ (orthogonal to u) at θ."""
    S, u = _top(loss, theta)
    g = loss.grad(theta)
    dS = loss.third_derivative(theta, u, u)
    dS_perp = dS - u * float(u @ dS)
    return S, u, g, dS, dS_perp


def project_to_stable_set(loss, lr, theta, *, iterations=5):
    """Linearised projection of θ onto M = {S ≤ 2/η, ∇L·u = 0} (paper §4, Eq. (5)).

    Each iteration applies the Newton step along u that zeroes ∇L·u to first order,
    −u(u·∇L)/S, and the step along ∇S⊥ that brings S down to 2/η to first order,
    −max(0, S − 2/η)·∇S⊥/‖∇S⊥‖². ``loss`` is a toy :class:`Loss`, or any callable
    θ ↦ (S, u, ∇L, ∇S) (the torch side passes one).
    """
    eta = positive("lr", lr)
    geometry = loss if callable(loss) and not isinstance(loss, Loss) else (lambda th: _geometry(loss, th)[:4])
    th = np.array(theta, dtype=np.float64)
    for _ in range(iterations):
        S, u, g, dS = geometry(th)
        dS_perp = dS - u * float(u @ dS)
        if S <= 0.0:
            raise ValueError(f"the projection onto {{S ≤ 2/η}} needs S > 0, got S = {S:.3g}")
        th = th - u * float(u @ g) / S
        excess = S - 2.0 / eta
        nb = float(dS_perp @ dS_perp)
        if excess > 0.0 and nb > 0.0:
            th = th - excess * dS_perp / nb
    return th


def self_stabilization(loss, lr, theta0, steps, *, projections=3) -> Trajectory:
    r"""GD from θ₀ beside its self-stabilization prediction (module docstring).

    Runs, for ``steps`` steps: GD θ_t; the constrained trajectory θ†_t (θ†₀ = proj(θ₀),
    θ†_{t+1} = proj(θ†_t − η∇L(θ†_t)), ``projections`` linearised projections per step);
    and the predicted (x_t, y_t) of the two-dimensional reduced system, started from GD's
    own (x, y) at the onset (the first step at which θ† is on the edge S(θ†) = 2/η; the
    reduced system is derived there, so ``x_pred``/``y_pred`` are NaN before it) and
    driven by α_t, β_t measured along θ†.

    Returns a Trajectory: ``theta`` is GD's iterate, ``loss`` and ``sharpness`` GD's, and
    ``extra`` holds ``theta_dagger``, ``sharpness_dagger``, ``loss_dagger``, ``alpha``, ``beta``,
    ``delta_sq`` (2α/β), ``x_pred``, ``y_pred`` (the reduced system), ``x_gd``, ``y_gd``
    (GD's own u·(θ−θ†), ∇S⊥·(θ−θ†)) and ``predicted_loss`` (L(θ†) + x_pred²/η).

    The loss needs exact third derivatives (:meth:`eosdyn.losses.Loss.third_derivative`).
    """
    if not isinstance(loss, Loss):
        raise TypeError(f"loss must be an eosdyn Loss, got {type(loss).__name__}")
    eta = positive("lr", lr)
    steps = step_count("steps", steps)
    projections = nonneg_int("projections", projections, minimum=1)
    th = finite_vector("theta0", theta0, loss.dim).copy()
    try:
        loss.third_derivative(th, np.eye(loss.dim)[0], np.eye(loss.dim)[0])
    except TypeError as exc:
        raise TypeError(f"self_stabilization needs third derivatives: {exc}") from None
    ops = _LossOps(loss)
    return run_self_stabilization(ops, eta, th, steps, projections, {"loss": repr(loss)})


class _LossOps:
    """What :func:`run_self_stabilization` needs, from a toy loss (dense Hessians)."""

    def __init__(self, loss):
        self.loss, self.dim = loss, loss.dim

    def value(self, th):
        return self.loss.value(th)

    def grad(self, th):
        return self.loss.grad(th)

    def sharpness(self, th, t):
        return self.loss.sharpness(th)

    def geometry(self, th):
        return _geometry(self.loss, th)[:4]


def run_self_stabilization(ops, eta, th, steps, projections, params) -> Trajectory:
    """The loop of :func:`self_stabilization` over ``ops`` (``dim``, ``value``, ``grad``,
    ``sharpness(θ, t)`` (NaN allowed), ``geometry(θ) -> (S, u, ∇L, ∇S)``): toy losses and torch
    models (:func:`eosdyn.bridge.self_stabilization`) share it."""
    R = steps + 1
    d = ops.dim
    names = ("loss", "sharpness", "loss_dagger", "sharpness_dagger", "alpha", "beta", "delta_sq",
             "x_pred", "y_pred", "x_gd", "y_gd", "predicted_loss")
    rec = {n: np.full(R, np.nan) for n in names}
    theta = np.full((R, d), np.nan)
    dagger = np.full((R, d), np.nan)
    td = project_to_stable_set(ops.geometry, eta, th, iterations=projections)
    x = y = None
    u_ref = None
    stopped, stopped_at = False, -1
    status, diverged_at = "ok", -1
    for t in range(R):
        try:
            S, u, g, dS = ops.geometry(td)
            dS_perp = dS - u * float(u @ dS)
            alpha = -float(g @ dS_perp)
            beta = float(dS_perp @ dS_perp)
            if u_ref is not None and float(u @ u_ref) < 0.0:
                u = -u                       # eigh's sign is arbitrary: keep u continuous
            u_ref = u
            v = th - td
            xg, yg = float(u @ v), float(dS_perp @ v)
            if x is None and (2.0 / eta) * (1.0 - 1e-9) <= S:
                x, y = xg, yg                # the reduced system holds once θ† is on the edge
            theta[t], dagger[t] = th, td
            Lt = ops.value(th)
            Ld = ops.value(td)
            rec["loss"][t], rec["sharpness"][t] = Lt, ops.sharpness(th, t)
            rec["loss_dagger"][t], rec["sharpness_dagger"][t] = Ld, S
            rec["alpha"][t], rec["beta"][t] = alpha, beta
            rec["delta_sq"][t] = 2.0 * alpha / beta if beta > 0 else np.nan
            rec["x_gd"][t], rec["y_gd"][t] = xg, yg
            if x is not None and not stopped:
                rec["x_pred"][t], rec["y_pred"][t] = x, y
                rec["predicted_loss"][t] = Ld + x * x / eta
            if t == steps:
                break
            if x is not None and not stopped:
                x, y = reduced_step(x, y, eta, alpha, beta, 0.0)
                if not (math.isfinite(x) and math.isfinite(y) and abs(x) < 1e150):
                    # the reduced system is a local model: where it leaves its range (an overflow,
                    # possible off the exact toy), the prediction stops; GD and θ† go on
                    stopped, stopped_at = True, t + 1
            th = th - eta * ops.grad(th)
            td = project_to_stable_set(ops.geometry, eta, td - eta * ops.grad(td), iterations=projections)
            if not (np.all(np.isfinite(th)) and np.all(np.isfinite(td))):
                raise FloatingPointError("non-finite iterate")
        except (FloatingPointError, ValueError, np.linalg.LinAlgError, OverflowError) as exc:
            status, diverged_at = f"diverged: {exc}", t
            break
    extra = {k: rec[k] for k in names if k not in ("loss", "sharpness")}
    extra["theta_dagger"] = dagger
    last = diverged_at - 1 if diverged_at >= 0 else steps
    return Trajectory(step=np.arange(R), loss=rec["loss"], theta=theta, sharpness=rec["sharpness"],
                      diverged=diverged_at >= 0, diverged_at=diverged_at, extra=extra,
                      params={"flow": "self_stabilization", "lr": eta, "projections": projections,
                              "prediction_stopped_at": stopped_at, **params},
                      final_theta=theta[max(last, 0)].copy(), status=status)


def stochastic_sharpness_gap(lr, alpha, beta, noise_var):
    """ΔS = η·β·σ_u²/(4α): how far below 2/η the sharpness settles when noise of variance
    η²σ_u² per step acts along u (Liao, Kolomvaki & Kyrillidis, arXiv 2604.21016).

    The leading-order formula as the paper states it. It follows from the exact stationarity
    identity of the reduced system, E[(2y + ηy²)x²] = −ησ_u² with E[x²] = 2α/β, *if* y and x²
    decorrelate and ηy² is negligible (:func:`reduced_system`). Checked there (tests/test_flows.py;
    η = 0.01, α = β = 1, 3 seeds of 2·10⁶ steps): the formula is the large-noise limit. The
    mean of y is −ΔS plus a small extra shift from the cycle's own y–x² correlation and the ηy²
    term, a relative error of 12% at σ_u = 8 (ΔS = 0.16), 2.4% at 16 and 2.0% at 32; where ΔS
    is below that shift it is *not* a good estimate (σ_u ≤ 2 here: the mean of y stays near
    −0.028 against ΔS ≤ 0.01). The same held on the exact toy (η = 0.01, g = 0.5): 0.0135 and
    0.0265 measured at σ_u = 1 and 2 against 0.005 and 0.02.
    """
    eta = positive("lr", lr)
    alpha = positive("alpha", alpha)
    beta = positive("beta", beta, allow_zero=True)
    noise_var = positive("noise_var", noise_var, allow_zero=True)
    return eta * beta * noise_var / (4.0 * alpha)


def whole_cycle_mean(values, phase):
    """Mean of ``values`` over the whole cycles of ``phase``: from its first upward zero
    crossing to its last one (NaN if fewer than two). Returns (mean, number of cycles)."""
    values = np.asarray(values, dtype=np.float64)
    phase = np.asarray(phase, dtype=np.float64)
    if values.shape != phase.shape or values.ndim != 1:
        raise ValueError(f"values and phase must be 1-D of the same length, got {values.shape} and {phase.shape}")
    up = np.flatnonzero((phase[:-1] < 0.0) & (phase[1:] >= 0.0)) + 1
    if up.size < 2:
        return float("nan"), 0
    return float(np.mean(values[up[0]:up[-1]])), int(up.size - 1)
