"""A loss whose gradient raises once |θ₀| passes a limit: failures at chosen steps, for the engine tests.

L(θ) = ½ λ Σθᵢ² with λ = 2.5 (GD at η = 1 multiplies θ by −1.5 per step); the gradient raises
ValueError when |θ₀| > 100, so a start of size x fails at step ceil(log(100/x)/log 1.5).
Module level, so the simulator kernels bind it by name and cache it on disk.
"""
import numpy as np
from numba import njit

from eosdyn.losses.base import Loss

LAM = 2.5
LIMIT = 100.0


@njit(cache=True)
def value(theta, params):
    s = 0.0
    for i in range(theta.shape[0]):
        s += theta[i] * theta[i]
    return 0.5 * LAM * s


@njit(cache=True)
def grad(theta, params):
    if abs(theta[0]) > LIMIT:
        raise ValueError("gradient undefined beyond the limit")
    return LAM * theta


@njit(cache=True)
def hess(theta, params):
    return LAM * np.eye(theta.shape[0])


def raising_loss(dim=2):
    return Loss(value, grad, hess, None, (), dim, 0.0)


def fail_step(x0):
    """The step at which a start with |θ₀[0]| = x0 fails under GD(1.0)."""
    k = 0
    x = abs(x0)
    while x <= LIMIT:
        x *= 1.5
        k += 1
    return k
