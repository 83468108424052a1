r"""Low-dimensional toy losses with closed-form EoS behaviour.

* :class:`LogisticCubic` — f(x) = x²/2 − x³/3, on which GD *is* the logistic map.
* :class:`ZhuMinimalist` — L(x, y) = ¼(x²y² − 1)², the minimalist EoS example of
  Zhu, Wang, Wang, Zhou & Ge (ICLR 2023).

For a 2-D loss with a manifold of minima of varying sharpness (phase-plane figures) use
``ScalarNet(2, 1.0)``: L = ½(xy − 1)², minima xy = 1 with sharpness x² + y².
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from .._validate import positive
from .base import Loss


# --------------------------------------------------------------------------------------
# cubic: f(x) = x²/2 − x³/3
# --------------------------------------------------------------------------------------
@njit(cache=True)
def _cubic_value(theta, params):
    x = theta[0]
    return 0.5 * x * x - x * x * x / 3.0


@njit(cache=True)
def _cubic_dx(x):
    """f'(x) = x − x², the one place the gradient is written."""
    return x - x * x


@njit(cache=True)
def _cubic_grad_into(theta, params, out):
    out[0] = _cubic_dx(theta[0])


@njit(cache=True)
def _cubic_grad(theta, params):
    out = np.empty(1)
    _cubic_grad_into(theta, params, out)
    return out


@njit(cache=True)
def _cubic_grad_block(X, params, G, W):
    for b in range(X.shape[1]):
        G[0, b] = _cubic_dx(X[0, b])


@njit(cache=True)
def _cubic_hess(theta, params):
    out = np.empty((1, 1))
    out[0, 0] = 1.0 - 2.0 * theta[0]
    return out


@njit(cache=True)
def _cubic_hvp(theta, v, params):
    out = np.empty(1)
    out[0] = (1.0 - 2.0 * theta[0]) * v[0]
    return out


class LogisticCubic(Loss):
    r"""f(x) = x²/2 − x³/3 (x ∈ R): gradient descent on it is conjugate to the logistic map.

    f'(x) = x − x², f''(x) = 1 − 2x. One GD step with step size η is

        x ↦ x − η(x − x²) = (1 − η) x + η x².

    **Conjugacy to the logistic map** y ↦ r y (1 − y) (May, Nature 261, 1976) with
    r = 1 + η. Put x = a y + b and ask that the GD step in x be the logistic step in y:

        (1−η)(ay+b) + η(ay+b)²  =  a r y (1 − y) + b   for all y.

    Matching powers of y:  y²: η a² = −a r ⇒ a = −r/η;  y⁰: (1−η) b + η b² = b ⇒ b ∈ {0, 1};
    y¹: (1−η) a + 2η a b = a r ⇒ r = 1 − η + 2η b. The choice b = 1 gives r = 1 + η,
    a = −(1+η)/η (b = 0 would give r = 1 − η < 0 for η > 1, not the standard family):

        x = 1 − (1+η)/η · y,      y = η (1 − x) / (1 + η)       (:meth:`to_logistic`),

    and GD_η = φ⁻¹ ∘ logistic_{1+η} ∘ φ with φ = :meth:`to_logistic`. The local minimum
    x = 0 (sharpness f''(0) = 1) is the logistic fixed point y = 1 − 1/r, the local
    maximum x = 1 is y = 0. So the EoS threshold η = 2/f''(0) = 2 is the first
    period-doubling r = 3, and the period-doubling cascade accumulates at
    r ≈ 3.5699, i.e. η ≈ 2.5699; r = 4 (η = 3) is fully chaotic.

    ``min_value`` is **−inf**: f is a cubic, unbounded below (f → −∞ as x → +∞), and
    the :class:`Loss` contract defines ``min_value`` as inf f (as :class:`Quadratic` does
    for an indefinite H). The *local* minimum is exposed as ``local_minimizer`` = 0 and
    ``local_min_value`` = 0; use ``SqrtLoss(LogisticCubic(), base_min=0.0)`` if a
    reference value is wanted. (Reporting 0 as ``min_value`` would be false: from
    x₀ > 1 with small η, or from almost every x₀ with η > 3, GD escapes to f = −∞.)
    """

    name = "logistic_cubic"
    polynomial_degree = 3

    def __init__(self):
        super().__init__(_cubic_value, _cubic_grad, _cubic_hess, _cubic_hvp, (), 1, -np.inf,
                         grad_into_fn=_cubic_grad_into, grad_block_fn=_cubic_grad_block)
        self.local_minimizer = 0.0
        self.local_min_value = 0.0

    @staticmethod
    def logistic_r(eta) -> float:
        """The logistic parameter r = 1 + η of the conjugate map."""
        return 1.0 + positive("eta", eta)

    @staticmethod
    def gd_map(x, eta):
        """One GD step x ↦ (1 − η) x + η x² (works elementwise on arrays)."""
        eta = positive("eta", eta)
        x = np.asarray(x, dtype=np.float64)
        return (1.0 - eta) * x + eta * x * x

    @staticmethod
    def to_logistic(x, eta):
        """φ(x) = η (1 − x) / (1 + η): GD iterates -> logistic-map iterates."""
        eta = positive("eta", eta)
        return eta * (1.0 - np.asarray(x, dtype=np.float64)) / (1.0 + eta)

    @staticmethod
    def from_logistic(y, eta):
        """φ⁻¹(y) = 1 − (1 + η) y / η: logistic-map iterates -> GD iterates."""
        eta = positive("eta", eta)
        return 1.0 - (1.0 + eta) * np.asarray(y, dtype=np.float64) / eta

    def __repr__(self):
        return "LogisticCubic()"


def cubic_logistic() -> LogisticCubic:
    """The loss f(x) = x²/2 − x³/3 whose GD map is conjugate to the logistic map (see :class:`LogisticCubic`)."""
    return LogisticCubic()


# --------------------------------------------------------------------------------------
# Zhu, Wang, Wang, Zhou & Ge (ICLR 2023): L(x, y) = ¼ (x² y² − 1)²
# --------------------------------------------------------------------------------------
@njit(cache=True)
def _zhu_value(theta, params):
    x, y = theta[0], theta[1]
    u = x * x * y * y - 1.0
    return 0.25 * u * u


@njit(cache=True)
def _zhu_dxy(x, y):
    """∇L = u (x y², x² y), u = x²y² − 1: the one place the gradient is written."""
    u = x * x * y * y - 1.0
    return u * x * y * y, u * x * x * y


@njit(cache=True)
def _zhu_grad_into(theta, params, out):
    out[0], out[1] = _zhu_dxy(theta[0], theta[1])


@njit(cache=True)
def _zhu_grad(theta, params):
    out = np.empty(2)
    _zhu_grad_into(theta, params, out)
    return out


@njit(cache=True)
def _zhu_grad_block(X, params, G, W):
    for b in range(X.shape[1]):
        G[0, b], G[1, b] = _zhu_dxy(X[0, b], X[1, b])


@njit(cache=True)
def _zhu_hess(theta, params):
    x, y = theta[0], theta[1]
    x2, y2 = x * x, y * y
    u = x2 * y2 - 1.0
    out = np.empty((2, 2))
    out[0, 0] = 2.0 * x2 * y2 * y2 + u * y2
    out[1, 1] = 2.0 * x2 * x2 * y2 + u * x2
    out[0, 1] = 2.0 * x2 * x * y2 * y + 2.0 * u * x * y
    out[1, 0] = out[0, 1]
    return out


@njit(cache=True)
def _zhu_hvp(theta, v, params):
    return _zhu_hess(theta, params) @ v


class ZhuMinimalist(Loss):
    r"""L(x, y) = ¼ (x² y² − 1)², the "minimalist example" of EoS.

    Zhu, Wang, Wang, Zhou & Ge, "Understanding Edge-of-Stability Training Dynamics with
    a Minimalist Example", ICLR 2023. The minima form the curve x²y² = 1 (L* = 0).
    With u = x²y² − 1:

        ∇L = u (x y², x² y),
        ∇²L: H_xx = 2x²y⁴ + u y²,  H_yy = 2x⁴y² + u x²,  H_xy = 2x³y³ + 2u xy.

    On the minimum curve ∇²L = ½ ∇u ∇uᵀ with ∇u = (2xy², 2x²y), so the sharpness is
    ½‖∇u‖² = 2x²y²(x² + y²) = 2(x² + y²) (:meth:`manifold_sharpness`); it ranges over
    [4, ∞), the flattest minima being (±1, ±1). The *η-EoS minimum* — the minimum of
    sharpness exactly 2/η — has x² + y² = 1/η (exists for η ≤ ½), see :meth:`eos_minimum`.
    Normalisation: the factor ¼ is the one we read for the paper's example. It was only
    checked indirectly: with it, the η-EoS minimum satisfies (x² − y²)² = η⁻² − 4, which
    matches the (η⁻² − 4)^{1/4} in the paper's reparametrised η-EoS minimum (an excerpt of
    the paper's text; the equation number itself was not verified).
    """

    name = "zhu_minimalist"

    polynomial_degree = 8

    def __init__(self):
        super().__init__(_zhu_value, _zhu_grad, _zhu_hess, _zhu_hvp, (), 2, 0.0,
                         grad_into_fn=_zhu_grad_into, grad_block_fn=_zhu_grad_block)

    def manifold_sharpness(self, theta) -> float:
        """½‖∇(x²y²)‖² = 2x²y²(x² + y²): λ_max of ∇²L on the minimum curve x²y² = 1 (= 2(x² + y²) there)."""
        x, y = self._theta(theta)
        return float(2.0 * x * x * y * y * (x * x + y * y))

    @staticmethod
    def eos_minimum(eta) -> np.ndarray:
        """The minimum (x, y), x ≥ y > 0, whose sharpness 2(x² + y²) equals 2/η (needs 0 < η ≤ ½)."""
        eta = positive("eta", eta)
        if eta > 0.5:
            raise ValueError(f"eta must be in (0, 0.5] (the flattest minimum has sharpness 4 = 2/0.5), got {eta!r}")
        s = 1.0 / eta                       # x² + y²
        disc = math.sqrt(max(s * s - 4.0, 0.0))
        x2 = 0.5 * (s + disc)
        y2 = 0.5 * (s - disc)
        return np.array([math.sqrt(x2), math.sqrt(y2)])

    def __repr__(self):
        return "ZhuMinimalist()"
