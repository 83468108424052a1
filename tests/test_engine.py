"""The stepping core (eosdyn.engine): failures never escape a kernel, runs can be cut and
interrupted, requests are sized before anything is allocated, and every runner is the core.
"""
from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import eosdyn
from eosdyn import analysis, sde
from eosdyn.engine import run_map
from eosdyn.losses import Quadratic, from_sympy
from eosdyn.rules import DCAO, GD, Adam, EoSAda, HeavyBall

sys.path.insert(0, str(Path(__file__).resolve().parent))
import engine_faults  # noqa: E402

TESTS = str(Path(__file__).resolve().parent)


# ------------------------------------------------------------------ exceptions in kernels
def test_the_issue_reproducer_flags_one_trajectory_and_computes_the_rest():
    """ensemble(from_sympy("1/x + x**2"), GD(0.01), X, 20) with X[999] = 0: 1/0 inside the
    (blocked) gradient used to lose or corrupt results; now exactly that trajectory fails."""
    loss = from_sympy("1/x + x**2", ["x"])
    X = np.linspace(0.5, 1.5, 1000)[:, None]
    X[999] = 0.0
    res = eosdyn.ensemble(loss, GD(0.01), X, 20, record_every=10)
    assert list(np.flatnonzero(res.diverged)) == [999]
    assert res.reasons[999] == "exception" and res.diverged_at[999] == 0
    assert res.converged_fraction == pytest.approx(0.999)
    assert np.isnan(res.loss[999]).all() and np.isfinite(res.loss[:999]).all()
    np.testing.assert_array_equal(res.final_theta[999], [0.0])   # nothing passed: the start
    ok = eosdyn.ensemble(loss, GD(0.01), X[:999], 20, record_every=10)
    np.testing.assert_array_equal(res.loss[:999], ok.loss)
    np.testing.assert_array_equal(res.final_theta[:999], ok.final_theta)


def _starts(n, failing):
    """n starts of size 0.5 (stay below the limit for 4 steps), the failing ones larger."""
    X = np.full((n, 2), 0.5)
    for k, i in enumerate(failing):
        X[i, 0] = 40.0 / 1.5 ** (k % 3)   # fail at steps 3, 4, 5
    return X


FAILING = [0, 1, 127, 128, 249, 250, 499, 500, 501, 750, 998, 999]


def test_failing_trajectories_at_every_position_are_flagged_and_the_rest_computed():
    loss = engine_faults.raising_loss()
    n = 1000
    X = _starts(n, FAILING)
    res = eosdyn.ensemble(loss, GD(1.0), X, 6, record_every=1, record_theta=True, track_sharpness=False)
    assert sorted(np.flatnonzero(res.diverged)) == FAILING
    for i in FAILING:
        f = engine_faults.fail_step(X[i, 0])
        assert res.diverged_at[i] == f and res.reasons[i] == "exception"
        assert np.isnan(res.loss[i, f:]).all() and np.isfinite(res.loss[i, :f]).all()
        # the final state is the last good one, θ_{f−1} = (−1.5)^{f−1} θ₀ (bit for bit: a replay)
        np.testing.assert_array_equal(res.final_theta[i], res.theta[i, f - 1])
        np.testing.assert_allclose(res.final_theta[i], (-1.5) ** (f - 1) * X[i], rtol=1e-15)
    alive = np.setdiff1d(np.arange(n), FAILING)
    np.testing.assert_allclose(res.final_theta[alive], (-1.5) ** 6 * X[alive], rtol=1e-15)
    # simulate: the same trajectory alone, flagged the same way
    tr = eosdyn.simulate(loss, GD(1.0), X[500], 6)
    assert tr.diverged and tr.status == "exception" and tr.diverged_at == res.diverged_at[500]
    np.testing.assert_array_equal(tr.final_theta, res.final_theta[500])
    # the SDE engine: an exception inside its kernel is caught the same way
    r = sde.simulate(loss, 1.0, sde.Isotropic(0.0), X, 1.0, 6, record_every=1)
    assert sorted(np.flatnonzero(r.diverged)) == FAILING
    assert {r.reasons[i] for i in FAILING} == {"exception"}
    np.testing.assert_array_equal(r.final_theta[alive], res.final_theta[alive])


_THREADS = textwrap.dedent("""
    import hashlib, sys, numpy as np, warnings
    warnings.simplefilter("ignore")
    sys.path.insert(0, {tests!r})
    import eosdyn, engine_faults
    from eosdyn import sde
    from eosdyn.losses import from_sympy
    from eosdyn.rules import GD, EoSAda
    import test_engine as T
    X = T._starts(1000, T.FAILING)
    loss = engine_faults.raising_loss()
    h = hashlib.sha256()
    for kernel in ("auto", "trajectory"):
        r = eosdyn.ensemble(loss, GD(1.0), X, 6, record_every=1, record_theta=True, kernel=kernel)
        h.update(r.final_theta.tobytes() + r.loss.tobytes() + r.diverged_at.tobytes() + r.status.tobytes())
    Y = np.linspace(0.5, 1.5, 1000)[:, None]
    Y[T.FAILING] = 0.0
    for kernel in ("auto", "trajectory"):
        r = eosdyn.ensemble(from_sympy("1/x + x**2", ["x"]), GD(0.01), Y, 20, record_every=10, kernel=kernel)
        h.update(r.final_theta.tobytes() + r.loss.tobytes() + r.diverged_at.tobytes() + r.status.tobytes())
    r = eosdyn.ensemble(loss, EoSAda(alpha=1.8, noise_scale=0.1), X, 6, record_every=1)
    h.update(r.final_theta.tobytes() + r.loss.tobytes() + r.diverged_at.tobytes())
    r = sde.simulate(loss, 1.0, sde.Isotropic(0.1), X, 1.0, 6, record_every=1)
    h.update(r.final_theta.tobytes() + r.loss.tobytes() + r.diverged_at.tobytes() + r.status.tobytes())
    r = sde.noisy_gd(loss, 1.0, sde.Isotropic(0.1), X, 6, record_every=1)
    h.update(r.final_theta.tobytes() + r.loss.tobytes() + r.theta_mean.tobytes() + r.status.tobytes())
    import numba
    print(numba.get_num_threads(), h.hexdigest())
""")


def test_failures_give_the_same_results_for_one_and_two_threads():
    from conftest import digests_for_thread_counts

    out = digests_for_thread_counts(_THREADS.format(tests=TESTS))
    assert out["1"] == out["2"]


def test_a_divergence_keeps_the_last_good_state_and_blanks_records_from_it():
    loss = Quadratic(eigs=[10.0, 1.0])
    for kernel in ("auto", "trajectory"):
        res = eosdyn.ensemble(loss, GD(0.25), [[1.0, 1.0], [1e-3, 1.0]], 400, record_every=1, kernel=kernel,
                              record_theta=True, blowup=1e6)
        for i, x in enumerate((1.0, 1e-3)):
            f = res.diverged_at[i]
            assert res.reasons[i] == "diverged" and abs(x * 1.5 ** f) >= 1e6 > abs(x * 1.5 ** (f - 1))
            assert np.isnan(res.loss[i, f:]).all() and np.isnan(res.theta[i, f:]).all()
            np.testing.assert_array_equal(res.final_theta[i], res.theta[i, f - 1])


def test_non_finite_adam_and_eosada_edge_cases():
    loss = Quadratic(eigs=[1.0, 0.0])
    # Adam(eps=0): a coordinate with zero gradient so far does not move (the ε → 0⁺ limit)
    tr = eosdyn.simulate(loss, Adam(0.1, eps=0.0), [1.0, 0.0], 5)
    assert not tr.diverged and np.all(tr.theta[:, 1] == 0.0) and np.isfinite(tr.loss).all()
    assert np.isnan(tr.preconditioned_sharpness).all()   # λ_max(P⁻¹H) is undefined with P = 0
    # EoSAda(eps=0) where the Hessian is 0 at the start: the step is 0 there (no curvature to set it)
    flat = Quadratic(eigs=[0.0, 0.0])
    tr = eosdyn.simulate(flat, EoSAda(alpha=1.0, eps=0.0), [1.0, 2.0], 3)
    assert not tr.diverged and np.all(tr.lr == 0.0) and np.all(tr.theta == [1.0, 2.0])
    # EoS-Ada on a concave quadratic: the step uses |λ_max|, a bounded descent step
    concave = Quadratic(eigs=[-2.0, -1.0])
    tr = eosdyn.simulate(concave, EoSAda(alpha=0.5, eps=1e-3), [0.1, 0.1], 3)
    np.testing.assert_allclose(tr.lr[:-1], 0.5 / (1.0 + 1e-3))
    assert tr.loss[1] < tr.loss[0]


# ----------------------------------------------------------- cutting and interrupting runs
@pytest.mark.parametrize("rule", [EoSAda(alpha=1.8, noise_scale=0.2, curvature="lanczos", lanczos_steps=3,
                                         curvature_every=4),
                                  DCAO(lr=0.05, k=2, curvature_every=5, lanczos_steps=3), HeavyBall(0.1, 0.8)],
                         ids=["eosada", "dcao", "heavyball"])
def test_a_run_cut_into_calls_is_bit_identical(rule):
    loss = Quadratic(eigs=np.linspace(0.5, 9.0, 6))
    X = np.random.default_rng(1).standard_normal((5, 6))
    kw = dict(record_every=3, records=("loss", "lr", "theta", "sharpness", "grad_norm"), seed=4)
    one = run_map(loss, rule, X, 100, **kw)
    for cut in (1, 7, 33):
        many = run_map(loss, rule, X, 100, max_call_steps=cut, **kw)
        for name, a in one.records.items():
            if a is not None:
                assert np.array_equal(a, many.records[name], equal_nan=True), (cut, name)
        np.testing.assert_array_equal(one.thetas, many.thetas)


def test_progress_is_reported_between_calls():
    seen = []
    eosdyn.simulate(Quadratic(eigs=[1.0]), GD(0.1), [1.0], 50_000, record_every=100,
                    progress=lambda done, total: seen.append((done, total)))
    assert seen and seen[-1] == (50_001, 50_001)
    assert all(a[0] < b[0] for a, b in zip(seen, seen[1:]))


_INTERRUPT = textwrap.dedent("""
    import sys, numpy as np, eosdyn
    from eosdyn.engine import RunInterrupted
    from eosdyn.losses import Quadratic
    from eosdyn.rules import GD
    eosdyn.simulate(Quadratic(eigs=[1.0]), GD(0.1), [1.0], 1000, record_every=10)   # compile first
    print("ready", flush=True)
    try:
        eosdyn.simulate(Quadratic(eigs=[1.0]), GD(0.1), [1.0], 2**62, record_every=2**40)
    except RunInterrupted as exc:
        p = exc.partial
        last = p.params["interrupted_after_step"]
        finite = np.isfinite(p.loss)
        assert 0 < last < 2**62 and np.all(finite == (p.step <= last)), (last, finite.sum())
        print("interrupted", int(finite.sum()), p.loss.shape[0], flush=True)
        sys.exit(130)
""")


def test_ctrl_c_stops_a_long_run_and_keeps_what_was_computed():
    """simulate(steps=2**62) ran forever and ignored Ctrl-C; now it stops between kernel calls."""
    p = subprocess.Popen([sys.executable, "-c", _INTERRUPT], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    try:
        assert p.stdout.readline().strip() == "ready"
        time.sleep(1.5)
        t0 = time.perf_counter()
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
    finally:
        p.kill()
    assert p.returncode == 130, err[-2000:]
    assert time.perf_counter() - t0 < 10
    word, finite, total = out.split()[-3:]
    assert word == "interrupted" and int(finite) >= 1 and int(total) == 2 ** 22 + 1


def test_requests_that_cannot_fit_are_refused_before_allocating():
    loss = Quadratic(eigs=[1.0, 2.0])
    with pytest.raises(ValueError, match=r"GiB.*record less often \(record_every\)"):
        eosdyn.simulate(loss, GD(0.1), [1.0, 1.0], 10 ** 12)
    with pytest.raises(ValueError, match="GiB"):
        eosdyn.ensemble(loss, GD(0.1), np.ones((10 ** 5, 2)), 10 ** 8, record_every=1)
    with pytest.raises(ValueError, match=r"steps must be an integer in \[0, 2\*\*62\]"):
        eosdyn.simulate(loss, GD(0.1), [1.0, 1.0], 2 ** 64)
    with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2\*\*63\)"):
        eosdyn.simulate(loss, GD(0.1), [1.0, 1.0], 3, seed=2 ** 64)
    with pytest.raises(ValueError, match="at least one start"):
        eosdyn.ensemble(loss, GD(0.1), np.zeros((0, 2)), 3)
    with pytest.raises(TypeError, match="real"):
        eosdyn.simulate(loss, GD(0.1), [1.0 + 1j, 1.0], 3)
    with pytest.raises(TypeError, match="got None"):
        eosdyn.simulate(loss, GD(0.1), None, 3)


# ---------------------------------------------------------------- every runner is the core
def test_noise_in_the_core_is_noisy_gd_and_the_sde_euler_step():
    loss = Quadratic(eigs=[3.0, 1.0, 0.5], center=[0.1, 0.2, -0.3])
    X = np.random.default_rng(5).standard_normal((7, 3))
    noise = sde.Isotropic(0.3)
    # noise= under convention="proposal" adds √η·Bξ per step, as eosdyn.sde's "proposal" does
    a = sde.noisy_gd(loss, 0.2, noise, X, 60, record_every=1, seed=9, record_theta=True, convention="proposal")
    b = sde.simulate(loss, 0.2, noise, X, 1.0, 60, method="euler", record_every=1, seed=9, record_theta=True,
                     convention="proposal")
    c = eosdyn.ensemble(loss, GD(0.2), X, 60, record_every=1, seed=9, noise=noise, record_theta=True,
                        convention="proposal")
    for x in (b, c):
        np.testing.assert_array_equal(a.theta, x.theta)
        np.testing.assert_array_equal(a.loss, x.loss)
        np.testing.assert_array_equal(a.final_theta, x.final_theta)
    tr = eosdyn.simulate(loss, GD(0.2), X[4], 60, seed=9, stream_index=4, noise=noise, convention="proposal")
    np.testing.assert_array_equal(tr.theta, a.theta[4])


def test_noisy_gd_and_the_sde_agree_on_a_divergence_too():
    """The loss overflows at a record before |θ| reaches blowup: both keep the state before it."""
    q = Quadratic(eigs=[1.0])
    X = np.full((3, 1), 1e150)
    with np.errstate(all="ignore"):
        a = sde.noisy_gd(q, 2.5, sde.Isotropic(0.1), X, 60, record_every=1, seed=1, blowup=1e200)
        b = sde.simulate(q, 2.5, sde.Isotropic(0.1), X, 1.0, 60, record_every=1, seed=1, blowup=1e200)
    assert np.all(a.diverged_at == 24)
    np.testing.assert_array_equal(a.diverged_at, b.diverged_at)
    np.testing.assert_array_equal(a.final_theta, b.final_theta)
    assert np.all(np.isfinite(0.5 * a.final_theta ** 2))  # the last state whose loss was finite
    np.testing.assert_array_equal(a.loss, b.loss)


def test_ctrl_c_in_the_last_call_of_a_run_is_not_swallowed():
    from eosdyn.engine.run import CallPlan

    plan = CallPlan(10, 100)  # one call covers the whole run
    calls = []
    for s0, s1 in plan:
        calls.append((s0, s1))
        signal.raise_signal(signal.SIGINT)  # noted by the plan's handler, not raised here
    assert calls == [(0, 10)] and plan.done == 10 and plan.interrupted


def test_orbits_follow_the_rules_curvature_schedule_unless_asked_for_the_exact_map():
    loss = Quadratic(eigs=np.linspace(0.5, 9.0, 8))
    rule = EoSAda(alpha=1.5, curvature="lanczos", lanczos_steps=3, curvature_every=5)
    X = np.random.default_rng(2).standard_normal((3, 8))
    o = analysis.orbits(loss, rule, X, 40, seed=3)
    for i in range(3):
        tr = eosdyn.simulate(loss, rule, X[i], 40, seed=3, stream_index=i)
        np.testing.assert_array_equal(o[i], tr.theta)
    exact = analysis.orbits(loss, rule, X, 40, curvature="exact")
    z = rule.pack(X[0], rule.init_state(X[0]))
    for t in range(40):
        z = rule.map(loss, z, t + 1)
    np.testing.assert_allclose(exact[0, -1], z[:8], rtol=1e-12)


def test_the_generated_kernel_equals_the_generic_one(monkeypatch):
    """Every kernel kind through its generated, disk-cached form and through the generic loop."""
    from eosdyn.engine import kernels as K

    loss = engine_faults.raising_loss(3)
    X = _starts(20, [3, 17])[:, :2]
    X = np.column_stack([X, np.full(20, 0.2)])
    rule = HeavyBall(0.4, 0.5)
    import warnings

    import eosdyn.codegen as CG

    runs = []
    for gen in (True, False):
        with monkeypatch.context() as mp:
            mp.setattr(K, "_KERNELS", {})
            mp.setattr(CG, "_WARNED", set())
            if not gen:
                def refuse(*a, **k):
                    raise K.NotSpecialisable("forced by the test")

                mp.setattr(K, "specialise", refuse)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                r = eosdyn.ensemble(loss, rule, X, 30, record_every=2, record_theta=True)
            said = [w for w in caught if issubclass(w.category, CG.GenericKernelWarning)]
            assert r.params["generated_kernel"] is gen
            if gen:
                assert not said
            else:
                assert len(said) == 1 and "forced by the test" in str(said[0].message)
                assert "(Loss, HeavyBall)" in str(said[0].message)
            runs.append(r)
    for name in ("final_theta", "loss", "theta", "diverged_at", "status"):
        assert np.array_equal(getattr(runs[0], name), getattr(runs[1], name), equal_nan=True), name
