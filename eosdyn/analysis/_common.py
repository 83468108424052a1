"""Shared helpers of :mod:`eosdyn.analysis`: rule families, step-size parameters, batch runs."""
from __future__ import annotations

import numbers

import numpy as np

from .._validate import finite_matrix, finite_vector, nonneg_int, positive
from ..losses.base import Loss
from ..rules import DCAO, GD, Adam, EoSAda, HeavyBall, Nesterov, NormalizedGD
from ..rules.base import Rule
from ._kernels import CURV_EIG, CURV_NONE, CURV_TRACE, curvature, iterate_kernel, no_curvature

RULE_FAMILIES = {
    "gd": GD,
    "heavyball": HeavyBall,
    "heavy_ball": HeavyBall,
    "heavy-ball": HeavyBall,
    "momentum": HeavyBall,
    "nesterov": Nesterov,
    "adam": Adam,
    "eosada": EoSAda,
    "eos-ada": EoSAda,
    "eos_ada": EoSAda,
    "ngd": NormalizedGD,
    "normalizedgd": NormalizedGD,
    "dcao": DCAO,
}


def check_loss(loss):
    if not isinstance(loss, Loss):
        raise TypeError(f"loss must be an eosdyn Loss, got {type(loss).__name__}")
    return loss


def resolve_family(rule_family):
    """A rule class from a family name ("gd", "heavyball", …) or a Rule subclass."""
    if isinstance(rule_family, str):
        key = rule_family.lower()
        if key not in RULE_FAMILIES:
            raise ValueError(f"rule_family must be one of {sorted(RULE_FAMILIES)} or a Rule subclass, "
                             f"got {rule_family!r}")
        return RULE_FAMILIES[key]
    if isinstance(rule_family, type) and issubclass(rule_family, Rule):
        return rule_family
    raise TypeError(f"rule_family must be a family name or a Rule subclass, got {rule_family!r}")


def step_parameter(cls) -> str:
    """The name of the step-size parameter of a rule class: ``alpha`` for EoS-Ada, else ``lr``."""
    return "alpha" if issubclass(cls, EoSAda) else "lr"


def rule_factory(rule, rule_kwargs):
    """(callable value -> Rule, parameter name) for a family name, a Rule subclass or a callable."""
    if isinstance(rule, Rule):
        raise TypeError("rule must be a family name, a Rule subclass or a callable lr -> Rule "
                        "(not a Rule instance: the step size is what is being varied)")
    if isinstance(rule, (str, type)):
        cls = resolve_family(rule)
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


def curv_mode(rule) -> int:
    if rule.curvature_k == 0:
        return CURV_NONE
    return CURV_TRACE if rule.curvature_method == "hutchinson" else CURV_EIG


def positive_array(name, values) -> np.ndarray:
    a = finite_vector(name, values)
    if a.size == 0:
        raise ValueError(f"{name} must not be empty")
    if np.any(a <= 0):
        raise ValueError(f"{name} must be > 0 (step sizes), got min {a.min()!r}")
    return a


def run_rules(loss, rules, theta0s, steps, keep, states0=None, blowup=1e100, t0=0):
    """Iterate each rule i from theta0s[i] (noise off) for ``steps`` steps; last ``keep`` iterates.

    All rules must be of one class. Returns (orbit (n, keep, d), final states (n, S),
    diverged_at (n,)).
    """
    loss = check_loss(loss)
    d = loss.dim
    theta0s = finite_matrix("theta0s", theta0s, d)
    n = theta0s.shape[0]
    if len(rules) != n:
        raise ValueError(f"need one rule per start: {len(rules)} rules, {n} starts")
    cls = type(rules[0])
    if any(type(r) is not cls for r in rules):
        raise ValueError("all rules of a batch must be of one class")
    steps = nonneg_int("steps", steps)
    keep = nonneg_int("keep", keep, minimum=1)
    if keep > steps + 1:
        raise ValueError(f"keep must be <= steps + 1 = {steps + 1}, got {keep}")
    S = rules[0].state_size(d)
    if states0 is None:
        states = np.zeros((n, S))
        for i in range(n):
            states[i] = rules[i].init_state(theta0s[i])
    else:
        states = finite_matrix("state0", states0, S if S else None, rows=n) if S else np.zeros((n, 0))
    hypers = np.ascontiguousarray(np.stack([np.asarray(r.deterministic_hyper(), float) for r in rules]))
    thetas = np.ascontiguousarray(theta0s.copy())
    states = np.ascontiguousarray(states)
    out = np.full((n, keep, d), np.nan)
    diverged_at = np.full(n, -1, np.int64)
    mode = curv_mode(rules[0])
    ck = max(rules[0].curvature_k, 1)
    curv_fn = no_curvature if mode == CURV_NONE else curvature
    kernel = iterate_kernel(loss.grad_into_fn, curv_fn, loss.hess_fn, rules[0].step_fn)
    kernel(loss.params, hypers, thetas, states, mode, ck, steps, np.int64(t0), keep, float(blowup), out,
           diverged_at)
    return out, states, diverged_at
