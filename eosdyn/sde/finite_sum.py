"""Deprecated location: the finite-sum losses live in :mod:`eosdyn.losses.finite_sum`.

``from eosdyn.sde.finite_sum import ...`` keeps working for one release, with a warning;
import from ``eosdyn.losses`` (or ``eosdyn.losses.finite_sum``) instead.
"""
import warnings as _warnings

from ..losses import finite_sum as _fs
from ..losses.finite_sum import *  # noqa: F401,F403

_warnings.warn("eosdyn.sde.finite_sum moved to eosdyn.losses.finite_sum; import FiniteSumLoss, "
               "LeastSquares and minibatch_factor from eosdyn.losses", DeprecationWarning, stacklevel=2)


def __getattr__(name):
    return getattr(_fs, name)
