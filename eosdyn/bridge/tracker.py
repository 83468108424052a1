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
- the mean loss on the tracked data.

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

import torch

from .._validate import positive
from ..curvature.operators import preconditioned
from .curvature import _check_k, _run, preconditioner_vector
from .hvp import HessianOperator
from .optim import _CurvatureOptimizer

MEASURED = ("sharpness", "lambda2", "gap", "preconditioned_sharpness", "residual1", "track_loss")


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
    max_iter : int, optional
        HVP budget of each Lanczos run.
    hvp_method : str
        See :class:`~eosdyn.bridge.hvp.HessianOperator` (``repeated=True``).
    seed : int
        Seed of the first Lanczos start (later runs start from the last eigenvectors).

    Attributes
    ----------
    operator : HessianOperator
    n_hvp : int
        HVPs taken by all measurements so far.
    eigenvectors, preconditioned_eigenvectors : tensor or None
        The warm starts of the next measurement.
    """

    def __init__(self, model, loss_fn, data, k: int = 2, tol: float | None = 1e-6,
                 max_iter: int | None = None, hvp_method: str = "auto", seed: int = 0):
        # repeated: one measurement takes many products at the same θ (the retained-graph HVP
        # on a single batch); the graph is released after each, so training never holds it
        self.operator = HessianOperator(model, loss_fn, data, hvp_method, repeated=True)
        self.k = _check_k(k, self.operator.dim)
        self.tol = None if tol is None else positive("tol", tol)
        self.max_iter, self.seed = max_iter, seed
        self.eigenvectors = None
        self.preconditioned_eigenvectors = None
        self.n_hvp = 0

    def _top(self, matvec, k, v0, preconditioned_):
        res = _run(self.operator, matvec, k, v0, self.tol, self.max_iter, "lanczos", self.seed,
                   preconditioned_)
        self.n_hvp += res.n_hvp
        return res

    def measure(self, optimizer=None) -> dict:
        """Curvature at the current parameters: a dict with keys among :data:`MEASURED`.

        Always ``sharpness`` (λ₁), ``residual1`` (its Lanczos residual ‖Hu − λ₁u‖) and
        ``track_loss``; ``lambda2`` and ``gap`` when k ≥ 2; ``preconditioned_sharpness``
        when ``optimizer`` is Adam-style and has taken a step (it has no P before).
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
        return out

    def state_dict(self) -> dict:
        """The warm starts and the HVP count (the keys of a trainer checkpoint)."""
        return {"v_track": self.eigenvectors, "v_pre": self.preconditioned_eigenvectors,
                "hvp_tracking": self.n_hvp}

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.eigenvectors, self.preconditioned_eigenvectors = state["v_track"], state["v_pre"]
        self.n_hvp = int(state["hvp_tracking"])
