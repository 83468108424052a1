"""A training loop that tracks the sharpness of a real network: :func:`train`.

It runs any torch optimizer — the baselines (``torch.optim.SGD`` with or without momentum;
full-batch GD is SGD on a single ``(inputs, targets)`` pair; ``Adam``; ``AdamW``) or
eosdyn's curvature-aware :class:`~eosdyn.bridge.EoSAda` and :class:`~eosdyn.bridge.DCAO` —
and every ``track_every`` steps measures, at the current parameters and on ``track_data``
(default: the whole training set), the top Hessian eigenvalues λ₁, λ₂ and the gap λ₁ − λ₂
(warm-started Lanczos, :func:`~eosdyn.bridge.sharpness`) and, for Adam-style optimizers,
the preconditioned sharpness λ_max(P⁻¹H) (:func:`~eosdyn.bridge.preconditioned_sharpness`).

Record convention (the toy simulator's): record t (t = 0 … steps) describes θ_t, the
parameters after t updates. ``loss``/``accuracy`` are those of the batch used by update
t + 1 (the whole set for full-batch training), evaluated at θ_t; ``lr`` is the step size
in force in update t + 1 (the last one used, at t = steps); curvature columns are NaN at
records that were not tracked.
"""
from __future__ import annotations

import math
import os
import sys
import time
import warnings

import numpy as np
import torch

from .._validate import nonneg_int, positive
from ..sim.results import Trajectory
from ._common import _is_pair, _move, as_batches, model_device_dtype, trainable_parameters
from .curvature import _run as _run_eigensolver
from .curvature import preconditioner_vector
from .hvp import HessianOperator
from .models import accuracy as _default_accuracy
from .optim import NonFiniteLossError, _CurvatureOptimizer

CHECKPOINT_FORMAT = "eosdyn.bridge.train/1"
_COLUMNS = ("loss", "accuracy", "grad_norm", "lr", "sharpness", "lambda2", "gap",
            "preconditioned_sharpness", "residual1", "track_loss", "hvp_tracking", "hvp_optimizer",
            "time_train", "time_curvature")


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _is_adam_like(optimizer) -> bool:
    """Adam and AdamW (and subclasses): their step is θ ← θ − η P⁻¹ m̂ with P = √v̂ + ε."""
    return isinstance(optimizer, (torch.optim.Adam, torch.optim.AdamW))


class _Stream:
    """Batch t of the training data: the pair, batch t mod B of a list, or the next of an iterable."""

    def __init__(self, data, device, dtype):
        self.device, self.dtype = device, dtype
        if _is_pair(data):
            b = as_batches(data, device, dtype)
            self.fixed, self.it, self.source = b.batches, None, None
        elif isinstance(data, (list, tuple)):
            b = as_batches(data, device, dtype)
            self.fixed, self.it, self.source = b.batches, None, None
        else:
            self.fixed, self.source = None, data
            self.it = None

    def get(self, t):
        if self.fixed is not None:
            return self.fixed[t % len(self.fixed)]
        for _ in range(2):
            if self.it is None:
                self.it = iter(self.source)
            try:
                x, y = next(self.it)
                return _move(x, self.device, self.dtype), _move(y, self.device, self.dtype)
            except StopIteration:
                self.it = None
        raise ValueError("data must contain at least one example, got an empty data set")


def _hyper(optimizer) -> dict:
    out = {}
    for k, v in optimizer.defaults.items():
        if isinstance(v, (bool, int, float, str)) or v is None:
            out[k] = v
        elif isinstance(v, (tuple, list)) and all(isinstance(e, (int, float)) for e in v):
            out[k] = list(v)
    return out


def _save_checkpoint(path, payload):
    tmp = f"{path}.tmp"
    torch.save(payload, tmp)
    os.replace(tmp, path)


def train(model, loss_fn, data, optimizer, steps: int, track_every: int | None = 10, *,
          track_k: int = 2, track_data=None, track_tol: float | None = 1e-6,
          track_max_iter: int | None = None, accuracy_fn=_default_accuracy,
          checkpoint_every: int | None = None, checkpoint_path=None, resume=False,
          progress: bool | None = None, hvp_method: str = "auto", seed: int = 0) -> Trajectory:
    """Train ``model`` for ``steps`` optimizer steps, tracking curvature; return a Trajectory.

    Parameters
    ----------
    model : torch.nn.Module
        Trained in the mode it is in (the mode is recorded; HVPs use the same mode).
    loss_fn : callable
        ``loss_fn(outputs, targets)`` → batch-mean loss (e.g. :func:`~eosdyn.bridge.mse_loss`).
    data : (inputs, targets) pair, list of pairs, or iterable of pairs
        A pair: full-batch training (every step on all the data). A list/tuple: step t uses
        batch t mod B (deterministic, so resuming is exact). Any other iterable (e.g. a
        ``DataLoader``) is cycled; on resume it restarts from a fresh pass.
    optimizer : torch.optim.Optimizer
        Over ``model``'s parameters. eosdyn's EoSAda/DCAO receive a forward-only closure
        (they differentiate it and take their HVPs from it); others a standard closure
        (``zero_grad``, forward, ``backward``).
    steps : int >= 0
    track_every : int >= 1 or None
        Curvature every k steps (at records 0, k, 2k, …, and at ``steps``); None: never.
    track_k : int >= 1
        Eigenvalues tracked (2 gives λ₂ and the gap).
    track_data : pair or iterable of pairs, optional
        Data of the tracked Hessian (default: all of ``data``).
    track_tol, track_max_iter
        Lanczos relative residual tolerance and HVP budget per tracking call.
    accuracy_fn : callable (outputs, targets) -> float, or None
        Default: argmax accuracy (NaN for regression).
    checkpoint_every : int, optional
        Save ``checkpoint_path`` every N steps (the state θ_t with t a multiple of N, and at
        the end), atomically (write then rename). A checkpoint is only written for finite
        parameters, so the last one on disk is the last good state.
    checkpoint_path : str or path, optional
    resume : bool or path
        Continue from ``checkpoint_path`` (``True``) or from the given file. With the same
        arguments, the continued run is bit-identical to an uninterrupted one.
    progress : bool, optional
        tqdm progress bar; default: when stderr is a terminal.
    hvp_method, seed
        HVP method of the tracker, seed of its first Lanczos start.

    Returns
    -------
    Trajectory
        ``step`` (0…steps), ``loss``, ``grad_norm``, ``lr``, ``sharpness`` (λ₁), ``lambda2``,
        ``preconditioned_sharpness`` (Adam-style optimizers), ``extra`` with ``accuracy``,
        ``gap``, ``residual1`` (λ₁'s Lanczos residual), ``track_loss`` (loss on
        ``track_data``), cumulative ``hvp_tracking``/``hvp_optimizer`` counts and
        cumulative wall times ``time_train`` (optimizer steps, without the optimizer's own
        curvature probes) and ``time_curvature`` (tracking plus the optimizer's probes).
        A non-finite loss stops the run: ``diverged``/``diverged_at`` are set, later records
        are NaN, a ``RuntimeWarning`` names the step, and the last good checkpoint is kept.
    """
    steps = nonneg_int("steps", steps)
    if track_every is not None:
        track_every = nonneg_int("track_every", track_every, minimum=1)
    track_k = nonneg_int("track_k", track_k, minimum=1)
    if track_tol is not None:
        track_tol = positive("track_tol", track_tol)
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable (outputs, targets) -> mean loss, got {type(loss_fn).__name__}")
    device, dtype = model_device_dtype(model)
    params = trainable_parameters(model)
    n_params = sum(p.numel() for p in params)
    if track_every is not None and track_k > n_params:
        raise ValueError(f"track_k must be in [1, number of trainable parameters] = [1, {n_params}], got {track_k}")
    if checkpoint_every is not None:
        checkpoint_every = nonneg_int("checkpoint_every", checkpoint_every, minimum=1)
        if checkpoint_path is None:
            raise ValueError("checkpoint_every needs checkpoint_path")
    resume_path = None
    if resume is True:
        if checkpoint_path is None:
            raise ValueError("resume=True needs checkpoint_path")
        resume_path = checkpoint_path
    elif resume not in (False, None):
        resume_path = resume
    stream = _Stream(data, device, dtype)
    ours = isinstance(optimizer, _CurvatureOptimizer)
    adam_like = _is_adam_like(optimizer)
    op = None
    if track_every is not None:
        # repeated: one probe takes many products at the same θ (the retained-graph HVP on a
        # single batch); the graph is released after each probe, so training never holds it
        op = HessianOperator(model, loss_fn, data if track_data is None else track_data, hvp_method,
                             repeated=True)

    rec = {c: [] for c in _COLUMNS}
    start = 0
    v_track, v_pre = None, None
    hvp_tracking, t_train, t_curv = 0, 0.0, 0.0
    if resume_path is not None:
        ck = torch.load(resume_path, map_location=device, weights_only=True)
        if ck.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"resume: {resume_path!r} is not an eosdyn.bridge.train checkpoint")
        start = int(ck["step"])
        if start > steps:
            raise ValueError(f"resume: the checkpoint is at step {start} > steps = {steps}")
        model.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        rec = {c: list(ck["records"][c]) for c in _COLUMNS}
        v_track, v_pre = ck["v_track"], ck["v_pre"]
        hvp_tracking, t_train, t_curv = int(ck["hvp_tracking"]), float(ck["time_train"]), float(ck["time_curvature"])
        torch.set_rng_state(ck["torch_rng"].cpu())
        if ck.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in ck["cuda_rng"]])
    last_good_ckpt = start if resume_path is not None else None

    show = sys.stderr.isatty() if progress is None else bool(progress)
    bar = None
    if show:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, initial=start, desc=f"train[{type(optimizer).__name__}]", leave=False)

    diverged_at = -1

    def params_finite():
        return all(bool(torch.isfinite(p).all()) for p in params)

    def checkpoint(t):
        nonlocal last_good_ckpt
        payload = {
            "format": CHECKPOINT_FORMAT, "step": t, "model": model.state_dict(),
            "optimizer": optimizer.state_dict(), "records": {c: list(rec[c]) for c in _COLUMNS},
            "v_track": v_track, "v_pre": v_pre, "hvp_tracking": hvp_tracking,
            "time_train": t_train, "time_curvature": t_curv, "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if device.type == "cuda" else None,
        }
        _save_checkpoint(checkpoint_path, payload)
        last_good_ckpt = t

    def diverge(t, value):
        nonlocal diverged_at
        diverged_at = t
        where = (f"the last good checkpoint (step {last_good_ckpt}) is kept at {checkpoint_path!s}"
                 if last_good_ckpt is not None else "no checkpoint was written")
        warnings.warn(f"train: non-finite loss ({value}) at step {t}; training stopped, {where}",
                      RuntimeWarning, stacklevel=3)

    t = start
    try:
        while True:
            row = dict.fromkeys(_COLUMNS, float("nan"))
            if not params_finite():
                diverge(t, "non-finite parameters")
                row["loss"] = float("nan")
                break
            if checkpoint_every is not None and t > start and (t % checkpoint_every == 0 or t == steps):
                checkpoint(t)
            # ---- curvature tracking at θ_t
            if op is not None and (t % track_every == 0 or t == steps):
                _sync(device)
                c0 = time.perf_counter()
                res = _run_eigensolver(op, op.matvec, track_k, v_track, track_tol, track_max_iter,
                                       "lanczos", seed, False)
                v_track = res.eigenvectors
                hvp_tracking += res.n_hvp
                row["sharpness"] = res.sharpness
                row["residual1"] = float(res.residual_norms[0])
                if track_k > 1:
                    row["lambda2"] = res.lambda2
                    row["gap"] = res.gap
                if adam_like and len(optimizer.state) > 0:
                    P = preconditioner_vector(optimizer, op.params)
                    s = torch.rsqrt(P)
                    pres = _run_eigensolver(op, lambda u: s * op.matvec(s * u), 1, v_pre, track_tol,
                                            track_max_iter, "lanczos", seed, True)
                    v_pre = pres.eigenvectors
                    hvp_tracking += pres.n_hvp
                    row["preconditioned_sharpness"] = pres.sharpness
                row["track_loss"] = op.loss()
                op.release()
                _sync(device)
                t_curv += time.perf_counter() - c0
            x, y = stream.get(t)
            if t == steps:  # final record: evaluate θ_steps without updating
                with torch.no_grad():
                    out = model(x)
                    val = float(loss_fn(out, y))
                row["loss"] = val
                row["accuracy"] = float(accuracy_fn(out, y)) if accuracy_fn is not None else float("nan")
                row["lr"] = rec["lr"][-1] if rec["lr"] else _lr(optimizer, ours)
                row["grad_norm"] = float("nan")
                _fill_counts(row, hvp_tracking, optimizer, ours, t_train, t_curv)
                for c in _COLUMNS:
                    rec[c].append(row[c])
                if not math.isfinite(val):
                    diverge(t, val)
                break
            # ---- one optimizer step
            captured = {}

            if ours:
                def closure():
                    out = model(x)
                    captured.setdefault("out", out.detach())
                    return loss_fn(out, y)
            else:
                def closure():
                    optimizer.zero_grad(set_to_none=True)
                    out = model(x)
                    loss = loss_fn(out, y)
                    captured.setdefault("out", out.detach())
                    lv = float(loss.detach())
                    if not math.isfinite(lv):
                        raise NonFiniteLossError(t, lv, "train")
                    loss.backward()
                    return loss

            probe0 = optimizer.curvature_time if ours else 0.0
            _sync(device)
            s0 = time.perf_counter()
            try:
                loss = optimizer.step(closure)
            except NonFiniteLossError as exc:
                row["loss"] = exc.value
                for c in _COLUMNS:
                    rec[c].append(row[c])
                diverge(t, exc.value)
                break
            _sync(device)
            dt = time.perf_counter() - s0
            probe_dt = (optimizer.curvature_time - probe0) if ours else 0.0
            t_train += dt - probe_dt
            t_curv += probe_dt
            row["loss"] = float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss)
            row["accuracy"] = (float(accuracy_fn(captured["out"], y))
                               if accuracy_fn is not None and "out" in captured else float("nan"))
            gsq = [p.grad.detach().pow(2).sum() for p in params if p.grad is not None]
            row["grad_norm"] = float(torch.stack(gsq).sum().sqrt()) if gsq else float("nan")
            row["lr"] = _lr(optimizer, ours)
            _fill_counts(row, hvp_tracking, optimizer, ours, t_train, t_curv)
            for c in _COLUMNS:
                rec[c].append(row[c])
            if bar is not None:
                bar.update(1)
                if not math.isnan(row["sharpness"]):
                    bar.set_postfix(loss=f"{row['loss']:.4g}", sharp=f"{row['sharpness']:.4g}")
            t += 1
    finally:
        if bar is not None:
            bar.close()

    n_rec = steps + 1
    arrays = {}
    for c in _COLUMNS:
        a = np.full(n_rec, np.nan)
        a[: len(rec[c])] = np.asarray(rec[c], dtype=np.float64)
        arrays[c] = a
    info = op.info.to_dict() if op is not None else {}
    params_rec = {
        "optimizer": type(optimizer).__name__, "optimizer_hyperparameters": _hyper(optimizer),
        "steps": steps, "track_every": -1 if track_every is None else track_every,
        "track_k": track_k, "n_params": n_params, "device": str(device),
        "dtype": str(dtype).replace("torch.", ""), "mode": "train" if model.training else "eval",
        "loss_fn": getattr(loss_fn, "__name__", type(loss_fn).__name__), "hvp_info": info,
        "sharpness_convention": "largest algebraic Hessian eigenvalue (which='LA') of the mean loss "
                                "on track_data, batches weighted by n_b/N",
        "resumed_from": start if resume_path is not None else -1,
    }
    if ours:
        params_rec.update(curvature_every=optimizer.curvature_every,
                          lanczos_steps=optimizer.lanczos_steps, curvature_k=optimizer.curvature_k)
    extra = {c: arrays[c] for c in ("accuracy", "gap", "residual1", "track_loss", "hvp_tracking",
                                    "hvp_optimizer", "time_train", "time_curvature")}
    return Trajectory(
        step=np.arange(n_rec), loss=arrays["loss"], theta=None, grad_norm=arrays["grad_norm"],
        sharpness=arrays["sharpness"], lambda2=arrays["lambda2"] if track_k > 1 else None,
        lr=arrays["lr"], preconditioned_sharpness=arrays["preconditioned_sharpness"] if adam_like else None,
        diverged=diverged_at >= 0, diverged_at=diverged_at, extra=extra, params=params_rec)


def _lr(optimizer, ours):
    if ours:
        return float(optimizer.lr_in_force[0])
    return float(optimizer.param_groups[0].get("lr", float("nan")))


def _fill_counts(row, hvp_tracking, optimizer, ours, t_train, t_curv):
    row["hvp_tracking"] = float(hvp_tracking)
    row["hvp_optimizer"] = float(optimizer.n_hvp) if ours else 0.0
    row["time_train"] = t_train
    row["time_curvature"] = t_curv
