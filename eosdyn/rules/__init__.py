"""Update rules: pure maps (θ, state, ∇L, curvature) → (θ', state') with numba steps."""
from . import schedules
from .adaptive import DCAO, EoSAda
from .base import Rule
from .classic import GD, Adam, HeavyBall, Nesterov, NormalizedGD

__all__ = ["Rule", "GD", "HeavyBall", "Nesterov", "NormalizedGD", "Adam", "EoSAda", "DCAO", "schedules"]
