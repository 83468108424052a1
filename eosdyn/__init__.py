"""eosdyn — the Edge of Stability of gradient descent, as dynamical systems and at scale.

Quick start::

    import eosdyn
    from eosdyn.losses import Quadratic
    from eosdyn.rules import GD

    traj = eosdyn.simulate(Quadratic(eigs=[10.0, 1.0]), GD(lr=0.19), [1.0, 1.0], steps=200)
    traj.sharpness[-1] * traj.lr[-1]   # ηλ = 1.9 < 2: stable

Subpackages: ``losses``, ``rules`` (with ``rules.schedules`` and the rule registry), ``engine`` (the
stepping core every simulator runs), ``sim`` (``simulate``,
``ensemble``), ``sde``, ``curvature``, ``analysis``, ``bridge`` (torch), ``sweep``,
``plot``. Heavy ones are imported on first use.
"""
from __future__ import annotations

import importlib

from . import losses, rules
from .sim import EnsembleResult, Trajectory, ensemble, simulate

try:
    from importlib.metadata import version as _v

    __version__ = _v("eosdyn")
except Exception:  # pragma: no cover
    __version__ = "0.0.0+unknown"

_LAZY_MODULES = {"sde", "curvature", "analysis", "bridge", "plot", "sim", "cli", "specs", "engine", "codegen"}


def __getattr__(name):
    if name in _LAZY_MODULES:
        return importlib.import_module(f".{name}", __name__)
    if name == "sweep":
        # the eosdyn.sweep module is itself callable: eosdyn.sweep(fn, grid, store=...)
        return importlib.import_module(".sweep", __name__)
    raise AttributeError(f"module 'eosdyn' has no attribute {name!r}")


__all__ = ["simulate", "ensemble", "Trajectory", "EnsembleResult", "losses", "rules", "sweep",
           "__version__"]
