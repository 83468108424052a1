"""Shared helpers of :mod:`eosdyn.analysis`: rule families, step-size parameters, the map's orbits."""
from __future__ import annotations

import numbers

import numpy as np

from .._validate import finite_matrix, finite_vector, nonneg_int, positive
from ..losses.base import Loss
from ..rules import GD
from ..rules.base import Rule
from ..rules.registry import rule_class


def check_loss(loss):
    if not isinstance(loss, Loss):
        raise TypeError(f"loss must be an eosdyn Loss, got {type(loss).__name__}")
    return loss


def resolve_family(rule_family, name="rule_family"):
    """A rule class from a name or alias (the one registry, :mod:`eosdyn.rules.registry`) or a
    Rule subclass; an unknown name raises ValueError naming ``name`` and listing the known names
    and aliases."""
    try:
        return rule_class(rule_family)
    except (ValueError, TypeError) as exc:
        raise type(exc)(f"{name}: {exc}") from None


def step_parameter(cls) -> str:
    """The name of the step-size parameter of a rule class (``alpha`` for EoS-Ada, else ``lr``)."""
    return cls.step_parameter


def rule_factory(rule, rule_kwargs):
    """(callable value -> Rule, parameter name) for a family name, a Rule subclass or a callable."""
    if isinstance(rule, Rule):
        raise TypeError("rule must be a family name, a Rule subclass or a callable lr -> Rule "
                        "(not a Rule instance: the step size is what is being varied)")
    if isinstance(rule, (str, type)):
        cls = resolve_family(rule, "rule")
        param = step_parameter(cls)
        kw = dict(rule_kwargs)
        if param in kw:
            raise ValueError(f"{param} is the swept step-size parameter; do not pass it in rule_kwargs")
        return (lambda v: cls(**{param: v}, **kw)), param
    if callable(rule):
        if rule_kwargs:
            raise ValueError("rule_kwargs are only used with a family name or a Rule subclass")
        return rule, "lr"
    raise TypeError(f"rule must be a family name, a Rule subclass or a callable lr -> Rule, got {rule!r}")


def as_rule(name, value):
    """A float is GD's step size; a Rule instance is used as is."""
    if isinstance(value, Rule):
        return value
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return GD(positive(name, value))
    raise TypeError(f"{name} must be a step size (float) or an eosdyn Rule, got {type(value).__name__}")


def positive_array(name, values) -> np.ndarray:
    a = finite_vector(name, values)
    if a.size == 0:
        raise ValueError(f"{name} must not be empty")
    if np.any(a <= 0):
        raise ValueError(f"{name} must be > 0 (step sizes), got min {a.min()!r}")
    return a


def run_rules(loss, rules, theta0s, steps, keep, states0=None, blowup=1e100, t0=0, curvature="exact", seed=0):
    """The map's orbits for the analysis: rule i (noise off) from theta0s[i], the last ``keep`` iterates.

    All rules must be of one class with the same curvature settings; their
    hyperparameters may differ (a bifurcation diagram's step sizes). ``curvature="exact"``
    iterates the deterministic map F of the analysis (exact curvature at every step,
    :meth:`eosdyn.rules.Rule.map`); ``"rule"`` follows each rule's own probe schedule, as
    :func:`eosdyn.simulate` does. Runs in the stepping core (:func:`eosdyn.engine.run_map`).
    Returns (orbit (n, keep, d), final states (n, S), diverged_at (n,)).
    """
    from ..engine.run import RunInterrupted, run_map

    loss = check_loss(loss)
    d = loss.dim
    theta0s = finite_matrix("theta0s", theta0s, d)
    n = theta0s.shape[0]
    if len(rules) != n:
        raise ValueError(f"need one rule per start: {len(rules)} rules, {n} starts")
    first = rules[0]
    if any(type(r) is not type(first) or r.resolved_curvature(d) != first.resolved_curvature(d) for r in rules):
        raise ValueError("all rules of a batch must be of one class with the same curvature settings")
    steps = nonneg_int("steps", steps)
    keep = nonneg_int("keep", keep, minimum=1)
    if keep > steps + 1:
        raise ValueError(f"keep must be <= steps + 1 = {steps + 1}, got {keep}")
    S = first.state_size(d)
    if states0 is not None:
        states0 = finite_matrix("state0", states0, S if S else None, rows=n) if S else np.zeros((n, 0))
    hypers = np.stack([np.asarray(r.deterministic_hyper(), float) for r in rules])
    if np.all(hypers == hypers[0]):
        hypers = hypers[:1]
    out = run_map(loss, first, theta0s, steps, record_every=1, record_start=steps - keep + 1, records=("theta",),
                  seed=seed, t0=t0, states0=states0, hypers=hypers, exact_curvature=(curvature == "exact"),
                  blowup=float(blowup))
    div = np.where(out.status != 0, out.fail_at, -1)
    if out.interrupted:  # orbits, bifurcation and basins keep only the tail: nothing useful to hand back
        raise RunInterrupted(f"interrupted after {out.steps_done - 1} of {steps} steps")
    return out.records["theta"], out.states, div
