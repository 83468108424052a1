"""Update rules: their maps against independent references (torch optimizers, closed forms)."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from eosdyn.losses import Quadratic
from eosdyn.rules import DCAO, GD, Adam, EoSAda, HeavyBall, Nesterov, NormalizedGD, schedules


def _random_quadratic(rng, d=4):
    A = rng.standard_normal((d, d))
    return Quadratic(A @ A.T / d + 0.1 * np.eye(d), center=rng.standard_normal(d))


def _run_map(rule, loss, theta0, steps):
    z = rule.pack(theta0, rule.init_state(np.asarray(theta0)))
    out = [z[: loss.dim].copy()]
    for t in range(1, steps + 1):
        z = rule.map(loss, z, t)
        out.append(z[: loss.dim].copy())
    return np.array(out)


@pytest.mark.parametrize("make_rule, make_torch", [
    (lambda: GD(0.1), lambda p, torch: torch.optim.SGD(p, lr=0.1)),
    (lambda: HeavyBall(0.05, 0.9), lambda p, torch: torch.optim.SGD(p, lr=0.05, momentum=0.9)),
    (lambda: Nesterov(0.05, 0.8), lambda p, torch: torch.optim.SGD(p, lr=0.05, momentum=0.8, nesterov=True)),
    (lambda: Adam(0.01, (0.9, 0.99), 1e-8), lambda p, torch: torch.optim.Adam(p, lr=0.01, betas=(0.9, 0.99), eps=1e-8)),
])
def test_rule_matches_torch_optimizer(make_rule, make_torch, rng):
    """Each rule's map equals PyTorch's optimizer of the same name on a quadratic, in float64."""
    torch = pytest.importorskip("torch")
    loss = _random_quadratic(rng)
    theta0 = rng.standard_normal(loss.dim)
    ours = _run_map(make_rule(), loss, theta0, 30)
    p = torch.tensor(theta0, dtype=torch.float64, requires_grad=True)
    opt = make_torch([p], torch)
    Ht = torch.tensor(loss.H)
    ct = torch.tensor(loss.center)
    ref = [theta0.copy()]
    for _ in range(30):
        opt.zero_grad()
        r = p - ct
        (0.5 * r @ (Ht @ r)).backward()
        opt.step()
        ref.append(p.detach().numpy().copy())
    np.testing.assert_allclose(ours, np.array(ref), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("rule", [GD(0.07), HeavyBall(0.05, 0.7), Nesterov(0.05, 0.6), NormalizedGD(0.1)])
def test_closed_form_jacobian_matches_finite_differences(rule, rng):
    loss = _random_quadratic(rng, 3)
    theta = rng.standard_normal(3)
    z = rule.pack(theta, rng.standard_normal(rule.state_size(3)))
    J = rule.jacobian(loss, z)
    J_fd = super(type(rule), rule).jacobian(loss, z)
    np.testing.assert_allclose(J, J_fd, atol=1e-7)


def test_adam_frozen_jacobian_matches_frozen_map(rng):
    """The frozen-preconditioner Jacobian equals finite differences of the frozen map."""
    loss = _random_quadratic(rng, 3)
    rule = Adam(0.01, (0.8, 0.999))
    P = rng.uniform(0.5, 2.0, 3)
    b1 = 0.8

    def F(z):
        th, m = z[:3], z[3:]
        m2 = b1 * m + (1 - b1) * loss.grad(th)
        return np.concatenate([th - 0.01 * m2 / P, m2])

    z = rng.standard_normal(6)
    J = rule.frozen_jacobian(loss, z[:3], P)
    J_fd = np.column_stack([(F(z + 1e-6 * e) - F(z - 1e-6 * e)) / 2e-6 for e in np.eye(6)])
    np.testing.assert_allclose(J, J_fd, atol=1e-8)


def test_normalized_gd_step_length_is_lr(rng):
    loss = _random_quadratic(rng)
    th = rng.standard_normal(loss.dim)
    z = NormalizedGD(0.3).map(loss, th)
    assert np.linalg.norm(z - th) == pytest.approx(0.3, rel=1e-12)


@given(lam=st.floats(1e-3, 1e3), alpha=st.floats(0.01, 10), eps=st.floats(0, 10))
def test_eosada_effective_step_is_alpha_lambda_over_lambda_plus_eps(lam, alpha, eps):
    eff = schedules.eosada_lr(lam, alpha, eps) * lam
    assert eff == pytest.approx(alpha * lam / (lam + eps), rel=1e-12)
    assert eff <= alpha * (1 + 1e-12)


@given(rho=st.floats(0, 1e4), a=st.floats(0, 10), ref=st.floats(1e-3, 1e3))
def test_dcao_lr_factor_is_clipped(rho, a, ref):
    f = schedules.dcao_lr_factor(rho, a, ref, 0.5, 2.0)
    assert 0.5 <= f <= 2.0
    with np.errstate(over="ignore"):
        raw = np.exp(-a * (rho - ref))
    if 0.5 <= raw <= 2.0:
        assert f == pytest.approx(raw, rel=1e-12)


@given(gap=st.floats(0, 1e3), b1=st.floats(0, 10), gref=st.floats(0, 100))
def test_dcao_momentum_factor_in_open_interval(gap, b1, gref):
    g = schedules.dcao_momentum_factor(gap, b1, gref)
    assert 0.0 <= g <= 2.0
    assert g == pytest.approx(1 + np.tanh(b1 * (gap - gref)), rel=1e-12, abs=1e-15)


def test_dcao_schedule_refined_and_v1():
    r = DCAO(lr=0.1, momentum=0.4, weight_decay=1e-3, alpha=0.2, rho_ref=5.0, beta1=0.5,
             gap_ref=1.0, wd_gain=2.0, k=3)
    lr, mom, wd = r.schedule([6.0, 4.0, 1.0])
    assert lr == pytest.approx(0.1 * np.exp(-0.2 * (6 - 5)))
    assert mom == pytest.approx(0.4 * (1 + np.tanh(0.5 * (2.0 - 1.0))))
    assert wd == pytest.approx(1e-3 * (1 + 2.0 * 6 / 5))
    v1 = DCAO(lr=0.1, momentum=0.4, weight_decay=1e-3, alpha=0.2, k=3, variant="v1",
              v1_beta=0.3, v1_gamma=0.05)
    lr, mom, wd = v1.schedule([6.0, 4.0, 1.0])
    assert lr == pytest.approx(0.1 * np.exp(-0.2 * 6))
    assert mom == pytest.approx(0.4 * np.exp(-0.3 * 5.0))  # gap = max |λi − λj| = 6 − 1
    assert wd == pytest.approx(1e-3 * np.exp(-0.05 * 6))


@pytest.mark.parametrize("bad, exc, word", [
    (lambda: GD(0.0), ValueError, "lr"),
    (lambda: GD(-1), ValueError, "lr"),
    (lambda: GD("a"), TypeError, "lr"),
    (lambda: HeavyBall(0.1, 1.0), ValueError, "momentum"),
    (lambda: Adam(0.1, betas=(0.9,)), ValueError, "betas"),
    (lambda: EoSAda(curvature="magic"), ValueError, "curvature"),
    (lambda: EoSAda(alpha=-1), ValueError, "alpha"),
    (lambda: DCAO(k=0), ValueError, "k"),
    (lambda: DCAO(variant="v3"), ValueError, "variant"),
    (lambda: DCAO(lr_factor_range=(2.0, 0.5)), ValueError, "lr_factor_range"),
])
def test_bad_rule_parameters_raise_named_errors(bad, exc, word):
    with pytest.raises(exc, match=word):
        bad()
