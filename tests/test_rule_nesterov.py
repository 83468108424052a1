"""Nesterov momentum: the test file of a rule in one file (eosdyn/rules/nesterov.py).

A new rule's checklist is this file's shape: the step against an independent reference
(here torch's own optimizer), the closed-form Jacobian against differences of the map,
the closed-form edge against the Jacobian's spectrum and against simulation, and the
blocked step against the per-trajectory one. The registry test (test_rules_registry.py)
checks the self-description fields of every rule, this one included.
"""
from __future__ import annotations

import numpy as np
import pytest

import eosdyn
from eosdyn import analysis
from eosdyn.losses import Quadratic, ScalarNet
from eosdyn.rules import Nesterov


def _quad():
    rng = np.random.default_rng(3)
    A = rng.standard_normal((3, 3))
    return Quadratic(A @ A.T + np.eye(3), center=rng.standard_normal(3))


def test_steps_equal_torch_sgd_with_nesterov():
    torch = pytest.importorskip("torch")
    loss, rule = _quad(), Nesterov(0.05, momentum=0.7)
    theta0 = np.array([1.0, -0.5, 0.25])
    tr = eosdyn.simulate(loss, rule, theta0, 20)
    p = torch.tensor(theta0, dtype=torch.float64, requires_grad=True)
    opt = rule.torch_optimizer([p])
    H = torch.tensor(loss.H)
    c = torch.tensor(loss.center)
    for t in range(20):
        opt.zero_grad()
        r = p - c
        (0.5 * r @ H @ r).backward()
        opt.step()
        np.testing.assert_allclose(p.detach().numpy(), tr.theta[t + 1], rtol=1e-12, atol=1e-14)


def test_jacobian_is_the_derivative_of_the_map():
    loss = ScalarNet(3, 1.0)
    rule = Nesterov(0.05, momentum=0.6)
    z = np.array([1.2, 0.8, 0.9, 0.1, -0.2, 0.05])
    J = rule.jacobian(loss, z)
    h = 1e-6
    num = np.column_stack([(rule.map(loss, z + h * e) - rule.map(loss, z - h * e)) / (2 * h) for e in np.eye(6)])
    np.testing.assert_allclose(J, num, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("beta", [0.0, 0.5, 0.9])
def test_edge_closed_form_against_jacobian_and_simulation(beta):
    loss = _quad()
    lam = loss.lambda_max
    res = analysis.threshold(loss, "nesterov", loss.center, momentum=beta)
    assert res.analytic == pytest.approx((2 + 2 * beta) / ((1 + 2 * beta) * lam), rel=1e-14)
    assert res.ratio == pytest.approx(1.0, abs=1e-9)
    sim = analysis.simulated_threshold(loss, "nag", loss.center, steps=2000, momentum=beta)
    assert sim.value / res.analytic == pytest.approx(1.0, abs=1e-4)


def test_blocked_step_equals_per_trajectory_step():
    loss = _quad()
    rule = Nesterov(0.1, momentum=0.5)
    th0 = np.random.default_rng(0).normal(size=(70, 3)) * np.logspace(0, 60, 70)[:, None]
    a = eosdyn.ensemble(loss, rule, th0, 40, record_every=3, kernel="trajectory", record_theta=True)
    b = eosdyn.ensemble(loss, rule, th0, 40, record_every=3, kernel="blocked", record_theta=True)
    for name in ("final_theta", "loss", "sharpness", "lr", "theta", "diverged_at"):
        assert np.array_equal(getattr(a, name), getattr(b, name), equal_nan=True), name
