"""Dynamical-systems analysis of update rules: is this minimum stable under this rule, where
is the edge, and what happens past it.

- :func:`stability`, :func:`threshold`, :func:`simulated_threshold` — Jacobian spectra on the
  rule's full state, the largest stable step size (closed form next to bisection on the
  Jacobian, and next to bisection over simulated runs).
- :func:`fixed_points`, :func:`gd_fixed_points`, :func:`periodic_orbits` — Newton on
  Fᵖ(x) − x from many starts; orbits classified by their multipliers.
- :func:`lyapunov_spectrum`, :func:`lyapunov_spectrum_rule` — Benettin QR method.
- :func:`bifurcation_diagram`, :func:`detect_period`, :func:`period_doubling_points` —
  orbit diagrams over the step size and the period-doubling cascade.
- :func:`displacement_field`, :func:`nullclines`, :func:`basins`, :func:`orbits` — phase
  portraits of 2-D losses.
- :func:`oscillation_spectrum` — power spectrum of a loss series, power at period 2.
- :func:`stationary_covariance` — Lyapunov equations of noisy GD (SDE and map, with
  heavy-ball momentum for the map; ``convention`` "proposal" or "sgd", see :mod:`eosdyn.sde.noise`).
- :func:`sgd_stationary_covariance` — SGD's exact stationary covariance on a least-squares
  finite sum (minibatch sampling with or without replacement, batch-Hessian noise included).
- :func:`sgd_threshold`, :func:`sgd_moment_operator`, :func:`batch_sharpness` — the
  stochastic edge: SGD's exact mean-square threshold (Mulayoff & Michaeli 2024) beside
  Wu, Ma & E's bound, and batch sharpness (Andreyev & Beneventano 2024) on finite sums.
- :func:`linear_network_stability`, :func:`min_manifold_sharpness`,
  :func:`convergence_fraction` — the critical step size 2/min_M λ_max of linear networks
  (Crăciun & Ghoshdastidar 2024) and its empirical check.
"""
from .bifurcation import (
                          BifurcationResult,
                          DoublingResult,
                          bifurcation_diagram,
                          detect_period,
                          iterate_map,
                          period_doubling_points,
)
from .fixed_points import FixedPointResult, Orbit, fixed_points, gd_fixed_points, periodic_orbits
from .linear_networks import (
                          ConvergenceCurve,
                          LinearNetworkStability,
                          ManifoldSharpness,
                          convergence_fraction,
                          linear_network_stability,
                          min_manifold_sharpness,
                          project_to_minimum,
)
from .lyapunov import LyapunovResult, lyapunov_spectrum, lyapunov_spectrum_rule
from .phase import (
                          BASIN_DIVERGED,
                          BASIN_UNDECIDED,
                          Nullclines,
                          OrbitsResult,
                          VectorField,
                          basins,
                          displacement_field,
                          frozen_state,
                          nullclines,
                          orbits,
)
from .sgd import (
                          BatchSharpness,
                          SGDThreshold,
                          batch_sharpness,
                          sgd_moment_operator,
                          sgd_stationary_covariance,
                          sgd_threshold,
)
from .spectra import OscillationSpectrum, oscillation_spectrum
from .stability import (
                          SimulatedThreshold,
                          StabilityResult,
                          ThresholdResult,
                          adam_threshold,
                          classify,
                          eosada_threshold,
                          gd_threshold,
                          heavyball_threshold,
                          nesterov_threshold,
                          preconditioned_sharpness,
                          simulated_threshold,
                          stability,
                          threshold,
)
from .stationary import stationary_covariance, stationary_variance_per_mode

__all__ = [
    "stability", "StabilityResult", "classify", "threshold", "ThresholdResult", "simulated_threshold",
    "SimulatedThreshold", "sgd_threshold", "SGDThreshold", "sgd_moment_operator", "sgd_stationary_covariance",
    "batch_sharpness", "BatchSharpness",
    "gd_threshold", "heavyball_threshold", "nesterov_threshold", "adam_threshold", "eosada_threshold",
    "preconditioned_sharpness",
    "fixed_points", "gd_fixed_points", "periodic_orbits", "FixedPointResult", "Orbit",
    "lyapunov_spectrum", "lyapunov_spectrum_rule", "LyapunovResult",
    "bifurcation_diagram", "detect_period", "period_doubling_points", "BifurcationResult", "DoublingResult",
    "iterate_map",
    "displacement_field", "nullclines", "basins", "orbits", "VectorField", "Nullclines", "OrbitsResult",
    "frozen_state",
    "BASIN_DIVERGED", "BASIN_UNDECIDED",
    "oscillation_spectrum", "OscillationSpectrum",
    "stationary_covariance", "stationary_variance_per_mode",
    "linear_network_stability", "min_manifold_sharpness", "convergence_fraction", "project_to_minimum",
    "LinearNetworkStability", "ManifoldSharpness", "ConvergenceCurve",
]
