"""The one registry of update rules: every entry point resolves a rule name here.

A rule class registers itself when it is defined (:meth:`eosdyn.rules.Rule.__init_subclass__`
reads its ``name``), and everything that needs to know about rules — spec strings and the
command line (:mod:`eosdyn.specs`), thresholds and stability (:mod:`eosdyn.analysis`), plot
colours (:mod:`eosdyn.plot`) — reads the class. (The sympy derivations of ``theory/`` stay
independent of it on purpose: ``tests/test_rules_registry.py`` checks each rule's
``edge_constant`` against them.) The fields:

=====================  ==============================================================
``name``               canonical lower-case name ("gd", "heavyball", …)
``aliases``            other names accepted everywhere ("hb", "momentum", …)
``step_parameter``     the constructor argument that sets the step size ("lr", "alpha")
``summary``            one line, shown by ``eosdyn simulate --help``
``color``              the colour every figure draws the rule in
``edge_constant()``    c in the linear edge λ_max(P⁻¹H) = c/η (None where there is none)
``threshold(λ, …)``    the largest stable step-size value at a minimum of sharpness λ
``preconditioner()``   the diagonal P(state) of the update θ ← θ − η P⁻¹ m
``torch_twin``         the torch optimizer that runs the same rule on a network
=====================  ==============================================================

Names are matched case-insensitively and with ``-``, ``_`` and spaces ignored, so
``"Heavy-Ball"``, ``"heavy_ball"`` and ``"heavyball"`` are one name. An unknown name
raises a ``ValueError`` that lists every known name with its aliases.
"""
from __future__ import annotations

_RULES: dict = {}   # canonical name -> class
_LOOKUP: dict = {}  # normalised name or alias -> canonical name


def normalise(name: str) -> str:
    """The lookup key of a rule name: lower case, without ``-``, ``_`` and spaces."""
    return "".join(ch for ch in str(name).lower() if ch not in "-_ ")


def register(cls) -> None:
    """Add a rule class under its ``name`` and ``aliases`` (called by ``Rule.__init_subclass__``)."""
    name = cls.name
    for key in (name, *cls.aliases):
        k = normalise(key)
        owner = _LOOKUP.get(k)
        if owner is not None and _RULES[owner].__qualname__ != cls.__qualname__:
            raise ValueError(f"rule name or alias {key!r} of {cls.__name__} is already taken by "
                             f"{_RULES[owner].__name__}")
        _LOOKUP[k] = name
    _RULES[name] = cls


def known_names() -> str:
    """Every rule name with its aliases, for error messages: ``gd; heavyball (hb, momentum); …``."""
    return "; ".join(f"{n} ({', '.join(c.aliases)})" if c.aliases else n for n, c in _RULES.items())


def rule_class(rule):
    """The rule class for a name or alias, or a Rule subclass itself.

    Raises ValueError for an unknown name (listing the known names and aliases) and
    TypeError for anything that is neither a string nor a Rule subclass.
    """
    from .base import Rule

    if isinstance(rule, type) and issubclass(rule, Rule):
        return rule
    if isinstance(rule, str):
        key = normalise(rule)
        if key in _LOOKUP:
            return _RULES[_LOOKUP[key]]
        raise ValueError(f"unknown rule {rule!r}; known rules (aliases in brackets): {known_names()}")
    raise TypeError(f"a rule must be named by a string (e.g. 'gd', 'heavyball') or given as a Rule "
                    f"subclass, got {type(rule).__name__}")


def rules() -> dict:
    """{canonical name: class} of every registered rule, in registration order."""
    return dict(_RULES)
