"""Sharpness of torch models: top Hessian eigenpairs on the device, plain and preconditioned.

Both functions wrap the model's exact Hessian-vector product (:class:`~eosdyn.bridge.hvp.
HessianOperator`) as a matvec on flat tensors and hand it to the curvature module's
:func:`eosdyn.curvature.top_eigenpairs` — the same thick-restart Lanczos the toy world
uses, run here on torch tensors on the model's device (only the small projected
matrices go to the host). The sharpness is the largest *algebraic* eigenvalue (which="LA"):
a Hessian away from a minimum is indefinite, and the largest-magnitude eigenvalue can
be a negative one.

- :func:`sharpness`: λ₁ ≥ … ≥ λ_k of ∇²L, L the full-data-set mean loss.
- :func:`preconditioned_sharpness`: λ_max(P⁻¹H) for a diagonal preconditioner P, e.g.
  Adam's P = diag(√v̂ + ε) (Cohen et al. 2022, "Adaptive gradient methods at the edge
  of stability", §3: Adam sits at the edge when λ_max(P⁻¹H) ≈ (2 + 2β₁)/((1 − β₁)η)).
  P⁻¹H is not symmetric, but it is similar to P^(-1/2) H P^(-1/2), which is: the two
  share their eigenvalues, and Lanczos runs on the symmetric form.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .._validate import nonneg_int, positive
from ..curvature.operators import positive_diagonal, preconditioned
from ._common import check_flat_vector, flatten
from .hvp import HessianOperator


def _top_eigenpairs():
    from ..curvature import top_eigenpairs

    return top_eigenpairs


@dataclass
class SharpnessResult:
    """Top-k Hessian eigenpairs of a model's loss, with how they were obtained.

    Attributes
    ----------
    eigenvalues : ndarray (k,)
        Host float64, descending (largest algebraic first). ``eigenvalues[0]`` is the sharpness.
    eigenvectors : tensor (n, k)
        Unit columns on the model's device and dtype, over the trainable parameters in
        ``model.parameters()`` order; pass them as ``v0`` to warm-start the next call.
        For :func:`preconditioned_sharpness` they are eigenvectors of the symmetric form
        P^(-1/2) H P^(-1/2) (those of P⁻¹H are P^(-1/2) times them).
    residual_norms : ndarray (k,)
        ‖A u − λ u‖ per pair.
    n_hvp : int
        Hessian-vector products taken (each one a pass over the whole data set).
    converged : bool
    hvp_info : dict
        The :class:`~eosdyn.bridge.hvp.HVPInfo` conventions (method, train/eval mode,
        BatchNorm, batch weighting, dtype, device).
    which, method, tol : the eigensolver's settings ("LA" = largest algebraic; tol is NaN
        when only ``eigval_tol`` was given).
    extra : dict
        ``eigval_err_est`` (lanczos: the estimated |λ − θ| per pair), ``eigval_tol`` when
        given, ``preconditioner`` for :func:`preconditioned_sharpness`.
    """

    eigenvalues: np.ndarray
    eigenvectors: torch.Tensor
    residual_norms: np.ndarray
    n_hvp: int
    converged: bool
    hvp_info: dict
    which: str = "LA"
    method: str = "lanczos"
    tol: float = float("nan")
    preconditioned: bool = False
    extra: dict = field(default_factory=dict)

    @property
    def sharpness(self) -> float:
        """λ₁, the largest algebraic eigenvalue."""
        return float(self.eigenvalues[0])

    @property
    def lambda2(self) -> float:
        """λ₂ (NaN when k = 1)."""
        return float(self.eigenvalues[1]) if self.eigenvalues.shape[0] > 1 else float("nan")

    @property
    def gap(self) -> float:
        """The spectral gap λ₁ − λ₂ (NaN when k = 1)."""
        return self.sharpness - self.lambda2


def _check_k(k, n):
    k = nonneg_int("k", k, minimum=1)
    if k > n:
        raise ValueError(f"k must be in [1, number of trainable parameters] = [1, {n}], got {k}")
    return k


def _run(op, matvec, k, v0, tol, max_iter, method, seed, preconditioned, extra=None, eigval_tol=None):
    n = op.dim
    k = _check_k(k, n)
    if tol is not None:
        tol = positive("tol", tol)
    if eigval_tol is not None:
        eigval_tol = positive("eigval_tol", eigval_tol)
    if v0 is not None:
        if not isinstance(v0, torch.Tensor):
            v0 = torch.as_tensor(np.asarray(v0, dtype=np.float64))
        if v0.ndim == 1:
            v0 = check_flat_vector("v0", v0, n, op.device, op.dtype)
        elif v0.ndim == 2 and v0.shape[0] == n:
            v0 = v0.detach().to(device=op.device, dtype=op.dtype)
        else:
            raise ValueError(f"v0 must have shape ({n},) or ({n}, j), got {tuple(v0.shape)}")
    like = torch.empty(0, device=op.device, dtype=op.dtype)
    before = op.n_hvp
    res = _top_eigenpairs()(matvec, n, k=k, method=method, which="LA", tol=tol, max_iter=max_iter,
                            v0=v0, seed=seed, like=like, eigval_tol=eigval_tol)
    extra = dict(extra or {})
    if eigval_tol is not None:
        extra["eigval_tol"] = float(res.info.get("eigval_tol", eigval_tol))
    if "eigval_err_est" in res.info:
        extra["eigval_err_est"] = np.asarray(res.info["eigval_err_est"], dtype=np.float64)
    return SharpnessResult(
        eigenvalues=np.asarray(res.eigenvalues, dtype=np.float64),
        eigenvectors=res.eigenvectors,
        residual_norms=np.asarray(res.residual_norms, dtype=np.float64),
        n_hvp=op.n_hvp - before,
        converged=bool(res.converged),
        hvp_info=op.info.to_dict(),
        which=res.which,
        method=res.method,
        tol=float(res.tol),
        preconditioned=preconditioned,
        extra=extra,
    )


PRESOLVES = (None, "float32")
PRESOLVE_EIGVAL_TOL = 1e-5   # what a float32 Lanczos reliably reaches (relative eigenvalue error)
PRESOLVE_MAX_HVP = 60


def _presolve(model, loss_fn, data, k, v0, seed, hvp_method, target):
    """Float32 Lanczos on a float32 copy of ``model``: a start for the float64 solve."""
    import copy

    low = copy.deepcopy(model).to(torch.float32)
    op32 = HessianOperator(low, loss_fn, data, hvp_method, repeated=True)
    return _run(op32, op32.matvec, k, v0, None, PRESOLVE_MAX_HVP, "lanczos", seed, False,
                eigval_tol=max(target, PRESOLVE_EIGVAL_TOL))


def sharpness(model, loss_fn, data, k: int = 1, v0=None, tol: float | None = None,
              max_iter: int | None = None, method: str = "lanczos", seed: int = 0,
              hvp_method: str = "auto", eigval_tol: float | None = None,
              presolve: str | None = None) -> SharpnessResult:
    """The top-k eigenpairs of the Hessian of the full-data-set mean loss of ``model``.

    Parameters
    ----------
    model, loss_fn, data
        As for :func:`~eosdyn.bridge.hvp`: ``loss_fn(outputs, targets)`` is a batch mean,
        ``data`` a pair or an iterable of pairs, batches weighted by n_b/N.
    k : int, 1 <= k <= number of trainable parameters
    v0 : tensor (n,) or (n, j), optional
        Warm start, e.g. the previous call's ``eigenvectors``.
    tol : float, optional
        Relative residual tolerance ‖Hu − λu‖ ≤ tol·|λ| (default, when ``eigval_tol`` is
        not given either: the curvature module's, 1e-8 in float64 and 1e-4 in float32).
    max_iter : int, optional
        Budget of HVPs.
    method : {"lanczos", "power", "exact"}
        Passed to :func:`eosdyn.curvature.top_eigenpairs` ("exact" takes n HVPs).
    seed : int
        Seed of the random start vector (when ``v0`` is None).
    hvp_method : {"auto", "func", "double_backward", "graph"}
        "auto" uses "graph" (the first-order graph built once and re-used by every
        product) when ``data`` is a single batch, else "func"; see
        :class:`~eosdyn.bridge.hvp.HessianOperator`. ``hvp_info["method"]`` records it.
    eigval_tol : float, optional
        Stop on the estimated *relative eigenvalue error* instead of the residual:
        |λ − θ| ≲ eigval_tol·|θ|, from min(r, max(r²/δ, last change of θ)), δ the gap to
        the next Ritz value (see :func:`eosdyn.curvature.top_eigenpairs`). The error is
        quadratic in the residual, so this takes far fewer HVPs than ``tol`` at the same
        number; it assumes the wanted eigenvalues are well separated from the rest (a few %
        relative gap or more): with near-degenerate λ₁ ≈ λ₂ it is more exposed than ``tol``
        to stopping on λ₂ before λ₁ enters the Krylov space, so use ``tol`` there. With both given, both must
        hold. The estimates are returned in ``extra["eigval_err_est"]``.
    presolve : {None, "float32"}
        ``"float32"`` (float64 models, method "lanczos"): first run Lanczos on a float32
        copy of the model — an HVP there costs about half as much on a CPU — to relative
        eigenvalue error max(eigval_tol or tol, 1e-5) or 60 HVPs, then start the float64
        Lanczos from its eigenvectors. The float64 solve applies the stopping rule you ask
        for, so the accuracy is that of float64; only the cost changes (the float64 stage
        typically needs 2–3 HVPs). ``n_hvp`` counts the float64 HVPs;
        ``extra["presolve"]`` holds the float32 stage's HVP count and eigenvalues. Skipped
        (and recorded as such) for models that are not float64.

    Returns
    -------
    SharpnessResult
        eigenvalues (descending), eigenvectors on the device, residual norms, HVP count,
        and the conventions used.
    """
    if presolve not in PRESOLVES:
        raise ValueError(f"presolve must be None or 'float32', got {presolve!r}")
    op = HessianOperator(model, loss_fn, data, hvp_method, repeated=True)
    pre = None
    if presolve is not None and op.dtype == torch.float64 and method == "lanczos":
        target = (positive("eigval_tol", eigval_tol) if eigval_tol is not None
                  else positive("tol", tol) if tol is not None else 0.0)
        pre = _presolve(model, loss_fn, data, k, v0, seed, hvp_method, target)
        v0 = pre.eigenvectors
    res = _run(op, op.matvec, k, v0, tol, max_iter, method, seed, False, eigval_tol=eigval_tol)
    if presolve is not None:
        res.extra["presolve"] = (
            {"dtype": "float32", "n_hvp": pre.n_hvp, "eigenvalues": pre.eigenvalues,
             "converged": pre.converged} if pre is not None
            else {"skipped": f"presolve applies to float64 models with method='lanczos' "
                             f"(this one: {str(op.dtype).replace('torch.', '')}, method={method!r})"})
    return res


# ------------------------------------------------------------------ preconditioned
def _adam_preconditioner(optimizer, params) -> list:
    """Adam's P = √(v / (1 − β₂ᵗ)) + ε per parameter (PyTorch's convention; v̂ with amsgrad's max)."""
    by_id = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            by_id[id(p)] = group
    out = []
    for i, p in enumerate(params):
        group = by_id.get(id(p))
        if group is None:
            raise ValueError(f"preconditioner: model parameter {i} (shape {tuple(p.shape)}) is not "
                             "managed by the optimizer")
        st = optimizer.state.get(p, {})
        if "exp_avg_sq" not in st:
            raise ValueError(f"preconditioner: {type(optimizer).__name__} has no second-moment state "
                             "('exp_avg_sq') for a parameter: pass an Adam-style optimizer that has "
                             "taken at least one step")
        v = st["max_exp_avg_sq"] if group.get("amsgrad", False) and "max_exp_avg_sq" in st else st["exp_avg_sq"]
        t = float(st["step"])
        b2 = group["betas"][1]
        c2 = 1.0 - b2 ** t
        out.append(torch.sqrt(v.detach() / c2) + group["eps"])
    return out


def preconditioner_vector(preconditioner, params) -> torch.Tensor:
    """The diagonal P as a flat vector over ``params`` (see :func:`preconditioned_sharpness`)."""
    n = sum(p.numel() for p in params)
    device, dtype = params[0].device, params[0].dtype
    if isinstance(preconditioner, torch.optim.Optimizer):
        P = flatten(_adam_preconditioner(preconditioner, params)).to(device=device, dtype=dtype)
    elif isinstance(preconditioner, (list, tuple)) and all(isinstance(t, torch.Tensor) for t in preconditioner):
        if len(preconditioner) != len(params) or any(t.shape != p.shape for t, p in zip(preconditioner, params)):
            raise ValueError("preconditioner given as tensors must have one tensor per trainable "
                             "parameter, of the same shapes")
        P = flatten(preconditioner).to(device=device, dtype=dtype)
    else:
        P = check_flat_vector("preconditioner", preconditioner, n, device, dtype)
    return positive_diagonal("preconditioner", P, n)


def preconditioned_sharpness(model, loss_fn, data, preconditioner, k: int = 1, v0=None,
                             tol: float | None = None, max_iter: int | None = None,
                             method: str = "lanczos", seed: int = 0,
                             hvp_method: str = "auto", eigval_tol: float | None = None) -> SharpnessResult:
    """The top-k eigenvalues of P⁻¹H for a diagonal preconditioner P ≻ 0.

    ``preconditioner`` is either a ``torch.optim.Adam``/``AdamW`` (or any optimizer whose
    state holds Adam's ``exp_avg_sq`` and ``step``), giving PyTorch Adam's
    P = √(v/(1 − β₂ᵗ)) + ε (``max_exp_avg_sq`` with amsgrad) — the matrix that divides the
    step, θ ← θ − η P⁻¹ m̂; or the diagonal itself, as a flat tensor (n,) or a list of
    tensors shaped like the parameters.

    Computed as the eigenvalues of the symmetric P^(-1/2) H P^(-1/2) (similar to P⁻¹H; the
    operator is :func:`eosdyn.curvature.preconditioned`), by Lanczos on the device. Other
    arguments as in :func:`sharpness`. Every entry of P must be finite and > 0 (a zero would
    make λ_max(P⁻¹H) undefined): ValueError otherwise.
    """
    op = HessianOperator(model, loss_fn, data, hvp_method, repeated=True)
    P = preconditioner_vector(preconditioner, op.params)
    return _run(op, preconditioned(op, P), k, v0, tol, max_iter, method, seed, True,
                extra={"preconditioner": type(preconditioner).__name__}, eigval_tol=eigval_tol)


def batch_sharpness(model, loss_fn, data, batch_size: int, *, rel_std_error: float = 0.005,
                    min_batches: int = 10, max_batches: int = 1000, replacement: bool = False,
                    seed: int = 0, hvp_method: str = "auto"):
    """Batch sharpness E_B[g_Bᵀ H_B g_B / ‖g_B‖²] of a torch model (Andreyev & Beneventano 2024).

    For each fresh batch B (``batch_size`` examples drawn uniformly from ``data``, without
    replacement by default): one backward pass for the batch gradient g_B, one Hessian-vector
    product H_B g_B of the batch loss (:class:`~eosdyn.bridge.hvp.HessianOperator`), and the
    ratio g_BᵀH_Bg_B/‖g_B‖² — the curvature of the batch loss along its own step, which SGD
    holds at 2/η ("Edge of Stochastic Stability", arXiv 2412.20553), while the full-batch
    λ_max sits below 2/η. Batches are added until the standard error is below
    ``rel_std_error`` of the mean, with ``min_batches`` to ``max_batches`` batches
    (:func:`eosdyn.analysis.sgd.adaptive_batch_mean`, the toy losses' stopping rule).

    Parameters
    ----------
    model : torch.nn.Module (used in the mode it is in).
    loss_fn : ``loss_fn(outputs, targets)`` → the batch-mean loss.
    data : (inputs, targets) pair of tensors, the whole data set the batches come from.
    batch_size : int in [1, n].
    seed : the batches' torch generator seed (same seed, same batches).

    Returns
    -------
    :class:`eosdyn.analysis.BatchSharpness`: ``value``, ``ci95`` (95 % Student-t interval),
    ``expectation_inside`` (E[g_BᵀH_Bg_B]/E[‖g_B‖²] over the same batches), ``n_batches``,
    ``rel_std_error`` and ``n_hvp`` (one per batch).

    The model is used in the mode it is in; its buffers (BatchNorm's running statistics)
    are restored afterwards, so measuring leaves the model as it was. In train mode with
    dropout, the gradient and the HVP of a batch come from two forward passes with their
    own dropout masks: measure in eval mode for a deterministic batch loss.

    Raises ValueError if a batch's gradient is zero (the ratio is undefined there: the model
    fits that batch exactly), and for a batch size outside [1, n]. Warns (RuntimeWarning)
    if ``max_batches`` ran out before ``rel_std_error`` was reached.
    """
    from ..analysis.sgd import adaptive_batch_mean

    if not (isinstance(data, (tuple, list)) and len(data) == 2 and all(torch.is_tensor(t) for t in data)):
        raise TypeError("data must be one (inputs, targets) pair of tensors: the data set the batches are drawn from")
    X, Y = data
    n = X.shape[0]
    if Y.shape[0] != n:
        raise ValueError(f"inputs and targets must have the same length, got {n} and {Y.shape[0]}")
    B = nonneg_int("batch_size", batch_size, minimum=1)
    if n < B and not replacement:
        raise ValueError(f"batch_size must be in [1, n = {n}] when sampling without replacement, got {B}")
    rel = positive("rel_std_error", rel_std_error)
    lo_n = nonneg_int("min_batches", min_batches, minimum=2)
    hi_n = nonneg_int("max_batches", max_batches, minimum=lo_n)
    params = [p for p in model.parameters() if p.requires_grad]
    gen = torch.Generator().manual_seed(int(seed))

    def draw(k):
        num, den = np.empty(k), np.empty(k)
        for j in range(k):
            idx = (torch.randint(n, (B,), generator=gen) if replacement
                   else torch.randperm(n, generator=gen)[:B]).to(X.device)
            xb, yb = X[idx], Y[idx]
            g = flatten(torch.autograd.grad(loss_fn(model(xb), yb), params)).detach()
            gg = float(g @ g)
            if not gg > 0.0 or not np.isfinite(gg):
                raise ValueError(f"a batch's gradient is {'zero' if gg == 0 else 'not finite'}: batch sharpness "
                                 f"g_BᵀH_Bg_B/‖g_B‖² is undefined there (the model fits that batch exactly, "
                                 f"or the loss is not finite)")
            Hg = HessianOperator(model, loss_fn, (xb, yb), hvp_method).matvec(g)
            num[j] = float(g @ Hg)
            den[j] = gg
        return num, den

    saved = {name: buf.detach().clone() for name, buf in model.named_buffers()}
    try:
        return adaptive_batch_mean(draw, rel, lo_n, hi_n, n_hvp_per_batch=1)
    finally:  # the gradient's forward passes in train mode update BatchNorm's statistics
        with torch.no_grad():
            for name, buf in model.named_buffers():
                buf.copy_(saved[name])
