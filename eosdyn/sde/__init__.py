"""The EoS SDE engine: dθ = −η∇L(θ) dt + √(ηΣ(θ)) dW and the noisy GD map, over ensembles.

- :func:`integrate` — a generic Itô integrator with sdeint's signatures
  (``f(y, t)``, ``G(y, t)``, ``tspan``, optional ``dW``): Euler–Maruyama, Milstein,
  strong-order-1.5 SRK (Rößler's SRA1 / Kloeden–Platen §11.2).
- :func:`simulate` — the EoS SDE on any eosdyn loss, for n trajectories in numba
  ``prange`` kernels, one random stream per trajectory keyed on (seed, index):
  bit-identical for any thread count; :func:`increments` regenerates a trajectory's
  Brownian increments.
- :func:`noisy_gd` — the map θ ← θ − η∇L + √η·B(θ)ξ (Euler–Maruyama with dt = 1);
  :func:`compare_sde_and_map` runs both at matched times t = k (τ = kη).
- Noise models: :class:`Isotropic`, :class:`ConstantMatrix`,
  :class:`ConstantCovariance`, :class:`HessianAligned`, :class:`CallableNoise`,
  :class:`MinibatchNoise` (on a :class:`FiniteSumLoss` such as :class:`LeastSquares`).
"""
from ..losses.finite_sum import FiniteSumLoss, LeastSquares, minibatch_factor
from .integrate import coarsen_increments, integrate
from .noise import (
    CallableNoise,
    ConstantCovariance,
    ConstantMatrix,
    HessianAligned,
    Isotropic,
    MinibatchNoise,
    NoiseModel,
)
from .simulate import (
    METHODS,
    SDEMapComparison,
    SDEResult,
    compare_sde_and_map,
    increments,
    noisy_gd,
    simulate,
)

__all__ = [
    "integrate", "simulate", "noisy_gd", "compare_sde_and_map", "increments",
    "coarsen_increments", "SDEResult", "SDEMapComparison", "METHODS",
    "NoiseModel", "Isotropic", "ConstantMatrix", "ConstantCovariance", "HessianAligned",
    "CallableNoise", "MinibatchNoise", "FiniteSumLoss", "LeastSquares", "minibatch_factor",
]
