"""Exact Hessian-vector products of the full-data-set loss of a torch model.

The loss of a data set split into batches b of n_b examples (N in all) is the mean

    L(θ) = Σ_b (n_b / N) · ℓ_b(θ),   ℓ_b = loss_fn(model(x_b), y_b)  (the batch *mean*),

so its Hessian-vector product is H v = Σ_b (n_b/N) ∇²ℓ_b(θ) v: the sum of the per-batch
products, each weighted by its share of the examples (as in Cohen et al. 2021,
"Gradient descent on neural networks typically occurs at the edge of stability",
whose code sums per-batch double-backward products scaled the same way).

Two exact ways of computing ∇²ℓ_b v are offered:

- ``"func"``: forward-over-reverse, ``torch.func.jvp(torch.func.grad(ℓ_b), (θ,), (v,))``
  (Pearlmutter 1994's R-operator as a directional derivative of the gradient);
- ``"double_backward"``: reverse-over-reverse, ∇_θ ⟨∇ℓ_b(θ), v⟩ by a second
  ``torch.autograd.grad`` through the first one's graph.

- ``"graph"``: double backward with each batch's first-order graph built once and
  retained, so every further product costs one backward pass through it (the trick
  PyHessian uses). Fastest for repeated products at fixed θ (an eigensolver's run);
  it holds every batch's graph in memory, and rebuilds it when a parameter changes.

``method="auto"`` (default) uses double backward on the CPU — measured 1.3 ms per product
against 11.6 ms for ``"func"`` on a 20-64-1 tanh MLP with 256 examples, one thread (issue 15
measured 3 ms against 71 ms) — and ``"func"`` on other devices (not measured here: no GPU),
each falling back to the other where it is unsupported (``"func"``: a module without
forward-mode AD, or one that mutates state inside the transform); the method actually
used is recorded in :class:`HVPInfo`. An operator built with
``repeated=True`` (as :func:`~eosdyn.bridge.sharpness` does: many products at one θ)
resolves ``"auto"`` to ``"graph"`` when the data set is a single batch — one retained
graph, the size of one training step's — because re-using the first-order graph makes
each product markedly cheaper (measured on CPU, float64 MLP 64-256-256-10 on the 1797
digits: 1.45x a gradient for "graph" against 2.7x for "func"; ``benchmarks/curvature.py``
prints the ratios); with several batches it keeps the one-shot method rather than hold every
batch's graph in memory. If the graph cannot be built (double backward unsupported),
it falls back to ``"func"``.

Mode: the product is taken in the mode the model is in (``model.training``), and the
:class:`HVPInfo` records it with the presence of BatchNorm: in train mode a BatchNorm layer
normalises with the *batch* statistics, so the Hessian depends on the batch split; in eval
mode it uses the running statistics. The product has no side effect on the model: the
buffers (BatchNorm running statistics) are cloned for every forward pass, so they are never
updated by an HVP. Dropout in train mode makes the product random: use eval mode for it.
"""
from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass

import torch

from .._validate import choice
from ._common import (
    as_batches,
    check_flat_vector,
    common_device_dtype,
    flatten,
    has_batchnorm,
    named_trainable_parameters,
    unflatten,
)

HVP_METHODS = ("auto", "func", "double_backward", "graph")


@dataclass
class HVPInfo:
    """The conventions a Hessian-vector product was computed with (recorded with every result)."""

    method: str           # "func" (forward-over-reverse), "double_backward" or "graph"
    mode: str             # "train" or "eval" (model.training at the time)
    batchnorm: bool       # whether the model contains BatchNorm layers
    n_examples: int
    n_batches: int
    dtype: str
    device: str
    weighting: str = "sum over batches of batch-mean-loss HVPs, weighted by n_b / N"

    def to_dict(self) -> dict:
        return asdict(self)


def _scalar_loss(loss):
    if not isinstance(loss, torch.Tensor) or loss.ndim != 0:
        shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
        raise ValueError("loss_fn(outputs, targets) must return the mean loss of the batch as a "
                         f"scalar tensor, got {shape}")
    return loss


class HessianOperator:
    """The Hessian of the full-data-set loss as a matrix-free operator v ↦ H v.

    Built once (data moved to the model's device and dtype, batches and weights fixed),
    then applied many times, e.g. by Lanczos. ``repeated=True`` declares that use: with
    ``method="auto"`` and a single batch it selects ``"graph"`` (see the module
    docstring). ``n_hvp`` counts the products taken;
    ``info`` records the conventions (:class:`HVPInfo`). ``dim`` is the number of
    trainable parameters. Evaluated at the model's *current* parameters on every call.
    """

    def __init__(self, model, loss_fn, data, method: str = "auto", *, repeated: bool = False):
        if not callable(loss_fn):
            raise TypeError(f"loss_fn must be callable (outputs, targets) -> mean loss, got "
                            f"{type(loss_fn).__name__}")
        choice("method", method, HVP_METHODS)
        named = named_trainable_parameters(model)
        self.model = model
        self.loss_fn = loss_fn
        self.names = [n for n, _ in named]
        self.params = [p for _, p in named]
        self.device, self.dtype = common_device_dtype(self.params, "model")
        self.dim = sum(p.numel() for p in self.params)
        self.data = as_batches(data, self.device, self.dtype)
        self._auto = method == "auto"
        if self._auto:
            one_shot = "double_backward" if self.device.type == "cpu" else "func"
            method = "graph" if repeated and len(self.data.batches) == 1 else one_shot
        self._method = method
        self.n_hvp = 0
        self._graphs: dict = {}
        self.info = HVPInfo(method=method,
                            mode="train" if model.training else "eval",
                            batchnorm=has_batchnorm(model), n_examples=self.data.n_examples,
                            n_batches=len(self.data.batches), dtype=str(self.dtype).replace("torch.", ""),
                            device=str(self.device))

    # ------------------------------------------------------------------ per batch
    def _buffers(self):
        return {n: b.clone() for n, b in self.model.named_buffers()}

    def _batch_func(self, x, y, vs):
        model, loss_fn, buffers = self.model, self.loss_fn, self._buffers()
        primals = {n: p.detach() for n, p in zip(self.names, self.params)}
        tangents = dict(zip(self.names, vs))

        def loss_of(pdict):
            out = torch.func.functional_call(model, (pdict, buffers), (x,))
            return _scalar_loss(loss_fn(out, y))

        with warnings.catch_warnings():  # torch.func's own use of torch.jit.script (torch >= 2.10)
            warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=DeprecationWarning)
            _, hv = torch.func.jvp(torch.func.grad(loss_of), (primals,), (tangents,))
        return [hv[n] for n in self.names]

    def _batch_double(self, x, y, vs):
        leaves = [p.detach().requires_grad_(True) for p in self.params]
        with torch.enable_grad():
            out = torch.func.functional_call(self.model, (dict(zip(self.names, leaves)), self._buffers()),
                                             (x,))
            loss = _scalar_loss(self.loss_fn(out, y))
            gs = torch.autograd.grad(loss, leaves, create_graph=True, allow_unused=True)
            dot = sum((g * v).sum() for g, v in zip(gs, vs) if g is not None and g.requires_grad)
            if not isinstance(dot, torch.Tensor):  # no gradient depends on θ: H = 0
                return [torch.zeros_like(p) for p in leaves]
            hv = torch.autograd.grad(dot, leaves, allow_unused=True)
        return [torch.zeros_like(p) if h is None else h for p, h in zip(leaves, hv)]

    def _batch_graph(self, index, x, y, vs):
        versions = tuple(p._version for p in self.params)
        cached = self._graphs.get(index)
        if cached is None or cached[2] != versions:
            leaves = [p.detach().requires_grad_(True) for p in self.params]
            with torch.enable_grad():
                out = torch.func.functional_call(self.model, (dict(zip(self.names, leaves)),
                                                              self._buffers()), (x,))
                loss = _scalar_loss(self.loss_fn(out, y))
                gs = torch.autograd.grad(loss, leaves, create_graph=True, allow_unused=True)
            cached = (leaves, gs, versions)
            self._graphs[index] = cached
        leaves, gs, _ = cached
        # H v = ∂/∂θ ⟨∇ℓ, v⟩: one backward through the retained graph, v as grad_outputs
        live = [i for i, g in enumerate(gs) if g is not None and g.requires_grad]
        if not live:  # no gradient depends on θ: H = 0
            return [torch.zeros_like(p) for p in leaves]
        with torch.enable_grad():
            hv = torch.autograd.grad([gs[i] for i in live], leaves, grad_outputs=[vs[i] for i in live],
                                     retain_graph=True, allow_unused=True)
        return [torch.zeros_like(p) if h is None else h for p, h in zip(leaves, hv)]

    def _batch(self, x, y, vs, index=0):
        if self._method == "graph":
            try:
                return self._batch_graph(index, x, y, vs)
            except ValueError:
                raise
            except (RuntimeError, NotImplementedError):
                if not self._auto:
                    raise
                # double backward unsupported here: forward-over-reverse, then the fallbacks
                self._graphs.clear()
                self._method = "func"
                self.info.method = "func"
        if self._method == "double_backward":
            try:
                return self._batch_double(x, y, vs)
            except ValueError:
                raise
            except (RuntimeError, NotImplementedError):
                if not self._auto:
                    raise
                # double backward unsupported here: forward-over-reverse
                self._method = "func"
                self.info.method = "func"
                return self._batch_func(x, y, vs)
        try:
            return self._batch_func(x, y, vs)
        except ValueError:
            raise
        except (RuntimeError, NotImplementedError):
            if not self._auto:
                raise
            # forward-mode AD unsupported here (or state mutated inside the transform)
            self._method = "double_backward"
            self.info.method = "double_backward"
            return self._batch_double(x, y, vs)

    # --------------------------------------------------------------------- public
    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """H v for a flat vector ``v`` (model.parameters() order, trainable only, finite)."""
        v = check_flat_vector("v", v, self.dim, self.device, self.dtype)
        if not bool(torch.isfinite(v).all()):
            raise ValueError("v must be finite: it has NaN or infinite entries, and H v would be NaN")
        vs = unflatten(v, self.params)
        total = None
        for i, ((x, y), w) in enumerate(zip(self.data.batches, self.data.weights)):
            hv = flatten(self._batch(x, y, vs, i))
            total = hv * w if total is None else total.add_(hv, alpha=w)
        self.n_hvp += 1
        return total.detach()

    __call__ = matvec

    def release(self) -> None:
        """Free the retained gradient graphs of the ``"graph"`` method (rebuilt on the next product)."""
        self._graphs.clear()

    def loss(self) -> float:
        """The full-data-set mean loss L(θ) at the current parameters (no gradient)."""
        total = 0.0
        with torch.no_grad():
            for (x, y), w in zip(self.data.batches, self.data.weights):
                out = torch.func.functional_call(self.model, (self._buffers(),), (x,))
                total += w * float(_scalar_loss(self.loss_fn(out, y)))
        return total


def hvp(model, loss_fn, data, v, method: str = "auto", return_info: bool = False):
    """The exact Hessian-vector product H v of the full-data-set mean loss.

    Parameters
    ----------
    model : torch.nn.Module
        All trainable parameters on one device and of one floating dtype.
    loss_fn : callable
        ``loss_fn(outputs, targets)`` returns the *mean* loss of a batch (a scalar tensor).
    data : (inputs, targets) pair or iterable of such pairs
        The data set; batches are weighted by their share of the examples, n_b/N.
    v : tensor (n,)
        A finite flat vector over the trainable parameters in ``model.parameters()`` order
        (NaN or inf: ValueError).
    method : {"auto", "func", "double_backward", "graph"}
        Forward-over-reverse through ``torch.func`` ("func"), double backward, or the
        former with the latter as fallback ("auto").
    return_info : bool
        Also return the :class:`HVPInfo` (method used, train/eval mode, BatchNorm, ...).

    Returns
    -------
    H v as a flat tensor on the model's device and dtype (and the info if asked).
    """
    op = HessianOperator(model, loss_fn, data, method)
    out = op.matvec(v)
    return (out, op.info) if return_info else out
