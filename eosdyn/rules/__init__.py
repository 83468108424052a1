"""Update rules: pure maps (θ, state, ∇L, curvature) → (θ', state') with numba steps.

Every module of this package is imported with it, and every rule class registers itself
(:mod:`eosdyn.rules.registry`): adding a rule is one class file here plus one test file.
"""
import importlib as _importlib
import pkgutil as _pkgutil

# the import order is the order in which the registry lists the rules
# isort: off
from . import schedules
from .base import Rule
from .classic import GD, Adam, HeavyBall, NormalizedGD
from .nesterov import Nesterov
from .adaptive import DCAO, EoSAda
from .sgd import SGD
from .registry import rule_class, rules
# isort: on

for _m in _pkgutil.iter_modules(__path__):
    if not _m.name.startswith("_"):
        _importlib.import_module(f"{__name__}.{_m.name}")

__all__ = ["Rule", "GD", "HeavyBall", "Nesterov", "NormalizedGD", "Adam", "EoSAda", "DCAO", "SGD", "schedules",
           "rule_class", "rules"]
