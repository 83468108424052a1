"""The trainer's parts (CurvatureTracker, Checkpointer, the loop) and its hardening.

References: eosdyn.bridge.sharpness / preconditioned_sharpness (the tracker must give the
same numbers as the public probes), closed-form quadratics, and runs of train() itself
(a hand-written loop built from the parts must reproduce it bit for bit).
"""
from __future__ import annotations

import math
import os
import pickle
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import eosdyn.bridge as B  # noqa: E402
from eosdyn.bridge.checkpoint import CHECKPOINT_FORMAT, read_checkpoint, restore_checkpoint  # noqa: E402
from eosdyn.bridge.hvp import HessianOperator  # noqa: E402
from eosdyn.bridge.tracker import optimizer_hvps, step_size_in_force  # noqa: E402
from test_bridge import _one_thread, flat_params, tiny_problem  # noqa: E402,F401  (the autouse fixture)

F64 = torch.float64


def small_classifier(seed=0):
    X, Y = B.gaussian_mixture(n=48, dim=4, n_classes=3, seed=1, dtype=F64)
    torch.manual_seed(seed)
    return B.MLP(4, (8,), 3, "tanh").double(), X, Y


def linear_blowup():
    """Float32 least squares, GD at 50/λ_max: the loss grows ×~2500 per step and overflows."""
    g = torch.Generator().manual_seed(0)
    X = torch.randn(40, 5, generator=g, dtype=F64) * torch.linspace(3.0, 0.3, 5, dtype=F64)
    y = torch.randn(40, 1, generator=g, dtype=F64)
    lam = float(torch.linalg.eigvalsh(X.T @ X / 40)[-1])
    torch.manual_seed(0)
    model = torch.nn.Linear(5, 1, bias=False)
    return model, X.float(), y.float(), torch.optim.SGD(model.parameters(), lr=50.0 / lam)


def loss_at(model, X, y, loss_fn=B.mse_loss):
    with torch.no_grad():
        return float(loss_fn(model(X), y))


# ----------------------------------------------------------------------------- the tracker
def test_tracker_measures_what_the_public_probes_measure():
    model, X, Y = small_classifier()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    tracker = B.CurvatureTracker(model, B.cross_entropy_loss, (X, Y), k=2, tol=1e-10)
    first = tracker.measure(opt)  # Adam has no state yet: no P, no preconditioned sharpness
    assert "preconditioned_sharpness" not in first
    ref = B.sharpness(model, B.cross_entropy_loss, (X, Y), k=2, tol=1e-10)
    assert first["sharpness"] == pytest.approx(ref.sharpness, rel=1e-9)
    assert first["lambda2"] == pytest.approx(ref.lambda2, rel=1e-9)
    assert first["gap"] == pytest.approx(ref.gap, rel=1e-8, abs=1e-10)
    with torch.no_grad():
        assert first["track_loss"] == pytest.approx(float(B.cross_entropy_loss(model(X), Y)), rel=1e-12)
    for _ in range(3):
        opt.zero_grad()
        B.cross_entropy_loss(model(X), Y).backward()
        opt.step()
    n0 = tracker.n_hvp
    second = tracker.measure(opt)
    pre = B.preconditioned_sharpness(model, B.cross_entropy_loss, (X, Y), opt, tol=1e-10)
    assert second["preconditioned_sharpness"] == pytest.approx(pre.sharpness, rel=1e-9)
    assert tracker.n_hvp > n0 and set(second) <= set(B.tracker.MEASURED)
    state = tracker.state_dict()
    assert set(state) == {"v_track", "v_pre", "hvp_tracking"} and state["hvp_tracking"] == tracker.n_hvp
    other = B.CurvatureTracker(model, B.cross_entropy_loss, (X, Y), k=2, tol=1e-10)
    other.load_state_dict(state)
    assert other.n_hvp == tracker.n_hvp and torch.equal(other.eigenvectors, tracker.eigenvectors)


def test_tracker_with_k1_and_bad_input():
    model, x, y = tiny_problem()
    out = B.CurvatureTracker(model, B.mse_loss, (x, y), k=1).measure()
    assert set(out) == {"sharpness", "residual1", "track_loss"}
    n = sum(p.numel() for p in model.parameters())
    with pytest.raises(ValueError, match=rf"k must be in \[1, number of trainable parameters\] = \[1, {n}\]"):
        B.CurvatureTracker(model, B.mse_loss, (x, y), k=n + 1)
    with pytest.raises(ValueError, match="tol"):
        B.CurvatureTracker(model, B.mse_loss, (x, y), tol=0.0)


def test_step_size_and_hvp_counts_of_optimizers():
    model, x, y = tiny_problem()
    assert step_size_in_force(torch.optim.SGD(model.parameters(), lr=0.3)) == 0.3
    assert optimizer_hvps(torch.optim.SGD(model.parameters(), lr=0.3)) == 0
    opt = B.EoSAda(model.parameters(), alpha=0.5, curvature="exact")
    assert math.isnan(step_size_in_force(opt))  # nothing in force before the first step
    opt.step(lambda: B.mse_loss(model(x), y))
    lam = float(opt.eigenvalues[0])
    assert step_size_in_force(opt) == pytest.approx(0.5 / (abs(lam) + 1e-8), rel=1e-12)
    assert optimizer_hvps(opt) == opt.n_hvp > 0


def test_a_hand_written_loop_with_the_parts_reproduces_train(tmp_path):
    """The tracker and the checkpointer are the trainer's own: same numbers, same file."""
    model, X, Y = small_classifier()
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    tr = B.train(model, B.cross_entropy_loss, (X, Y), opt, 6, track_every=2, track_k=2, seed=3,
                 checkpoint_every=3, checkpoint_path=tmp_path / "train.pt")

    model, X, Y = small_classifier()
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    tracker = B.CurvatureTracker(model, B.cross_entropy_loss, (X, Y), k=2, tol=1e-6, seed=3)
    ckpt = B.Checkpointer(tmp_path / "own.pt", every=3)
    sharp, losses = [], []
    for t in range(7):
        if ckpt.due(t, 0, 6):
            ckpt.stage(t, model, opt, step_note="mine")
        sharp.append(tracker.measure(opt)["sharpness"] if t % 2 == 0 else float("nan"))
        if t == 6:  # the final state: evaluated, checkpointed if its loss is finite
            if math.isfinite(loss_at(model, X, Y, B.cross_entropy_loss)):
                ckpt.commit()
            break
        opt.zero_grad()
        loss = B.cross_entropy_loss(model(X), Y)
        losses.append(float(loss.detach()))
        if math.isfinite(losses[-1]):
            ckpt.commit()
        loss.backward()
        opt.step()
    np.testing.assert_array_equal(np.array(sharp), tr.sharpness)
    np.testing.assert_array_equal(np.array(losses), tr.loss[:6])
    mine, theirs = read_checkpoint(tmp_path / "own.pt"), read_checkpoint(tmp_path / "train.pt")
    assert mine["step"] == theirs["step"] == 6 and mine["step_note"] == "mine"
    for k in theirs["model"]:
        assert torch.equal(mine["model"][k], theirs["model"][k])


# ----------------------------------------------------------------------------- the checkpointer
def test_checkpointer_writes_only_committed_states(tmp_path):
    model, x, y = tiny_problem()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    path = tmp_path / "ck.pt"
    ckpt = B.Checkpointer(path, every=2)
    assert [t for t in range(6) if ckpt.due(t, 0, 5)] == [2, 4, 5]
    assert [t for t in range(7) if ckpt.due(t, 2, 6)] == [4, 6]  # never at the start it resumed from
    assert ckpt.commit() is None and not path.exists()  # nothing staged
    ckpt.stage(2, model, opt, note=1)
    assert not path.exists()  # staged in memory only
    assert ckpt.commit() == 2 and ckpt.last_good == 2
    good = path.read_bytes()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ckpt.stage(4, model, opt, note=2)
    ckpt.discard()  # its loss was not finite
    assert ckpt.commit() is None and path.read_bytes() == good and ckpt.last_good == 2
    assert not os.path.exists(f"{path}.tmp")
    ck = read_checkpoint(path)
    assert ck["format"] == CHECKPOINT_FORMAT and ck["step"] == 2 and ck["note"] == 1
    assert restore_checkpoint(ck, model, opt) == 2
    assert torch.equal(flat_params(model), torch.cat([v.reshape(-1) for v in ck["model"].values()]))
    with pytest.raises(ValueError, match="every"):
        B.Checkpointer(path, every=0)
    with pytest.raises(TypeError, match="path"):
        B.Checkpointer(None, every=1)


def test_checkpoint_keeps_the_last_good_state_when_the_blow_up_lands_on_a_checkpoint_step(tmp_path):
    """The loss at θ_T is inf on a checkpoint step T: the file keeps θ_{T−every}, loss finite."""
    T, every = 8, 4
    calls = [0]

    def loss_blowing_up_at_step_T(out, y):  # called once per step (SGD, no tracking)
        calls[0] += 1
        return B.mse_loss(out, y) * (math.inf if calls[0] == T + 1 else 1.0)

    model, x, y = tiny_problem()
    path = tmp_path / "ck.pt"
    with pytest.warns(RuntimeWarning, match=rf"non-finite loss \(inf\) at step {T};.*last good "
                                            rf"checkpoint \(step {T - every}\)") as rec:
        tr = B.train(model, loss_blowing_up_at_step_T, (x, y), torch.optim.SGD(model.parameters(), lr=0.1),
                     20, track_every=None, checkpoint_every=every, checkpoint_path=path)
    assert tr.diverged_at == T and str(path) in str(rec[0].message)
    ck = torch.load(path, weights_only=True)
    assert ck["step"] == T - every  # the old trainer kept step T, whose loss is inf
    assert np.all(np.isfinite(ck["records"]["loss"])) and len(ck["records"]["loss"]) == T - every
    fresh, _, _ = tiny_problem()
    fresh.load_state_dict(ck["model"])
    assert math.isfinite(loss_at(fresh, x, y))
    np.testing.assert_array_equal(ck["records"]["loss"], tr.loss[:T - every])


def test_checkpoint_every_step_keeps_the_step_before_the_blow_up(tmp_path):
    model, X, y, opt = linear_blowup()
    path = tmp_path / "ck.pt"
    with pytest.warns(RuntimeWarning, match=r"non-finite loss") as rec:
        tr = B.train(model, B.mse_loss, (X, y), opt, 200, track_every=None, checkpoint_every=1,
                     checkpoint_path=path)
    t = tr.diverged_at
    assert tr.diverged and 3 < t < 100 and not math.isfinite(tr.loss[t])
    ck = torch.load(path, weights_only=True)
    assert ck["step"] == t - 1 and f"last good checkpoint (step {t - 1})" in str(rec[0].message)
    fresh = torch.nn.Linear(5, 1, bias=False)
    fresh.load_state_dict(ck["model"])
    assert math.isfinite(loss_at(fresh, X, y))
    assert loss_at(fresh, X, y) == pytest.approx(tr.loss[t - 1], rel=1e-6)
    # and the run resumes from it, diverging at the same step
    model2, X, y, opt2 = linear_blowup()
    with pytest.warns(RuntimeWarning, match=rf"at step {t};.*step {t - 1}"):
        again = B.train(model2, B.mse_loss, (X, y), opt2, 200, track_every=None, checkpoint_every=1,
                        checkpoint_path=path, resume=True)
    assert again.diverged_at == t and again.params["resumed_from"] == t - 1
    np.testing.assert_array_equal(again.loss[:t], tr.loss[:t])


def test_a_final_step_with_a_non_finite_loss_keeps_the_previous_checkpoint(tmp_path):
    calls = [0]
    steps = 4

    def loss_inf_at_the_end(out, y):  # steps + 1 calls: one per step, then the final record
        calls[0] += 1
        return B.mse_loss(out, y) * (math.inf if calls[0] == steps + 1 else 1.0)

    model, x, y = tiny_problem()
    path = tmp_path / "ck.pt"
    with pytest.warns(RuntimeWarning, match=rf"at step {steps};.*step 2"):
        tr = B.train(model, loss_inf_at_the_end, (x, y), torch.optim.SGD(model.parameters(), lr=0.1), steps,
                     track_every=None, checkpoint_every=2, checkpoint_path=path)
    assert tr.diverged_at == steps and torch.load(path, weights_only=True)["step"] == 2


# ----------------------------------------------------------------------------- resume from a wrong file
def _not_checkpoints(tmp_path):
    files = {"text": tmp_path / "notes.txt", "empty": tmp_path / "empty.pt",
             "bytes": tmp_path / "noise.bin", "pickle": tmp_path / "obj.pkl",
             "tensor": tmp_path / "tensor.pt", "other_format": tmp_path / "other.pt"}
    files["text"].write_text("not a checkpoint\n")
    files["empty"].write_bytes(b"")
    files["bytes"].write_bytes(bytes(range(256)) * 3)
    files["pickle"].write_bytes(pickle.dumps({"step": 3}))
    torch.save(torch.zeros(3), files["tensor"])
    torch.save({"format": "someone-else/2", "step": 1}, files["other_format"])
    return files


def test_resume_from_a_file_that_is_not_a_checkpoint(tmp_path):
    model, x, y = tiny_problem()
    before = flat_params(model)
    for kind, f in _not_checkpoints(tmp_path).items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # torch.load's own notes on odd pickles
            with pytest.raises(ValueError, match=r"resume: .* is not an eosdyn checkpoint") as ei:
                B.train(model, B.mse_loss, (x, y), torch.optim.SGD(model.parameters(), lr=0.1), 3,
                        track_every=None, resume=f)
        assert str(f) in str(ei.value), kind
    assert torch.equal(flat_params(model), before)  # nothing was loaded
    with pytest.raises(FileNotFoundError, match=r"resume: there is no checkpoint file .*missing\.pt"):
        B.train(model, B.mse_loss, (x, y), torch.optim.SGD(model.parameters(), lr=0.1), 3,
                track_every=None, resume=tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="is not an eosdyn checkpoint.*directory"):
        B.train(model, B.mse_loss, (x, y), torch.optim.SGD(model.parameters(), lr=0.1), 3,
                track_every=None, resume=tmp_path)
    # a checkpoint of a hand-written loop has no trainer records
    own = B.Checkpointer(tmp_path / "own.pt", every=1)
    own.stage(1, model, torch.optim.SGD(model.parameters(), lr=0.1))
    own.commit()
    with pytest.raises(ValueError, match=r"own\.pt.* lacks \['records'"):
        B.train(model, B.mse_loss, (x, y), torch.optim.SGD(model.parameters(), lr=0.1), 3,
                track_every=None, resume=tmp_path / "own.pt")


# ----------------------------------------------------------------------------- hvp and EoSAda input
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_hvp_refuses_a_non_finite_vector(bad):
    model, x, y = tiny_problem()
    n = sum(p.numel() for p in model.parameters())
    v = torch.ones(n, dtype=F64)
    v[3] = bad
    with pytest.raises(ValueError, match="v must be finite"):
        B.hvp(model, B.mse_loss, (x, y), v)
    with pytest.raises(ValueError, match="v must be finite"):
        HessianOperator(model, B.mse_loss, (x, y)).matvec(v)


def test_eosada_eps_zero_is_defined_and_bad_eps_refused():
    """ε = 0 is allowed (the step α/|λ_max|); where |λ_max| + ε = 0 the step is 0, as in the toy rule."""
    from eosdyn.rules.schedules import eosada_lr

    model, _, _ = tiny_problem()
    B.EoSAda(model.parameters(), eps=0)
    assert eosada_lr(0.0, 1.9, 0.0) == 0.0 and eosada_lr(-2.0, 1.9, 0.0) == pytest.approx(0.95)
    with pytest.raises(ValueError, match="eps"):
        B.EoSAda(model.parameters(), eps=-1e-8)
    with pytest.raises(TypeError, match="eps"):
        B.EoSAda(model.parameters(), eps="small")


def test_eosada_steps_downhill_on_a_concave_quadratic():
    """λ_max < 0: the step in force is α/(|λ_max| + ε) > 0 and the loss goes down."""
    A = torch.tensor([4.0, 2.0, 1.0], dtype=F64)  # L(w) = −½ Σ A_i w_i²: Hessian −diag(A), λ_max = −1
    w = torch.nn.Parameter(torch.tensor([0.3, -0.2, 0.5], dtype=F64))
    alpha, eps = 0.5, 1e-3
    opt = B.EoSAda([w], alpha=alpha, eps=eps, curvature="exact")

    def concave():
        return -0.5 * (A * w * w).sum()

    w0, L0 = w.detach().clone(), float(concave().detach())
    opt.step(concave)
    assert float(opt.eigenvalues[0]) == pytest.approx(-1.0, rel=1e-12)
    eta = alpha / (1.0 + eps)
    assert opt.lr_in_force[0] == pytest.approx(eta, rel=1e-12) and opt.lr_in_force[0] > 0
    torch.testing.assert_close(w.detach(), w0 + eta * A * w0, rtol=1e-14, atol=0)  # w − η∇L, ∇L = −Aw
    assert float(concave().detach()) < L0


def test_eosada_in_train_on_a_concave_model_records_a_positive_step():
    X = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=F64)
    y = torch.zeros(3, 1, dtype=F64)
    H = -(X.T @ X / 3)  # loss −½·mean(out²): Hessian −XᵀX/n, negative definite
    lam_max = float(torch.linalg.eigvalsh(H)[-1])
    assert lam_max < 0
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 1, bias=False).double()
    alpha, eps = 0.2, 1e-8
    opt = B.EoSAda(model.parameters(), alpha=alpha, eps=eps, curvature="exact")
    tr = B.train(model, lambda out, t: -B.mse_loss(out, t), (X, y), opt, 5, track_every=1, track_k=1,
                 track_tol=1e-10, accuracy_fn=None)
    np.testing.assert_allclose(tr.sharpness, lam_max, rtol=1e-8)
    np.testing.assert_allclose(tr.lr, alpha / (abs(lam_max) + eps), rtol=1e-12)
    assert np.all(tr.lr > 0) and np.all(np.diff(tr.loss) < 0)


# ----------------------------------------------------------------------------- SIGKILL, then resume
_KILLED_TRAINER = r'''
import os, signal, sys
import torch
import eosdyn.bridge as B

torch.set_num_threads(1)
path, steps, kill_at = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
X, Y = B.gaussian_mixture(n=48, dim=4, n_classes=3, seed=1, dtype=torch.float64)
torch.manual_seed(0)
model = B.MLP(4, (8,), 3, "tanh").double()
opt = B.EoSAda(model.parameters(), alpha=1.0, noise_scale=1e-3, curvature_every=3, lanczos_steps=8)
calls = 0


def loss_fn(out, target):
    global calls
    calls += 1
    if calls == kill_at:  # the process dies in the middle of a step, no clean-up runs
        os.kill(os.getpid(), signal.SIGKILL)
    return B.cross_entropy_loss(out, target)


B.train(model, loss_fn, (X, Y), opt, steps, track_every=4, checkpoint_every=3,
        checkpoint_path=path, resume=os.path.exists(path), progress=False)
torch.save(model.state_dict(), path + ".final")
'''


def test_trainer_killed_with_sigkill_resumes_bit_identically(tmp_path):
    """SIGKILL in the middle of a run, then resume: the continuation is bit-identical."""
    import signal
    import subprocess
    import sys

    script = tmp_path / "killed_trainer.py"
    script.write_text(_KILLED_TRAINER)
    steps = 14

    def run(path, kill_at):
        return subprocess.run([sys.executable, str(script), str(path), str(steps), str(kill_at)],
                              capture_output=True, text=True, timeout=300)

    straight = run(tmp_path / "straight.pt", 0)
    assert straight.returncode == 0, straight.stderr
    killed_path = tmp_path / "killed.pt"
    killed = run(killed_path, 25)  # several loss calls per step: this lands mid-run
    assert killed.returncode == -signal.SIGKILL
    assert killed_path.exists() and not (tmp_path / "killed.pt.final").exists()
    assert read_checkpoint(killed_path)["step"] < steps
    resumed = run(killed_path, 0)
    assert resumed.returncode == 0, resumed.stderr
    a = torch.load(tmp_path / "straight.pt.final", weights_only=True)
    b = torch.load(tmp_path / "killed.pt.final", weights_only=True)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
