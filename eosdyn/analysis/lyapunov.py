r"""Lyapunov spectra of maps by repeated QR (the Benettin method).

For a map x_{k+1} = F(x_k) with Jacobian J, the Lyapunov exponents are the growth
rates λ_i = lim (1/N) ln σ_i(J(x_{N−1})⋯J(x_0)). Benettin, Galgani, Giorgilli &
Strelcyn (Meccanica 15, 1980) compute them stably by carrying an orthonormal frame:

    Q_0 = I,   J(x_k) Q_k = Q_{k+1} R_{k+1}   (QR, diag(R) > 0),
    λ_i ≈ (1/N) Σ_k ln R_{k+1, ii}

(also Eckmann & Ruelle, Rev. Mod. Phys. 57, 1985, §IV.B). The sums are accumulated
with Neumaier's compensated summation, so a constant multiplier gives its log to
round-off, and Σ_i λ_i equals the average of ln|det J| to round-off (for the Hénon
map, whose det J = −b, that sum is ln b exactly).

With Q_0 = I the frame is the coordinate basis: for a map whose coordinate axes are
invariant (a diagonal linear map) the columns never mix and each returns the log of
its own multiplier; the exponents are returned sorted in decreasing order. Pass
``q0`` for another initial frame.

If the step and Jacobian are numba-compiled functions (``@njit``), the whole loop runs
in numba (10⁶–10⁷ steps in about a second); otherwise a Python loop with numpy's QR
is used. :func:`lyapunov_spectrum_rule` is the form for a loss and an update rule on
its full state z = (θ, state).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numba import njit
from numba.core.dispatcher import Dispatcher

from .._arrays import copy_matrix
from .._validate import finite_vector, nonneg_int
from ..engine.core import qr_accumulate, record_running
from ..rules.base import Rule
from ._common import check_loss


@dataclass
class LyapunovResult:
    """Lyapunov spectrum of an orbit.

    ``exponents`` (n,): decreasing; ``running`` (R, n): the estimate after each
    ``record_every`` steps (row r is after (r+1)·record_every steps; columns in the
    frame's order, which the final sort may permute — ``order`` maps them);
    ``x_final``: the last state; ``diverged`` / ``diverged_at``: the orbit left the
    finite numbers (exponents are then over the steps before it, and NaN if none).
    """

    exponents: np.ndarray
    running: np.ndarray
    steps: int
    transient: int
    record_every: int
    x_final: np.ndarray
    diverged: bool = False
    diverged_at: int = -1
    order: np.ndarray = field(default=None, repr=False)

    @property
    def sum(self) -> float:
        return float(np.sum(self.exponents))


# ------------------------------------------------------------------------- numba path
@njit(cache=True)
def _finite(x):
    for i in range(x.shape[0]):
        if not np.isfinite(x[i]):
            return False
    return True


@njit(cache=False)
def _benettin_kernel(step, jac, x0, q0, steps, transient, record_every, running):
    x = x0.copy()
    for _ in range(transient):
        x = step(x)
    n = q0.shape[1]
    Q = np.empty((q0.shape[0], n))
    copy_matrix(q0, Q)
    Qn = np.empty_like(Q)
    logs = np.zeros(n)
    s = np.zeros(n)
    c = np.zeros(n)
    div = -1
    done = 0
    for k in range(steps):
        if not qr_accumulate(jac(x), Q, Qn, logs, s, c):
            div = k
            break
        x = step(x)
        done = k + 1
        record_running(k, record_every, s, c, running)
        if not _finite(x):
            div = k + 1
            break
    out = np.empty(n)
    for i in range(n):
        out[i] = (s[i] + c[i]) / done if done > 0 else np.nan
    return out, x, div, done


# ------------------------------------------------------------------------ python path
def _python_benettin(step, jac, x0, q0, steps, transient, record_every, running):
    x = x0.copy()
    for _ in range(transient):
        x = np.asarray(step(x), dtype=float)
    n = q0.shape[1]
    Q = q0.copy()
    s = np.zeros(n)
    c = np.zeros(n)
    div = -1
    done = 0
    with np.errstate(all="ignore"):
        for k in range(steps):
            A = np.asarray(jac(x), dtype=float) @ Q
            Qn, R = np.linalg.qr(A)
            d = np.abs(np.diag(R))
            logs = np.log(d)
            if not np.all(np.isfinite(logs)):
                div = k
                break
            sgn = np.sign(np.diag(R))
            sgn[sgn == 0] = 1.0
            Q = Qn * sgn
            for i in range(n):
                t = s[i] + logs[i]
                if abs(s[i]) >= abs(logs[i]):
                    c[i] += (s[i] - t) + logs[i]
                else:
                    c[i] += (logs[i] - t) + s[i]
                s[i] = t
            x = np.asarray(step(x), dtype=float)
            done = k + 1
            if (k + 1) % record_every == 0:
                running[(k + 1) // record_every - 1] = (s + c) / (k + 1)
            if not np.all(np.isfinite(x)):
                div = k + 1
                break
    out = (s + c) / done if done > 0 else np.full(n, np.nan)
    return out, x, div, done


def _finish(expo, x, div, done, steps, transient, record_every, running):
    order = np.argsort(-expo, kind="stable") if np.all(np.isfinite(expo)) else np.arange(expo.size)
    return LyapunovResult(exponents=expo[order], running=running, steps=int(done), transient=transient,
                          record_every=record_every, x_final=np.asarray(x, float),
                          diverged=div >= 0, diverged_at=int(div), order=order)


def lyapunov_spectrum(step, jacobian, x0, steps: int, transient: int = 0, record_every: int = 1,
                      q0=None) -> LyapunovResult:
    """Lyapunov spectrum of the map ``step`` along the orbit of ``x0`` (Benettin QR method).

    Parameters
    ----------
    step : callable x (n,) -> F(x) (n,). A numba ``@njit`` function runs in numba.
    jacobian : callable x -> ∂F/∂x (n, n) (numba too, for the fast path).
    x0 : (n,) start.
    steps : number of steps N averaged over (after the transient).
    transient : steps iterated first and discarded.
    record_every : stride of the running estimate (R = steps // record_every rows).
    q0 : (n, n) initial orthonormal frame (default I); a (n, k) frame gives the top k
        exponents only.
    """
    x0 = finite_vector("x0", x0)
    n = x0.size
    steps = nonneg_int("steps", steps, minimum=1)
    transient = nonneg_int("transient", transient)
    record_every = nonneg_int("record_every", record_every, minimum=1)
    if not callable(step) or not callable(jacobian):
        raise TypeError("step and jacobian must be callables x -> F(x), x -> ∂F/∂x")
    if q0 is None:
        q0 = np.eye(n)
    else:
        q0 = np.array(q0, dtype=float)
        if q0.ndim != 2 or q0.shape[0] != n or q0.shape[1] > n or q0.shape[1] < 1:
            raise ValueError(f"q0 must be (n, k) with k <= n = {n}, got shape {q0.shape}")
        if not np.allclose(q0.T @ q0, np.eye(q0.shape[1]), atol=1e-10):
            raise ValueError("q0 must have orthonormal columns")
    J0 = np.asarray(jacobian(x0.copy()), dtype=float)
    if J0.shape != (n, n):
        raise ValueError(f"jacobian must return an (n, n) = ({n}, {n}) matrix, got {J0.shape}")
    running = np.full((steps // record_every, q0.shape[1]), np.nan)
    if isinstance(step, Dispatcher) and isinstance(jacobian, Dispatcher):
        expo, x, div, done = _benettin_kernel(step, jacobian, x0, np.ascontiguousarray(q0), steps,
                                              transient, record_every, running)
    else:
        expo, x, div, done = _python_benettin(step, jacobian, x0, q0, steps, transient, record_every,
                                              running)
    return _finish(np.asarray(expo), x, int(div), int(done), steps, transient, record_every, running)


# --------------------------------------------------------------------- loss + rule form
def lyapunov_spectrum_rule(loss, rule, theta0, steps: int, transient: int = 0, state0=None,
                           record_every: int = 1) -> LyapunovResult:
    """Lyapunov spectrum of a rule's noise-free map on its full state z = (θ, state).

    GD, heavy-ball and Nesterov run in the stepping core (:mod:`eosdyn.engine`) with their
    closed-form Jacobians (the formulas of ``rule.jacobian``), under its divergence rule.
    Other rules use ``rule.map`` and ``rule.jacobian`` in a Python loop (central-difference
    Jacobians where no closed form is coded):
    correct but slow, about 10⁴ steps a second, and at the asymptotic step number of
    ``Rule.map`` (t → ∞, which only matters for Adam's bias correction); the numba path
    passes the actual step numbers. ``x_final`` is the final full state.
    """
    loss = check_loss(loss)
    if not isinstance(rule, Rule):
        raise TypeError(f"rule must be an eosdyn Rule instance, got {type(rule).__name__}")
    d = loss.dim
    theta0 = finite_vector("theta0", theta0, d)
    S = rule.state_size(d)
    state0 = rule.init_state(theta0) if state0 is None else finite_vector("state0", state0, S)
    steps = nonneg_int("steps", steps, minimum=1)
    transient = nonneg_int("transient", transient)
    record_every = nonneg_int("record_every", record_every, minimum=1)
    n = d + S
    if rule.jacobian_fn is not None:  # Jacobian from H alone: the whole run in the stepping core
        from ..engine.run import run_lyapunov

        tot, running, theta, state, div, done = run_lyapunov(loss, rule, theta0, state0, steps, transient,
                                                             record_every)
        expo = tot / done if done > 0 else np.full(n, np.nan)
        return _finish(expo, rule.pack(theta, state), div, done, steps, transient, record_every, running)

    def F(z):
        return rule.map(loss, z)

    def J(z):
        return rule.jacobian(loss, z)

    z0 = rule.pack(theta0, state0)
    running = np.full((steps // record_every, n), np.nan)
    expo, x, div, done = _python_benettin(F, J, z0, np.eye(n), steps, transient, record_every, running)
    return _finish(np.asarray(expo), x, int(div), int(done), steps, transient, record_every, running)
