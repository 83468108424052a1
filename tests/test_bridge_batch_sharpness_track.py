"""The trainer's batch-sharpness tracking: ``train(..., track_batch_sharpness=B)``.

Reference: :func:`eosdyn.bridge.batch_sharpness` itself (Andreyev & Beneventano, arXiv
2412.20553: E_B[g_Bᵀ H_B g_B/‖g_B‖²], one HVP per fresh batch, adaptive stop), called by hand
at the same parameters with the seed ``batch_sharpness_seed(seed, t)``: the trainer's record
at step t must be that call's answer, bit for bit. Also: the checks of the argument, and a
checkpointed run that resumes to the same records as an uninterrupted one.
"""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import eosdyn.bridge as B  # noqa: E402
from eosdyn.bridge.tracker import batch_sharpness_data, batch_sharpness_seed  # noqa: E402

F64 = torch.float64
OPTS = dict(rel_std_error=0.05, min_batches=10, max_batches=100)
COLS = ("batch_sharpness", "batch_sharpness_lo", "batch_sharpness_hi", "batch_sharpness_hvp")


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def problem(seed=0):
    X, Y = B.digits(n=120, seed=3, dtype=F64)
    torch.manual_seed(seed)
    return B.MLP(64, (12,), 10, "tanh").double(), X, Y


def run(steps, B_=8, data=None, **kw):
    model, X, Y = problem()
    opt = torch.optim.SGD(model.parameters(), lr=0.2)
    tr = B.train(model, B.mse_loss, (X, Y) if data is None else data(X, Y), opt, steps, track_every=5,
                 track_k=1, track_tol=1e-6, progress=False, seed=7, track_batch_sharpness=B_,
                 batch_sharpness_options=OPTS, **kw)
    return tr, model, X, Y


def test_records_are_the_direct_batch_sharpness_call_at_the_same_parameters_and_seed():
    tr, model, X, Y = run(10)
    # the final record is measured at the model's final parameters
    model5, *_ = run(5)[1:]   # the same run stopped at step 5: θ_5 (training does not depend on tracking)
    for t, m in ((10, model), (5, model5)):
        ref = B.batch_sharpness(m, B.mse_loss, (X, Y), 8, seed=batch_sharpness_seed(7, t), **OPTS)
        got = {c: tr.extra[c][t] for c in COLS}
        assert got["batch_sharpness"] == ref.value
        assert (got["batch_sharpness_lo"], got["batch_sharpness_hi"]) == ref.ci95
        assert got["batch_sharpness_hvp"] == ref.n_hvp == ref.n_batches >= OPTS["min_batches"]
        assert got["batch_sharpness_lo"] < got["batch_sharpness"] < got["batch_sharpness_hi"]
    tracked = np.isfinite(tr.extra["batch_sharpness"])
    assert np.flatnonzero(tracked).tolist() == [0, 5, 10] == np.flatnonzero(np.isfinite(tr.sharpness)).tolist()
    # the cumulative tracking HVPs count the batch-sharpness HVPs too
    hv = tr.extra["hvp_tracking"]
    assert hv[10] - hv[9] > tr.extra["batch_sharpness_hvp"][10]   # plus the Lanczos HVPs
    assert tr.params["track_batch_sharpness"] == 8 and "Andreyev" in tr.params["batch_sharpness_convention"]


def test_a_different_record_or_seed_draws_different_batches():
    s = {batch_sharpness_seed(a, b) for a in range(3) for b in range(3)}
    assert len(s) == 9 and all(0 <= v < 2 ** 63 for v in s)
    assert batch_sharpness_seed(1, 2) == batch_sharpness_seed(1, 2)


def test_a_list_of_batches_is_the_data_set_they_split():
    tr_pair = run(5)[0]
    tr_list = run(5, data=lambda X, Y: [(X[:60], Y[:60]), (X[60:], Y[60:])])[0]
    # the training differs (minibatches), but the first record is at the same θ_0 and the same data set
    assert tr_list.extra["batch_sharpness"][0] == tr_pair.extra["batch_sharpness"][0]
    X, Y = B.digits(n=10, dtype=F64)
    Xc, Yc = batch_sharpness_data([(X[:4], Y[:4]), (X[4:], Y[4:])])
    assert torch.equal(Xc, X) and torch.equal(Yc, Y)


def test_untracked_runs_have_no_batch_sharpness_columns():
    model, X, Y = problem()
    tr = B.train(model, B.mse_loss, (X, Y), torch.optim.SGD(model.parameters(), lr=0.1), 3, track_every=3,
                 track_k=1, progress=False)
    assert not set(COLS) & set(tr.extra) and tr.params["track_batch_sharpness"] == -1


@pytest.mark.parametrize("bad, err, match", [
    (0, ValueError, r"track_batch_sharpness must be a batch size in \[1, n = 120\].*got 0"),
    (121, ValueError, r"track_batch_sharpness must be a batch size in \[1, n = 120\].*got 121"),
    (-3, ValueError, r"track_batch_sharpness must be a batch size in \[1, n = 120\]"),
    (True, TypeError, "track_batch_sharpness must be an integer batch size"),
    (2.0, TypeError, "track_batch_sharpness must be an integer batch size"),
])
def test_a_bad_batch_size_is_named(bad, err, match):
    model, X, Y = problem()
    with pytest.raises(err, match=match):
        B.train(model, B.mse_loss, (X, Y), torch.optim.SGD(model.parameters(), lr=0.1), 3, track_every=1,
                progress=False, track_batch_sharpness=bad)


def test_other_bad_inputs_are_named():
    model, X, Y = problem()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def call(**kw):
        B.train(model, B.mse_loss, kw.pop("data", (X, Y)), opt, 2, progress=False, **kw)

    with pytest.raises(ValueError, match="track_batch_sharpness needs track_every"):
        call(track_every=None, track_batch_sharpness=4)
    with pytest.raises(ValueError, match="batch_sharpness_options needs track_batch_sharpness"):
        call(track_every=1, batch_sharpness_options={"max_batches": 20})
    with pytest.raises(ValueError, match=r"unknown keys \['tol'\]"):
        call(track_every=1, track_batch_sharpness=4, batch_sharpness_options={"tol": 0.1})
    # a data stream cannot be sampled uniformly: the data set must be given as a pair
    with pytest.raises(ValueError, match=r"data must be an \(inputs, targets\) pair.*pass track_data"):
        call(track_every=1, track_batch_sharpness=4, data=iter([(X, Y)]))
    # track_data is where the batches come from: its size bounds the batch size
    with pytest.raises(ValueError, match=r"in \[1, n = 30\] \(the size of the track_data"):
        call(track_every=1, track_batch_sharpness=31, track_data=(X[:30], Y[:30]))


def test_checkpoint_and_resume_keep_the_batch_sharpness_records(tmp_path):
    full, *_ = run(20)
    path = tmp_path / "ck.pt"
    first, *_ = run(10, checkpoint_every=10, checkpoint_path=path)
    model, X, Y = problem()
    opt = torch.optim.SGD(model.parameters(), lr=0.2)
    resumed = B.train(model, B.mse_loss, (X, Y), opt, 20, track_every=5, track_k=1, track_tol=1e-6,
                      progress=False, seed=7, track_batch_sharpness=8, batch_sharpness_options=OPTS,
                      checkpoint_every=10, checkpoint_path=path, resume=True)
    assert resumed.params["resumed_from"] == 10
    for c in (*COLS, "hvp_tracking"):
        np.testing.assert_array_equal(resumed.extra[c], full.extra[c], err_msg=c)
    np.testing.assert_array_equal(resumed.loss, full.loss)
    np.testing.assert_array_equal(resumed.sharpness, full.sharpness)
    np.testing.assert_array_equal(first.extra["batch_sharpness"][:10], full.extra["batch_sharpness"][:10])


# ----------------------------------------------------------------- track=[...] by name (issue 15)
def _tiny():
    torch.manual_seed(0)
    X = torch.randn(40, 5, dtype=F64)
    Y = torch.randn(40, 2, dtype=F64)
    model = torch.nn.Sequential(torch.nn.Linear(5, 6), torch.nn.Tanh(), torch.nn.Linear(6, 2)).double()
    return model, X, Y


def _dense(model, X, Y, kind):
    op = B.curvature_operator(model, B.mse_loss, (X, Y), kind=kind)
    return torch.stack([op.matvec(e) for e in torch.eye(op.dim, dtype=F64)]).numpy()


def test_track_ggn1_and_trace_by_name():
    """ggn1 is the top eigenvalue of the dense GGN; trace is Hutch++ of tr H (unbiased: within
    5 standard errors of the dense trace); both at the parameters of the record."""
    model, X, Y = _tiny()
    G0, H0 = _dense(model, X, Y, "ggn"), _dense(model, X, Y, "hessian")
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    tr = B.train(model, B.mse_loss, (X, Y), opt, 10, track_every=5, track_k=1, track_tol=1e-10, progress=False,
                 track=["lambda1", "ggn1", "trace"])
    assert tr.params["track"] == ["lambda1", "ggn1", "trace"]
    assert tr.extra["ggn1"][0] == pytest.approx(np.linalg.eigvalsh(G0)[-1], rel=1e-8)
    assert abs(tr.extra["trace"][0] - np.trace(H0)) <= 5 * tr.extra["trace_se"][0] + 1e-12
    G, H = _dense(model, X, Y, "ggn"), _dense(model, X, Y, "hessian")      # the final parameters
    assert tr.extra["ggn1"][10] == pytest.approx(np.linalg.eigvalsh(G)[-1], rel=1e-8)
    assert tr.sharpness[10] == pytest.approx(np.linalg.eigvalsh(H)[-1], rel=1e-8)
    assert np.all(np.isnan(tr.extra["ggn1"][[1, 2, 3, 4, 6]]))            # only at tracked records


def test_track_names_are_checked():
    model, X, Y = _tiny()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    with pytest.raises(ValueError, match=r"track: unknown names \['ggn2'\]; trackable"):
        B.train(model, B.mse_loss, (X, Y), opt, 2, track=["ggn2"], progress=False)
    with pytest.raises(ValueError, match="needs track_batch_sharpness"):
        B.train(model, B.mse_loss, (X, Y), opt, 2, track=["batch_sharpness"], progress=False)
    with pytest.raises(ValueError, match="needs track_every"):
        B.train(model, B.mse_loss, (X, Y), opt, 2, track_every=None, track=["trace"], progress=False)
