"""EoSAda and DCAO as drop-in torch optimizers (issue 15).

The ordinary loop ``zero_grad(); backward(); clip_grad_norm_(); step()`` with a
:class:`eosdyn.bridge.Probe` for the curvature; torch-convention closures; torch's LR
schedulers; ``add_param_group``; what ``step()`` returns; the bounds in force. References:
the same run through the forward-only closure API (bit for bit), torch's own clipping and
schedulers, the update formula applied by hand to ``p.grad``.
"""
from __future__ import annotations

import io

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from test_bridge import _one_thread, flat_params  # noqa: E402,F401  (the autouse fixture)

import eosdyn.bridge as B  # noqa: E402

F64 = torch.float64
L = torch.optim.lr_scheduler
KINDS = ["eosada", "dcao"]


def problem():
    X, Y = B.gaussian_mixture(n=64, dim=4, n_classes=3, seed=2, dtype=F64)
    return X, Y


def net(seed=0):
    torch.manual_seed(seed)
    return B.MLP(4, (8,), 3, "tanh").double()


def make(kind, params, probe=None, **kw):
    if kind == "eosada":  # noise on: the generator must follow the same path in every API
        base = dict(alpha=1.5, noise_scale=1e-3, noise_decay=0.1, curvature_every=2, lanczos_steps=8, seed=3)
        return B.EoSAda(params, probe=probe, **{**base, **kw})
    base = dict(lr=0.1, weight_decay=1e-3, curvature_every=3, lanczos_steps=10)
    return B.DCAO(params, probe=probe, **{**base, **kw})


def plain_step(opt, model, x, y, clip=None):
    opt.zero_grad()
    loss = B.cross_entropy_loss(model(x), y)
    loss.backward()
    if clip is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    return opt.step(), loss


def in_force(opt, p):
    return {k: v for k, v in opt.state[p].items() if k != "momentum_buffer"}


# ----------------------------------------------------------------------------- the plain loop
@pytest.mark.parametrize("kind", KINDS)
def test_plain_loop_with_clipping_scheduler_and_add_param_group(kind):
    """The loop of the issue runs unchanged: clipping, a scheduler, a group added mid-run."""
    X, Y = problem()
    model = net()
    first, last = list(model.net[0].parameters()), list(model.net[2].parameters())
    opt = make(kind, last, B.Probe(model, B.cross_entropy_loss, (X, Y)))
    sched = L.StepLR(opt, step_size=2, gamma=0.5)
    first0 = flat_params(model.net[0])
    for t in range(7):
        if t == 5:  # progressive unfreezing: the Hessian's space grows from 27 to 67 parameters
            assert opt._eigvecs.shape[0] == 27 and not opt.probes_next  # not a scheduled probe
            opt.add_param_group({"params": first, "lr": opt.param_groups[0]["lr"]})
            assert opt.probes_next  # the warm start was reset: the next step probes afresh
            n_probes = opt.n_probes
        ret, _ = plain_step(opt, model, X, Y, clip=0.5)
        assert ret is None  # torch's return without a closure
        sched.step()
        if t == 5:
            assert opt.n_probes == n_probes + 1 and opt._eigvecs.shape[0] == 67
    assert not torch.equal(flat_params(model.net[0]), first0)  # the added group was trained
    assert len(opt.lr_in_force) == 2 and np.all(np.isfinite(opt.lr_in_force))
    assert torch.isfinite(flat_params(model)).all()


@pytest.mark.parametrize("kind", KINDS)
def test_clipping_bounds_the_update_and_p_grad_is_left_alone(kind):
    """Clip to 1e-6: the step moves θ by at most lr_in_force·1e-6 (before: 0.23 / 0.33)."""
    X, Y = problem()
    model = net()
    kw = dict(noise_scale=0.0) if kind == "eosada" else dict(weight_decay=0.0)
    opt = make(kind, model.parameters(), B.Probe(model, B.cross_entropy_loss, (X, Y)), **kw)
    params = list(model.parameters())
    for t in range(4):
        before = flat_params(model)
        opt.zero_grad()
        B.cross_entropy_loss(model(X), Y).backward()
        norm = float(torch.nn.utils.clip_grad_norm_(params, 1e-6))
        assert norm > 1e-2  # the clip bites
        clipped = [p.grad.clone() for p in params]
        gnorm = float(torch.cat([g.reshape(-1) for g in clipped]).norm())
        assert gnorm <= 1e-6
        probing = opt.probes_next
        opt.step()
        # the probe (it ran on steps 0 and 2/3) estimated curvature in its own pass: p.grad untouched
        assert all(torch.equal(p.grad, g) for p, g in zip(params, clipped)), probing
        moved = float((flat_params(model) - before).norm())
        lr = opt.lr_in_force[0]
        if t == 0 or kind == "eosada":  # Δθ = −lr·g (DCAO's buffer is g at step 0): exact norm
            assert moved == pytest.approx(lr * gnorm, rel=1e-9)
        else:  # DCAO: ‖v_t‖ <= Σ_s β^s ‖g‖ <= (t+1)·1e-6
            assert moved <= lr * (t + 1) * 1e-6 * (1 + 1e-9)
    assert float((flat_params(model) - flat_params(net())).norm()) < 1e-5


@pytest.mark.parametrize("kind", KINDS)
def test_update_is_the_rule_applied_to_p_grad(kind):
    """The update reads p.grad as the user left it (here: scaled by 3 by hand)."""
    X, Y = problem()
    model = net()
    opt = make(kind, model.parameters(), B.Probe(model, B.cross_entropy_loss, (X, Y)), **(
        dict(noise_scale=0.0) if kind == "eosada" else dict(weight_decay=0.0)))
    opt.zero_grad()
    B.cross_entropy_loss(model(X), Y).backward()
    for p in model.parameters():
        p.grad.mul_(3.0)
    expect = [p.detach().clone() for p in model.parameters()]
    grads = [p.grad.clone() for p in model.parameters()]
    opt.step()
    lr = opt.lr_in_force[0]
    for p, e, g in zip(model.parameters(), expect, grads):
        assert torch.equal(p.detach(), e.add_(g, alpha=-lr))  # θ − η·(3g), bit for bit


# ----------------------------------------------------------------------------- plain loop == closure API
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", [F64, torch.float32])
def test_plain_loop_equals_closure_api_bit_for_bit(kind, dtype):
    """Full batch: plain loop + Probe(fixed set = the batch), a torch-convention closure +
    Probe, a forward-only closure + Probe, and the forward-only closure alone (HVPs through
    its own graph) take the same steps, bit for bit."""
    X, Y = problem()
    X = X.to(dtype)
    runs = {}
    for mode in ("plain", "torch_closure", "forward_closure+probe", "forward_closure"):
        model = net().to(dtype)
        probe = None if mode == "forward_closure" else B.Probe(model, B.cross_entropy_loss, (X, Y))
        opt = make(kind, model.parameters(), probe)
        rets = []
        for _ in range(7):
            if mode == "plain":
                rets.append(plain_step(opt, model, X, Y)[0])
            elif mode == "torch_closure":
                def closure(opt=opt, model=model):
                    opt.zero_grad()
                    loss = B.cross_entropy_loss(model(X), Y)
                    loss.backward()
                    return loss
                rets.append(opt.step(closure))
            else:
                rets.append(opt.step(lambda model=model: B.cross_entropy_loss(model(X), Y)))
        runs[mode] = (flat_params(model), opt.eigenvalues, opt.n_hvp, opt.n_probes, rets)
    ref = runs["plain"]
    assert ref[3] == (4 if kind == "eosada" else 3)
    for mode, (theta, eigs, n_hvp, n_probes, rets) in runs.items():
        assert torch.equal(theta, ref[0]), mode
        np.testing.assert_array_equal(eigs, ref[1], err_msg=mode)
        assert (n_hvp, n_probes) == (ref[2], ref[3]), mode
        if mode != "plain":  # the loss, as a tensor, as torch's optimizers return it
            assert all(isinstance(r, torch.Tensor) and r.ndim == 0 for r in rets), mode
    np.testing.assert_array_equal([float(r.detach()) for r in runs["torch_closure"][4]],
                                  [float(r) for r in runs["forward_closure"][4]])


@pytest.mark.parametrize("kind", KINDS)
def test_minibatch_plain_loop_with_current_batch_probe_equals_closure_api(kind):
    """Minibatches: Probe(data=None) + set_batch probes the batch being trained on, exactly as
    the forward-only closure on that batch does."""
    X, Y = problem()
    batches = B.batches((X, Y), 16)
    runs = []
    for use_probe in (True, False):
        model = net()
        probe = B.Probe(model, B.cross_entropy_loss) if use_probe else None
        opt = make(kind, model.parameters(), probe)
        for t in range(6):
            x, y = batches[t % len(batches)]
            if use_probe:
                probe.set_batch(x, y)
                plain_step(opt, model, x, y)
            else:
                opt.step(lambda model=model, x=x, y=y: B.cross_entropy_loss(model(x), y))
        runs.append((flat_params(model), opt.eigenvalues))
    assert torch.equal(runs[0][0], runs[1][0])
    np.testing.assert_array_equal(runs[0][1], runs[1][1])


def test_stream_probe_draws_one_batch_per_probe_and_restarts():
    X, Y = problem()

    class Loader:  # re-iterable, like a DataLoader
        def __iter__(self):
            return iter(B.batches((X, Y), 32))

    model = net()
    probe = B.Probe(model, B.cross_entropy_loss, Loader())
    opt = B.DCAO(model.parameters(), lr=0.1, curvature_every=2, lanczos_steps=8, probe=probe)
    for _ in range(8):  # probes at 0, 2, 4, 6: four draws from a 2-batch loader
        plain_step(opt, model, X, Y)
    assert probe.mode == "stream" and probe.n_batches_drawn == opt.n_probes == 4
    (x0, y0), (x1, y1) = B.batches((X, Y), 32)
    with torch.no_grad():  # θ_8, where step 8 probes with its 5th draw: batch 0 again
        loss0, loss1 = float(B.cross_entropy_loss(model(x0), y0)), float(B.cross_entropy_loss(model(x1), y1))
    plain_step(opt, model, X, Y)
    assert probe.n_batches_drawn == opt.n_probes == 5
    assert probe.last_loss == pytest.approx(loss0, rel=1e-12) and abs(loss0 - loss1) > 1e-3
    one_shot = B.Probe(model, B.cross_entropy_loss, iter([(X, Y)]))
    opt2 = B.EoSAda(model.parameters(), lanczos_steps=4, probe=one_shot)
    plain_step(opt2, model, X, Y)
    with pytest.raises(ValueError, match="exhausted"):
        plain_step(opt2, model, X, Y)


def test_probe_has_no_side_effects_on_batchnorm_or_grads():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.BatchNorm1d(6), torch.nn.Tanh(),
                                torch.nn.Linear(6, 3)).double()
    X, Y = problem()
    opt = B.DCAO(model.parameters(), lr=0.05, curvature_every=1, lanczos_steps=6,
                 probe=B.Probe(model, B.cross_entropy_loss, (X[:40], Y[:40])))
    for _ in range(2):
        opt.zero_grad()
        B.cross_entropy_loss(model(X), Y).backward()
        rm, nb = model[1].running_mean.clone(), int(model[1].num_batches_tracked)
        grads = [p.grad.clone() for p in model.parameters()]
        opt.step()  # probes every step, in train mode
        assert torch.equal(model[1].running_mean, rm) and int(model[1].num_batches_tracked) == nb
        assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads))
    assert opt.n_probes == 2


# ----------------------------------------------------------------------------- closures, returns
def test_torch_convention_closure_and_return_values():
    X, Y = problem()
    model = net()
    opt = B.EoSAda(model.parameters(), curvature_every=3, lanczos_steps=6)  # no probe
    fwd = opt.step(lambda: B.cross_entropy_loss(model(X), Y))  # step 0 probes through the closure
    assert isinstance(fwd, torch.Tensor) and not fwd.requires_grad
    returned = []

    def closure():
        opt.zero_grad()
        loss = B.cross_entropy_loss(model(X), Y)
        loss.backward()
        returned.append(loss)
        return loss

    out = opt.step(closure)  # step 1: no probe needed, torch's closure is fine
    assert out is returned[0]  # the closure's own return value, as torch.optim.SGD returns it
    opt.step(closure)
    assert opt.probes_next and opt.needs_closure
    with pytest.raises(ValueError, match=r"called backward\(\).*probe=Probe"):
        opt.step(closure)  # step 3 probes: a backward()-closure cannot supply the Hessian
    assert opt.step_count == 3


def test_plain_loop_without_probe_says_what_to_do():
    X, Y = problem()
    model = net()
    opt = B.DCAO(model.parameters(), lr=0.1)
    opt.zero_grad()
    B.cross_entropy_loss(model(X), Y).backward()
    before = flat_params(model)
    with pytest.raises(ValueError, match=r"needs a closure at step 0.*probe=Probe\(model, loss_fn, data\)"):
        opt.step()
    assert torch.equal(flat_params(model), before)


# ----------------------------------------------------------------------------- schedulers
SCHEDULERS = {
    "StepLR": lambda opt: L.StepLR(opt, step_size=2, gamma=0.5),
    "CosineAnnealingLR": lambda opt: L.CosineAnnealingLR(opt, T_max=6),
    "OneCycleLR": lambda opt: L.OneCycleLR(opt, max_lr=2 * opt.param_groups[0]["lr"], total_steps=8,
                                           **({"cycle_momentum": False} if isinstance(opt, B.EoSAda)
                                              else {"base_momentum": 0.2, "max_momentum": 0.45})),
    "ReduceLROnPlateau": lambda opt: L.ReduceLROnPlateau(opt, factor=0.5, patience=0, threshold=10.0),
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_scheduler_changes_the_step_in_force(kind, name):
    """Each step applies lr_in_force = group lr × lr_factor_in_force to p.grad, the lr being
    the scheduler's; with the curvature fixed (one probe) the step in force follows lr."""
    X, Y = problem()
    model = net()
    kw = (dict(noise_scale=0.0, curvature_every=100) if kind == "eosada"
          else dict(weight_decay=0.0, momentum=0.0, rho_ref=5.0, curvature_every=100))
    opt = make(kind, model.parameters(), B.Probe(model, B.cross_entropy_loss, (X, Y)), **kw)
    sched = SCHEDULERS[name](opt)
    p0 = next(iter(model.parameters()))
    lrs, steps, factors, moms = [], [], [], []
    for _ in range(6):
        lr = opt.param_groups[0]["lr"]
        mom = opt.param_groups[0].get("momentum")
        opt.zero_grad()
        loss = B.cross_entropy_loss(model(X), Y)
        loss.backward()
        g, before = p0.grad.clone(), p0.detach().clone()
        opt.step()
        st = opt.state[p0]
        assert st["lr_in_force"] == lr * st["lr_factor_in_force"] == opt.lr_in_force[0]
        if kind == "eosada" or name != "OneCycleLR":  # plain gradient step: θ − η g, bit for bit
            assert torch.equal(p0.detach(), before.add_(g, alpha=-st["lr_in_force"]))
        lrs.append(lr)
        steps.append(st["lr_in_force"])
        factors.append(st["lr_factor_in_force"])
        if kind == "dcao":
            moms.append((mom, st["momentum_in_force"], st["momentum_bound"]))
        sched.step(float(loss.detach())) if name == "ReduceLROnPlateau" else sched.step()
    assert len(set(lrs)) >= 3  # the scheduler did change lr
    assert len(set(factors)) == 1  # one probe: the rule's factor is fixed ...
    np.testing.assert_allclose(np.array(steps) / np.array(lrs), factors[0], rtol=1e-15)  # ... so η ∝ lr
    if kind == "dcao" and name == "OneCycleLR":  # momentum cycled too, and stayed under its bound
        assert len({m for m, _, _ in moms}) >= 3
        assert all(b == 2 * m < 1 and 0 <= mf < b for m, mf, b in moms)


# ----------------------------------------------------------------------------- state
@pytest.mark.parametrize("kind", KINDS)
def test_state_dict_round_trip_with_probe_and_scheduler_is_bit_identical(kind):
    X, Y = problem()
    batches = B.batches((X, Y), 32)
    N = 5

    def setup(seed):
        model = net(seed)
        opt = make(kind, model.parameters(), B.Probe(model, B.cross_entropy_loss, (X[:48], Y[:48])))
        return model, opt, L.StepLR(opt, step_size=3, gamma=0.7)

    def run(model, opt, sched, ts):
        for t in ts:
            plain_step(opt, model, *batches[t % 2], clip=1.0)
            sched.step()

    ref = setup(0)
    run(*ref, range(2 * N))
    model, opt, sched = setup(0)
    run(model, opt, sched, range(N))
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict()}, buf)
    buf.seek(0)
    ck = torch.load(buf, weights_only=True)
    model2, opt2, sched2 = setup(123)  # another init: everything must come from the checkpoint
    model2.load_state_dict(ck["model"])
    opt2.load_state_dict(ck["opt"])
    sched2.load_state_dict(ck["sched"])
    run(model2, opt2, sched2, range(N, 2 * N))
    assert torch.equal(flat_params(model2), flat_params(ref[0]))
    np.testing.assert_array_equal(opt2.eigenvalues, ref[1].eigenvalues)
    assert (opt2.n_hvp, opt2.n_probes, opt2.step_count) == (ref[1].n_hvp, ref[1].n_probes, 2 * N)
    p2, p1 = next(iter(model2.parameters())), next(iter(ref[0].parameters()))
    assert in_force(opt2, p2) == in_force(ref[1], p1)
    assert opt2.probe.last_loss == ref[1].probe.last_loss


# ----------------------------------------------------------------------------- DCAO's bounds, repr
def test_dcao_momentum_bound_and_factor_in_force():
    model = net()
    X, Y = problem()
    opt = B.DCAO(model.parameters(), lr=0.05, momentum=0.45, probe=B.Probe(model, B.cross_entropy_loss, (X, Y)))
    plain_step(opt, model, X, Y)
    st = in_force(opt, next(iter(model.parameters())))
    assert st["momentum_bound"] == 0.9
    assert 0 < st["momentum_in_force"] < st["momentum_bound"] < 1
    assert 0.5 <= st["lr_factor_in_force"] <= 2.0 and st["lr_in_force"] == 0.05 * st["lr_factor_in_force"]
    text = repr(opt)
    assert "base step eta0" in text and "up to 2.0*lr" in text and "bound 0.9" in text
    # β₁ = 0 makes g ≡ 1, and the v1 form has g <= 1: there the bound is β₀ itself
    flat = B.DCAO(net().parameters(), momentum=0.9, beta1=0.0)
    assert flat.momentum_bound(flat.param_groups[0]) == 0.9
    assert "bound 0.9" in repr(B.DCAO(net().parameters(), momentum=0.9, variant="v1"))
    assert "multiplier on eta_t" in repr(B.EoSAda(net().parameters()))


# ----------------------------------------------------------------------------- bad input
def test_probe_without_loss_function_and_other_probe_errors():
    model = net()
    X, Y = problem()
    with pytest.raises(TypeError, match="loss_fn is required"):
        B.Probe(model, None, (X, Y))
    with pytest.raises(TypeError, match="loss_fn is required"):
        B.Probe(model, data=(X, Y))
    with pytest.raises(TypeError, match="loss_fn must be callable"):
        B.Probe(model, "mse", (X, Y))
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        B.Probe(lambda x: x, B.mse_loss, (X, Y))
    with pytest.raises(TypeError, match="probe must be an eosdyn.bridge.Probe"):
        B.DCAO(model.parameters(), probe=B.mse_loss)
    with pytest.raises(ValueError, match="does not own"):
        B.EoSAda(net().parameters(), probe=B.Probe(model, B.cross_entropy_loss, (X, Y)))
    current = B.Probe(model, B.cross_entropy_loss)
    opt = B.EoSAda(model.parameters(), probe=current)
    opt.zero_grad()
    B.cross_entropy_loss(model(X), Y).backward()
    with pytest.raises(ValueError, match="set_batch"):
        opt.step()
    with pytest.raises(ValueError, match="set_batch is for"):
        B.Probe(model, B.cross_entropy_loss, (X, Y)).set_batch(X, Y)
    # a non-finite probe loss: refused before any parameter moves
    nan_probe = B.Probe(model, lambda o, t: B.cross_entropy_loss(o, t) * float("nan"), (X, Y))
    opt = B.DCAO(model.parameters(), probe=nan_probe)
    opt.zero_grad()
    B.cross_entropy_loss(model(X), Y).backward()
    before = flat_params(model)
    with pytest.raises(B.NonFiniteLossError, match="DCAO probe"):
        opt.step()
    assert torch.equal(flat_params(model), before) and opt.step_count == 0


@pytest.mark.parametrize("momentum", [0.5, 0.9])
def test_dcao_momentum_whose_bound_reaches_one_is_refused(momentum):
    model = net()
    with pytest.raises(ValueError, match=r"momentum = .* bound 2β₀ = .* reaches 1"):
        B.DCAO(model.parameters(), lr=0.05, momentum=momentum)
    opt = B.DCAO(list(model.net[2].parameters()), lr=0.05, momentum=0.45)
    with pytest.raises(ValueError, match=r"momentum in param group 1 = .* reaches 1"):
        opt.add_param_group({"params": list(model.net[0].parameters()), "momentum": momentum})
    assert len(opt.param_groups) == 1 and len(opt.lr_in_force) == 1  # not added
    # a scheduler that cycles momentum (OneCycleLR's default 0.85-0.95) is caught at the step
    X, Y = problem()
    opt = B.DCAO(model.parameters(), lr=0.05, probe=B.Probe(model, B.cross_entropy_loss, (X, Y)))
    L.OneCycleLR(opt, max_lr=0.1, total_steps=5)
    opt.zero_grad()
    B.cross_entropy_loss(model(X), Y).backward()
    before = flat_params(model)
    with pytest.raises(ValueError, match=r"momentum in param group 0 = 0.95.*cycle_momentum=False"):
        opt.step()
    assert torch.equal(flat_params(model), before)


@pytest.mark.parametrize("kind", KINDS)
def test_scheduler_setting_a_negative_lr_is_refused(kind):
    X, Y = problem()
    model = net()
    opt = make(kind, model.parameters(), B.Probe(model, B.cross_entropy_loss, (X, Y)))
    sched = L.LambdaLR(opt, lambda epoch: 1.0 if epoch == 0 else -0.5)
    plain_step(opt, model, X, Y)
    sched.step()
    assert opt.param_groups[0]["lr"] < 0
    before = flat_params(model)
    with pytest.raises(ValueError, match=r"param group 0 has lr = -.*lr must be a finite number >= 0"):
        plain_step(opt, model, X, Y)
    assert torch.equal(flat_params(model), before) and opt.step_count == 1
    with pytest.raises(ValueError, match="lr must be finite"):
        make(kind, model.parameters(), lr=-1.0)


def test_thread_oversubscription_warns_once(monkeypatch):
    """train() warns once per process when torch's threads exceed the free cores (issue 15 item 8)."""
    import os
    import warnings

    from eosdyn.bridge import _common

    monkeypatch.setattr(_common, "_THREADS_WARNED", [])
    monkeypatch.setattr(os, "getloadavg", lambda: (3.0, 3.0, 3.0))      # two other jobs running
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert _common.free_cores() == (1, 2, 3.0)
        with pytest.warns(RuntimeWarning, match=r"torch uses 2 intra-op threads but only about 1 of .* 2 cores"):
            assert _common.warn_if_threads_oversubscribe()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert not _common.warn_if_threads_oversubscribe()            # once per process
        monkeypatch.setattr(_common, "_THREADS_WARNED", [])
        torch.set_num_threads(1)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert not _common.warn_if_threads_oversubscribe()            # 1 thread fits
    finally:
        torch.set_num_threads(old)
