"""Simulators of the discrete map: one trajectory (`simulate`) and ensembles (`ensemble`)."""
from .discrete import ensemble, simulate
from .results import EnsembleResult, Trajectory

__all__ = ["simulate", "ensemble", "Trajectory", "EnsembleResult"]
