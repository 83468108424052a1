"""Curvature of a torch model beyond the Hessian: Gauss–Newton and Fisher products, block
sharpness, trace and spectral density, in one call each.

The objective is the full-data-set loss of :mod:`eosdyn.bridge.hvp`,
L(θ) = Σ_b (n_b/N) ℓ_b(θ), ℓ_b = loss_fn(f_b(θ), y_b) with f_b = model(x_b) the batch's
outputs. Every operator below is the same weighted sum of per-batch operators, so it is
the curvature of *that* L (batch split and reduction included).

Kinds (``curvature_operator(model, loss_fn, data, kind=...)``):

``"hessian"``
    ∇²L, by :class:`~eosdyn.bridge.hvp.HessianOperator` (any twice differentiable loss).
``"ggn"``
    The generalised Gauss–Newton matrix G = Σ_b (n_b/N) J_bᵀ (∇²_f ℓ_b) J_b, J_b = ∂f_b/∂θ
    (Schraudolph, "Fast curvature matrix-vector products for second-order gradient
    descent", Neural Computation 14(7), 2002; Martens, "New insights and perspectives on
    the natural gradient method", JMLR 21, 2020, §8). G v is computed as a Jacobian-vector
    product J v (forward mode), the output Hessian applied to it in closed form, and a
    vector-Jacobian product Jᵀ(·) (reverse mode): no second derivative of the model is
    taken. G is positive semi-definite because both supported losses are convex in f.
``"fisher"``
    The (true) Fisher information F = Σ_b (n_b/N) c_b Σ_i J_iᵀ E_{y~p(·|f_i)}[∇_f φ ∇_f φᵀ] J_i
    of the likelihood whose negative log is the loss (below). **Computed exactly, by the
    GGN equivalence, not by sampling**: for the unit-variance Gaussian (MSE) E[(f−y)(f−y)ᵀ]
    = I = ∇²_f φ, and for the categorical likelihood with logits f (cross-entropy)
    E[(p − e_y)(p − e_y)ᵀ] = diag(p) − ppᵀ = ∇²_f φ; so F = G exactly (Martens 2020, §9.2;
    Kunstner, Hennig & Balles, "Limitations of the empirical Fisher approximation",
    NeurIPS 2019, §3). ``kind="fisher"`` therefore applies the GGN's product and records
    ``fisher="exact (GGN equivalence, no sampling)"`` in its info.
``"empirical_fisher"``
    The empirical Fisher EF = Σ_b (n_b/N) c_b Σ_i g_i g_iᵀ, g_i = ∇_θ φ(f_i, y_i) = J_iᵀ r_i the
    per-example gradient at the *observed* label (r_i = ∇_f φ: f_i − y_i for MSE,
    softmax(f_i) − e_{y_i} for cross-entropy). EF v = Jᵀ[c r_i (r_iᵀ (J v)_i)]_i: the same
    jvp/vjp pair as the GGN with the output matrix c·r_i r_iᵀ, so per-example gradients are
    never stored. (It is *not* the Fisher, see Kunstner et al. 2019; it is what "F = E[g gᵀ]"
    optimisers and many EoS analyses use.)

Normalisation. Each supported loss is written ℓ_b = c_b Σ_i φ(f_i, y_i) + const with φ the
per-example negative log-likelihood (½‖f − y‖² for MSE, −log softmax(f)_y for cross-entropy):

==================================================  ===============  =================
loss_fn                                              φ                c_b
==================================================  ===============  =================
``eosdyn.bridge.mse_loss`` (½·sum over outputs,      ½‖f − y‖²        1/n_b
mean over examples)
``nn.MSELoss()`` / ``F.mse_loss`` (mean over all     ½‖f − y‖²        2/(n_b·C), C =
n_b·C elements)                                                       outputs per example
``nn.MSELoss(reduction="sum")``                      ½‖f − y‖²        2
``eosdyn.bridge.cross_entropy_loss``,                −log p_y         1/n_b
``nn.CrossEntropyLoss()``, ``F.cross_entropy``
``nn.CrossEntropyLoss(reduction="sum")``             −log p_y         1
==================================================  ===============  =================

and every curvature kind uses the same c_b, weighted by n_b/N over batches: with a "mean"
loss, EF = (1/N) Σ_i g_i g_iᵀ (eosdyn's mse_loss, cross-entropy) — the brief's (1/n)Σ g gᵀ —
and GGN = F = (1/N) Σ_i J_iᵀ ∇²φ J_i; with nn.MSELoss's element mean they carry its extra
2/C. So the GGN is exactly the Gauss–Newton part of the Hessian of L (∇²L = G + Σ c r·∇²f),
the Fisher equals it, and E_y[EF] = F when the labels are drawn from the model. Cross-entropy
with ``weight``, ``label_smoothing`` or ignored targets has no such form and is refused;
soft (probability) targets are accepted (r_i = p_i − y_i). Any other loss gets a
ValueError naming the supported ones, for every kind but ``"hessian"``.

Mode and state: as for :class:`~eosdyn.bridge.hvp.HessianOperator`, the model is evaluated
in the mode it is in, with cloned buffers (no side effect on BatchNorm statistics).
"""
from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field, fields

import numpy as np
import torch
from torch import nn

from .._validate import choice, nonneg_int, positive
from ..curvature.density import SpectralDensity
from ._common import (
    as_batches,
    check_flat_vector,
    common_device_dtype,
    flatten,
    has_batchnorm,
    named_trainable_parameters,
    unflatten,
)
from .hvp import HVP_METHODS, HessianOperator
from .models import cross_entropy_loss, mse_loss

KINDS = ("hessian", "ggn", "empirical_fisher", "fisher")
GN_METHODS = ("auto", "func", "double_backward")
TRACE_METHODS = ("hutch++", "hutchinson")
SUPPORTED_LOSSES = ("eosdyn.bridge.mse_loss", "eosdyn.bridge.cross_entropy_loss",
                    "torch.nn.MSELoss (reduction 'mean' or 'sum')",
                    "torch.nn.CrossEntropyLoss (reduction 'mean' or 'sum', no weight, no label smoothing)",
                    "torch.nn.functional.mse_loss", "torch.nn.functional.cross_entropy")


# ------------------------------------------------------------------------ the loss
@dataclass(frozen=True)
class LossForm:
    """A loss written as ℓ_b = c_b Σ_i φ(f_i, y_i): its family, reduction and normalisation."""

    name: str
    family: str      # "mse" (φ = ½‖f − y‖²) or "cross_entropy" (φ = −log softmax(f)_y)
    reduction: str   # "half_mean" (eosdyn mse_loss), "mean" or "sum"
    ignore_index: int | None = None

    def scale(self, out: torch.Tensor) -> float:
        """c_b for a batch of outputs ``out`` (n_b, ...)."""
        n = out.shape[0] if out.ndim else 1
        if self.reduction == "sum":
            return 2.0 if self.family == "mse" else 1.0
        if self.family == "mse" and self.reduction == "mean":
            return 2.0 / out.numel()          # 2/(n_b·C)
        return 1.0 / n

    @property
    def normalisation(self) -> str:
        phi = "½‖f−y‖²" if self.family == "mse" else "−log softmax(f)_y"
        c = {"half_mean": "1/n_b", "sum": "2" if self.family == "mse" else "1",
             "mean": "2/(n_b·C)" if self.family == "mse" else "1/n_b"}[self.reduction]
        return f"loss_b = c_b·Σ_i φ_i, φ = {phi}, c_b = {c}; batches weighted by n_b/N"


def _unsupported(loss_fn, kind, why=""):
    name = getattr(loss_fn, "__name__", type(loss_fn).__name__)
    return ValueError(f"kind={kind!r} needs a loss with a Gauss–Newton / likelihood form{why}; "
                      f"got {name}. Supported losses: {', '.join(SUPPORTED_LOSSES)}. "
                      "(kind='hessian' accepts any twice-differentiable loss.)")


def loss_form(loss_fn, kind: str = "ggn") -> LossForm:
    """Identify ``loss_fn`` as one of the supported losses (see the module docstring).

    Raises ValueError naming the supported losses for anything else.
    """
    if loss_fn is mse_loss:
        return LossForm("eosdyn.bridge.mse_loss", "mse", "half_mean")
    if loss_fn is nn.functional.mse_loss:
        return LossForm("torch.nn.functional.mse_loss", "mse", "mean")
    if loss_fn is cross_entropy_loss or loss_fn is nn.functional.cross_entropy:
        name = ("eosdyn.bridge.cross_entropy_loss" if loss_fn is cross_entropy_loss
                else "torch.nn.functional.cross_entropy")
        return LossForm(name, "cross_entropy", "mean", ignore_index=-100)
    if isinstance(loss_fn, nn.MSELoss):
        if loss_fn.reduction not in ("mean", "sum"):
            raise _unsupported(loss_fn, kind, f" and a scalar reduction (got reduction={loss_fn.reduction!r})")
        return LossForm("torch.nn.MSELoss", "mse", loss_fn.reduction)
    if isinstance(loss_fn, nn.CrossEntropyLoss):
        if loss_fn.reduction not in ("mean", "sum"):
            raise _unsupported(loss_fn, kind, f" and a scalar reduction (got reduction={loss_fn.reduction!r})")
        if loss_fn.weight is not None:
            raise _unsupported(loss_fn, kind, " (class weights change the likelihood)")
        if loss_fn.label_smoothing != 0.0:
            raise _unsupported(loss_fn, kind, " (label smoothing is not a likelihood of the labels)")
        return LossForm("torch.nn.CrossEntropyLoss", "cross_entropy", loss_fn.reduction,
                        ignore_index=loss_fn.ignore_index)
    raise _unsupported(loss_fn, kind)


# ------------------------------------------------------------------------ the operator
@dataclass
class CurvatureInfo:
    """The conventions a curvature operator was built with (recorded with every result)."""

    kind: str
    loss: str
    normalisation: str
    fisher: str | None
    method: str
    mode: str
    batchnorm: bool
    n_examples: int
    n_batches: int
    dtype: str
    device: str
    weighting: str = "sum over batches of the batch operator (of the batch-mean loss), weighted by n_b / N"

    def to_dict(self) -> dict:
        return asdict(self)


class CurvatureOperator:
    """A curvature matrix of a model's full-data-set loss as a matrix-free operator v ↦ A v.

    Built by :func:`curvature_operator`. Attributes: ``kind``, ``dim`` (trainable
    parameters), ``names`` / ``params`` (in ``model.parameters()`` order, the order of flat
    vectors), ``device``, ``dtype``, ``n_hvp`` (curvature-vector products taken, each a
    pass over the whole data set; the name is HessianOperator's), ``info``
    (:class:`CurvatureInfo`), ``form`` (:class:`LossForm`, None for the Hessian).
    Evaluated at the model's *current* parameters on every call.
    """

    def __init__(self, model, loss_fn, data, kind: str = "hessian", method: str = "auto"):
        kind = choice("kind", kind, KINDS)
        if not callable(loss_fn):
            raise TypeError(f"loss_fn must be callable (outputs, targets) -> mean loss, got "
                            f"{type(loss_fn).__name__}")
        self.kind = kind
        self.model, self.loss_fn = model, loss_fn
        if kind == "hessian":
            choice("method", method, HVP_METHODS)
            self._hess = HessianOperator(model, loss_fn, data, method, repeated=True)
            h = self._hess
            self.names, self.params, self.device, self.dtype, self.dim = h.names, h.params, h.device, h.dtype, h.dim
            self.data, self.form = h.data, None
            self._n = 0
            self.info = CurvatureInfo("hessian", getattr(loss_fn, "__name__", type(loss_fn).__name__),
                                      "as loss_fn; batches weighted by n_b/N", None, h.info.method, h.info.mode,
                                      h.info.batchnorm, h.info.n_examples, h.info.n_batches, h.info.dtype,
                                      h.info.device)
            return
        self._hess = None
        self.form = loss_form(loss_fn, kind)
        choice("method", method, GN_METHODS)
        named = named_trainable_parameters(model)
        self.names = [n for n, _ in named]
        self.params = [p for _, p in named]
        self.device, self.dtype = common_device_dtype(self.params, "model")
        self.dim = sum(p.numel() for p in self.params)
        self.data = as_batches(data, self.device, self.dtype)
        self._auto = method == "auto"
        self._method = "func" if self._auto else method
        self._n = 0
        fisher = "exact (GGN equivalence, no sampling)" if kind == "fisher" else None
        self.info = CurvatureInfo(kind, self.form.name, self.form.normalisation, fisher, self._method,
                                  "train" if model.training else "eval", has_batchnorm(model),
                                  self.data.n_examples, len(self.data.batches),
                                  str(self.dtype).replace("torch.", ""), str(self.device))

    @property
    def n_hvp(self) -> int:
        return self._hess.n_hvp if self._hess is not None else self._n

    # ---------------------------------------------------------------- output side
    def _check_batch(self, out, y):
        if self.form.family == "cross_entropy":
            if out.ndim != 2:
                raise ValueError(f"{self.kind}: cross-entropy needs outputs of shape (n, classes), got "
                                 f"{tuple(out.shape)}")
            if not y.dtype.is_floating_point and self.form.ignore_index is not None \
                    and bool((y == self.form.ignore_index).any()):
                raise ValueError(f"{self.kind}: targets contain ignore_index={self.form.ignore_index}; the "
                                 "mean over the remaining examples has no fixed per-example weight")

    def _residual(self, out, y):
        """r = ∇_f ℓ_b / c_b: per-example ∇_f φ (f − y for MSE, p − e_y for cross-entropy).

        Taken by autograd through ``loss_fn`` itself, so its target handling (one-hot
        labels, reshapes, soft targets) is exactly the loss's own.
        """
        with torch.enable_grad():
            f = out.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(self.loss_fn(f, y), f)
        return g / self.form.scale(out)

    def _output_op(self, out, y, u):
        """The output-space matrix applied to u = (J v): ∇²_f ℓ_b u (GGN, Fisher) or c Σ r rᵀ u (EF)."""
        c = self.form.scale(out)
        if self.kind == "empirical_fisher":
            r = self._residual(out, y)
            n = out.shape[0]
            coef = (r.reshape(n, -1) * u.reshape(n, -1)).sum(1)
            return c * r * coef.reshape((n,) + (1,) * (r.ndim - 1))
        if self.form.family == "mse":
            return c * u
        p = torch.softmax(out.detach(), dim=1)
        pu = p * u
        return c * (pu - p * pu.sum(1, keepdim=True))

    # ---------------------------------------------------------------- per batch
    def _buffers(self):
        return {n: b.clone() for n, b in self.model.named_buffers()}

    def _batch_func(self, x, y, vs):
        buffers = self._buffers()
        primals = {n: p.detach() for n, p in zip(self.names, self.params)}
        tangents = dict(zip(self.names, vs))

        def f(pdict):
            return torch.func.functional_call(self.model, (pdict, buffers), (x,))

        with warnings.catch_warnings():  # torch.func's own use of torch.jit.script (torch >= 2.10)
            warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=DeprecationWarning)
            out, Jv = torch.func.jvp(f, (primals,), (tangents,))
            self._check_batch(out, y)
            M = self._output_op(out.detach(), y, Jv.detach())
            _, vjp_fn = torch.func.vjp(f, primals)
            (g,) = vjp_fn(M)
        return [g[n] for n in self.names]

    def _batch_double(self, x, y, vs):
        leaves = [p.detach().requires_grad_(True) for p in self.params]
        with torch.enable_grad():
            out = torch.func.functional_call(self.model, (dict(zip(self.names, leaves)), self._buffers()), (x,))
            self._check_batch(out, y)
            # J v = ∂/∂u ⟨Jᵀu, v⟩ (the "double-vjp" trick: Jᵀu is linear in u)
            u = torch.zeros_like(out, requires_grad=True)
            gs = torch.autograd.grad(out, leaves, grad_outputs=u, create_graph=True, allow_unused=True)
            dot = sum((g * v).sum() for g, v in zip(gs, vs) if g is not None)
            if not isinstance(dot, torch.Tensor) or not dot.requires_grad:
                return [torch.zeros_like(p) for p in leaves]
            (Jv,) = torch.autograd.grad(dot, u)
            M = self._output_op(out.detach(), y, Jv)
            g = torch.autograd.grad(out, leaves, grad_outputs=M, allow_unused=True)
        return [torch.zeros_like(p) if h is None else h for p, h in zip(leaves, g)]

    def _batch(self, x, y, vs):
        if self._method == "double_backward":
            return self._batch_double(x, y, vs)
        try:
            return self._batch_func(x, y, vs)
        except ValueError:
            raise
        except (RuntimeError, NotImplementedError):
            if not self._auto:
                raise
            self._method = self.info.method = "double_backward"   # forward-mode AD unsupported
            return self._batch_double(x, y, vs)

    # ---------------------------------------------------------------- public
    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """A v for a flat vector ``v`` (model.parameters() order, trainable only, finite)."""
        if self._hess is not None:
            return self._hess.matvec(v)
        v = check_flat_vector("v", v, self.dim, self.device, self.dtype)
        if not bool(torch.isfinite(v).all()):
            raise ValueError("v must be finite: it has NaN or infinite entries")
        vs = unflatten(v, self.params)
        total = None
        for (x, y), w in zip(self.data.batches, self.data.weights):
            av = flatten(self._batch(x, y, vs))
            total = av * w if total is None else total.add_(av, alpha=w)
        self._n += 1
        return total.detach()

    __call__ = matvec

    def as_linear_operator(self):
        """A ``scipy.sparse.linalg.LinearOperator`` (dim × dim, symmetric) over this operator.

        numpy vectors are copied to the model's device and dtype for each product and the
        result copied back (``eigsh``, ``cg``, … then work unchanged).
        """
        from scipy.sparse.linalg import LinearOperator

        np_dtype = np.float32 if self.dtype == torch.float32 else np.float64

        def mv(x):
            x = torch.as_tensor(np.asarray(x, dtype=np.float64).reshape(-1), dtype=self.dtype, device=self.device)
            return self.matvec(x).cpu().numpy().astype(np_dtype, copy=False)

        return LinearOperator((self.dim, self.dim), matvec=mv, rmatvec=mv, dtype=np_dtype)

    def __repr__(self):
        return f"CurvatureOperator(kind={self.kind!r}, dim={self.dim}, n_hvp={self.n_hvp})"


def curvature_operator(model, loss_fn, data, kind: str = "hessian", method: str = "auto") -> CurvatureOperator:
    """The matrix-free operator v ↦ A v of a model's curvature, A by name.

    Parameters
    ----------
    model : torch.nn.Module
    loss_fn : callable
        ``loss_fn(outputs, targets)``, the batch loss; for ``kind`` other than ``"hessian"``
        one of the supported losses (see the module docstring for each one's normalisation).
    data : (inputs, targets) pair or iterable of pairs (batches weighted by n_b/N)
    kind : {"hessian", "ggn", "empirical_fisher", "fisher"}
        ``"fisher"`` is the true Fisher, computed exactly through its equality with the GGN
        for these losses (no sampling).
    method : str
        Hessian: that of :class:`~eosdyn.bridge.hvp.HessianOperator` ("auto", "func",
        "double_backward", "graph"). Others: "func" (torch.func jvp + vjp),
        "double_backward" (Jv by the double-vjp trick, reverse mode only) or "auto" (the
        first, falling back to the second where forward mode is unsupported).

    Returns
    -------
    CurvatureOperator
        ``matvec``, ``dim``, ``n_hvp``, ``info``, ``as_linear_operator()``.
    """
    return CurvatureOperator(model, loss_fn, data, kind, method)


def _like(op):
    return torch.empty(0, device=op.device, dtype=op.dtype)


# ------------------------------------------------------------------------ block sharpness
@dataclass
class BlockSharpness:
    """Top eigenvalues of one diagonal block A_BB of a curvature matrix (B = a parameter tensor
    or a module's parameters).

    ``eigenvalues`` are descending (largest algebraic first, host float64); ``sharpness`` is
    the first. ``params`` names the parameter tensors of the block, ``dim`` its size.
    """

    name: str
    params: list
    dim: int
    eigenvalues: np.ndarray
    residual_norms: np.ndarray
    n_hvp: int
    converged: bool

    @property
    def sharpness(self) -> float:
        return float(self.eigenvalues[0])


def _blocks(op, by):
    sizes = [p.numel() for p in op.params]
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
    groups: dict = {}
    for i, name in enumerate(op.names):
        key = name if by == "parameter" else (name.rsplit(".", 1)[0] if "." in name else "")
        groups.setdefault(key, []).append(i)
    out = []
    for key, idx in groups.items():
        index = torch.cat([torch.arange(offsets[i], offsets[i + 1]) for i in idx]).to(op.device)
        out.append((key, [op.names[i] for i in idx], index))
    return out


def layer_sharpness(model, loss_fn, data, kind: str = "hessian", by: str = "parameter", k: int = 1,
                    tol: float | None = None, max_iter: int | None = None, seed: int = 0,
                    method: str = "auto") -> dict:
    """λ_max of each diagonal block of a curvature matrix: per parameter tensor or per module.

    For a block B of the parameters (one tensor, ``by="parameter"``, or all the parameters
    owned directly by one module, ``by="module"``: e.g. a Linear's weight and bias), the
    block sharpness is λ_max(A_BB), A_BB = E_Bᵀ A E_B the restriction of A (``kind``, as in
    :func:`curvature_operator`) to B with the other parameters held fixed: the curvature
    that GD on B alone would see (its stability edge is 2/η on that block). By Cauchy
    interlacing λ_max(A_BB) ≤ λ_max(A). Each product A_BB u = (A E_B u)_B costs one full
    product of A. The top-``k`` eigenvalues come from :func:`eosdyn.curvature.top_eigenpairs`
    (thick-restart Lanczos, largest algebraic, on the device).

    Returns
    -------
    dict name -> :class:`BlockSharpness`, in ``model.parameters()`` order (module names:
    the owning module's path, "" for parameters of the root module).
    """
    from ..curvature import top_eigenpairs

    by = choice("by", by, ("parameter", "module"))
    k = nonneg_int("k", k, minimum=1)
    if tol is not None:
        tol = positive("tol", tol)
    op = curvature_operator(model, loss_fn, data, kind, method)
    like = _like(op)
    result = {}
    for key, names, index in _blocks(op, by):
        nb = int(index.numel())

        def mv(u, index=index):
            z = torch.zeros(op.dim, device=op.device, dtype=op.dtype)
            z[index] = u
            return op.matvec(z)[index]

        before = op.n_hvp
        res = top_eigenpairs(mv, nb, k=min(k, nb), which="LA", tol=tol, max_iter=max_iter, seed=seed, like=like)
        result[key] = BlockSharpness(key, names, nb, np.asarray(res.eigenvalues, dtype=np.float64),
                                     np.asarray(res.residual_norms, dtype=np.float64), op.n_hvp - before,
                                     bool(res.converged))
    return result


# ------------------------------------------------------------------------ trace, density
@dataclass
class ModelTrace:
    """tr(A) of a model's curvature matrix, estimated by Hutch++ or Hutchinson.

    ``estimate``, ``standard_error`` (of the stochastic part), ``method``, ``n_hvp``,
    ``dim``, ``info`` (the operator's conventions, :class:`CurvatureInfo` as a dict) and
    ``raw`` (the :class:`~eosdyn.curvature.HutchPPResult` or
    :class:`~eosdyn.curvature.HutchinsonResult`). ``mean_eigenvalue`` = tr(A)/dim.
    """

    estimate: float
    standard_error: float
    method: str
    n_hvp: int
    dim: int
    info: dict
    raw: object = field(repr=False)

    @property
    def mean_eigenvalue(self) -> float:
        return self.estimate / self.dim


def trace(model, loss_fn, data, kind: str = "hessian", method: str = "hutch++", n_matvecs: int = 99,
          dist: str = "rademacher", seed: int = 0, op_method: str = "auto") -> ModelTrace:
    """tr(A) for A = the model's Hessian, GGN, empirical or true Fisher (``kind``), from
    ``n_matvecs`` products, by Hutch++ (default; :func:`eosdyn.curvature.hutchpp_trace`,
    O(1/m) error on a PSD A such as the GGN and Fishers) or Hutchinson
    (:func:`eosdyn.curvature.hutchinson_trace`, O(1/√m)). ``op_method`` is the operator's
    ``method`` (:func:`curvature_operator`).
    """
    from ..curvature import hutchinson_trace, hutchpp_trace

    method = choice("method", method, TRACE_METHODS)
    op = curvature_operator(model, loss_fn, data, kind, op_method)
    if method == "hutch++":
        raw = hutchpp_trace(op.matvec, op.dim, n_matvecs, dist=dist, seed=seed, like=_like(op))
    else:
        raw = hutchinson_trace(op.matvec, op.dim, n_matvecs, dist=dist, seed=seed, like=_like(op))
    return ModelTrace(raw.estimate, raw.standard_error, method, op.n_hvp, op.dim, op.info.to_dict(), raw)


@dataclass
class ModelSpectralDensity(SpectralDensity):
    """A :class:`~eosdyn.curvature.SpectralDensity` with the operator's conventions
    (``info``, :class:`CurvatureInfo` as a dict) and ``kind``."""

    kind: str = "hessian"
    info: dict = field(default_factory=dict)


def spectral_density(model, loss_fn, data, kind: str = "hessian", n_probes: int = 10, n_steps: int = 80,
                     grid=None, sigma=None, seed: int = 0, dist: str = "rademacher",
                     op_method: str = "auto", **kwargs) -> ModelSpectralDensity:
    """Spectral density of the model's Hessian, GGN, empirical or true Fisher (``kind``) by
    stochastic Lanczos quadrature, in one call: :func:`eosdyn.curvature.spectral_density`
    (Ghorbani, Krishnan & Xiao, ICML 2019; Ubaru, Chen & Saad 2017) over
    :func:`curvature_operator`, on the model's device. The density integrates to 1 and its
    mean ∫λ dμ estimates tr(A)/dim. Extra keyword arguments (``n_grid``,
    ``check_symmetry``) go to the curvature routine.
    """
    from ..curvature import spectral_density as slq

    op = curvature_operator(model, loss_fn, data, kind, op_method)
    sd = slq(op.matvec, op.dim, n_probes=n_probes, n_steps=n_steps, grid=grid, sigma=sigma, seed=seed,
             dist=dist, like=_like(op), **kwargs)
    return ModelSpectralDensity(**{f.name: getattr(sd, f.name) for f in fields(SpectralDensity)},
                                kind=op.kind, info=op.info.to_dict())
