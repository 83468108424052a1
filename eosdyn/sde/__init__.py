"""The EoS SDE engine: dθ = −η∇L(θ) dt + c·B(θ) dW and the noisy GD map, over ensembles.

Time t is counted in GD steps, Σ = BBᵀ is the noise model, and the **convention** (keyword
``convention`` of :func:`simulate`, :func:`noisy_gd`, :func:`compare_sde_and_map`) fixes c:

- ``"sgd"`` (default): c = η, per-step noise covariance η²Σ — Li, Malladi & Arora's SDE of
  SGD (arXiv 2102.12470; dX = −∇L dτ + √(ηΣ) dW_τ with τ = kη), SGD's for Σ = Σ_B;
- ``"proposal"``: c = √η, per-step ηΣ — the EoS-Ada proposal's dθ = −η∇L dt + √(ηΣ) dW
  (t in steps), 1/η times SGD's noise for Σ = Σ_B; the only form before the keyword.

The stepping core's ``eosdyn.simulate/ensemble(..., noise=..., convention=...)`` and
:func:`eosdyn.analysis.stationary_covariance` take the same keyword with the same default.

- :func:`integrate` — a generic Itô integrator with sdeint's signatures
  (``f(y, t)``, ``G(y, t)``, ``tspan``, optional ``dW``): Euler–Maruyama, Milstein,
  strong-order-1.5 SRK (Rößler's SRA1 / Kloeden–Platen §11.2). No η and no convention:
  the user's G is the diffusion.
- :func:`simulate` — the EoS SDE on any eosdyn loss, for n trajectories in numba
  kernels run on threads (:mod:`eosdyn.engine.threads`), one random stream per trajectory keyed on (seed, index):
  bit-identical for any thread count; :func:`increments` regenerates a trajectory's
  Brownian increments.
- :func:`noisy_gd` — the map θ ← θ − η∇L + c·B(θ)ξ (Euler–Maruyama with dt = 1);
  :func:`compare_sde_and_map` runs both at matched times t = k (τ = kη).
- Noise models: :class:`Isotropic`, :class:`ConstantMatrix`,
  :class:`ConstantCovariance`, :class:`HessianAligned`, :class:`CallableNoise`,
  :class:`MinibatchNoise` (on a :class:`FiniteSumLoss` such as :class:`LeastSquares`);
  :data:`CONVENTIONS` the valid conventions.
"""
from ..losses.finite_sum import FiniteSumLoss, LeastSquares, minibatch_factor
from .integrate import coarsen_increments, integrate
from .noise import (
    CONVENTIONS,
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
    "coarsen_increments", "SDEResult", "SDEMapComparison", "METHODS", "CONVENTIONS",
    "NoiseModel", "Isotropic", "ConstantMatrix", "ConstantCovariance", "HessianAligned",
    "CallableNoise", "MinibatchNoise", "FiniteSumLoss", "LeastSquares", "minibatch_factor",
]
