"""The classical rules: GD, heavy-ball, Nesterov (PyTorch's conventions), normalized GD, Adam.

Linear-stability thresholds on a quadratic with top Hessian eigenvalue λ
(see :mod:`eosdyn.analysis` and ``theory/thresholds.py`` for the derivations):

    GD                η < 2/λ
    heavy-ball        η < 2(1+β)/λ
    Nesterov (torch)  η < (2+2β)/((1+2β)λ)
    Adam, frozen P    η < (2+2β₁)/((1−β₁) λ_max(P⁻¹H))   (Cohen et al. 2022)
"""
from __future__ import annotations

import numpy as np
from numba import njit

from .._validate import in_range, positive
from .base import Rule


# ----------------------------------------------------------------------------- GD
@njit(cache=True)
def _gd_coord(x, g, lr):
    """One coordinate of GD: x − η g (shared by the per-trajectory and the blocked step)."""
    return x - lr * g


@njit(cache=True)
def _gd_step(theta, state, g, curv, hyper, t, rng, work):
    lr = hyper[0]
    for i in range(theta.shape[0]):
        theta[i] = _gd_coord(theta[i], g[i], lr)
    return lr


@njit(cache=True)
def _gd_step_block(X, S, G, hyper, t, LR):
    lr = hyper[0]
    for i in range(X.shape[0]):
        for b in range(X.shape[1]):
            X[i, b] = _gd_coord(X[i, b], G[i, b], lr)
    for b in range(X.shape[1]):
        LR[b] = lr


@njit(cache=True)
def _gd_jacobian(H, hyper, d):
    """J = I − η H."""
    J = -hyper[0] * H
    for i in range(d):
        J[i, i] += 1.0
    return J


@njit(cache=True)
def _momentum_jacobian(H, d, c, off, b):
    """[[I − cH, −off·I], [H, bI]]: the Jacobian of both momentum rules on z = (θ, b)."""
    J = np.zeros((2 * d, 2 * d))
    for i in range(d):
        for j in range(d):
            J[i, j] = -c * H[i, j]
            J[d + i, j] = H[i, j]
        J[i, i] += 1.0
        J[i, d + i] = -off
        J[d + i, d + i] = b
    return J


class GD(Rule):
    """Gradient descent θ ← θ − η ∇L(θ)."""

    name = "gd"
    step_fn = staticmethod(_gd_step)
    step_block_fn = staticmethod(_gd_step_block)
    jacobian_fn = staticmethod(_gd_jacobian)
    jacobian_is_exact = True

    def __init__(self, lr):
        self.lr = positive("lr", lr)
        self.hyper = np.array([self.lr])

    def hyperparameters(self):
        return {"lr": self.lr}

    def jacobian(self, loss, z, t=10**9, h=None):
        """J = I − η ∇²L(θ)."""
        return self.jacobian_fn(loss.hess(z[: loss.dim]), self.hyper, loss.dim)


# ----------------------------------------------------------------------- heavy-ball
@njit(cache=True)
def _heavyball_coord(x, buf, g, lr, beta):
    """One coordinate of heavy-ball: b' = βb + g, x' = x − η b'. Returns (x', b')."""
    buf = beta * buf + g
    return x - lr * buf, buf


@njit(cache=True)
def _heavyball_step(theta, state, g, curv, hyper, t, rng, work):
    lr = hyper[0]
    beta = hyper[1]
    for i in range(theta.shape[0]):
        theta[i], state[i] = _heavyball_coord(theta[i], state[i], g[i], lr, beta)
    return lr


@njit(cache=True)
def _heavyball_step_block(X, S, G, hyper, t, LR):
    lr = hyper[0]
    beta = hyper[1]
    for i in range(X.shape[0]):
        for b in range(X.shape[1]):
            X[i, b], S[i, b] = _heavyball_coord(X[i, b], S[i, b], G[i, b], lr, beta)
    for b in range(X.shape[1]):
        LR[b] = lr


@njit(cache=True)
def _heavyball_jacobian(H, hyper, d):
    eta, b = hyper[0], hyper[1]
    return _momentum_jacobian(H, d, eta, eta * b, b)


class HeavyBall(Rule):
    """Heavy-ball momentum in PyTorch's SGD convention (dampening 0).

        b ← β b + ∇L(θ),   θ ← θ − η b

    (equivalent to Polyak's θ' = θ − η∇L + β(θ − θ_prev)). State: the buffer b.
    """

    name = "heavyball"
    step_fn = staticmethod(_heavyball_step)
    step_block_fn = staticmethod(_heavyball_step_block)
    jacobian_fn = staticmethod(_heavyball_jacobian)
    jacobian_is_exact = True

    def __init__(self, lr, momentum=0.9):
        self.lr = positive("lr", lr)
        self.momentum = in_range("momentum", momentum, 0.0, 1.0, hi_open=True)
        self.hyper = np.array([self.lr, self.momentum])

    def hyperparameters(self):
        return {"lr": self.lr, "momentum": self.momentum}

    def state_size(self, dim):
        return dim

    def jacobian(self, loss, z, t=10**9, h=None):
        """On z = (θ, b): [[I − ηH, −ηβI], [H, βI]]."""
        return self.jacobian_fn(loss.hess(z[: loss.dim]), self.hyper, loss.dim)


# ------------------------------------------------------------------------- Nesterov
@njit(cache=True)
def _nesterov_coord(x, buf, g, lr, beta):
    """One coordinate of Nesterov (torch): b' = βb + g, x' = x − η(g + βb'). Returns (x', b')."""
    buf = beta * buf + g
    return x - lr * (g + beta * buf), buf


@njit(cache=True)
def _nesterov_step(theta, state, g, curv, hyper, t, rng, work):
    lr = hyper[0]
    beta = hyper[1]
    for i in range(theta.shape[0]):
        theta[i], state[i] = _nesterov_coord(theta[i], state[i], g[i], lr, beta)
    return lr


@njit(cache=True)
def _nesterov_step_block(X, S, G, hyper, t, LR):
    lr = hyper[0]
    beta = hyper[1]
    for i in range(X.shape[0]):
        for b in range(X.shape[1]):
            X[i, b], S[i, b] = _nesterov_coord(X[i, b], S[i, b], G[i, b], lr, beta)
    for b in range(X.shape[1]):
        LR[b] = lr


@njit(cache=True)
def _nesterov_jacobian(H, hyper, d):
    eta, b = hyper[0], hyper[1]
    return _momentum_jacobian(H, d, eta * (1.0 + b), eta * b * b, b)


class Nesterov(Rule):
    """Nesterov momentum in PyTorch's convention (``SGD(nesterov=True)``, dampening 0).

        b ← β b + ∇L(θ),   θ ← θ − η (∇L(θ) + β b)
    """

    name = "nesterov"
    step_fn = staticmethod(_nesterov_step)
    step_block_fn = staticmethod(_nesterov_step_block)
    jacobian_fn = staticmethod(_nesterov_jacobian)
    jacobian_is_exact = True

    def __init__(self, lr, momentum=0.9):
        self.lr = positive("lr", lr)
        self.momentum = in_range("momentum", momentum, 0.0, 1.0, hi_open=True)
        self.hyper = np.array([self.lr, self.momentum])

    def hyperparameters(self):
        return {"lr": self.lr, "momentum": self.momentum}

    def state_size(self, dim):
        return dim

    def jacobian(self, loss, z, t=10**9, h=None):
        """On z = (θ, b): [[I − η(1+β)H, −ηβ²I], [H, βI]]."""
        return self.jacobian_fn(loss.hess(z[: loss.dim]), self.hyper, loss.dim)


# ------------------------------------------------------------------- normalized GD
@njit(cache=True)
def _ngd_lr(nrm, lr0):
    """The effective step η/‖∇L‖; 0 at a critical point, where normalized GD does not move."""
    return 0.0 if nrm == 0.0 else lr0 / nrm


@njit(cache=True)
def _ngd_coord(x, g, nrm, lr0):
    """One coordinate of normalized GD given ‖∇L‖: x − (η/‖∇L‖) g, or x where ∇L = 0."""
    if nrm == 0.0:
        return x
    return x - (lr0 / nrm) * g


@njit(cache=True)
def _ngd_step(theta, state, g, curv, hyper, t, rng, work):
    nrm = 0.0
    for i in range(g.shape[0]):
        nrm += g[i] * g[i]
    nrm = np.sqrt(nrm)
    for i in range(theta.shape[0]):
        theta[i] = _ngd_coord(theta[i], g[i], nrm, hyper[0])
    return _ngd_lr(nrm, hyper[0])


@njit(cache=True)
def _ngd_step_block(X, S, G, hyper, t, LR):
    d, B = X.shape
    for b in range(B):  # LR holds ‖∇L‖ per trajectory until the end
        LR[b] = 0.0
    for i in range(d):
        for b in range(B):
            LR[b] += G[i, b] * G[i, b]
    for b in range(B):
        LR[b] = np.sqrt(LR[b])
    for i in range(d):
        for b in range(B):
            X[i, b] = _ngd_coord(X[i, b], G[i, b], LR[b], hyper[0])
    for b in range(B):
        LR[b] = _ngd_lr(LR[b], hyper[0])


class NormalizedGD(Rule):
    """Normalized GD θ ← θ − η ∇L/‖∇L‖ (Arora, Li & Panigrahi 2022, §4).

    The recorded step size is the effective one, η/‖∇L(θ)‖. At a critical point
    (∇L = 0) the rule stays put and records step size 0.
    """

    name = "ngd"
    step_fn = staticmethod(_ngd_step)
    step_block_fn = staticmethod(_ngd_step_block)
    jacobian_is_exact = True

    def __init__(self, lr):
        self.lr = positive("lr", lr)
        self.hyper = np.array([self.lr])

    def hyperparameters(self):
        return {"lr": self.lr}

    def jacobian(self, loss, z, t=10**9, h=None):
        """J = I − (η/‖g‖)(I − ĝĝᵀ) H, ĝ = g/‖g‖ (undefined at g = 0: raises)."""
        d = loss.dim
        theta = z[:d]
        g = loss.grad(theta)
        n = np.linalg.norm(g)
        if n == 0:
            raise ValueError("NormalizedGD's map is not differentiable where grad = 0")
        gh = g / n
        return np.eye(d) - (self.lr / n) * (np.eye(d) - np.outer(gh, gh)) @ loss.hess(theta)


# ------------------------------------------------------------------------------ Adam
@njit(cache=True)
def _adam_precond(state, hyper, t, out):
    eps = hyper[3]
    d = out.shape[0]
    c2 = _adam_corrections(hyper, t)[1]
    for i in range(d):
        out[i] = np.sqrt(state[d + i] / c2) + eps


@njit(cache=True)
def _adam_coord(x, m, v, g, lr, b1, b2, eps, c1, c2):
    """One coordinate of Adam; c1, c2 are the bias corrections 1 − βᵗ. Returns (x', m', v')."""
    m = b1 * m + (1.0 - b1) * g
    v = b2 * v + (1.0 - b2) * g * g
    return x - lr * (m / c1) / (np.sqrt(v / c2) + eps), m, v


@njit(cache=True)
def _adam_corrections(hyper, t):
    b1, b2, bias = hyper[1], hyper[2], hyper[4]
    c1 = 1.0 - b1 ** t if bias > 0 else 1.0
    c2 = 1.0 - b2 ** t if bias > 0 else 1.0
    return c1, c2


@njit(cache=True)
def _adam_step(theta, state, g, curv, hyper, t, rng, work):
    lr, b1, b2, eps = hyper[0], hyper[1], hyper[2], hyper[3]
    d = theta.shape[0]
    c1, c2 = _adam_corrections(hyper, t)
    for i in range(d):
        theta[i], state[i], state[d + i] = _adam_coord(theta[i], state[i], state[d + i], g[i],
                                                       lr, b1, b2, eps, c1, c2)
    return lr


@njit(cache=True)
def _adam_step_block(X, S, G, hyper, t, LR):
    lr, b1, b2, eps = hyper[0], hyper[1], hyper[2], hyper[3]
    d = X.shape[0]
    c1, c2 = _adam_corrections(hyper, t)
    for i in range(d):
        for b in range(X.shape[1]):
            X[i, b], S[i, b], S[d + i, b] = _adam_coord(X[i, b], S[i, b], S[d + i, b], G[i, b],
                                                        lr, b1, b2, eps, c1, c2)
    for b in range(X.shape[1]):
        LR[b] = lr


class Adam(Rule):
    """Adam in PyTorch's convention (Kingma & Ba 2015):

        m ← β₁m + (1−β₁)g,  v ← β₂v + (1−β₂)g²,
        θ ← θ − η m̂ / (√v̂ + ε),  m̂ = m/(1−β₁ᵗ), v̂ = v/(1−β₂ᵗ)

    The preconditioner is P = diag(√v̂ + ε), so the update is θ ← θ − η P⁻¹ m̂ and
    the relevant curvature is the preconditioned sharpness λ_max(P⁻¹H) (Cohen et
    al. 2022, "Adaptive gradient methods at the edge of stability"), recorded by
    the simulator. State: (m, v).
    """

    name = "adam"
    step_fn = staticmethod(_adam_step)
    step_block_fn = staticmethod(_adam_step_block)
    precond_fn = staticmethod(_adam_precond)
    preconditioned = True

    def __init__(self, lr, betas=(0.9, 0.999), eps=1e-8, bias_correction=True):
        self.lr = positive("lr", lr)
        if len(tuple(betas)) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        b1, b2 = betas
        self.betas = (in_range("betas[0]", b1, 0.0, 1.0, hi_open=True),
                      in_range("betas[1]", b2, 0.0, 1.0, hi_open=True))
        self.eps = positive("eps", eps, allow_zero=True)
        self.bias_correction = bool(bias_correction)
        self.hyper = np.array([self.lr, self.betas[0], self.betas[1], self.eps, float(self.bias_correction)])

    def hyperparameters(self):
        return {"lr": self.lr, "betas": list(self.betas), "eps": self.eps,
                "bias_correction": self.bias_correction}

    def state_size(self, dim):
        return 2 * dim

    def preconditioner(self, state, t=10**9):
        """P = √v̂ + ε for a state (m, v) at step t."""
        d = len(state) // 2
        out = np.empty(d)
        _adam_precond(np.asarray(state, float), self.hyper, np.int64(t), out)
        return out

    def frozen_jacobian(self, loss, theta, P):
        """Jacobian of Adam with the preconditioner frozen at P, on (θ, m):

            m' = β₁m + (1−β₁)∇L,  θ' = θ − η P⁻¹ m'
            J = [[I − η(1−β₁)P⁻¹H, −ηβ₁P⁻¹], [(1−β₁)H, β₁I]]
        """
        d = loss.dim
        H = loss.hess(theta)
        Pinv = np.diag(1.0 / np.asarray(P, float))
        b1 = self.betas[0]
        I = np.eye(d)
        return np.block([[I - self.lr * (1 - b1) * Pinv @ H, -self.lr * b1 * Pinv],
                         [(1 - b1) * H, b1 * I]])
