"""One run of the claims study: :func:`run_trial` (the function the study's sweeps call).

A run trains a fresh model (initialised with the run's seed) with one optimizer for the
study's budget through :func:`eosdyn.bridge.train`, one call per evaluation interval on
that stretch of each epoch's shuffled minibatches, and after every interval (and at step 0) records, on data the
optimizer never sees:

* validation and test accuracy and cross-entropy (``evals_per_epoch`` times per epoch, and
  for full-batch GD at the same step counts);
* λ₁, the top Hessian eigenvalue of the training loss on a fixed subset of the training
  set (warm-started Lanczos, :func:`eosdyn.bridge.sharpness`; not timed, not counted);
* cumulative wall-clock time of the optimizer steps including the optimizer's own curvature
  probes (evaluation and λ₁ tracking excluded), and its cumulative HVP count.

Per step it records the minibatch training loss and the step size in force. At the end it
records the test set's expected calibration error. A run whose loss becomes non-finite is
reported as diverged (``diverged_at`` = the step), its later records NaN: the study goes on.
"""
from __future__ import annotations

import functools
import json

import numpy as np

from .metrics import expected_calibration_error
from .optimizers import OPTIMIZERS


# ----------------------------------------------------------------------------- data and models
@functools.lru_cache(maxsize=4)
def _splits(config_json: str):
    """(train, val, test) pairs of float32 inputs and int64 labels for a configuration."""
    import torch

    from ..bridge import cifar10, digits

    c = json.loads(config_json)
    n_tr, n_va, n_te, seed = c["n_train"], c["n_val"], c["n_test"], c["split_seed"]
    rng = np.random.default_rng(seed)
    if c["data"] == "digits":
        X, y = digits(targets="labels", seed=0)
        if n_tr + n_va + n_te > X.shape[0]:
            raise ValueError(f"n_train + n_val + n_test must be <= {X.shape[0]} (digits), "
                             f"got {n_tr + n_va + n_te}")
        if c["model"] == "cnn":
            X = X.reshape(-1, 1, 8, 8)
        idx = rng.permutation(X.shape[0])
        parts = (idx[:n_tr], idx[n_tr:n_tr + n_va], idx[n_tr + n_va:n_tr + n_va + n_te])
        return tuple((X[torch.as_tensor(p)], y[torch.as_tensor(p)]) for p in parts)
    if c["data"] == "cifar10":
        Xtr, ytr = cifar10(c["data_root"], train=True, n=None)
        Xte, yte = cifar10(c["data_root"], train=False, n=None)
        if n_tr + n_va > Xtr.shape[0] or n_te > Xte.shape[0]:
            raise ValueError(f"n_train + n_val must be <= {Xtr.shape[0]} and n_test <= {Xte.shape[0]} "
                             f"(the CIFAR-10 files under {c['data_root']!r})")
        idx = torch.as_tensor(rng.permutation(Xtr.shape[0]))
        te = torch.as_tensor(rng.permutation(Xte.shape[0])[:n_te])
        return ((Xtr[idx[:n_tr]], ytr[idx[:n_tr]]), (Xtr[idx[n_tr:n_tr + n_va]], ytr[idx[n_tr:n_tr + n_va]]),
                (Xte[te], yte[te]))
    # synthetic-cifar: Gaussian images, labels from a random linear teacher (learnable, not trivial)
    n = n_tr + n_va + n_te
    X = rng.standard_normal((n, 3, 32, 32)).astype(np.float32)
    W = rng.standard_normal((3 * 32 * 32, 10)) / np.sqrt(3 * 32 * 32)
    y = np.argmax(X.reshape(n, -1) @ W + 0.5 * rng.standard_normal((n, 10)), axis=1)
    X, y = torch.as_tensor(X), torch.as_tensor(y, dtype=torch.int64)
    return (X[:n_tr], y[:n_tr]), (X[n_tr:n_tr + n_va], y[n_tr:n_tr + n_va]), (X[n_tr + n_va:], y[n_tr + n_va:])


def build_model(config: dict, seed: int):
    """The study's model, initialised with ``torch.manual_seed(seed)``."""
    import torch

    from ..bridge import MLP, SmallCNN

    torch.manual_seed(int(seed))
    if config["model"] == "mlp":
        in_dim = 64 if config["data"] == "digits" else 3 * 32 * 32
        model = MLP(in_dim, tuple(config["hidden"]), 10, activation="tanh")
        if config["data"] != "digits":
            model = torch.nn.Sequential(torch.nn.Flatten(), model)
        return model
    if config["model"] == "cnn":
        if config["data"] == "digits":
            return SmallCNN(in_channels=1, num_classes=10, width=config["width"], image_size=8)
        return SmallCNN(in_channels=3, num_classes=10, width=config["width"], image_size=32)
    from ..bridge import ResNet18

    return ResNet18(num_classes=10, in_channels=3, width=config["width"])


# ----------------------------------------------------------------------------- the run
def _evaluate(model, loss_fn, pair):
    import torch

    was = model.training
    model.eval()
    with torch.no_grad():
        out = model(pair[0])
        loss = float(loss_fn(out, pair[1]))
        probs = torch.softmax(out, dim=1)
        acc = float((out.argmax(1) == pair[1]).float().mean())
    model.train(was)
    return loss, acc, probs


def run_trial(optimizer: str, seed: int, hp: str, config: str, tag: str = "") -> dict:
    """Train one run; return its records (the sweep stores them).

    Parameters
    ----------
    optimizer : str
        A name of :data:`~eosdyn.claims.optimizers.OPTIMIZERS`.
    seed : int
        Initialisation, minibatch order and the optimizer's own randomness.
    hp : str
        JSON of the hyperparameters (the registry's defaults fill the rest).
    config : str
        JSON of the study's :class:`~eosdyn.claims.ClaimsConfig`.
    tag : str
        What the run is for (``tune/step``, ``seed/joint``, ``ablation/...``); stored, not used.
    """
    import torch

    c = json.loads(config)
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer: unknown name {optimizer!r}; known: {list(OPTIMIZERS)}")
    threads = torch.get_num_threads()
    torch.set_num_threads(c["threads"])
    try:
        return _run(optimizer, seed, hp, c)
    finally:
        torch.set_num_threads(threads)


def _run(optimizer, seed, hp, c):
    import torch

    from ..bridge import batches, sharpness, train
    from ..bridge.probe import probe_costs

    spec = OPTIMIZERS[optimizer]
    hps = dict(json.loads(hp))
    device = torch.device(c["device"])
    tr, va, te = (tuple(t.to(device) for t in p) for p in _splits(json.dumps(c, sort_keys=True)))
    model = build_model(c, seed).to(device)
    loss_fn = torch.nn.functional.cross_entropy
    n = tr[0].shape[0]
    spe = -(-n // c["batch_size"])  # steps per epoch of the minibatch optimizers
    total = spe * c["epochs"]
    opt, sched = spec.build(list(model.parameters()), {**hps, "seed": seed}, total, _Cfg(c))
    if sched is not None:
        opt.register_step_post_hook(lambda *_: sched.step())
    track_pair = (tr[0][: c["track_subset"]], tr[1][: c["track_subset"]])

    chunk = -(-spe // c["evals_per_epoch"])  # steps between evaluations
    ends = list(range(chunk, total, chunk)) + [total]
    rec = {k: np.full(len(ends) + 1, np.nan) for k in ("step", "epoch", "val_acc", "val_loss", "test_acc", "test_loss",
                                                       "lambda1", "probe_lambda", "time", "hvp")}
    step_loss = np.full(total, np.nan)
    step_lr = np.full(total, np.nan)
    v0, clock, hvps, diverged_at = None, 0.0, 0, -1

    def measure(i, t):
        nonlocal v0
        rec["step"][i] = t
        rec["epoch"][i] = t if spec.full_batch else t / spe  # passes over the training set
        rec["val_loss"][i], rec["val_acc"][i], _ = _evaluate(model, loss_fn, va)
        rec["test_loss"][i], rec["test_acc"][i], _ = _evaluate(model, loss_fn, te)
        res = sharpness(model, loss_fn, track_pair, k=1, v0=v0, eigval_tol=1e-3,
                        max_iter=max(20, c["lanczos_steps"]), seed=seed)
        v0 = res.eigenvectors
        rec["lambda1"][i] = float(res.eigenvalues[0])
        rec["time"][i], rec["hvp"][i] = clock, hvps
        if spec.curvature and t > 0:  # the optimizer's own estimate at its last probe
            rec["probe_lambda"][i] = float(opt.eigenvalues[0])

    epoch_batches = {}

    def batch_list(t0, t1):
        """The minibatches of steps t0 … t1 − 1: epoch e's examples in a fresh order (seed, e)."""
        out = []
        for t in range(t0, t1):
            e = t // spe
            if e not in epoch_batches:
                epoch_batches.clear()
                epoch_batches[e] = batches(tr, c["batch_size"], shuffle=True, seed=seed * 100003 + e)
            out.append(epoch_batches[e][t % spe])
        return out

    measure(0, 0)
    t0 = 0
    for i, t1 in enumerate(ends, start=1):
        data = tr if spec.full_batch else batch_list(t0, t1)
        traj = train(model, loss_fn, data, opt, t1 - t0, track_every=None, accuracy_fn=None, progress=False,
                     seed=seed)
        # the optimizer's steps and its own probes (train's records and checks excluded)
        clock += float(np.nanmax(traj.extra["time_train"])) + float(np.nanmax(traj.extra["time_curvature"]))
        hvps = int(getattr(opt, "n_hvp", 0))
        step_loss[t0:t1] = traj.loss[:t1 - t0]
        step_lr[t0:t1] = traj.lr[:t1 - t0]
        if traj.diverged:
            diverged_at = t0 + int(traj.diverged_at)
            break
        measure(i, t1)
        t0 = t1

    _, _, probs = _evaluate(model, loss_fn, te) if diverged_at < 0 else (None, None, None)
    # the unit costs of the overhead model m·r·b/T_c (+ c₀·b/T_c), on one training batch
    costs = {"r": np.nan, "c0": np.nan}
    if spec.curvature and diverged_at < 0:
        costs = probe_costs(model, loss_fn, batch_list(0, 1)[0] if not spec.full_batch else tr)
    ece = expected_calibration_error(probs.cpu().numpy(), te[1].cpu().numpy()) if probs is not None else np.nan
    return {
        "eval_step": ("eval", rec["step"]), "epoch": ("eval", rec["epoch"]),
        "val_acc": ("eval", rec["val_acc"]), "val_loss": ("eval", rec["val_loss"]),
        "test_acc": ("eval", rec["test_acc"]), "test_loss": ("eval", rec["test_loss"]),
        "lambda1": ("eval", rec["lambda1"]), "probe_lambda": ("eval", rec["probe_lambda"]),
        "time": ("eval", rec["time"]), "hvp": ("eval", rec["hvp"]),
        "train_loss": ("step", step_loss), "step_lr": ("step", step_lr),
        "ece": float(ece), "diverged_at": int(diverged_at), "steps_per_epoch": int(spe),
        "n_params": int(sum(p.numel() for p in model.parameters())),
        "hvp_total": int(getattr(opt, "n_hvp", 0)), "n_probes": int(getattr(opt, "n_probes", 0)),
        "hvp_over_grad": float(costs["r"]), "graph_over_grad": float(costs["c0"]),
    }


class _Cfg:
    """Attribute access to the config dict for the optimizer builders."""

    def __init__(self, d):
        self.__dict__.update(d)
