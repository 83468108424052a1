"""Nesterov momentum in PyTorch's convention — a rule in one file.

This module is the template for adding a rule: the numba step (per trajectory and,
optionally, per block of trajectories through one per-coordinate helper), the closed-form
Jacobian for the analysis, and one class that describes itself (name, aliases, summary,
colour, edge, torch twin). Defining the class registers it (:mod:`eosdyn.rules.registry`),
and ``eosdyn.rules`` imports every module of the package, so the rule is at once known to
spec strings, the command line, thresholds, stability analysis and the plots. Its test
file is ``tests/test_rule_nesterov.py``.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from .._validate import in_range, positive
from .base import Rule
from .classic import _momentum_jacobian


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

    Linear edge at a minimum with sharpness λ: η* = (2 + 2β)/((1 + 2β) λ), the μ = −1 root
    of the per-mode characteristic polynomial (derived in ``theory/thresholds.py``).
    State: the buffer b.
    """

    name = "nesterov"
    aliases = ("nag",)
    summary = "Nesterov momentum (PyTorch form); edge η = (2+2β)/((1+2β)λ)"
    color = "#56B4E9"
    torch_twin = "torch.optim.SGD"
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

    def edge_constant(self):
        """(2 + 2β)/(1 + 2β)."""
        b = self.momentum
        return (2.0 + 2.0 * b) / (1.0 + 2.0 * b)

    def torch_kwargs(self):
        return {"lr": self.lr, "momentum": self.momentum, "nesterov": True}

    def jacobian(self, loss, z, t=10**9, h=None):
        """On z = (θ, b): [[I − η(1+β)H, −ηβ²I], [H, βI]]."""
        return self.jacobian_fn(loss.hess(z[: loss.dim]), self.hyper, loss.dim)
