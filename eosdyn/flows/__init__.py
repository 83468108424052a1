"""Predicting the edge of stability: central and stable flows, self-stabilization.

* :func:`central_flow`, :func:`stable_flow`, :func:`gradient_flow` — Cohen, Damian,
  Talwalkar, Kolter & Lee, "Understanding Optimization in Deep Learning with Central
  Flows" (ICLR 2025), on toy losses with exact third derivatives; covered rules: GD,
  RMSProp (Adam with β₁ = 0) and :class:`ScalarRMSProp`. Adam with momentum is *not*
  covered by the theory.
* :func:`self_stabilization` — Damian, Nichani & Lee (ICLR 2023): the constrained
  trajectory θ† and the two-dimensional reduced dynamics (x, y).
* :func:`solve_sdcp` — the semidefinite complementarity problem, in numpy.
* :func:`compare`, :func:`midpoint`, :func:`smooth` — GD against its flows.
"""
from .central import ScalarRMSProp, central_flow, flow_rule, gradient_flow, stable_flow
from .compare import FlowComparison, compare, midpoint, smooth
from .sdcp import SDCPSolution, sdcp_residuals, solve_sdcp
from .selfstab import (
    project_to_stable_set,
    reduced_system,
    self_stabilization,
    stochastic_sharpness_gap,
    whole_cycle_mean,
)

__all__ = ["central_flow", "stable_flow", "gradient_flow", "ScalarRMSProp", "flow_rule",
           "self_stabilization", "project_to_stable_set", "stochastic_sharpness_gap", "reduced_system",
           "whole_cycle_mean",
           "solve_sdcp", "sdcp_residuals", "SDCPSolution", "compare", "midpoint", "smooth", "FlowComparison"]
