"""A training loop that tracks the sharpness of a real network: :func:`train`.

It runs any torch optimizer — the baselines (``torch.optim.SGD`` with or without momentum;
full-batch GD is SGD on a single ``(inputs, targets)`` pair; ``Adam``; ``AdamW``) or
eosdyn's curvature-aware :class:`~eosdyn.bridge.EoSAda` and :class:`~eosdyn.bridge.DCAO` —
and every ``track_every`` steps measures, at the current parameters and on ``track_data``
(default: the whole training set), the top Hessian eigenvalues λ₁, λ₂ and the gap λ₁ − λ₂
(warm-started Lanczos, :func:`~eosdyn.bridge.sharpness`) and, for Adam-style optimizers,
the preconditioned sharpness λ_max(P⁻¹H) (:func:`~eosdyn.bridge.preconditioned_sharpness`)
and, with ``track_batch_sharpness=B``, the batch sharpness E_B[g_Bᵀ H_B g_B / ‖g_B‖²] for
batches of B examples (Andreyev & Beneventano, arXiv 2412.20553; :func:`~eosdyn.bridge.batch_sharpness`),
which SGD with step size η holds near 2/η while λ₁ stays below it.

Record convention (the toy simulator's): record t (t = 0 … steps) describes θ_t, the
parameters after t updates. ``loss``/``accuracy`` are those of the batch used by update
t + 1 (the whole set for full-batch training), evaluated at θ_t; ``lr`` is the step size
in force in update t + 1 (the last one used, at t = steps); curvature columns are NaN at
records that were not tracked.

Three parts, each usable on its own: :class:`~eosdyn.bridge.tracker.CurvatureTracker` (the
curvature measurements), :class:`~eosdyn.bridge.checkpoint.Checkpointer` (checkpoints that
only ever hold a state whose loss was finite) and the loop here, which runs the optimizer,
records and times it.
"""
from __future__ import annotations

import math
import sys
import time
import warnings

import numpy as np
import torch

from .._validate import nonneg_int, positive
from ..sim.results import Trajectory
from ._common import (
    _is_pair,
    _move,
    as_batches,
    model_device_dtype,
    trainable_parameters,
    warn_if_threads_oversubscribe,
)
from .checkpoint import CHECKPOINT_FORMAT, Checkpointer, read_checkpoint, restore_checkpoint  # noqa: F401
from .models import accuracy as _default_accuracy
from .optim import NonFiniteLossError, _CurvatureOptimizer
from .tracker import CurvatureTracker, is_adam_like, optimizer_hvps, step_size_in_force

_COLUMNS = ("loss", "accuracy", "grad_norm", "lr", "sharpness", "lambda2", "gap",
            "preconditioned_sharpness", "residual1", "track_loss", "hvp_tracking", "hvp_optimizer",
            "time_train", "time_curvature", "batch_sharpness", "batch_sharpness_lo", "batch_sharpness_hi",
            "batch_sharpness_hvp", "ggn1", "trace", "trace_se")
#: What ``train(track=...)`` can record at every tracked step (λ₁ — and λ₂ with track_k ≥ 2 — always).
TRACKABLE = ("lambda1", "ggn1", "trace", "batch_sharpness")
_BATCH_COLUMNS = ("batch_sharpness", "batch_sharpness_lo", "batch_sharpness_hi", "batch_sharpness_hvp")


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _Stream:
    """Batch t of the training data: the pair, batch t mod B of a list, or the next of an iterable."""

    def __init__(self, data, device, dtype):
        self.device, self.dtype = device, dtype
        if _is_pair(data) or isinstance(data, (list, tuple)):
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


def train(model, loss_fn, data, optimizer, steps: int, track_every: int | None = 10, *,
          track_k: int = 2, track_data=None, track_tol: float | None = 1e-6,
          track_max_iter: int | None = None, accuracy_fn=_default_accuracy,
          checkpoint_every: int | None = None, checkpoint_path=None, resume=False,
          progress: bool | None = None, hvp_method: str = "auto", seed: int = 0,
          track_batch_sharpness: int | None = None, batch_sharpness_options: dict | None = None,
          track=("lambda1",)) -> Trajectory:
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
        the end), atomically (write then rename). The state θ_t is written only once its
        loss has been found finite, and the previous checkpoint stays until then, so the
        one on disk is always the last good state (:class:`~eosdyn.bridge.checkpoint.Checkpointer`).
    checkpoint_path : str or path, optional
    resume : bool or path
        Continue from ``checkpoint_path`` (``True``) or from the given file. With the same
        arguments, the continued run is bit-identical to an uninterrupted one. A file that
        is not an eosdyn checkpoint raises ValueError, a missing one FileNotFoundError.
    progress : bool, optional
        tqdm progress bar; default: when stderr is a terminal.
    hvp_method, seed
        HVP method of the tracker, seed of its first Lanczos start and of the batch-sharpness
        batches (see :class:`~eosdyn.bridge.tracker.CurvatureTracker`).
    track : sequence of names among :data:`TRACKABLE`, default ("lambda1",)
        What to record at every tracked step besides λ₁ (always measured): ``"ggn1"``, the
        top Gauss–Newton eigenvalue (``extra["ggn1"]``; Cohen et al. note it nearly equals λ₁
        at the edge with MSE), ``"trace"``, tr H by Hutch++ (``extra["trace"]``, ``"trace_se"``),
        ``"batch_sharpness"`` (needs ``track_batch_sharpness``). Their HVPs count in
        ``hvp_tracking``.
    track_batch_sharpness : int in [1, n], optional
        At every tracked record t also measure the batch sharpness
        E_B[g_Bᵀ H_B g_B / ‖g_B‖²] for batches B of this many examples drawn uniformly from
        ``track_data`` (default ``data``; it must be one ``(inputs, targets)`` pair or a list
        of pairs, n their total size), g_B, H_B the batch loss's gradient and Hessian
        (Andreyev & Beneventano, "Edge of Stochastic Stability", arXiv 2412.20553). It is
        :func:`~eosdyn.bridge.batch_sharpness` at θ_t with
        ``seed=``:func:`~eosdyn.bridge.tracker.batch_sharpness_seed` ``(seed, t)``: one HVP per
        fresh batch until the relative standard error reaches its target. Needs
        ``track_every``.
    batch_sharpness_options : dict, optional
        Keyword arguments of :func:`~eosdyn.bridge.batch_sharpness` (``rel_std_error``,
        ``min_batches``, ``max_batches``, ``replacement``).

    Returns
    -------
    Trajectory
        ``step`` (0…steps), ``loss``, ``grad_norm``, ``lr``, ``sharpness`` (λ₁), ``lambda2``,
        ``preconditioned_sharpness`` (Adam-style optimizers), ``extra`` with ``accuracy``,
        ``gap``, ``residual1`` (λ₁'s Lanczos residual), ``track_loss`` (loss on
        ``track_data``), cumulative ``hvp_tracking``/``hvp_optimizer`` counts and
        cumulative wall times ``time_train`` (optimizer steps, without the optimizer's own
        curvature probes) and ``time_curvature`` (tracking plus the optimizer's probes);
        with ``track_batch_sharpness`` also ``batch_sharpness``, its 95 % Student-t interval
        ``batch_sharpness_lo``/``batch_sharpness_hi`` and ``batch_sharpness_hvp`` (the HVPs
        of each measurement, also counted in ``hvp_tracking``), NaN at untracked records.
        A non-finite loss stops the run: ``diverged``/``diverged_at`` are set, later records
        are NaN, a ``RuntimeWarning`` names the step, and the last good checkpoint is kept.
    """
    warn_if_threads_oversubscribe()
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
    n_params = sum(p.numel() for p in trainable_parameters(model))
    if track_every is not None and track_k > n_params:
        raise ValueError(f"track_k must be in [1, number of trainable parameters] = [1, {n_params}], got {track_k}")
    track_names = (track,) if isinstance(track, str) else tuple(track)
    bad = sorted(set(track_names) - set(TRACKABLE))
    if bad:
        raise ValueError(f"track: unknown names {bad}; trackable: {list(TRACKABLE)}")
    if "batch_sharpness" in track_names and track_batch_sharpness is None:
        raise ValueError("track=['batch_sharpness'] needs track_batch_sharpness=B (the batch size)")
    if track_batch_sharpness is not None and "batch_sharpness" not in track_names:
        track_names = (*track_names, "batch_sharpness")
    extras = tuple(n for n in track_names if n in ("ggn1", "trace"))
    if extras and track_every is None:
        raise ValueError(f"track={list(track_names)} needs track_every (the records at which it is measured)")
    if track_batch_sharpness is not None:
        if isinstance(track_batch_sharpness, bool) or not isinstance(track_batch_sharpness, (int, np.integer)):
            raise TypeError(f"track_batch_sharpness must be an integer batch size or None, "
                            f"got {type(track_batch_sharpness).__name__}")
        if track_every is None:
            raise ValueError("track_batch_sharpness needs track_every (the records at which it is measured)")
        from .tracker import batch_sharpness_data

        n_bs = int(batch_sharpness_data(data if track_data is None else track_data,
                                        "data" if track_data is None else "track_data")[0].shape[0])
        if not 1 <= int(track_batch_sharpness) <= n_bs:
            raise ValueError(f"track_batch_sharpness must be a batch size in [1, n = {n_bs}] (the size of the "
                             f"{'data' if track_data is None else 'track_data'} its batches are drawn from), "
                             f"got {int(track_batch_sharpness)}")
        track_batch_sharpness = int(track_batch_sharpness)
    elif batch_sharpness_options:
        raise ValueError("batch_sharpness_options needs track_batch_sharpness")
    checkpointer = None
    if checkpoint_every is not None:
        checkpoint_every = nonneg_int("checkpoint_every", checkpoint_every, minimum=1)
        if checkpoint_path is None:
            raise ValueError("checkpoint_every needs checkpoint_path")
        checkpointer = Checkpointer(checkpoint_path, checkpoint_every)
    resume_path = None
    if resume is True:
        if checkpoint_path is None:
            raise ValueError("resume=True needs checkpoint_path")
        resume_path = checkpoint_path
    elif resume not in (False, None):
        resume_path = resume
    stream = _Stream(data, device, dtype)
    tracker = None
    if track_every is not None:
        tracker = CurvatureTracker(model, loss_fn, data if track_data is None else track_data, k=track_k,
                                   tol=track_tol, max_iter=track_max_iter, hvp_method=hvp_method, seed=seed,
                                   batch_size=track_batch_sharpness, batch_options=batch_sharpness_options,
                                   extras=extras)
    loop = _Loop(model, loss_fn, optimizer, accuracy_fn, stream, steps, tracker, track_every, checkpointer)
    if resume_path is not None:
        loop.resume(resume_path)
    loop.run(sys.stderr.isatty() if progress is None else bool(progress))

    params_rec = {
        "optimizer": type(optimizer).__name__, "optimizer_hyperparameters": _hyper(optimizer),
        "steps": steps, "track_every": -1 if track_every is None else track_every,
        "track_k": track_k, "n_params": n_params, "device": str(device),
        "dtype": str(dtype).replace("torch.", ""), "mode": "train" if model.training else "eval",
        "loss_fn": getattr(loss_fn, "__name__", type(loss_fn).__name__),
        "hvp_info": tracker.operator.info.to_dict() if tracker is not None else {},
        "sharpness_convention": "largest algebraic Hessian eigenvalue (which='LA') of the mean loss "
                                "on track_data, batches weighted by n_b/N",
        "resumed_from": loop.start if resume_path is not None else -1,
        "track_batch_sharpness": -1 if track_batch_sharpness is None else track_batch_sharpness,
    }
    if track_batch_sharpness is not None:
        params_rec["batch_sharpness_convention"] = (
            "E_B[g_B^T H_B g_B/|g_B|^2] (Andreyev & Beneventano 2024), batches of track_batch_sharpness examples "
            "drawn uniformly from track_data, seed batch_sharpness_seed(seed, step); "
            f"options {dict(batch_sharpness_options or {})}")
    if loop.ours:
        params_rec.update(curvature_every=optimizer.curvature_every,
                          lanczos_steps=optimizer.lanczos_steps, curvature_k=optimizer.curvature_k)
    params_rec["track"] = list(track_names)
    return _trajectory(loop.rec, steps, track_k, is_adam_like(optimizer), loop.diverged_at, params_rec,
                       track_batch_sharpness is not None, extras)


class _Loop:
    """One run of :func:`train`: the records, the times, the divergence and the last good checkpoint.

    Step t (``start`` <= t <= ``steps``) at θ_t: stop if θ_t is not finite; stage a checkpoint
    when one is due; measure the curvature when tracked; then either record the final state
    (t = steps) or take optimizer step t + 1. The staged checkpoint is committed once the loss at
    θ_t is known finite; a non-finite loss stops the run and keeps the previous checkpoint.
    """

    def __init__(self, model, loss_fn, optimizer, accuracy_fn, stream, steps, tracker, track_every,
                 checkpointer):
        self.model, self.loss_fn, self.optimizer, self.accuracy_fn = model, loss_fn, optimizer, accuracy_fn
        self.stream, self.steps, self.tracker, self.track_every = stream, steps, tracker, track_every
        self.checkpointer = checkpointer
        self.params = trainable_parameters(model)
        self.device, _ = model_device_dtype(model)
        self.ours = isinstance(optimizer, _CurvatureOptimizer)
        self.rec = {c: [] for c in _COLUMNS}
        self.start, self.time_train, self.time_curvature = 0, 0.0, 0.0
        self.untracked = {"v_track": None, "v_pre": None, "hvp_tracking": 0}  # kept when not tracking
        self.last_good = None  # (step, file) of the last checkpoint known good
        self.diverged_at = -1

    # ------------------------------------------------------------------ state
    def resume(self, path) -> None:
        """Continue from the checkpoint file ``path`` (model, optimizer, RNGs, records, counters)."""
        ck = read_checkpoint(path, self.device, "resume",
                             required=("records", *self.untracked, "time_train", "time_curvature"))
        if int(ck["step"]) > self.steps:
            raise ValueError(f"resume: the checkpoint is at step {int(ck['step'])} > steps = {self.steps}")
        self.start = restore_checkpoint(ck, self.model, self.optimizer)
        n_done = len(ck["records"]["loss"])  # a checkpoint without the batch-sharpness columns: NaN there
        self.rec = {c: list(ck["records"][c]) if c in ck["records"] else [float("nan")] * n_done for c in _COLUMNS}
        self.untracked = {k: ck[k] for k in self.untracked}
        if "v_ggn" in ck:                      # the GGN warm start (track=["ggn1"])
            self.untracked["v_ggn"] = ck["v_ggn"]
        if self.tracker is not None:
            self.tracker.load_state_dict(self.untracked)
        self.time_train, self.time_curvature = float(ck["time_train"]), float(ck["time_curvature"])
        self.last_good = (self.start, path)

    def _tracking_state(self) -> dict:
        return self.tracker.state_dict() if self.tracker is not None else self.untracked

    def _append(self, row, counts=True) -> None:
        if counts:
            row.update(hvp_tracking=float(self._tracking_state()["hvp_tracking"]),
                       hvp_optimizer=float(optimizer_hvps(self.optimizer)),
                       time_train=self.time_train, time_curvature=self.time_curvature)
        for c in _COLUMNS:
            self.rec[c].append(row[c])

    def _diverge(self, t, value) -> None:
        self.diverged_at = t
        where = (f"the last good checkpoint (step {self.last_good[0]}) is kept at {self.last_good[1]!s}"
                 if self.last_good is not None else "no checkpoint was written")
        warnings.warn(f"train: non-finite loss ({value}) at step {t}; training stopped, {where}",
                      RuntimeWarning, stacklevel=4)

    def _commit(self) -> None:
        if self.checkpointer is not None and self.checkpointer.commit() is not None:
            self.last_good = (self.checkpointer.last_good, self.checkpointer.path)

    # ------------------------------------------------------------------ the loop
    def run(self, show_progress: bool) -> None:
        bar = None
        if show_progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=self.steps, initial=self.start, leave=False,
                       desc=f"train[{type(self.optimizer).__name__}]")
        try:
            for t in range(self.start, self.steps + 1):
                row = dict.fromkeys(_COLUMNS, float("nan"))
                if not all(bool(torch.isfinite(p).all()) for p in self.params):
                    self._diverge(t, "non-finite parameters")
                    return
                if self.checkpointer is not None and self.checkpointer.due(t, self.start, self.steps):
                    # θ_t, before tracking; written once the loss at θ_t is known finite
                    self.checkpointer.stage(t, self.model, self.optimizer, records=self.rec,
                                            **self._tracking_state(), time_train=self.time_train,
                                            time_curvature=self.time_curvature)
                if self.tracker is not None and (t % self.track_every == 0 or t == self.steps):
                    measured, dt = _timed(self.device, self.tracker.measure, self.optimizer, t)
                    row.update(measured)
                    self.time_curvature += dt
                x, y = self.stream.get(t)
                ok = self._final_record(t, row, x, y) if t == self.steps else self._step(t, row, x, y)
                if not ok:
                    self._diverge(t, row["loss"])
                    return
                self._commit()
                if bar is not None and t < self.steps:
                    bar.update(1)
                    if not math.isnan(row["sharpness"]):
                        bar.set_postfix(loss=f"{row['loss']:.4g}", sharp=f"{row['sharpness']:.4g}")
        finally:
            if self.checkpointer is not None:
                self.checkpointer.discard()
            if bar is not None:
                bar.close()

    def _final_record(self, t, row, x, y) -> bool:
        """Record θ_steps without updating; whether its loss is finite."""
        with torch.no_grad():
            out = self.model(x)
            row["loss"] = float(self.loss_fn(out, y))
        row["accuracy"] = float(self.accuracy_fn(out, y)) if self.accuracy_fn is not None else float("nan")
        row["lr"] = self.rec["lr"][-1] if self.rec["lr"] else step_size_in_force(self.optimizer)
        self._append(row)
        return math.isfinite(row["loss"])

    def _step(self, t, row, x, y) -> bool:
        """Optimizer step t + 1 from θ_t, recorded; whether the loss at θ_t was finite."""
        opt, captured = self.optimizer, {}
        closure = _closure(self.model, self.loss_fn, opt, x, y, t, captured, forward_only=self.ours)
        probe0 = opt.curvature_time if self.ours else 0.0
        try:
            loss, dt = _timed(self.device, opt.step, closure)
        except NonFiniteLossError as exc:
            row["loss"] = exc.value
            self._append(row, counts=False)  # the failed step's counters and times stay NaN
            return False
        probe_dt = (opt.curvature_time - probe0) if self.ours else 0.0
        self.time_train += dt - probe_dt
        self.time_curvature += probe_dt
        row["loss"] = float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss)
        row["accuracy"] = (float(self.accuracy_fn(captured["out"], y))
                           if self.accuracy_fn is not None and "out" in captured else float("nan"))
        gsq = [p.grad.detach().pow(2).sum() for p in self.params if p.grad is not None]
        row["grad_norm"] = float(torch.stack(gsq).sum().sqrt()) if gsq else float("nan")
        row["lr"] = step_size_in_force(opt)
        self._append(row)
        return math.isfinite(row["loss"])  # the closure has already refused a non-finite loss


def _timed(device, fn, *args):
    """``fn(*args)`` and its wall time in seconds, the device synchronised before and after."""
    _sync(device)
    t0 = time.perf_counter()
    out = fn(*args)
    _sync(device)
    return out, time.perf_counter() - t0


def _closure(model, loss_fn, optimizer, x, y, t, captured, forward_only):
    """The closure of step t on batch (x, y); stores the detached outputs in ``captured``.

    ``forward_only`` (EoSAda, DCAO): returns the loss, the optimizer differentiates it.
    Otherwise the standard closure (zero_grad, forward, backward), which raises
    :class:`NonFiniteLossError` before ``backward`` when the loss is not finite.
    """
    if forward_only:
        def closure():
            out = model(x)
            captured.setdefault("out", out.detach())
            return loss_fn(out, y)
        return closure

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
    return closure


def _trajectory(rec, steps, track_k, adam_like, diverged_at, params_rec, batch_tracked=False,
                tracked_extras=()) -> Trajectory:
    """The records as a Trajectory of steps + 1 rows (NaN after a divergence)."""
    n_rec = steps + 1
    arrays = {}
    for c in _COLUMNS:
        a = np.full(n_rec, np.nan)
        a[: len(rec[c])] = np.asarray(rec[c], dtype=np.float64)
        arrays[c] = a
    extra = {c: arrays[c] for c in ("accuracy", "gap", "residual1", "track_loss", "hvp_tracking",
                                    "hvp_optimizer", "time_train", "time_curvature")}
    if batch_tracked:
        extra.update({c: arrays[c] for c in _BATCH_COLUMNS})
    for c, names in (("ggn1", ("ggn1",)), ("trace", ("trace", "trace_se"))):
        if c in tracked_extras:
            extra.update({n: arrays[n] for n in names})
    return Trajectory(
        step=np.arange(n_rec), loss=arrays["loss"], theta=None, grad_norm=arrays["grad_norm"],
        sharpness=arrays["sharpness"], lambda2=arrays["lambda2"] if track_k > 1 else None,
        lr=arrays["lr"], preconditioned_sharpness=arrays["preconditioned_sharpness"] if adam_like else None,
        diverged=diverged_at >= 0, diverged_at=diverged_at, extra=extra, params=params_rec)
