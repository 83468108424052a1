"""The discrete-map simulator: thresholds, ensemble = loop of simulate, determinism, divergence."""
import textwrap

import numpy as np
import pytest

import eosdyn
from eosdyn.losses import Quadratic
from eosdyn.rules import DCAO, GD, Adam, EoSAda, HeavyBall, Nesterov, NormalizedGD


def _grows(loss, rule, theta0, steps):
    """Edge criterion: the loss at the end of the run exceeds the loss at the start."""
    tr = eosdyn.simulate(loss, rule, theta0, steps, record_every=steps, track_sharpness=False)
    return tr.diverged or tr.loss[-1] > tr.loss[0]


def _bisect_edge(make_rule, loss, theta0, lo, hi, steps, rtol):
    assert not _grows(loss, make_rule(lo), theta0, steps)
    assert _grows(loss, make_rule(hi), theta0, steps)
    while (hi - lo) / lo > rtol:
        mid = 0.5 * (lo + hi)
        if _grows(loss, make_rule(mid), theta0, steps):
            hi = mid
        else:
            lo = mid
    return 0.5 * (lo + hi)


@pytest.mark.parametrize("eigs", [[10.0, 1.0], [3.0, 2.5, 0.1, 0.01]])
def test_gd_converges_iff_lr_below_two_over_lambda(eigs):
    loss = Quadratic(eigs=eigs)
    theta0 = np.ones(len(eigs))
    edge = _bisect_edge(GD, loss, theta0, 0.5 / max(eigs), 4.0 / max(eigs), 20000, 1e-5)
    assert edge == pytest.approx(2.0 / max(eigs), rel=1e-4)


@pytest.mark.parametrize("beta", [0.5, 0.9])
def test_heavy_ball_converges_iff_lr_below_two_one_plus_beta_over_lambda(beta):
    loss = Quadratic(eigs=[4.0, 1.0])
    edge = _bisect_edge(lambda lr: HeavyBall(lr, beta), loss, np.ones(2), 0.1, 2.0, 40000, 1e-5)
    assert edge == pytest.approx(2 * (1 + beta) / 4.0, rel=1e-4)


def test_nesterov_edge_matches_torch_convention_closed_form():
    beta = 0.8
    loss = Quadratic(eigs=[4.0, 1.0])
    edge = _bisect_edge(lambda lr: Nesterov(lr, beta), loss, np.ones(2), 0.05, 1.0, 40000, 1e-5)
    assert edge == pytest.approx((2 + 2 * beta) / ((1 + 2 * beta) * 4.0), rel=1e-4)


@pytest.mark.parametrize("rule", [GD(0.19), HeavyBall(0.05, 0.9), Adam(0.05), EoSAda(alpha=1.9),
                                  EoSAda(alpha=1.5, noise_scale=0.1, noise_decay=0.05),
                                  DCAO(lr=0.05, k=2, curvature_every=3, lanczos_steps=3)])
def test_ensemble_equals_loop_of_simulate_bitwise(rule, rng):
    H = rng.standard_normal((3, 3))
    loss = Quadratic(H @ H.T + np.eye(3))
    th0 = rng.standard_normal((5, 3))
    ens = eosdyn.ensemble(loss, rule, th0, 60, record_every=7, seed=3)
    for i in range(5):
        tr = eosdyn.simulate(loss, rule, th0[i], 60, record_every=7, seed=3, stream_index=i)
        assert np.array_equal(tr.loss, ens.loss[i])
        assert np.array_equal(tr.sharpness, ens.sharpness[i], equal_nan=True)
        assert np.array_equal(tr.lr, ens.lr[i])
        assert np.array_equal(tr.final_theta, ens.final_theta[i])
        assert np.array_equal(tr.theta[-1], tr.theta[60 // 7])


_THREAD_SCRIPT = textwrap.dedent("""
    import hashlib, numpy as np, eosdyn
    from eosdyn.losses import Quadratic
    from eosdyn.rules import GD, EoSAda
    rng = np.random.default_rng(0)
    loss = Quadratic(eigs=np.linspace(0.5, 10, 6))
    ens = eosdyn.ensemble(loss, EoSAda(alpha=1.8, noise_scale=0.3, noise_decay=0.1),
                          rng.standard_normal((64, 6)), 300, record_every=30, seed=11)
    # and the blocked kernel (GD), with trajectories that diverge at different steps
    blk = eosdyn.ensemble(loss, GD(0.21), rng.standard_normal((300, 6)) * np.logspace(0, 99, 300)[:, None],
                          300, record_every=30)
    assert blk.params["kernel"] == "blocked" and blk.diverged.any() and not blk.diverged.all()
    import numba
    h = hashlib.sha256(ens.final_theta.tobytes() + ens.loss.tobytes() + blk.final_theta.tobytes()
                       + blk.loss.tobytes() + blk.diverged_at.tobytes()).hexdigest()
    print(numba.get_num_threads(), h)
""")


def test_results_bit_identical_for_one_and_two_threads():
    from conftest import digests_for_thread_counts

    out = digests_for_thread_counts(_THREAD_SCRIPT, timeout=300)
    assert out["1"] == out["2"]


def test_divergence_is_flagged_and_never_spreads_into_statistics():
    loss = Quadratic(eigs=[10.0, 1.0])
    th0 = np.array([[1.0, 1.0], [1.0, 1.0]])
    # trajectory 0 is stable (lr = 0.19), trajectory 1 diverges: same rule, two starts
    # cannot differ in lr, so run two ensembles and check each.
    bad = eosdyn.ensemble(loss, GD(0.25), th0, 5000, record_every=10)
    assert bad.diverged.all()
    assert (bad.diverged_at > 0).all()
    k = bad.diverged_at[0] // 10
    assert np.isnan(bad.loss[0, k + 1:]).all()
    assert np.isnan(bad.mean("loss")[k + 1:]).all()
    mixed = eosdyn.ensemble(Quadratic(eigs=[10.0, 1.0]), GD(0.19), [[1.0, 1.0], [1e200, 1.0]], 50)
    assert list(mixed.diverged) == [False, True]
    assert np.all(np.isfinite(mixed.mean("loss")))
    np.testing.assert_array_equal(mixed.mean("loss")[1:], mixed.loss[0, 1:])


def test_gd_at_the_edge_records_sharpness_times_lr(rng):
    loss = Quadratic(eigs=[10.0, 1.0])
    tr = eosdyn.simulate(loss, GD(0.19), [1.0, 1.0], 100)
    np.testing.assert_allclose(tr.sharpness * tr.lr, 1.9)
    np.testing.assert_allclose(tr.lambda2, 1.0)
    # closed form of GD on a diagonal quadratic: θ_t = (1 − ηλ)^t θ_0
    np.testing.assert_allclose(tr.theta[:, 0], (1 - 1.9) ** np.arange(101), rtol=1e-12)
    assert not tr.diverged and tr.diverged_at == -1


def test_eosada_with_exact_curvature_tracks_the_edge():
    loss = Quadratic(eigs=[50.0, 1.0])
    tr = eosdyn.simulate(loss, EoSAda(alpha=1.9, eps=0.5, curvature="exact"), [1.0, 1.0], 50)
    lr = 1.9 / 50.5
    np.testing.assert_allclose(tr.lr, lr)
    # each mode contracts by its own factor (1 − η_t λ_i); the top one by 1 − 1.9·50/50.5
    t = np.arange(51)
    np.testing.assert_allclose(tr.theta[:, 0], (1 - lr * 50.0) ** t, rtol=1e-10)
    np.testing.assert_allclose(tr.theta[:, 1], (1 - lr * 1.0) ** t, rtol=1e-10)


@pytest.mark.parametrize("method", ["lanczos", "power"])
def test_in_kernel_probes_find_lambda_max(method, rng):
    A = rng.standard_normal((8, 8))
    H = A @ A.T + np.diag(np.arange(8.0))
    loss = Quadratic(H)
    tr = eosdyn.simulate(loss, EoSAda(alpha=1.0, eps=0.0, curvature=method, lanczos_steps=8 if method == "lanczos" else 300),
                         rng.standard_normal(8), 3)
    lam = np.linalg.eigvalsh(H)[-1]
    np.testing.assert_allclose(1.0 / tr.lr[:3], lam, rtol=1e-8)


def test_hutchinson_probe_estimates_mean_eigenvalue_not_lambda_max(rng):
    loss = Quadratic(eigs=[100.0] + [1.0] * 9)
    rule = EoSAda(alpha=1.0, eps=0.0, curvature="hutchinson", hutchinson_samples=1)
    th0 = np.zeros((4000, 10))
    ens = eosdyn.ensemble(loss, rule, th0, 0, seed=5)
    est = 1.0 / ens.lr[:, 0]           # each trajectory's single-sample uᵀHu
    se = est.std(ddof=1) / np.sqrt(est.size)
    assert abs(est.mean() - np.trace(loss.H) / 10) < 4 * se      # tr(H)/d = 10.9
    assert est.mean() < 0.2 * 100.0                               # far below λ_max


def test_dcao_lanczos_probe_gives_top_two_eigenvalues(rng):
    loss = Quadratic(eigs=[9.0, 4.0, 1.0, 0.5])
    rule = DCAO(lr=0.01, momentum=0.3, alpha=0.5, rho_ref=5.0, beta1=1.0, gap_ref=2.0, k=2,
                lanczos_steps=4, curvature_every=1)
    theta0 = rng.standard_normal(4)
    tr = eosdyn.simulate(loss, rule, theta0, 4)
    lr, mom, wd = rule.schedule([9.0, 4.0])
    np.testing.assert_allclose(tr.lr, lr, rtol=1e-10)
    # the step size depends on λ₁ only; the momentum β₀(1 + tanh(β₁(λ₁ − λ₂ − γ_ref))) on λ₂
    # too, so the trajectory checks the second eigenvalue
    assert mom != pytest.approx(rule.schedule([9.0, 9.0])[1], rel=0.1)
    th, v = theta0.copy(), np.zeros(4)
    for _ in range(4):
        v = mom * v + loss.grad(th)
        th = th - lr * v
    np.testing.assert_allclose(tr.final_theta, th, rtol=1e-10)


def test_adam_records_preconditioned_sharpness():
    loss = Quadratic(eigs=[10.0, 1.0])
    rule = Adam(0.01, (0.9, 0.999))
    tr = eosdyn.simulate(loss, rule, [1.0, 1.0], 20)
    z = rule.pack([1.0, 1.0], rule.init_state(np.ones(2)))
    for t in range(1, 21):
        z = rule.map(loss, z, t)
    P = rule.preconditioner(z[2:], t=20)
    expected = np.linalg.eigvalsh(np.diag(P ** -0.5) @ loss.H @ np.diag(P ** -0.5))[-1]
    assert tr.preconditioned_sharpness[-1] == pytest.approx(expected, rel=1e-10)


def test_trajectory_to_xarray_and_netcdf_roundtrip(tmp_path):
    xr = pytest.importorskip("xarray")
    tr = eosdyn.simulate(Quadratic(eigs=[2.0, 1.0]), GD(0.5), [1.0, 1.0], 10, record_every=2)
    ds = tr.to_xarray()
    assert ds.sizes["step"] == 6 and ds["theta"].shape == (6, 2)
    assert ds.attrs["rule_lr"] == 0.5 and ds.attrs["eosdyn_version"]
    tr.save(tmp_path / "run.nc")
    back = xr.open_dataset(tmp_path / "run.nc")
    np.testing.assert_array_equal(back["loss"].values, tr.loss)
    ens = eosdyn.ensemble(Quadratic(eigs=[2.0, 1.0]), GD(0.5), np.ones((3, 2)), 10)
    assert ens.to_xarray()["loss"].dims == ("trajectory", "step")


@pytest.mark.parametrize("call, exc, word", [
    (lambda q: eosdyn.simulate(q, GD(0.1), [1.0, 1.0], -1), ValueError, "steps"),
    (lambda q: eosdyn.simulate(q, GD(0.1), [1.0, np.nan], 10), ValueError, "theta0"),
    (lambda q: eosdyn.simulate(q, GD(0.1), [1.0, 1.0, 1.0], 10), ValueError, "loss.dim"),
    (lambda q: eosdyn.simulate(q, GD(0.1), [1.0, 1.0], 10, record_every=0), ValueError, "record_every"),
    (lambda q: eosdyn.ensemble(q, GD(0.1), np.ones((3, 3)), 10), ValueError, "theta0s"),
    (lambda q: eosdyn.simulate(q, "gd", [1.0, 1.0], 10), TypeError, "rule"),
    (lambda q: eosdyn.simulate(None, GD(0.1), [1.0, 1.0], 10), TypeError, "loss"),
    (lambda q: Quadratic(H=[[1.0, 2.0], [0.0, 1.0]]), ValueError, "symmetric"),
])
def test_bad_input_raises_named_errors(call, exc, word):
    with pytest.raises(exc, match=word):
        call(Quadratic(eigs=[2.0, 1.0]))


def test_lanczos_probe_warm_started_at_an_eigenvector_still_finds_the_gap():
    """A warm start at the exact top eigenvector makes the Krylov space invariant after one
    step; the probe must continue in a fresh direction and still report λ₂ (not λ₁)."""
    loss = Quadratic(eigs=[10.0, 1.0, 0.5])
    rule = DCAO(lr=0.01, momentum=0.3, alpha=0.0, beta1=1.0, gap_ref=5.0, k=2,
                lanczos_steps=3, curvature_every=1)
    # θ along the top eigenvector: the gradient, hence the first step, stays in that direction,
    # and every probe after the first is warm-started at e₁ exactly
    tr = eosdyn.simulate(loss, rule, [1.0, 0.0, 0.0], 5)
    lr, mom, wd = rule.schedule([10.0, 1.0])
    np.testing.assert_allclose(tr.lr, lr, rtol=1e-12)
    z = np.array([1.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    for t in range(1, 6):
        v = mom * z[3:] + loss.grad(z[:3])
        z = np.concatenate([z[:3] - lr * v, v])
    np.testing.assert_allclose(tr.final_theta, z[:3], rtol=1e-12)


def test_escape_to_infinity_is_a_divergence_not_a_lapack_error():
    from eosdyn.losses import LogisticCubic

    # GD on x²/2 − x³/3 from x₀ = 3 escapes to −∞
    tr = eosdyn.simulate(LogisticCubic(), GD(1.0), [3.0], 200)
    assert tr.diverged and tr.diverged_at > 0
    assert np.isnan(tr.sharpness[tr.diverged_at + 1:]).all()


def test_infinite_hessian_at_a_minimum_is_not_a_divergence():
    """SqrtLoss has +inf curvature exactly at L = L*: the curvature record is NaN, the run is
    not flagged, and LAPACK never sees the matrix."""
    from eosdyn.losses import SqrtLoss

    loss = SqrtLoss(Quadratic(eigs=[2.0, 1.0]))
    tr = eosdyn.simulate(loss, GD(0.1), [0.0, 0.0], 5)
    assert not tr.diverged and tr.diverged_at == -1
    np.testing.assert_array_equal(tr.loss, 0.0)
    assert np.isnan(tr.sharpness).all()


# --- the blocked kernel: the same numbers as the per-trajectory kernel, bit for bit -----
def _block_cases():
    from eosdyn.losses import ScalarNet, from_sympy
    from eosdyn.losses.scalar_net import UNROLL_MAX_DEPTH

    rng = np.random.default_rng(7)
    H = rng.standard_normal((4, 4))
    quad = Quadratic(H @ H.T + np.eye(4), center=rng.standard_normal(4))
    lam = quad.lambda_max
    sym = from_sympy("(x*y - 1)**2/2 + a*log(1 + x**2)", ["x", "y"], params={"a": 0.3})
    # step sizes just past the edge on the quadratic: trajectories grow at rates set by
    # their starts, so they cross the blow-up threshold at different steps
    return [
        (quad, GD(2.2 / lam)), (quad, HeavyBall(2 * 1.9 * 1.1 / lam, 0.9)), (quad, Adam(0.05)),
        (ScalarNet(3, 1.0), Nesterov(0.1, 0.5)),
        (ScalarNet(UNROLL_MAX_DEPTH + 2, 1.0), GD(0.02)),
        (sym, GD(0.4)),
        (quad, NormalizedGD(0.3)),
    ]


@pytest.mark.parametrize("case", range(7))
@pytest.mark.parametrize("record_every", [1, 7])
def test_blocked_kernel_equals_trajectory_kernel_bitwise(case, record_every):
    from eosdyn.engine.core import BLOCK

    loss, rule = _block_cases()[case]
    n = 2 * BLOCK + 5  # three blocks, the last one partial
    rng = np.random.default_rng(case)
    # starts spread over many scales: some trajectories diverge, at different steps,
    # between records and at records
    th0 = rng.normal(1.0, 0.3, (n, loss.dim)) * np.logspace(0, 101, n)[:, None]
    if isinstance(rule, NormalizedGD):
        th0[1] = loss.center  # ∇L = 0 exactly: normalized GD stays put with step size 0
    kw = dict(record_every=record_every, record_theta=True, track_sharpness=True)
    a = eosdyn.ensemble(loss, rule, th0, 60, kernel="trajectory", **kw)
    b = eosdyn.ensemble(loss, rule, th0, 60, kernel="blocked", **kw)
    assert (a.params["kernel"], b.params["kernel"]) == ("trajectory", "blocked")
    assert a.diverged.any() and not a.diverged.all(), "the case must mix diverging and surviving starts"
    for name in ("final_theta", "loss", "sharpness", "lr", "theta", "diverged_at"):
        assert np.array_equal(getattr(a, name), getattr(b, name), equal_nan=True), name


def test_kernel_choice_auto_and_errors():
    loss = Quadratic(eigs=[2.0, 1.0])
    th0 = np.ones((3, 2))
    assert eosdyn.ensemble(loss, GD(0.1), th0, 3).params["kernel"] == "blocked"
    assert eosdyn.ensemble(loss, GD(0.1), th0[:1], 3).params["kernel"] == "trajectory"
    ada = EoSAda(alpha=1.0)
    assert eosdyn.ensemble(loss, ada, th0, 3).params["kernel"] == "trajectory"
    with pytest.raises(ValueError, match="kernel='blocked'.*EoSAda"):
        eosdyn.ensemble(loss, ada, th0, 3, kernel="blocked")
    with pytest.raises(ValueError, match="kernel must be one of"):
        eosdyn.ensemble(loss, GD(0.1), th0, 3, kernel="simd")
