"""Cheap curvature probes (issue 14): warm starts, the eigenvalue-error stop, the probe batch.

- Warm-started probes (each Lanczos run started from the last probe's Ritz vectors) find
  the same eigenvalues as cold ones, to the stopping tolerance, with fewer HVPs — for
  EoS-Ada, DCAO and the trainer's :class:`~eosdyn.bridge.CurvatureTracker`.
- ``Probe(..., fraction=f)`` differentiates round(f·n_b) examples of each batch (counted in
  the loss function), drawn afresh at each probe, reproducibly (the generator is state).
- Bad input: a fraction outside (0, 1], a probe period T_c < 1, a non-positive eigval_tol.

Timing is not asserted here; ``benchmarks/overhead.py`` measures the overhead model.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from test_bridge import _one_thread, flat_params  # noqa: E402,F401  (the autouse fixture)

import eosdyn.bridge as B  # noqa: E402

F64 = torch.float64


def problem(n=64):
    return B.gaussian_mixture(n=n, dim=4, n_classes=3, seed=2, dtype=F64)


def net(seed=0, hidden=16):
    torch.manual_seed(seed)
    return B.MLP(4, (hidden,), 3, "tanh").double()   # 131 parameters: Lanczos cannot fill R^n


def make(kind, model, probe, warm, **kw):
    if kind == "eosada":
        return B.EoSAda(model.parameters(), alpha=0.5, curvature_every=1, lanczos_steps=60, probe=probe,
                        warm_start=warm, **kw)
    return B.DCAO(model.parameters(), lr=0.1, k=2, curvature_every=1, lanczos_steps=60, probe=probe,
                  warm_start=warm, **kw)


def probe_run(kind, warm, steps=10, **kw):
    """Full-batch training probing every step; (eigenvalues per probe, HVPs per probe, opt)."""
    X, Y = problem()
    model = net()
    opt = make(kind, model, B.Probe(model, B.cross_entropy_loss, (X, Y)), warm, **kw)
    eigs, hvps = [], []
    for _ in range(steps):
        opt.zero_grad()
        B.cross_entropy_loss(model(X), Y).backward()
        opt.step()
        eigs.append(opt.eigenvalues)
        hvps.append(opt.last_probe_hvps)
    return np.array(eigs), np.array(hvps), opt


# ----------------------------------------------------------------------- warm vs cold
@pytest.mark.parametrize("kind", ["eosada", "dcao"])
@pytest.mark.parametrize("stop", [dict(eigval_tol=1e-8), dict(eigval_tol=1e-4), dict(tol=1e-6)])
def test_warm_started_probes_match_cold_ones_with_fewer_hvps(kind, stop):
    """Measured (131 parameters, 10 probes, float64), HVPs per probe after the first, warm vs
    cold: EoS-Ada eigval_tol=1e-8 7.9 vs 10.6, eigval_tol=1e-4 4.2 vs 7.7, tol=1e-6 9.8 vs 12.2;
    DCAO (k = 2) 12.0 vs 14.7, 7.9 vs 10.9, 14.1 vs 16.9 (totals 90/114, 50/81, 112/134 and
    141/165, 99/126, 163/188). The first probe has nothing to start from: the same count."""
    ew, hw, opt = probe_run(kind, True, **stop)
    ec, hc, _ = probe_run(kind, False, **stop)
    # the same eigenvalues, to the stopping tolerance (the trajectories follow the eigenvalues,
    # so a difference would also show up in later steps)
    rtol = 10 * stop.get("eigval_tol", stop.get("tol"))
    np.testing.assert_allclose(ew, ec, rtol=rtol)
    assert hw[0] == hc[0]                              # probe 0: no warm start to use
    assert hw[1:].mean() < hc[1:].mean() - 1.5         # later probes: fewer products
    assert hw.sum() <= hc.sum() - 10
    assert np.all(hw[3:] <= hc[3:])
    # the counts are exposed: per probe, on average, and in the state_dict
    assert opt.n_hvp == hw.sum() and opt.n_probes == 10
    assert opt.hvp_per_probe == pytest.approx(hw.mean())
    extra = opt.state_dict()["eosdyn"]
    assert extra["last_probe_hvps"] == hw[-1] and extra["n_hvp"] == hw.sum()


def test_eigval_tol_stops_earlier_than_the_default_residual_rule():
    """The eigenvalue-error rule stops on |λ − θ| ≲ tol·|θ| (quadratic in the residual): fewer
    HVPs than the default residual rule, the same λ to that tolerance."""
    e_def, h_def, _ = probe_run("dcao", True)                      # tol=None: residual 1e-8
    e_val, h_val, opt = probe_run("dcao", True, eigval_tol=1e-3)
    assert h_val.sum() < 0.6 * h_def.sum()
    np.testing.assert_allclose(e_val, e_def, rtol=1e-3)
    assert opt.eigval_tol == 1e-3 and opt.warm_start is True


def test_tracker_warm_start_and_eigval_tol():
    """The trainer's tracker: warm-started measurements (its default) match cold ones and take
    fewer HVPs; with eigval_tol fewer still."""
    X, Y = problem()
    model = net()
    sgd = torch.optim.SGD(model.parameters(), lr=0.2)
    warm = B.CurvatureTracker(model, B.cross_entropy_loss, (X, Y), k=1, tol=None, eigval_tol=1e-8)
    cold = B.CurvatureTracker(model, B.cross_entropy_loss, (X, Y), k=1, tol=None, eigval_tol=1e-8)
    loose = B.CurvatureTracker(model, B.cross_entropy_loss, (X, Y), k=1, tol=None, eigval_tol=1e-3)
    hw, hc = [], []
    for _ in range(8):
        before_w, before_c = warm.n_hvp, cold.n_hvp
        sw, sc = warm.measure()["sharpness"], cold.measure()["sharpness"]
        cold.eigenvectors = None                       # cold: every measurement from scratch
        loose.measure()
        hw.append(warm.n_hvp - before_w)
        hc.append(cold.n_hvp - before_c)
        assert sw == pytest.approx(sc, rel=1e-7)
        sgd.zero_grad()
        B.cross_entropy_loss(model(X), Y).backward()
        sgd.step()
    assert hw[0] == hc[0] and sum(hw[1:]) < sum(hc[1:]) - 10
    assert loose.n_hvp < warm.n_hvp
    with pytest.raises(ValueError, match="eigval_tol"):
        B.CurvatureTracker(model, B.cross_entropy_loss, (X, Y), eigval_tol=0.0)


# ----------------------------------------------------------------------- probe fraction
class CountingLoss:
    """cross_entropy_loss that records how many examples each call sees."""

    def __init__(self):
        self.sizes = []

    def __call__(self, out, y):
        self.sizes.append(int(out.shape[0]))
        return B.cross_entropy_loss(out, y)


@pytest.mark.parametrize("fraction, expected", [(1.0, 40), (0.5, 20), (0.25, 10), (0.01, 1), (0.33, 13)])
def test_probe_fraction_uses_that_share_of_the_current_batch(fraction, expected):
    X, Y = problem()
    model = net()
    loss = CountingLoss()
    probe = B.Probe(model, loss, fraction=fraction)
    opt = B.DCAO(model.parameters(), lr=0.1, curvature_every=2, lanczos_steps=8, probe=probe)
    for t in range(6):                                  # probes at steps 0, 2, 4
        x, y = X[4 * t:4 * t + 40], Y[4 * t:4 * t + 40]
        probe.set_batch(x, y)
        opt.zero_grad()
        B.cross_entropy_loss(model(x), y).backward()    # the training loss: not the probe's
        opt.step()
    assert loss.sizes == [expected] * 3                 # the probe's loss_fn: once per probe
    assert probe.last_n_examples == expected and opt.n_probes == 3
    assert probe.fraction == fraction


def test_probe_fraction_draws_fresh_reproducible_subsets_with_fixed_data():
    """Fixed data of two batches (40 + 24): each probe takes round(f·n_b) of each, weighted by
    the subset sizes; the subsets are drawn afresh at each probe by the seeded generator, which
    the state_dict carries (a resumed probe draws what the uninterrupted one would)."""
    X, Y = problem()
    model = net()
    params = [p for p in model.parameters()]
    loss = CountingLoss()
    data = [(X[:40], Y[:40]), (X[40:], Y[40:])]
    probe = B.Probe(model, loss, data, fraction=0.5, seed=7)
    assert "fraction=0.5" in repr(probe)
    losses = []
    for _ in range(3):
        _, release = probe.operator(params)
        release()
        losses.append(probe.last_loss)
    assert loss.sizes == [20, 12] * 3 and probe.last_n_examples == 32
    assert len(set(losses)) == 3                        # a new subset each probe
    # the probe loss is the size-weighted mean over the chosen rows: at most the max, at least
    # the min of the per-example losses
    with torch.no_grad():
        per = torch.nn.functional.cross_entropy(model(X), Y, reduction="none")
    assert float(per.min()) <= losses[0] <= float(per.max())
    # reproducible from the seed, resumable from the state_dict
    again = B.Probe(model, B.cross_entropy_loss, data, fraction=0.5, seed=7)
    got = []
    for _ in range(2):
        _, release = again.operator(params)
        release()
        got.append(again.last_loss)
    assert got == pytest.approx(losses[:2], rel=1e-14)
    resumed = B.Probe(model, B.cross_entropy_loss, data, fraction=0.5, seed=123)
    resumed.load_state_dict(again.state_dict())
    _, release = resumed.operator(params)
    release()
    assert resumed.last_loss == pytest.approx(losses[2], rel=1e-14)


def test_fraction_one_is_the_plain_probe_bit_for_bit():
    X, Y = problem()
    runs = []
    for kw in ({}, {"fraction": 1.0}, {"fraction": 1}):
        model = net()
        opt = B.DCAO(model.parameters(), lr=0.1, curvature_every=2, lanczos_steps=10,
                     probe=B.Probe(model, B.cross_entropy_loss, (X[:32], Y[:32]), **kw))
        for _ in range(4):
            opt.zero_grad()
            B.cross_entropy_loss(model(X), Y).backward()
            opt.step()
        runs.append((flat_params(model), opt.eigenvalues, opt.n_hvp))
    for theta, eigs, n in runs[1:]:
        assert torch.equal(theta, runs[0][0]) and np.array_equal(eigs, runs[0][1]) and n == runs[0][2]


def test_small_fraction_probe_estimates_the_batch_curvature():
    """A half-batch probe's λ₁ is the sub-batch Hessian's: near the whole batch's, not equal."""
    X, Y = problem(n=200)
    model = net()
    full = B.sharpness(model, B.cross_entropy_loss, (X, Y), k=1).sharpness
    probe = B.Probe(model, B.cross_entropy_loss, (X, Y), fraction=0.5)
    opt = B.EoSAda(model.parameters(), lanczos_steps=60, probe=probe, tol=1e-8)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    lam = float(opt.eigenvalues[0])
    assert lam != pytest.approx(full, rel=1e-6) and lam == pytest.approx(full, rel=0.5)


# ----------------------------------------------------------------------- bad input
@pytest.mark.parametrize("bad", [0, 0.0, 1.5, -0.1, float("nan"), float("inf"), 1 + 1e-12])
def test_probe_fraction_outside_the_range_is_refused(bad):
    model = net()
    with pytest.raises(ValueError, match=r"fraction must be in \(0, 1\]"):
        B.Probe(model, B.cross_entropy_loss, fraction=bad)


@pytest.mark.parametrize("bad", ["0.5", None, True, torch.tensor([0.5, 0.5])])
def test_probe_fraction_of_the_wrong_type_is_refused(bad):
    with pytest.raises(TypeError, match=r"fraction must be a real number in \(0, 1\]"):
        B.Probe(net(), B.cross_entropy_loss, fraction=bad)


@pytest.mark.parametrize("cls", [B.EoSAda, B.DCAO])
@pytest.mark.parametrize("bad", [0, -1])
def test_probe_period_below_one_is_refused(cls, bad):
    with pytest.raises(ValueError, match=r"curvature_every \(the probe period T_c\) must be an integer >= 1"):
        cls(net().parameters(), curvature_every=bad)


@pytest.mark.parametrize("cls", [B.EoSAda, B.DCAO])
def test_other_probe_cost_options_are_checked(cls):
    with pytest.raises(TypeError, match=r"curvature_every \(the probe period T_c\) must be an integer"):
        cls(net().parameters(), curvature_every=2.5)
    for bad in (0.0, -1e-3, math.nan):
        with pytest.raises(ValueError, match="eigval_tol"):
            cls(net().parameters(), eigval_tol=bad)
    with pytest.raises(TypeError, match="warm_start must be True or False"):
        cls(net().parameters(), warm_start="yes")
    with pytest.raises(ValueError, match="seed must be an integer >= 0"):
        B.Probe(net(), B.cross_entropy_loss, seed=-1)
