"""Toy losses with exact, numba-compiled gradient, Hessian and HVP."""
from .base import Loss
from .deep_linear import DeepLinear, reduced_rank_optimum
from .finite_sum import FiniteSumLoss, LeastSquares, minibatch_factor
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
    "FiniteSumLoss",
    "LeastSquares",
    "minibatch_factor",
    "ScalarNet",
    "SqrtLoss",
    "SympyLoss",
    "from_sympy",
    "LogisticCubic",
    "cubic_logistic",
    "ZhuMinimalist",
]
