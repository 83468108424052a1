"""Curvature tracking for a training run: :class:`CurvatureTracker`.

At the model's *current* parameters, on a fixed data set (that of the tracked Hessian),
:meth:`CurvatureTracker.measure` finds

- λ₁ ≥ … ≥ λ_k of the Hessian H of the mean loss (largest algebraic, the sharpness), by
  the Lanczos of :func:`~eosdyn.bridge.sharpness`, warm-started from the previous
  measurement's eigenvectors; with k ≥ 2 also λ₂ and the gap λ₁ − λ₂;
- for Adam-style optimizers (``torch.optim.Adam``, ``AdamW``), the preconditioned
  sharpness λ_max(P⁻¹H) with Adam's P = √v̂ + ε, the top eigenvalue of the operator
  :func:`eosdyn.curvature.preconditioned` (H, P) (Cohen et al. 2022, "Adaptive gradient
  methods at the edge of stability", §3);
- the mean loss on the tracked data;
- optionally (``batch_size`` given), the *batch sharpness* E_B[g_Bᵀ H_B g_B / ‖g_B‖²] of
  Andreyev & Beneventano ("Edge of Stochastic Stability", arXiv 2412.20553), g_B and H_B the
  gradient and Hessian of the mean loss of a uniformly drawn batch B of ``batch_size``
  examples: :func:`~eosdyn.bridge.batch_sharpness` (one HVP per fresh batch, batches added
  until the relative standard error reaches its target), with its 95 % Student-t interval
  and its HVP count. Under SGD with step size η it settles near 2/η, while λ₁ stays below.
  Measurement at record t draws its batches from the seed :func:`batch_sharpness_seed`
  (``seed``, t), so it is reproducible and the same after a resume.

Two functions read what an optimizer has in force: :func:`step_size_in_force` and
:func:`optimizer_hvps` (the HVPs of EoSAda's/DCAO's own curvature probes).

The tracker is independent of :func:`~eosdyn.bridge.train`; a hand-written loop uses it as::

    tracker = CurvatureTracker(model, loss_fn, (X, Y), k=2)
    for t in range(steps):
        if t % 10 == 0:
            print(t, tracker.measure(optimizer))   # {"sharpness": ..., "lambda2": ..., ...}
        ...one optimizer step...
"""
from __future__ import annotations

import numpy as np
import torch

from .._validate import nonneg_int, positive
from ..curvature.operators import preconditioned
from .curvature import _check_k, _run, preconditioner_vector
from .hvp import HessianOperator
from .optim import _CurvatureOptimizer

MEASURED = ("sharpness", "lambda2", "gap", "preconditioned_sharpness", "residual1", "track_loss",
            "batch_sharpness", "batch_sharpness_lo", "batch_sharpness_hi", "batch_sharpness_hvp",
            "ggn1", "trace", "trace_se")
#: What a tracker measures besides λ₁ (:class:`CurvatureTracker`'s ``extras``).
EXTRAS = ("ggn1", "trace")
#: The keyword arguments of :func:`~eosdyn.bridge.batch_sharpness` a tracker passes on.
BATCH_SHARPNESS_OPTIONS = ("rel_std_error", "min_batches", "max_batches", "replacement")


def batch_sharpness_seed(seed: int, step: int) -> int:
    """The seed of the batches of the batch-sharpness measurement at record ``step``.

    A 63-bit integer from numpy's ``SeedSequence([seed, step])``: independent streams for
    different (seed, step), a pure function of both (a resumed run measures with the same
    batches). Pass it as ``seed=`` to :func:`~eosdyn.bridge.batch_sharpness` to repeat a
    measurement by hand.
    """
    seed = nonneg_int("seed", seed)
    step = nonneg_int("step", step)
    hi, lo = np.random.SeedSequence([seed, step]).generate_state(2, np.uint32)
    return int((int(hi) << 32 | int(lo)) & 0x7FFF_FFFF_FFFF_FFFF)


def batch_sharpness_data(data, name: str = "track_data"):
    """``data`` as the one (inputs, targets) pair of tensors that batches are drawn from.

    A pair is returned as it is; a list or tuple of pairs is concatenated (the data set split
    into batches); anything else (a ``DataLoader``, a generator) raises ValueError: the batch
    sharpness samples batches uniformly from the whole data set, which must be given.
    """
    from ._common import _is_pair

    if _is_pair(data):
        return data[0], data[1]
    if isinstance(data, (list, tuple)) and data and all(_is_pair(b) for b in data):
        return torch.cat([b[0] for b in data]), torch.cat([b[1] for b in data])
    raise ValueError(f"batch sharpness draws its batches from the whole data set: {name} must be an "
                     f"(inputs, targets) pair of tensors or a list of such pairs, got {type(data).__name__}; "
                     f"pass track_data=(X, Y)")


def is_adam_like(optimizer) -> bool:
    """Adam and AdamW (and subclasses): their step is θ ← θ − η P⁻¹ m̂ with P = √v̂ + ε."""
    return isinstance(optimizer, (torch.optim.Adam, torch.optim.AdamW))


def step_size_in_force(optimizer) -> float:
    """The step size of the optimizer's first param group.

    EoSAda/DCAO: η of their last step (``lr_in_force``; NaN before the first), which
    depends on the probed curvature; any other optimizer: ``param_groups[0]["lr"]``.
    """
    if isinstance(optimizer, _CurvatureOptimizer):
        return float(optimizer.lr_in_force[0])
    return float(optimizer.param_groups[0].get("lr", float("nan")))


def optimizer_hvps(optimizer) -> int:
    """HVPs taken by the optimizer's own curvature probes (EoSAda, DCAO; 0 for others)."""
    return int(optimizer.n_hvp) if isinstance(optimizer, _CurvatureOptimizer) else 0


class CurvatureTracker:
    """Measures the top Hessian eigenvalues (and λ_max(P⁻¹H) for Adam) during training.

    Parameters
    ----------
    model, loss_fn, data
        As for :func:`~eosdyn.bridge.sharpness`: the Hessian is that of the mean of
        ``loss_fn`` over ``data`` (batches weighted by n_b/N), in the model's mode.
    k : int, 1 <= k <= number of trainable parameters
        Eigenvalues measured (2 gives λ₂ and the gap).
    tol : float or None
        Lanczos relative residual tolerance (None: the curvature module's default).
    eigval_tol : float or None
        Stop instead (or also, with ``tol``) on the estimated relative *eigenvalue* error, as
        :func:`~eosdyn.bridge.sharpness` does: warm-started from the last measurement's
        eigenvectors, ``tol=None, eigval_tol=1e-3`` typically takes a few HVPs a measurement.
    max_iter : int, optional
        HVP budget of each Lanczos run.
    hvp_method : str
        See :class:`~eosdyn.bridge.hvp.HessianOperator` (``repeated=True``).
    seed : int
        Seed of the first Lanczos start (later runs start from the last eigenvectors), and
        of the batch-sharpness batches (:func:`batch_sharpness_seed`).
    batch_size : int in [1, n], optional
        Also measure the batch sharpness for batches of this size, drawn from ``data``
        (which must then be one pair, or a list of pairs: :func:`batch_sharpness_data`).
    batch_options : dict, optional
        Passed to :func:`~eosdyn.bridge.batch_sharpness` (keys among
        :data:`BATCH_SHARPNESS_OPTIONS`; default: its own, relative standard error 0.5 %
        with 10 to 1000 batches).
    extras : sequence of names among :data:`EXTRAS`
        ``"ggn1"``: the top Gauss–Newton eigenvalue (Lanczos on
        :func:`~eosdyn.bridge.curvature_operator` ``kind="ggn"``, warm-started; at the edge with
        MSE it nearly equals λ₁, Cohen et al. 2021, §5); ``"trace"``: tr H by Hutch++
        (:func:`~eosdyn.bridge.trace`, ``trace_matvecs`` products, seeded per step), with its
        standard error ``trace_se``.

    Attributes
    ----------
    operator : HessianOperator
    n_hvp : int
        HVPs taken by all measurements so far.
    eigenvectors, preconditioned_eigenvectors : tensor or None
        The warm starts of the next measurement.
    """

    def __init__(self, model, loss_fn, data, k: int = 2, tol: float | None = 1e-6,
                 max_iter: int | None = None, hvp_method: str = "auto", seed: int = 0,
                 batch_size: int | None = None, batch_options: dict | None = None, extras=(),
                 trace_matvecs: int = 30, eigval_tol: float | None = None):
        # repeated: one measurement takes many products at the same θ (the retained-graph HVP
        # on a single batch); the graph is released after each, so training never holds it
        self.operator = HessianOperator(model, loss_fn, data, hvp_method, repeated=True)
        self.k = _check_k(k, self.operator.dim)
        self.tol = None if tol is None else positive("tol", tol)
        self.eigval_tol = None if eigval_tol is None else positive("eigval_tol", eigval_tol)
        self.max_iter, self.seed = max_iter, seed
        self.eigenvectors = None
        self.preconditioned_eigenvectors = None
        self.n_hvp = 0
        self.batch_size, self.batch_data, self.batch_options = None, None, {}
        if batch_size is not None:
            from ._common import _move

            X, Y = batch_sharpness_data(data, "data")
            self.batch_data = (_move(X, self.operator.device, self.operator.dtype),
                               _move(Y, self.operator.device, self.operator.dtype))
            n = int(self.batch_data[0].shape[0])
            self.batch_size = nonneg_int("batch_size", batch_size, minimum=1)
            if self.batch_size > n:
                raise ValueError(f"batch_size must be in [1, n = {n}] (the tracked data set's size), "
                                 f"got {self.batch_size}")
            opts = dict(batch_options or {})
            unknown = sorted(set(opts) - set(BATCH_SHARPNESS_OPTIONS))
            if unknown:
                raise ValueError(f"batch_options: unknown keys {unknown}; allowed: {list(BATCH_SHARPNESS_OPTIONS)}")
            self.batch_options = opts
        elif batch_options:
            raise ValueError("batch_options needs batch_size")
        self._hvp_method = hvp_method
        extras = tuple(extras)
        bad = sorted(set(extras) - set(EXTRAS))
        if bad:
            raise ValueError(f"extras: unknown names {bad}; allowed: {list(EXTRAS)}")
        self.extras = extras
        self.trace_matvecs = nonneg_int("trace_matvecs", trace_matvecs, minimum=3)
        self._data = data
        self.ggn_eigenvectors = None
        self._ggn = None
        if "ggn1" in extras:
            from .operators import curvature_operator

            self._ggn = curvature_operator(model, loss_fn, data, kind="ggn")

    def _top(self, matvec, k, v0, preconditioned_):
        res = _run(self.operator, matvec, k, v0, self.tol, self.max_iter, "lanczos", self.seed,
                   preconditioned_, eigval_tol=self.eigval_tol)
        self.n_hvp += res.n_hvp
        return res

    def measure(self, optimizer=None, step: int = 0) -> dict:
        """Curvature at the current parameters: a dict with keys among :data:`MEASURED`.

        Always ``sharpness`` (λ₁), ``residual1`` (its Lanczos residual ‖Hu − λ₁u‖) and
        ``track_loss``; ``lambda2`` and ``gap`` when k ≥ 2; ``preconditioned_sharpness``
        when ``optimizer`` is Adam-style and has taken a step (it has no P before);
        with ``batch_size``, ``batch_sharpness``, its 95 % interval ``batch_sharpness_lo``/
        ``_hi`` and ``batch_sharpness_hvp`` (the HVPs of this measurement, one per batch),
        measured with the batches of seed :func:`batch_sharpness_seed` (``seed``, ``step``).
        Every HVP counts in :attr:`n_hvp`.
        """
        op = self.operator
        res = self._top(op.matvec, self.k, self.eigenvectors, False)
        self.eigenvectors = res.eigenvectors
        out = {"sharpness": res.sharpness, "residual1": float(res.residual_norms[0])}
        if self.k > 1:
            out["lambda2"], out["gap"] = res.lambda2, res.gap
        if optimizer is not None and is_adam_like(optimizer) and len(optimizer.state) > 0:
            P = preconditioner_vector(optimizer, op.params)
            pres = self._top(preconditioned(op, P), 1, self.preconditioned_eigenvectors, True)
            self.preconditioned_eigenvectors = pres.eigenvectors
            out["preconditioned_sharpness"] = pres.sharpness
        out["track_loss"] = op.loss()
        op.release()
        if self.batch_size is not None:
            from .curvature import batch_sharpness

            bs = batch_sharpness(op.model, op.loss_fn, self.batch_data, self.batch_size,
                                 seed=batch_sharpness_seed(self.seed, step), hvp_method=self._hvp_method,
                                 **self.batch_options)
            out.update(batch_sharpness=float(bs.value), batch_sharpness_lo=float(bs.ci95[0]),
                       batch_sharpness_hi=float(bs.ci95[1]), batch_sharpness_hvp=float(bs.n_hvp))
            self.n_hvp += int(bs.n_hvp)
        if self._ggn is not None:
            from ..curvature import top_eigenpairs

            before = self._ggn.n_hvp
            like = self._ggn.params[0].detach()
            gres = top_eigenpairs(self._ggn.matvec, self._ggn.dim, k=1, tol=self.tol, max_iter=self.max_iter,
                                  v0=self.ggn_eigenvectors, seed=self.seed, like=like)
            self.ggn_eigenvectors = gres.eigenvectors[:, 0]
            out["ggn1"] = float(gres.eigenvalues[0])
            self.n_hvp += int(self._ggn.n_hvp - before)
        if "trace" in self.extras:
            from .operators import trace

            tr = trace(op.model, op.loss_fn, self._data, kind="hessian", method="hutch++",
                       n_matvecs=self.trace_matvecs, seed=batch_sharpness_seed(self.seed, step) % (2 ** 31))
            out["trace"], out["trace_se"] = float(tr.estimate), float(tr.standard_error)
            self.n_hvp += int(tr.n_hvp)
        return out

    def state_dict(self) -> dict:
        """The warm starts and the HVP count (the keys of a trainer checkpoint)."""
        state = {"v_track": self.eigenvectors, "v_pre": self.preconditioned_eigenvectors,
                 "hvp_tracking": self.n_hvp}
        if self._ggn is not None:
            state["v_ggn"] = self.ggn_eigenvectors          # the GGN warm start (extras=["ggn1"])
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.eigenvectors, self.preconditioned_eigenvectors = state["v_track"], state["v_pre"]
        self.n_hvp = int(state["hvp_tracking"])
        self.ggn_eigenvectors = state.get("v_ggn")
