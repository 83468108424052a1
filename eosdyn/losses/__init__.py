"""Toy losses with exact, numba-compiled gradient, Hessian and HVP."""
from .base import Loss
from .deep_linear import DeepLinear, reduced_rank_optimum
from .quadratic import Quadratic
from .scalar_net import ScalarNet
from .sqrt_loss import SqrtLoss
from .symbolic import SympyLoss, from_sympy
from .toys import LogisticCubic, ZhuMinimalist, cubic_logistic

__all__ = [
    "Loss",
    "Quadratic",
    "DeepLinear",
    "reduced_rank_optimum",
    "ScalarNet",
    "SqrtLoss",
    "SympyLoss",
    "from_sympy",
    "LogisticCubic",
    "cubic_logistic",
    "ZhuMinimalist",
]
