"""The one rule registry: every rule describes itself, and every entry point reads it.

Walks every registered rule: every self-description field is filled and consistent, every
name and alias works in every entry point (spec strings, the command line, threshold,
stability, plot colours), an unknown name is refused everywhere with the list of known
names, and the closed-form edges agree with the sympy derivations of ``theory/``.
"""
from __future__ import annotations

import inspect
import sys
from pathlib import Path

import numpy as np
import pytest

import eosdyn
from eosdyn import analysis, plot, specs
from eosdyn.losses import Quadratic
from eosdyn.rules import rule_class, rules
from eosdyn.rules.registry import normalise
from eosdyn.specs import SpecError, rule_from_spec

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from theory import thresholds  # noqa: E402

ALL = list(rules().items())
NAMES = [(name, alias) for name, cls in ALL for alias in (name, *cls.aliases)]


def _make(cls, step=0.1, **kw):
    return cls(**{cls.step_parameter: step}, **kw)


@pytest.mark.parametrize("name, cls", ALL, ids=[n for n, _ in ALL])
def test_every_rule_describes_itself(name, cls):
    from matplotlib.colors import is_color_like

    assert cls.name == name and name == name.lower() and normalise(name) == name
    assert isinstance(cls.aliases, tuple) and all(isinstance(a, str) and a for a in cls.aliases)
    assert cls.step_parameter in inspect.signature(cls.__init__).parameters
    assert isinstance(cls.summary, str) and len(cls.summary) > 10 and "\n" not in cls.summary
    assert is_color_like(cls.color)
    rule = _make(cls)
    # the preconditioner P(state): positive, one entry per parameter, ones where nothing is scaled
    d = 3
    P = rule.preconditioner(rule.init_state(np.ones(d)) + 0.5, t=7, dim=d)
    assert P.shape == (d,) and np.all(P > 0)
    if not rule.preconditioned:
        np.testing.assert_array_equal(P, 1.0)
    # the edge: c/η as a sharpness threshold, c/λ as a step-size threshold
    c = rule.edge_constant()
    if c is not None:
        assert c > 0
        assert rule.sharpness_threshold() == pytest.approx(c / getattr(rule, cls.step_parameter))
    # the torch twin, where there is one, builds with the same hyperparameters
    if cls.torch_twin is not None:
        torch = pytest.importorskip("torch")
        p = torch.zeros(3, dtype=torch.float64, requires_grad=True)
        opt = rule.torch_optimizer([p])
        assert type(opt).__module__ + "." + type(opt).__name__ == cls.torch_twin or \
            f"{type(opt).__module__.rsplit('.', 1)[0]}.{type(opt).__name__}" == cls.torch_twin
    else:
        with pytest.raises(ValueError, match="no torch twin"):
            rule.torch_optimizer([])


@pytest.mark.parametrize("name, alias", NAMES, ids=[a for _, a in NAMES])
def test_every_alias_works_in_every_entry_point(name, alias, capsys):
    cls = rules()[name]
    for spelling in (alias, alias.upper(), alias.replace("-", "_")):
        assert rule_class(spelling) is cls
    step = cls.step_parameter
    # spec strings and stability (which takes a spec)
    rule = rule_from_spec(f"{alias}:{step}=0.05")
    assert type(rule) is cls
    loss = Quadratic(eigs=[2.0, 1.0])
    at = np.array([0.3, -0.2])  # off the minimum: normalized GD's map is not differentiable there
    st = analysis.stability(f"{alias}:{step}=0.05", loss, at)
    direct = analysis.stability(rule, loss, at)  # the spec string is that rule, analysed the same way
    assert np.isfinite(st.spectral_radius) and st.spectral_radius > 0
    np.testing.assert_array_equal(st.eigenvalues, direct.eigenvalues)
    # threshold: every rule with a linear edge; normalized GD refuses with its own reason
    if cls.name == "ngd":
        with pytest.raises(ValueError, match="no linear threshold"):
            analysis.threshold(loss, alias, np.zeros(2))
    else:
        res = analysis.threshold(loss, alias, np.zeros(2))
        if res.analytic is not None:
            assert res.ratio == pytest.approx(1.0, abs=1e-6)
    # plot colours
    assert plot.color(alias) == cls.color
    # the command line
    from eosdyn.cli import main

    code = main(["simulate", "--loss", "quadratic:eigs=2,1", "--rule", f"{alias}:{step}=0.05", "--steps", "3",
                 "--quiet"])
    out = capsys.readouterr()
    assert code == 0, out.err


def test_unknown_rule_names_are_refused_everywhere_with_the_known_names(capsys):
    loss = Quadratic(eigs=[2.0, 1.0])
    known = ["gd", "heavyball", "hb", "nesterov", "ngd", "adam", "eosada", "dcao"]
    for call in (lambda: rule_class("sgdx"), lambda: analysis.threshold(loss, "sgdx", np.zeros(2)),
                 lambda: analysis.stability("sgdx:lr=0.1", loss, np.zeros(2)),
                 lambda: rule_from_spec("sgdx:lr=0.1"),
                 lambda: analysis.bifurcation_diagram(loss, [0.1, 0.2], rule="sgdx", transient=2, keep=2)):
        with pytest.raises(ValueError) as exc:
            call()
        msg = str(exc.value)
        assert "sgdx" in msg and all(k in msg for k in known), msg
    with pytest.raises(SpecError):
        rule_from_spec("sgdx:lr=0.1")
    from eosdyn.cli import main

    assert main(["simulate", "--loss", "quadratic:eigs=2,1", "--rule", "sgdx:lr=0.1", "--steps", "3"]) == 2
    err = capsys.readouterr().err
    assert "unknown rule 'sgdx'" in err and "heavyball (hb" in err
    with pytest.raises(TypeError, match="named by a string"):
        rule_class(3.0)


@pytest.mark.parametrize("name", sorted(thresholds.derive()))
def test_the_rules_closed_forms_are_the_sympy_derivations(name):
    """theory/thresholds.py derives each edge from the characteristic polynomial (μ = −1);
    the registry's rule class must give the same number."""
    cls = rule_class(name)
    lam_ = 3.7
    for beta_ in (0.0, 0.3, 0.9):
        if name == "gd":
            want, kw = thresholds.gd_threshold(lam_), {}
        elif name == "adam":
            want, kw = thresholds.adam_threshold(lam_, beta_), {"betas": (beta_, 0.999)}
        else:
            want, kw = getattr(thresholds, f"{name}_threshold")(lam_, beta_), {"momentum": beta_}
        assert cls.threshold(lam_, **kw) == pytest.approx(want, rel=1e-14)


def test_a_new_rule_is_one_class_and_is_known_everywhere():
    """Defining a Rule subclass with a name registers it: spec strings, thresholds and colours see it."""
    from eosdyn.rules import GD

    class HalfGD(GD):
        """GD at half the step, as a test of the registry (edge 4/η)."""

        name = "halfgd_test"
        aliases = ("hgd-test",)
        summary = "GD with half the step (a test rule)"
        color = "#123456"

        def __init__(self, lr):
            super().__init__(lr)
            self.hyper = np.array([0.5 * self.lr])

        def edge_constant(self):
            return 4.0

    try:
        assert rule_class("HGD_test") is HalfGD
        assert type(rule_from_spec("hgd-test:lr=0.4")) is HalfGD
        assert plot.color("hgd-test") == "#123456"
        loss = Quadratic(eigs=[2.0, 1.0])
        res = analysis.threshold(loss, "hgd-test", np.zeros(2))
        assert res.analytic == pytest.approx(2.0) and res.ratio == pytest.approx(1.0, rel=1e-9)
        tr = eosdyn.simulate(loss, HalfGD(0.4), [1.0, 1.0], 3)
        np.testing.assert_allclose(tr.theta[1], [1 - 0.2 * 2, 1 - 0.2 * 1])
    finally:
        from eosdyn.rules import registry

        registry._RULES.pop("halfgd_test", None)
        for k in ("halfgdtest", "hgdtest"):
            registry._LOOKUP.pop(k, None)
        specs.RULES.pop("halfgd_test", None)  # the spec table learnt it on first use
