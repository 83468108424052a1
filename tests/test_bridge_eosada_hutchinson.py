"""The torch EoSAda's ``curvature="hutchinson"``: the proposal's mean curvature, not λ_max.

The estimate is the mean of uᵀHu over ``hutchinson_samples`` random unit directions u, whose
expectation is tr(H)/d (E[uuᵀ] = I/d on the unit sphere), as in the toy rule
:class:`eosdyn.rules.EoSAda`. Checked here against the exact Hessian of a ~50-parameter MLP
(``torch.autograd.functional.hessian``).
"""
from __future__ import annotations

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import eosdyn.bridge as B  # noqa: E402
from eosdyn.rules import EoSAda as ToyEoSAda  # noqa: E402

F64 = torch.float64


def small_net(seed=0):
    """An MLP 3 → 8 → 2 (50 parameters, tanh) on 16 random examples, float64."""
    torch.manual_seed(seed)
    model = B.MLP(3, (8,), 2, activation="tanh").to(F64)
    g = torch.Generator().manual_seed(100 + seed)
    X = torch.randn(16, 3, dtype=F64, generator=g)
    Y = torch.randn(16, 2, dtype=F64, generator=g)
    return model, X, Y


def exact_hessian(model, X, Y):
    """The full-batch Hessian of mse_loss at the model's parameters, (d, d)."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    sizes = [p.numel() for p in model.parameters()]
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])

    def loss(theta):
        parts = [t.view(s) for t, s in zip(torch.split(theta, sizes), shapes)]
        out = torch.func.functional_call(model, dict(zip(names, parts)), (X,))
        return B.mse_loss(out, Y)

    return torch.autograd.functional.hessian(loss, flat)


def one_step(model, X, Y, **kw):
    """An EoSAda(curvature='hutchinson') with a Probe on (X, Y), after one plain step."""
    opt = B.EoSAda(model.parameters(), curvature="hutchinson", probe=B.Probe(model, B.mse_loss, (X, Y)), **kw)
    opt.zero_grad()
    B.mse_loss(model(X), Y).backward()
    opt.step()
    return opt


def test_default_sample_count_matches_the_toy_rule():
    model, _, _ = small_net()
    opt = B.EoSAda(model.parameters(), curvature="hutchinson")
    assert opt.hutchinson_samples == ToyEoSAda(curvature="hutchinson").hutchinson_samples == 10
    assert "hutchinson" in repr(opt) and "tr(H)/d" in repr(opt)


def test_estimate_is_the_mean_curvature_tr_h_over_d():
    """(a) over many directions the estimate agrees with tr(H)/d within a few standard errors,
    and its standard error is that of uᵀHu for u uniform on the sphere."""
    model, X, Y = small_net()
    H = exact_hessian(model, X, Y)
    d = H.shape[0]
    assert d == 50
    mean_curv = float(torch.trace(H)) / d
    k = 2000
    opt = one_step(model, X, Y, hutchinson_samples=k, lr=0.01)
    est, se = float(opt.eigenvalues[0]), opt.last_standard_error
    assert est == float(opt._eigs[0])  # stored where λ_max would be
    assert 0 < se < 0.05 * abs(mean_curv)
    assert abs(est - mean_curv) < 4 * se, (est, mean_curv, se)
    # Var[uᵀHu] = 2(tr(H²)/d − (tr(H)/d)²)/(d + 2) for u uniform on the unit sphere
    var = 2 * (float(torch.trace(H @ H)) / d - mean_curv ** 2) / (d + 2)
    assert se * np.sqrt(k) == pytest.approx(np.sqrt(var), rel=0.15)
    assert opt.n_hvp == opt.last_probe_hvps == k and opt.n_probes == 1


def test_directions_are_unit_vectors():
    """On H = I (a linear least-squares model with XᵀX/n = I) every uᵀHu is exactly 1: the
    estimate is 1 with no spread, which only unit directions give (Gaussian vᵀHv would scatter)."""
    n, din = 12, 6
    q, _ = torch.linalg.qr(torch.randn(n, din, dtype=F64, generator=torch.Generator().manual_seed(3)))
    X = q * np.sqrt(n)  # XᵀX/n = I
    Y = torch.randn(n, 1, dtype=F64, generator=torch.Generator().manual_seed(4))
    model = torch.nn.Linear(din, 1, bias=False).to(F64)
    opt = one_step(model, X, Y, hutchinson_samples=7)
    assert opt.eigenvalues[0] == pytest.approx(1.0, abs=1e-12)
    assert opt.last_standard_error < 1e-12
    assert opt.lr_in_force[0] == pytest.approx(1.9 / (1.0 + 1e-8), rel=1e-12)


def test_not_lambda_max_and_the_step_passes_the_edge():
    """(c) on the same net λ_max (eigvalsh of the exact Hessian) lies hundreds of standard
    errors above the estimate, so EoS-Ada's step with it is far beyond the edge 2/λ_max,
    while with the exact λ_max the step in force is α/λ_max (η·λ_max = α = 1.9 < 2)."""
    model, X, Y = small_net()
    H = exact_hessian(model, X, Y)
    lam_max = float(torch.linalg.eigvalsh(H)[-1])
    mean_curv = float(torch.trace(H)) / H.shape[0]
    opt = one_step(copy.deepcopy(model), X, Y, hutchinson_samples=200)
    est, se = float(opt.eigenvalues[0]), opt.last_standard_error
    assert abs(est - mean_curv) < 4 * se  # it estimates tr(H)/d ...
    assert lam_max - est > 100 * se, (lam_max, est, se)  # ... and not λ_max
    assert opt.lr_in_force[0] * lam_max > 4.0  # η_t λ_max: more than twice the edge 2
    exact = B.EoSAda(model.parameters(), curvature="exact", probe=B.Probe(model, B.mse_loss, (X, Y)))
    exact.zero_grad()
    B.mse_loss(model(X), Y).backward()
    exact.step()
    assert exact.eigenvalues[0] == pytest.approx(lam_max, rel=1e-8)
    assert exact.lr_in_force[0] * lam_max == pytest.approx(1.9, rel=1e-6)


def _run(seed, steps=4, closure=False, **kw):
    model, X, Y = small_net()
    probe = None if closure else B.Probe(model, B.mse_loss, (X, Y))
    opt = B.EoSAda(model.parameters(), curvature="hutchinson", hutchinson_samples=5, lr=0.02,
                   noise_scale=1e-3, seed=seed, probe=probe, **kw)
    eigs = []
    for _ in range(steps):
        if closure:
            opt.step(lambda: B.mse_loss(model(X), Y))
        else:
            opt.zero_grad()
            B.mse_loss(model(X), Y).backward()
            opt.step()
        eigs.append(float(opt.eigenvalues[0]))
    theta = torch.cat([p.detach().flatten() for p in model.parameters()])
    return theta, eigs, opt


def test_same_seed_same_trajectory_and_counts():
    """(b) the same seed gives identical trajectories (directions and noise); another seed does
    not; successive probes draw fresh directions; every HVP is counted."""
    th1, e1, o1 = _run(seed=7)
    th2, e2, o2 = _run(seed=7)
    assert torch.equal(th1, th2) and e1 == e2
    th3, e3, _ = _run(seed=8)
    assert not torch.equal(th1, th3) and e1 != e3
    assert len({o1.hutchinson_stream(s) for s in range(4)}) == 4
    assert o1.n_hvp == 4 * 5 and o1.last_probe_hvps == 5 and o1.n_probes == 4


def test_closure_gives_the_probes_estimate():
    """A forward-only closure (no Probe) differentiates the same loss: the same directions give
    the same estimates and the same trajectory, up to rounding."""
    th_p, e_p, _ = _run(seed=3)
    th_c, e_c, oc = _run(seed=3, closure=True)
    np.testing.assert_allclose(e_c, e_p, rtol=1e-10)
    torch.testing.assert_close(th_c, th_p, rtol=1e-10, atol=1e-12)
    assert oc.n_hvp == 4 * 5


def test_state_dict_round_trip_resumes_bit_identically():
    model, X, Y = small_net()

    def make(m):
        return B.EoSAda(m.parameters(), curvature="hutchinson", hutchinson_samples=5, lr=0.02,
                        noise_scale=1e-3, curvature_every=2, seed=11, probe=B.Probe(m, B.mse_loss, (X, Y)))

    def steps(m, opt, n):
        out = []
        for _ in range(n):
            opt.zero_grad()
            B.mse_loss(m(X), Y).backward()
            opt.step()
            out.append((float(opt.eigenvalues[0]), opt.last_standard_error))
        return out

    opt = make(model)
    steps(model, opt, 3)
    saved_opt, saved_model = copy.deepcopy(opt.state_dict()), copy.deepcopy(model.state_dict())
    rest = steps(model, opt, 4)
    model2, _, _ = small_net(seed=5)
    model2.load_state_dict(saved_model)
    opt2 = make(model2)
    opt2.load_state_dict(saved_opt)
    assert opt2.n_hvp == 2 * 5 and opt2.step_count == 3
    assert steps(model2, opt2, 4) == rest
    for p, q in zip(model.parameters(), model2.parameters()):
        assert torch.equal(p, q)
    assert opt2.n_hvp == opt.n_hvp == 4 * 5


def test_bad_input():
    """(d) hutchinson_samples < 1, and DCAO (which needs λ₁ and λ₂) asked for Hutchinson."""
    model, _, _ = small_net()
    for bad in (0, -3):
        with pytest.raises(ValueError, match="hutchinson_samples"):
            B.EoSAda(model.parameters(), curvature="hutchinson", hutchinson_samples=bad)
    with pytest.raises(TypeError, match="hutchinson_samples"):
        B.EoSAda(model.parameters(), curvature="hutchinson", hutchinson_samples=2.5)
    with pytest.raises(ValueError, match="DCAO.*hutchinson.*lambda_1 and lambda_2"):
        B.DCAO(model.parameters(), curvature="hutchinson")
    with pytest.raises(ValueError, match="curvature"):
        B.EoSAda(model.parameters(), curvature="power")


def test_toy_rule_hands_the_hutchinson_estimator_to_torch():
    model = torch.nn.Linear(3, 1)
    opt = ToyEoSAda(alpha=1.0, curvature="hutchinson", hutchinson_samples=7).torch_optimizer(model.parameters())
    assert opt.curvature_method == "hutchinson" and opt.hutchinson_samples == 7
    with pytest.raises(ValueError, match="power"):
        ToyEoSAda(alpha=1.0, curvature="power").torch_optimizer(model.parameters())
