"""SGD as a map (eosdyn.rules.SGD): minibatch SGD with heavy-ball momentum in the stepping core.

References, none of them eosdyn's SGD code: GD and heavy-ball themselves (B = n), a plain-numpy
SGD loop fed the indices of the keyed stream, a pure-Python partial Fisher–Yates over the raw
xoshiro256** outputs, and the exact second-moment recursion of eosdyn.analysis.sgd (SGD's
mean-square edge, Mulayoff & Michaeli 2024).
"""
from __future__ import annotations

import numba
import numpy as np
import pytest

import eosdyn
from eosdyn import analysis
from eosdyn._rng import rng_next, stream
from eosdyn.engine import run_map
from eosdyn.engine.minibatch import minibatch_indices
from eosdyn.losses import LeastSquares, Quadratic
from eosdyn.rules import GD, SGD, HeavyBall, rule_class
from eosdyn.specs import rule_from_spec


def regression(n=12, d=3, seed=0, noise=0.1):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    return LeastSquares(X, X @ np.linspace(1.0, -1.0, d) + noise * rng.standard_normal(n))


def starts(k, d, seed=1):
    return np.random.default_rng(seed).standard_normal((k, d))


# --------------------------------------------------------------------- B = n is GD / heavy-ball
@pytest.mark.parametrize("batch_size", [12, None])
def test_full_batch_sgd_is_gd_bit_for_bit(batch_size):
    ls = regression()
    th0 = starts(5, 3)
    a = eosdyn.simulate(ls, SGD(0.3, batch_size), th0[0], 60, seed=4)
    b = eosdyn.simulate(ls, GD(0.3), th0[0], 60, seed=4)
    for f in ("theta", "loss", "grad_norm", "lr", "sharpness", "lambda2", "final_theta"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f), err_msg=f)
    np.testing.assert_array_equal(a.batch_loss, a.loss)   # the batch is the data set
    ea = eosdyn.ensemble(ls, SGD(0.3, batch_size), th0, 60, record_every=3, record_theta=True, seed=4)
    eb = eosdyn.ensemble(ls, GD(0.3), th0, 60, record_every=3, record_theta=True, seed=4)
    for f in ("theta", "loss", "lr", "sharpness", "final_theta"):
        np.testing.assert_array_equal(getattr(ea, f), getattr(eb, f), err_msg=f)
    np.testing.assert_array_equal(ea.batch_loss, ea.loss)


def test_full_batch_sgd_with_momentum_is_heavy_ball_bit_for_bit():
    ls = regression()
    th0 = starts(5, 3)
    ea = eosdyn.ensemble(ls, SGD(0.2, 12, momentum=0.7), th0, 80, record_every=4, record_theta=True)
    eb = eosdyn.ensemble(ls, HeavyBall(0.2, 0.7), th0, 80, record_every=4, record_theta=True)
    for f in ("theta", "loss", "lr", "sharpness", "final_theta"):
        np.testing.assert_array_equal(getattr(ea, f), getattr(eb, f), err_msg=f)
    a = eosdyn.simulate(ls, SGD(0.2, 12, momentum=0.7), th0[1], 80)
    b = eosdyn.simulate(ls, HeavyBall(0.2, 0.7), th0[1], 80)
    np.testing.assert_array_equal(a.theta, b.theta)


def test_the_minibatch_kernel_over_all_examples_is_the_full_loss_and_gradient():
    """The batch path's own sums (row by row, in a shuffled order) against L and ∇L = Hθ − b:
    another summation order, so equal to rounding (1e-14), not bit for bit."""
    ls = regression(n=40, d=5)
    rng = np.random.default_rng(3)
    for _ in range(5):
        th = rng.standard_normal(5)
        val, g = ls.batch_value_grad(th, rng.permutation(40))
        assert val == pytest.approx(ls.value(th), rel=1e-14)
        np.testing.assert_allclose(g, ls.grad(th), rtol=1e-14, atol=1e-14 * np.abs(ls.grad(th)).max())


# ---------------------------------------------------------- against a plain-numpy SGD loop
def numpy_sgd(X, y, theta0, lr, beta, batches):
    """θ_s, L(θ_s), L_B(θ_s) for s = 0 … len(batches) − 1, and θ after the last step, in plain numpy."""
    th = np.array(theta0, float)
    v = np.zeros_like(th)
    thetas, losses, blosses = [], [], []
    for idx in batches:
        r_all = X @ th - y
        thetas.append(th.copy())
        losses.append(0.5 * np.mean(r_all ** 2))
        r = X[idx] @ th - y[idx]
        blosses.append(0.5 * np.mean(r ** 2))
        g = X[idx].T @ r / len(idx)
        v = beta * v + g
        th = th - lr * v
    return np.array(thetas), np.array(losses), np.array(blosses), th


@pytest.mark.parametrize("batch_size, momentum, replacement", [(4, 0.0, False), (3, 0.6, False), (5, 0.0, True),
                                                                (1, 0.3, True), (20, 0.0, True)])
def test_sgd_equals_plain_numpy_sgd_fed_the_same_batches(batch_size, momentum, replacement):
    ls = regression()
    steps, k, seed = 50, 6, 11
    th0 = starts(k, 3)
    rule = SGD(0.15, batch_size, momentum=momentum, replacement=replacement)
    res = eosdyn.ensemble(ls, rule, th0, steps, record_every=1, record_theta=True, seed=seed)
    assert res.params["kernel"] == "trajectory" and not res.diverged.any()
    for i in range(k):
        batches = minibatch_indices(seed, i, 12, batch_size, replacement, steps)
        th, lo, bl, last = numpy_sgd(ls.X, ls.y, th0[i], 0.15, momentum, batches)
        np.testing.assert_allclose(res.theta[i, :steps], th, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(res.loss[i, :steps], lo, rtol=1e-12)
        np.testing.assert_allclose(res.batch_loss[i, :steps], bl, rtol=1e-12)
        np.testing.assert_allclose(res.final_theta[i], last, rtol=1e-12, atol=1e-12)
        # simulate of trajectory i is the ensemble's member i, bit for bit
        tr = eosdyn.simulate(ls, rule, th0[i], steps, seed=seed, stream_index=i)
        np.testing.assert_array_equal(tr.theta, res.theta[i])
        np.testing.assert_array_equal(tr.batch_loss, res.batch_loss[i])
    np.testing.assert_array_equal(res.lr[~np.isnan(res.lr)], 0.15)
    # the batches really are minibatches: the batch loss differs from the full loss
    assert np.abs(res.batch_loss - res.loss).max() > 1e-3


def _below(s, m):
    """Lemire's draw in Python integers: ⌊x·m/2³²⌋ from the top 32 bits x, rejecting x·m mod 2³² < 2³² mod m."""
    t = (2 ** 32) % m
    while True:
        x = int(rng_next(s)) >> 32
        p = x * m
        if p % 2 ** 32 >= t:
            return p >> 32


def test_the_draw_is_a_partial_fisher_yates_on_the_keyed_stream():
    n, B = 10, 4
    for seed, index in ((0, 0), (7, 3)):
        got = minibatch_indices(seed, index, n, B, False, 30)
        s = stream(seed, index)
        perm = list(range(n))
        for row in got:
            p = list(perm)
            want = []
            for k in range(B):
                j = k + _below(s, n - k)
                p[k], p[j] = p[j], p[k]
                want.append(p[k])
            assert list(row) == want
        s = stream(seed, index)
        got = minibatch_indices(seed, index, n, 7, True, 30)
        assert [list(r) for r in got] == [[_below(s, n) for _ in range(7)] for _ in range(30)]


def test_the_draws_are_uniform():
    """Without replacement: distinct, each example in a batch with probability B/n, each ordered
    pair of positions equally likely; with replacement: independent uniform draws."""
    n, B, T = 7, 3, 70_000
    rows = minibatch_indices(5, 0, n, B, False, T)
    assert all(len(set(r)) == B for r in rows[:2000])
    counts = np.bincount(rows.ravel(), minlength=n)
    expect = T * B / n
    chi2 = ((counts - expect) ** 2 / expect).sum()
    assert chi2 < 30.0   # 6 degrees of freedom: P(χ² > 30) ≈ 4e-5
    first = np.bincount(rows[:, 0] * n + rows[:, 1], minlength=n * n).reshape(n, n)
    assert np.all(np.diag(first) == 0)
    off = first[~np.eye(n, dtype=bool)]
    e2 = T / (n * (n - 1))
    assert ((off - e2) ** 2 / e2).sum() < 90.0   # 41 degrees of freedom: P(χ² > 90) ≈ 1e-5
    rows = minibatch_indices(5, 1, n, B, True, T)
    counts = np.bincount(rows.ravel(), minlength=n)
    assert ((counts - T * B / n) ** 2 / (T * B / n)).sum() < 30.0
    same = np.mean(rows[:, 0] == rows[:, 1])
    assert abs(same - 1 / n) < 5 * np.sqrt((1 / n) * (1 - 1 / n) / T)


# ------------------------------------------------------------------- reproducibility
def _digest(res):
    return [np.asarray(getattr(res, f)).tobytes() for f in ("theta", "loss", "batch_loss", "final_theta",
                                                            "diverged_at")]


def test_sgd_ensembles_are_bit_identical_for_one_and_two_threads():
    ls = regression(n=30, d=4)
    th0 = starts(600, 4)
    before = numba.get_num_threads()
    out = {}
    try:
        for nt in (1, 2):
            numba.set_num_threads(nt)
            out[nt] = [_digest(eosdyn.ensemble(ls, rule, th0, 40, record_every=5, record_theta=True, seed=9))
                       for rule in (SGD(0.1, 5), SGD(0.1, 5, momentum=0.8, replacement=True))]
    finally:
        numba.set_num_threads(before)
    assert numba.config.NUMBA_NUM_THREADS >= 2
    assert out[1] == out[2]


def test_cutting_a_run_into_calls_changes_no_bit():
    ls = regression()
    th0 = starts(9, 3)
    for rule in (SGD(0.2, 4), SGD(0.2, 4, momentum=0.5, replacement=True)):
        runs = [run_map(ls, rule, th0, 101, records=("theta", "loss", "batch_loss", "lr"), seed=2,
                        max_call_steps=m) for m in (None, 7)]
        for name in ("theta", "loss", "batch_loss", "lr"):
            np.testing.assert_array_equal(runs[0].records[name], runs[1].records[name], err_msg=name)
        np.testing.assert_array_equal(runs[0].thetas, runs[1].thetas)
        np.testing.assert_array_equal(runs[0].states, runs[1].states)


def test_a_diverging_sgd_run_keeps_its_last_good_state_and_its_batches():
    ls = regression()
    th0 = starts(4, 3)
    lr = 3.0 * 2.0 / np.linalg.eigvalsh(ls.H)[-1]   # 3× GD's edge
    res = eosdyn.ensemble(ls, SGD(lr, 3), th0, 300, record_every=1, record_theta=True, seed=1, blowup=1e8)
    assert res.diverged.all() and set(res.reasons) == {"diverged"}
    for i in range(4):
        f = res.diverged_at[i]
        np.testing.assert_array_equal(res.final_theta[i], res.theta[i, f - 1])   # replayed, same batches
        assert np.isnan(res.batch_loss[i, f:]).all() and np.isfinite(res.batch_loss[i, :f]).all()
        assert 0 < f < 300
        th, _, _, _ = numpy_sgd(ls.X, ls.y, th0[i], lr, 0.0, minibatch_indices(1, i, 12, 3, False, f))
        np.testing.assert_allclose(res.theta[i, :f], th, rtol=1e-12)


# -------------------------------------------------------------------------- records
def test_records_full_loss_batch_loss_and_full_batch_sharpness():
    ls = regression()
    tr = eosdyn.simulate(ls, SGD(0.2, 4), [0.5, 0.5, 0.5], 30, record_every=3, seed=3)
    for th, lo in zip(tr.theta, tr.loss):
        assert lo == pytest.approx(ls.value(th), rel=1e-14)
    lam = np.linalg.eigvalsh(ls.H)
    np.testing.assert_allclose(tr.sharpness, lam[-1], rtol=1e-12)   # full-batch sharpness
    np.testing.assert_allclose(tr.lambda2, lam[-2], rtol=1e-12)
    batches = minibatch_indices(3, 0, 12, 4, False, 31)
    for r, s in enumerate(tr.step):
        assert tr.batch_loss[r] == pytest.approx(ls.batch_value_grad(tr.theta[r], batches[s])[0], rel=1e-14)
    ds = tr.to_xarray()
    assert "batch_loss" in ds and ds.attrs["rule_batch_size"] == 4
    e = eosdyn.ensemble(ls, SGD(0.2, 4), starts(3, 3), 30, record_every=3, seed=3)
    assert e.sharpness.shape == e.batch_loss.shape == e.loss.shape == (3, 11)
    assert "batch_loss" in e.to_xarray() and e.trajectory(1).batch_loss.shape == (11,)
    # a deterministic rule records no batch loss
    assert eosdyn.simulate(ls, GD(0.2), [0.5, 0.5, 0.5], 3).batch_loss is None


# -------------------------------------------------------------------- mean square
def test_mean_square_below_the_sgd_threshold_decays_and_above_1_3x_grows():
    """Two orthogonal examples, B = 1: each step scales one coordinate of e = θ − θ* by 1 − η|xᵢ|²,
    so the mean-square edge is η = 2/max|xᵢ|² = 2, half GD's edge 4 (which the mean E[e] follows) — and
    at 1.3× it every pick of example 0 scales e₀ by −1.6, so the mean square grows in every trajectory."""
    ls = LeastSquares(np.array([[1.0, 0.0], [0.0, 0.5]]), np.array([1.0, -0.5]))
    thr = analysis.sgd_threshold(ls, 1)
    assert thr.threshold == pytest.approx(2.0, rel=1e-8) and thr.gd_threshold == pytest.approx(4.0)
    th0 = ls.minimizer + 0.01 * starts(2000, 2)
    ms = {}
    for f in (0.8, 1.3):
        r = eosdyn.ensemble(ls, SGD(f * thr.threshold, 1), th0, 60, record_every=20, record_theta=True, seed=5)
        e = r.theta - ls.minimizer
        ms[f] = (e ** 2).sum(-1).mean(0)
    assert np.all(np.diff(ms[0.8]) < 0) and ms[0.8][-1] < 1e-6 * ms[0.8][0]
    assert np.all(np.diff(ms[1.3]) > 0) and ms[1.3][-1] > 1e6 * ms[1.3][0]


@pytest.mark.parametrize("momentum, replacement", [(0.0, False), (0.0, True), (0.5, False)])
def test_the_ensemble_mean_square_follows_the_exact_second_moment_recursion(momentum, replacement):
    """E‖θ_t − θ*‖² of SGD on a realisable regression is tr of the top block of T^t M₀, T = E[A_B ⊗ A_B]
    (eosdyn.analysis.sgd_moment_operator, from the mixture identity, not from eosdyn's SGD); the ensemble
    average agrees within 5 standard errors, below and above the mean-square edge."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((8, 2)) * np.array([1.0, 0.3])
    ls = LeastSquares(X, X @ np.array([1.0, -1.0]))
    B, steps, k = 2, 8, 20_000
    thr = analysis.sgd_threshold(ls, B, momentum=momentum, replacement=replacement).threshold
    e0 = 0.1 * starts(k, 2, seed=2)
    for f in (0.8, 1.3):
        lr = f * thr
        res = eosdyn.ensemble(ls, SGD(lr, B, momentum=momentum, replacement=replacement), ls.minimizer + e0, steps,
                              record_every=1, record_theta=True, seed=6, track_sharpness=False)
        sq = ((res.theta - ls.minimizer) ** 2).sum(-1)
        T = analysis.sgd_moment_operator(ls, lr, B, momentum=momentum, replacement=replacement)
        z0 = e0 if momentum == 0.0 else np.hstack([e0, e0])   # v₀ = 0: θ₋₁ = θ₀
        m = z0.shape[1]
        M = (z0.T @ z0 / k).ravel()
        for t in range(steps + 1):
            want = np.trace(M.reshape(m, m)[:2, :2])
            se = sq[:, t].std() / np.sqrt(k)
            assert abs(sq[:, t].mean() - want) < 5 * se + 1e-15, (f, t, sq[:, t].mean(), want, se)
            M = T @ M


# ------------------------------------------------------------------------ bad input
def test_bad_batch_sizes_momenta_and_losses_are_refused_by_name():
    ls = regression()
    for b in (0, -3):
        with pytest.raises(ValueError, match="batch_size"):
            SGD(0.1, b)
    with pytest.raises(TypeError, match="batch_size"):
        SGD(0.1, 2.5)
    with pytest.raises(ValueError, match=r"batch_size must be in \[1, n_examples = 12\].*got 13"):
        eosdyn.simulate(ls, SGD(0.1, 13), np.zeros(3), 3)
    with pytest.raises(ValueError, match="batch_size"):
        eosdyn.ensemble(ls, SGD(0.1, 13), np.zeros((2, 3)), 3)
    # with replacement a batch may hold more draws than there are examples (as in analysis.sgd_threshold)
    assert not eosdyn.simulate(ls, SGD(0.05, 13, replacement=True), np.zeros(3), 3).diverged
    for m in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError, match="momentum"):
            SGD(0.1, 4, momentum=m)
    with pytest.raises(TypeError, match="replacement"):
        SGD(0.1, 4, replacement="yes")
    with pytest.raises(ValueError, match="lr"):
        SGD(0.0, 4)
    quad = Quadratic(eigs=[2.0, 1.0])
    for run in (lambda r: eosdyn.simulate(quad, r, [1.0, 1.0], 3),
                lambda r: eosdyn.ensemble(quad, r, [[1.0, 1.0]], 3)):
        with pytest.raises(TypeError, match=r"finite-sum loss.*LeastSquares.*got Quadratic"):
            run(SGD(0.1, 2))
    # the full batch runs on any loss: it is GD
    np.testing.assert_array_equal(eosdyn.simulate(quad, SGD(0.1), [1.0, 1.0], 5).theta,
                                  eosdyn.simulate(quad, GD(0.1), [1.0, 1.0], 5).theta)
    with pytest.raises(ValueError, match="n_examples"):
        minibatch_indices(0, 0, 3, 4, False, 2)
    with pytest.raises(ValueError, match="indices"):
        ls.batch_value_grad(np.zeros(3), [0, 12])


# ------------------------------------------------------------------- the registry
def test_sgd_is_one_registered_rule_known_to_specs_and_analysis():
    assert rule_class("sgd") is SGD and rule_class("MiniBatch-SGD") is SGD
    r = rule_from_spec("sgd:lr=0.1,batch_size=4,momentum=0.5,replacement=true")
    assert r.hyperparameters() == SGD(0.1, 4, momentum=0.5, replacement=True).hyperparameters()
    assert SGD(0.1, 4, momentum=0.5).edge_constant() == 3.0 and SGD.threshold(2.0, momentum=0.5) == 1.5
    assert SGD(0.1, 4).state_size(3) == 0 and SGD(0.1, 4, momentum=0.5).state_size(3) == 3
    # the map and its Jacobian are the mean iterate's: GD's / heavy-ball's
    ls = regression()
    z = np.array([0.3, -0.2, 0.1, 0.05, 0.0, -0.1])
    np.testing.assert_array_equal(SGD(0.1, 4, momentum=0.5).map(ls, z), HeavyBall(0.1, 0.5).map(ls, z))
    np.testing.assert_array_equal(SGD(0.1, 4).jacobian(ls, z[:3]), GD(0.1).jacobian(ls, z[:3]))
    assert SGD(0.1, 4).step_fn is GD(0.1).step_fn   # the same numba step: one kernel per pair
