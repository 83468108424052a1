"""The classical rules: GD, heavy-ball (PyTorch's convention), normalized GD, Adam.

Nesterov momentum lives in :mod:`eosdyn.rules.nesterov`, the one-file form of a rule.

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

from .._validate import in_range, pair, positive
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


class _StepSizeOnly(Rule):
    """A rule whose one hyperparameter is its step size ``lr`` (GD, normalized GD)."""

    def __init__(self, lr):
        self.lr = positive("lr", lr)
        self.hyper = np.array([self.lr])

    def hyperparameters(self):
        return {"lr": self.lr}


class GD(_StepSizeOnly):
    """Gradient descent θ ← θ − η ∇L(θ)."""

    name = "gd"
    summary = "gradient descent θ ← θ − η∇L; stable at a minimum iff η < 2/λ"
    color = "#0072B2"
    torch_twin = "torch.optim.SGD"
    step_fn = staticmethod(_gd_step)
    step_block_fn = staticmethod(_gd_step_block)
    jacobian_fn = staticmethod(_gd_jacobian)
    jacobian_is_exact = True

    def edge_constant(self):
        """2: GD is stable at a minimum iff ηλ_max < 2 (J = I − ηH has an eigenvalue −1 there)."""
        return 2.0

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
    aliases = ("hb", "momentum", "polyak")
    summary = "heavy-ball momentum (PyTorch SGD); edge η = 2(1+β)/λ"
    color = "#CC79A7"
    torch_twin = "torch.optim.SGD"
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

    def edge_constant(self):
        """2 + 2β (Polyak 1964): the μ = −1 root of the per-mode characteristic polynomial."""
        return 2.0 + 2.0 * self.momentum

    def jacobian(self, loss, z, t=10**9, h=None):
        """On z = (θ, b): [[I − ηH, −ηβI], [H, βI]]."""
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


class NormalizedGD(_StepSizeOnly):
    """Normalized GD θ ← θ − η ∇L/‖∇L‖ (Arora, Li & Panigrahi 2022, §4).

    The recorded step size is the effective one, η/‖∇L(θ)‖. At a critical point
    (∇L = 0) the rule stays put and records step size 0.
    """

    name = "ngd"
    aliases = ("normalizedgd",)
    summary = "normalized GD θ ← θ − η∇L/‖∇L‖"
    color = "#009E73"
    step_fn = staticmethod(_ngd_step)
    step_block_fn = staticmethod(_ngd_step_block)
    jacobian_is_exact = True

    def edge_constant(self):
        """2, for the effective step η/‖∇L‖ in force: NGD enters the EoS where η_eff·λ₁ ≈ 2
        (Arora, Li & Panigrahi 2022, §4)."""
        return 2.0

    @classmethod
    def threshold(cls, curvature, **hyper):
        """Refused: normalized GD's map is not differentiable at a critical point (its step
        η/‖∇L‖ blows up there), so a minimum has no linear threshold."""
        raise ValueError("normalized GD ('ngd') has no linear threshold: its map is not differentiable "
                         "at a critical point (its step η/‖∇L‖ blows up)")

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
    den = np.sqrt(v / c2) + eps
    if den == 0.0:  # eps = 0 and a coordinate whose gradient has been 0 so far: m = 0 too
        return x, m, v
    return x - lr * (m / c1) / den, m, v


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

    ``eps = 0`` is allowed (pure RMS normalisation). Where √v̂ + ε = 0 — only for a
    coordinate whose gradient has been exactly 0 at every step so far, so m = 0 as well —
    the update of that coordinate is 0, the limit of m̂/(√v̂ + ε) as ε → 0⁺.
    """

    name = "adam"
    summary = "Adam (PyTorch convention); edge (2+2β₁)/((1−β₁)λ_max(P⁻¹H))"
    color = "#D55E00"
    torch_twin = "torch.optim.Adam"
    spec_kinds = {"betas": ("beta1", "beta2")}
    step_fn = staticmethod(_adam_step)
    step_block_fn = staticmethod(_adam_step_block)
    precond_fn = staticmethod(_adam_precond)
    preconditioned = True

    def __init__(self, lr, betas=(0.9, 0.999), eps=1e-8, bias_correction=True):
        self.lr = positive("lr", lr)
        b1, b2 = pair("betas", betas)
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

    def edge_constant(self):
        """(2 + 2β₁)/(1 − β₁) for λ_max(P⁻¹H) with the preconditioner P frozen (Cohen et al. 2022, §3)."""
        b1 = self.betas[0]
        return (2.0 + 2.0 * b1) / (1.0 - b1)

    def torch_kwargs(self):
        if not self.bias_correction:
            raise ValueError("torch.optim.Adam always corrects the bias: no torch twin for "
                             "Adam(bias_correction=False)")
        return {"lr": self.lr, "betas": self.betas, "eps": self.eps}

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
