r"""Gradient, stable and central flows (Cohen, Damian, Talwalkar, Kolter & Lee, ICLR 2025).

Time t is counted in optimizer steps. A rule the theory covers is written as a
preconditioned flow: the discrete step is w ← w − P(s)⁻¹∇L(w) with a diagonal
preconditioner P (GD: P = I/η; RMSProp: P = diag(√ν + ε)/η) and a state s with drift
ṡ = f(s, ∇L) (RMSProp: ν̇ = ((1−β₂)/β₂)(∇L^⊙2 − ν)). The oscillation at the edge is
w_t ≈ w(t) + Σ_a c_a u_a with the u_a the eigenvectors of the generalized problem
H u = λ P u (P-orthonormal, uᵀPu = 1), the edge being λ = 2; X = E[c cᵀ] (k × k).

* **Stable flow** (X = 0): ẇ = −P⁻¹∇L, ṡ = f(s, ∇L). For GD it is gradient flow.
* **Central flow**: averaging the step over the oscillation to second order,

      ẇ = −P⁻¹[∇L + ½ Σ_ab X_ab D³L[u_a, u_b]],
      ṡ = f(s, ∇L) + ½ Σ_ab X_ab D²_g f[H u_a, H u_b],

  where X solves, at every substep of length dt, the semidefinite complementarity
  problem that keeps every tracked eigenvalue from crossing the edge (paper §3–4,
  its Eq. for the multi-direction case):

      X ⪰ 0,  A(X) ⪰ 0,  ⟨X, A(X)⟩ = 0,
      A(X) = diag(2 − λ) + dt·[2 UᵀṖ(X)U − Ḣ_UU(X)],   Ḣ_UU(X)_ab = D³L[u_a, u_b]·ẇ(X),

  solved by :func:`eosdyn.flows.sdcp.solve_sdcp` (closed form for k = 1). For GD with
  one direction this is σ² = max(0, 2⟨−∇L, ∇S⟩/‖∇S‖²) on the edge S = 2/η (σ² = ηX).

Predictions that come with the flow (paper §3.3):
  time-averaged loss  L(w) + ½ Σ_a X_aa λ_a  (≈ L + tr X at the edge; L + tr Σ/η for GD),
  time-averaged ‖∇L‖²  ‖∇L(w)‖² + Σ_ab X_ab (Hu_a)·(Hu_b),
  the oscillation covariance Σ = U X Uᵀ (Euclidean; ``sigma_sq`` are its eigenvalues).

Covered: GD, RMSProp (Adam with β₁ = 0; the flow ignores bias correction, which has
decayed after a few 1/(1−β₂) steps) and scalar RMSProp (:class:`ScalarRMSProp`). **Adam
with momentum (β₁ > 0), heavy-ball and the other rules are not covered by the theory**
and are refused.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .._validate import finite_vector, in_range, nonneg_int, positive, step_count
from ..losses.base import Loss
from ..sim.results import Trajectory
from .sdcp import solve_sdcp

__all__ = ["ScalarRMSProp", "gradient_flow", "stable_flow", "central_flow", "flow_rule"]

COVERED = ("GD (eosdyn.rules.GD)", "RMSProp (eosdyn.rules.Adam with betas[0] = 0)",
           "scalar RMSProp (eosdyn.flows.ScalarRMSProp)")


# --------------------------------------------------------------------------------------
# the rules, as preconditioned flows
# --------------------------------------------------------------------------------------
class _GDFlow:
    name = "gd"

    def __init__(self, lr):
        self.lr = lr

    def initial_state(self, g, nu0):
        return np.zeros(0)

    def p(self, s, d):
        return np.full(d, 1.0 / self.lr)

    def dstate(self, s, g):
        return np.zeros(0)

    def dstate_pair(self, s, ha, hb):
        return np.zeros(0)

    def dp(self, s, ds, d):
        return np.zeros(d)


class _RMSPropFlow:
    """ν̇ = c(g^⊙2 − ν), c = (1−β₂)/β₂; P = diag(√ν + ε)/η."""

    name = "rmsprop"

    def __init__(self, lr, beta2, eps):
        self.lr, self.beta2, self.eps = lr, beta2, eps
        self.c = (1.0 - beta2) / beta2

    def initial_state(self, g, nu0):
        return g * g if nu0 is None else nu0

    def p(self, s, d):
        return (np.sqrt(np.maximum(s, 0.0)) + self.eps) / self.lr

    def dstate(self, s, g):
        return self.c * (g * g - s)

    def dstate_pair(self, s, ha, hb):       # ½ D²_g f[h_a, h_b] = c h_a ⊙ h_b
        return self.c * ha * hb

    def dp(self, s, ds, d):                 # ∂p/∂ν ⊙ ν̇
        return ds / (2.0 * self.lr * np.sqrt(np.maximum(s, 1e-300)))


class ScalarRMSProp:
    """Scalar RMSProp (Cohen et al., ICLR 2025, §4): one second-moment scalar ν,

        ν_t = β₂ν_{t−1} + (1−β₂)‖∇L(w_t)‖²,   w_{t+1} = w_t − η ∇L(w_t)/(√ν_t + ε).

    Its flow: ν̇ = ((1−β₂)/β₂)(‖∇L‖² − ν) (stable) plus X-terms (central); at the edge the
    effective step η/√ν equals 2/S. :meth:`step` is the discrete map (for comparisons).
    """

    name = "scalar_rmsprop"

    def __init__(self, lr, beta2=0.99, eps=0.0):
        self.lr = positive("lr", lr)
        self.beta2 = in_range("beta2", beta2, 0.0, 1.0, lo_open=True, hi_open=True)
        self.eps = positive("eps", eps, allow_zero=True)

    def step(self, loss, w, nu):
        """One discrete step: returns (w', ν')."""
        g = loss.grad(w)
        nu = self.beta2 * nu + (1.0 - self.beta2) * float(g @ g)
        return w - self.lr * g / (math.sqrt(nu) + self.eps), nu

    def __repr__(self):
        return f"ScalarRMSProp(lr={self.lr:g}, beta2={self.beta2:g}, eps={self.eps:g})"


class _ScalarRMSPropFlow(_RMSPropFlow):
    name = "scalar_rmsprop"

    def initial_state(self, g, nu0):
        return np.array([float(g @ g)]) if nu0 is None else np.atleast_1d(np.asarray(nu0, float))

    def p(self, s, d):
        return np.full(d, (math.sqrt(max(s[0], 0.0)) + self.eps) / self.lr)

    def dstate(self, s, g):
        return self.c * (np.array([g @ g]) - s)

    def dstate_pair(self, s, ha, hb):
        return np.array([self.c * float(ha @ hb)])

    def dp(self, s, ds, d):
        return np.full(d, ds[0] / (2.0 * self.lr * math.sqrt(max(s[0], 1e-300))))


def flow_rule(rule):
    """The preconditioned-flow form of ``rule``; TypeError for a rule the theory does not cover."""
    from ..rules import GD, Adam

    if isinstance(rule, GD):
        return _GDFlow(rule.lr)
    if isinstance(rule, Adam):
        if rule.betas[0] != 0.0:
            raise TypeError(f"central flows cover RMSProp (Adam with betas[0] = 0), not Adam with momentum "
                            f"β₁ = {rule.betas[0]:g} > 0; covered: {', '.join(COVERED)}")
        return _RMSPropFlow(rule.lr, rule.betas[1], rule.eps)
    if isinstance(rule, ScalarRMSProp):
        return _ScalarRMSPropFlow(rule.lr, rule.beta2, rule.eps)
    if isinstance(rule, (int, float)) and not isinstance(rule, bool):
        return _GDFlow(positive("lr", rule))
    raise TypeError(f"central flows do not cover {type(rule).__name__}; covered: {', '.join(COVERED)}")


# --------------------------------------------------------------------------------------
# the objective: a toy Loss (dense eigendecomposition, exact third derivatives)
# --------------------------------------------------------------------------------------
class _ToyObjective:
    """value/grad/third derivatives of a toy :class:`Loss`, eigenpairs by dense eigh."""

    def __init__(self, loss):
        self.loss = loss
        self.dim = loss.dim
        self.hvps = 0                    # dense Hessians here: counted in ``hessians``
        self.hessians = 0
        self.thirds = 0

    def value(self, w):
        return float(self.loss.value_fn(w, self.loss.params))

    def grad(self, w):
        return np.asarray(self.loss.grad_fn(w, self.loss.params), dtype=np.float64)

    def third(self, w, u, v):
        self.thirds += 1
        return self.loss._third_derivative(w, u, v)

    def eig(self, w, p, track_above, refresh=True):
        """Generalized eigenpairs H u = λ P u, λ ≥ track_above (descending), U P-orthonormal,
        plus the Euclidean sharpness λ₁(H)."""
        H = np.asarray(self.loss.hess_fn(w, self.loss.params), dtype=np.float64)
        self.hessians += 1
        if not np.all(np.isfinite(H)):
            raise FloatingPointError("non-finite Hessian")
        s = 1.0 / np.sqrt(p)
        lam, Z = np.linalg.eigh(H * s[:, None] * s[None, :])
        lam, Z = lam[::-1], Z[:, ::-1]
        keep = lam >= track_above
        U = Z[:, keep] * s[:, None]
        # λ₁(H) itself: read off the generalized problem when P is a multiple of I (GD)
        sharp = float(lam[0] * p[0]) if np.ptp(p) == 0 else float(np.linalg.eigvalsh(H)[-1])
        return lam, lam[keep], U, sharp


# --------------------------------------------------------------------------------------
# one substep
# --------------------------------------------------------------------------------------
@dataclass
class _Substep:
    dw: np.ndarray
    ds: np.ndarray
    X: np.ndarray
    lam_all: np.ndarray
    lam: np.ndarray
    U: np.ndarray
    loss: float
    g: np.ndarray
    HU: np.ndarray
    sharpness: float
    residual: float


def _substep(obj, fr, w, s, dt, central, track_above, refresh=True):
    d = obj.dim
    L = obj.value(w)
    g = obj.grad(w)
    if not (math.isfinite(L) and np.all(np.isfinite(g))):
        raise FloatingPointError("non-finite loss or gradient")
    p = fr.p(s, d)
    lam_all, lam, U, sharp = obj.eig(w, p, track_above if central else np.inf, refresh)
    k = lam.shape[0]
    HU = (p[:, None] * U) * lam[None, :]                          # H u_a = λ_a P u_a
    dw_stable = -g / p
    ds_stable = fr.dstate(s, g)
    X = np.zeros((k, k))
    residual = 0.0
    dw, ds = dw_stable, ds_stable
    if k:
        D3 = np.empty((k, k, d))
        for a in range(k):
            for b in range(a, k):
                D3[a, b] = D3[b, a] = obj.third(w, U[:, a], U[:, b])
        dw_pair = -0.5 * D3 / p                                   # ẇ per unit X_ab
        ds_pair = np.array([[fr.dstate_pair(s, HU[:, a], HU[:, b]) for b in range(k)] for a in range(k)])
        UU = U[:, :, None] * U[:, None, :]                        # (d, k, k): u_a ⊙ u_b
        dP_stable = np.einsum("iab,i->ab", UU, fr.dp(s, ds_stable, d))
        dH_stable = D3 @ dw_stable
        if s.size:
            dp_pair = np.array([[fr.dp(s, ds_pair[a, b], d) for b in range(k)] for a in range(k)])
            dP_X = np.einsum("iab,cdi->abcd", UU, dp_pair)
        else:
            dP_X = np.zeros((k, k, k, k))
        dH_X = np.einsum("abi,cdi->abcd", D3, dw_pair)
        A = np.diag(2.0 - lam) + dt * (2.0 * dP_stable - dH_stable)
        B = dt * (2.0 * dP_X - dH_X)
        sol = solve_sdcp(A, B)
        X, residual = sol.X, sol.max_residual
        dw = dw_stable + np.einsum("ab,abi->i", X, dw_pair)
        if s.size:
            ds = ds_stable + np.einsum("ab,abi->i", X, ds_pair)
    return _Substep(dw, ds, X, lam_all, lam, U, L, g, HU, sharp, residual)


def _check_common(rule, steps, substeps, track_above, max_tracked):
    fr = flow_rule(rule)
    steps = step_count("steps", steps)
    substeps = nonneg_int("substeps", substeps, minimum=1)
    track_above = positive("track_above", track_above)
    if track_above >= 2.0:
        raise ValueError(f"track_above must be < 2 (the edge, in units of the generalized eigenvalue), "
                         f"got {track_above}")
    nonneg_int("max_tracked", max_tracked, minimum=1)
    return fr, steps, substeps, track_above


def _past_edge_error(top):
    return ValueError(
        f"theta0 is past the edge: the top effective sharpness is {top:.6g} > 2 (η·S > 2 for GD), "
        "where the central flow is undefined (no X ⪰ 0 brings the eigenvalue back); pass project=True to "
        "start from theta0's projection onto {S ≤ 2/η} (GD on toy losses), or start below the edge")


def _run(kind, loss, rule, theta0, steps, substeps, track_above, nu0, max_tracked, project):
    if not isinstance(loss, Loss):
        raise TypeError(f"loss must be an eosdyn Loss (toy loss); for torch models use eosdyn.bridge.central_flow, "
                        f"got {type(loss).__name__}")
    fr, steps, substeps, track_above = _check_common(rule, steps, substeps, track_above, max_tracked)
    w = finite_vector("theta0", theta0, loss.dim).copy()
    central = kind == "central"
    if central:
        try:
            loss._third_derivative(w, np.eye(loss.dim)[0], np.eye(loss.dim)[0])
        except TypeError as exc:
            raise TypeError(f"the central flow needs third derivatives: {exc}") from None
    obj = _ToyObjective(loss)
    if central:
        s0 = np.asarray(fr.initial_state(obj.grad(w), None if nu0 is None else np.asarray(nu0, float)), float)
        lam_all, *_ = obj.eig(w, fr.p(s0, loss.dim), np.inf, True)
        if lam_all[0] > 2.0 + 1e-9:
            if not project:
                raise _past_edge_error(lam_all[0])
            if fr.name != "gd":
                raise ValueError("project=True is implemented for GD only")
            from .selfstab import project_to_stable_set
            w = project_to_stable_set(loss, fr.lr, w)
    params = {"loss": repr(loss)}
    return integrate(kind, obj, fr, w, steps, substeps, track_above, nu0, max_tracked, params)


def integrate(kind, obj, fr, w, steps, substeps, track_above, nu0, max_tracked, params):
    """The one integrator behind every flow: forward Euler with ``substeps`` per step on an
    objective ``obj`` (``dim``, ``value``, ``grad``, ``third``, ``eig``, counters ``hessians``,
    ``hvps``, ``thirds``), for toy losses and torch models alike."""
    central = kind == "central"
    g0 = obj.grad(w)
    s = np.asarray(fr.initial_state(g0, None if nu0 is None else np.asarray(nu0, float)), dtype=np.float64).copy()
    R = steps + 1
    d = obj.dim
    kmax = max_tracked
    rec = {"theta": np.full((R, d), np.nan), "loss": np.full(R, np.nan), "grad_norm": np.full(R, np.nan),
           "sharpness": np.full(R, np.nan), "eff": np.full((R, kmax), np.nan), "sig": np.full((R, kmax), np.nan),
           "n_unstable": np.zeros(R, dtype=np.int64), "n_tracked": np.zeros(R, dtype=np.int64),
           "pred_loss": np.full(R, np.nan), "pred_g2": np.full(R, np.nan), "resid": np.zeros(R),
           "hess": np.zeros(R, dtype=np.int64), "hvp": np.zeros(R, dtype=np.int64),
           "third": np.zeros(R, dtype=np.int64),
           "substeps": np.zeros(R, dtype=np.int64), "state": np.full((R, s.size), np.nan)}
    status, diverged_at = "ok", -1
    dt_default = 1.0 / substeps
    for t in range(R):
        try:
            h0, t0, v0 = obj.hessians, obj.thirds, obj.hvps
            sub = _substep(obj, fr, w, s, dt_default, central, track_above)
            k = sub.lam.shape[0]
            rec["theta"][t] = w
            rec["state"][t] = s
            rec["loss"][t] = sub.loss
            rec["grad_norm"][t] = float(np.linalg.norm(sub.g))
            rec["sharpness"][t] = sub.sharpness
            rec["eff"][t, :min(kmax, sub.lam_all.size)] = sub.lam_all[:kmax]
            rec["n_tracked"][t] = k
            if k:
                Sigma = sub.U @ sub.X @ sub.U.T
                sig = np.linalg.eigvalsh(Sigma)[::-1][:min(k, kmax)]
                rec["sig"][t, :sig.size] = np.maximum(sig, 0.0)
                xe = np.linalg.eigvalsh(sub.X)
                rec["n_unstable"][t] = int(np.count_nonzero(xe > 1e-12 * max(1.0, np.abs(sub.X).max())))
                rec["pred_loss"][t] = sub.loss + 0.5 * float(np.sum(np.diag(sub.X) * sub.lam))
                rec["pred_g2"][t] = float(sub.g @ sub.g) + float(np.einsum("ab,ia,ib->", sub.X, sub.HU, sub.HU))
            else:
                rec["pred_loss"][t] = sub.loss
                rec["pred_g2"][t] = float(sub.g @ sub.g)
            rec["resid"][t] = sub.residual
            if t == steps:
                rec["hess"][t] = obj.hessians - h0
                rec["third"][t] = obj.thirds - t0
                rec["hvp"][t] = obj.hvps - v0
                break
            # substeps: the first reuses the evaluation above
            n_sub = substeps
            if not central:                      # Euler stability of the stiff stable flow (authors: ceil(λ/0.5))
                n_sub = max(substeps, int(math.ceil(sub.lam_all[0] / 0.5)))
            dt = 1.0 / n_sub     # only the stable flow changes n_sub, and its drift does not depend on dt
            for j in range(n_sub):
                if j:   # later substeps may refine the step's eigenvectors instead of recomputing them
                    sub = _substep(obj, fr, w, s, dt, central, track_above, refresh=False)
                w = w + dt * sub.dw
                if s.size:
                    s = s + dt * sub.ds
                if not np.all(np.isfinite(w)):
                    raise FloatingPointError("non-finite iterate")
            rec["substeps"][t] = n_sub
            rec["hvp"][t] = obj.hvps - v0
            rec["hess"][t] = obj.hessians - h0
            rec["third"][t] = obj.thirds - t0
        except (FloatingPointError, np.linalg.LinAlgError, ValueError, ZeroDivisionError, OverflowError) as exc:
            status, diverged_at = f"diverged: {exc}", t
            break
    extra = {"effective_sharpness": rec["eff"], "sigma_sq": rec["sig"], "n_unstable": rec["n_unstable"],
             "n_tracked": rec["n_tracked"], "predicted_loss": rec["pred_loss"],
             "predicted_grad_norm_sq": rec["pred_g2"], "sdcp_residual": rec["resid"],
             "hessian_calls": rec["hess"], "hvp_count": rec["hvp"], "third_derivative_calls": rec["third"],
             "substeps": rec["substeps"]}
    if s.size:
        extra["nu"] = rec["state"]
    params = {"flow": kind, "rule": fr.name, "lr": fr.lr, "substeps": substeps, "track_above": track_above,
              **params}
    last = diverged_at - 1 if diverged_at >= 0 else steps
    final = rec["theta"][max(last, 0)].copy()
    return Trajectory(step=np.arange(R), loss=rec["loss"], theta=rec["theta"], grad_norm=rec["grad_norm"],
                      sharpness=rec["sharpness"], diverged=diverged_at >= 0, diverged_at=diverged_at,
                      extra=extra, params=params, final_theta=final, status=status)


def central_flow(loss, rule, theta0, steps, *, substeps=4, track_above=1.5, nu0=None, max_tracked=5,
                 project=False) -> Trajectory:
    r"""The central flow of ``rule`` on a toy ``loss`` from ``theta0``, for ``steps`` steps.

    Parameters
    ----------
    loss : Loss
        A toy loss with exact third derivatives (:meth:`Loss.third_derivative`).
    rule : eosdyn.rules.GD, eosdyn.rules.Adam with betas[0] = 0 (RMSProp), ScalarRMSProp,
        or a float (GD's η). Anything else raises TypeError naming what is covered.
    theta0 : array (d,)
    steps : int
        Length in optimizer steps; one record per step (t = 0 … steps).
    substeps : int >= 1, default 4
        Forward-Euler substeps per step (the authors' default).
    track_above : float in (0, 2), default 1.5
        Eigenvalues of P⁻¹H (ηλ for GD) above this enter the complementarity problem.
    nu0 : optional initial second moment for RMSProp rules (default ∇L(θ₀)^⊙2, i.e. ‖∇L‖²).
    max_tracked : int
        Columns of the per-step eigenvalue records.
    project : bool
        For a start past the edge (GD): start from the projection onto {S ≤ 2/η}.

    Returns
    -------
    Trajectory with ``theta`` (w(t)), ``loss`` (L(w)), ``sharpness`` (λ₁(H)) and ``extra``:
    ``effective_sharpness`` (R, max_tracked: top eigenvalues of P⁻¹H, ηλ for GD; the edge is 2),
    ``sigma_sq`` (eigenvalues of Σ = U X Uᵀ, the oscillation variance along each unstable
    direction), ``n_unstable``, ``n_tracked``, ``predicted_loss``, ``predicted_grad_norm_sq``,
    ``sdcp_residual`` (max KKT residual), ``hessian_calls``, ``third_derivative_calls``,
    ``substeps`` and, for RMSProp rules, ``nu``. A failing flow (overflow, non-finite
    derivative) stops with ``status`` saying why; the records up to it are kept.

    Example
    -------
    >>> from eosdyn.losses import from_sympy
    >>> L = from_sympy("0.5*y*x**2 - 0.5*y", ["x", "y"])    # S = y near x = 0
    >>> cf = central_flow(L, 0.1, [0.1, 5.0], 200)          # doctest: +SKIP
    """
    return _run("central", loss, rule, theta0, steps, substeps, track_above, nu0, max_tracked, project)


def stable_flow(loss, rule, theta0, steps, *, substeps=4, nu0=None, max_tracked=5) -> Trajectory:
    """The stable flow ẇ = −P⁻¹∇L, ṡ = f(s, ∇L) of ``rule`` (module docstring): the flow that
    ignores the oscillation. For GD it is gradient flow. Substeps are raised to
    ceil(λ_max(P⁻¹H)/0.5) where the flow is stiff (as the authors do). Same records as
    :func:`central_flow` (with X = 0)."""
    return _run("stable", loss, rule, theta0, steps, substeps, 1.5, nu0, max_tracked, False)


def gradient_flow(loss, lr, theta0, steps, *, substeps=4, max_tracked=5) -> Trajectory:
    """Gradient flow ẇ = −η∇L(w), t in steps of size η: :func:`stable_flow` of GD(lr)."""
    from ..rules import GD

    return stable_flow(loss, GD(lr), theta0, steps, substeps=substeps, max_tracked=max_tracked)
