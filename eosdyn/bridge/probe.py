"""Where EoS-Ada's and DCAO's curvature probe gets its Hessian: :class:`Probe`.

The torch optimizers :class:`~eosdyn.bridge.EoSAda` and :class:`~eosdyn.bridge.DCAO` need,
every ``curvature_every`` steps, the top of the spectrum of a Hessian. Given a ``Probe`` at
construction they take it from the probe, in the probe's **own autograd pass**, so that the
ordinary torch loop runs unchanged::

    probe = Probe(model, loss_fn, (X_probe, Y_probe))       # a fixed probe subset
    opt = DCAO(model.parameters(), lr=0.05, probe=probe)
    for x, y in loader:
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()                                          # the update uses p.grad

What is probed
--------------
The Hessian, with respect to the optimizer's parameters θ (those of its param groups that
require grad, in param-group order), of the mean loss of the probe's data,

    L_P(θ) = Σ_b (n_b / N) · loss_fn(model(x_b), y_b),     H v = Σ_b (n_b / N) ∇²ℓ_b(θ) v,

each batch-mean loss weighted by its share n_b/N of the N examples (as
:func:`~eosdyn.bridge.hvp` does). Each product is one backward pass through the batch's
first-order graph, H v = ∇_θ⟨∇_θ ℓ_b, v⟩ (Pearlmutter 1994), the graph built once per probe
at the current parameters and freed when the probe ends (a probe over several batches holds
each batch's graph during the probe: pass one batch to keep it to one step's memory).

``data`` chooses the batch(es):

- an ``(inputs, targets)`` pair, or a list/tuple of pairs — a **fixed probe set**, the same
  at every probe (Cohen et al. 2021 track the sharpness on a fixed subset);
- any other iterable (a ``DataLoader``, a generator) — a **stream**: each probe draws the
  next batch, restarting the iterable when it is exhausted (a one-shot iterator that runs
  dry raises ``ValueError``);
- ``None`` — the **current batch**: hand it over with :meth:`Probe.set_batch` before the
  probing step (``probe.set_batch(x, y)``); it stays until replaced.

Probe batch and cost: ``fraction``
---------------------------------
``fraction=f`` (in (0, 1], default 1) makes every probe use a share f of each of its batches:
round(f·n_b) examples (at least 1) of a batch of n_b, drawn uniformly without replacement,
afresh at each probe, by the probe's own generator (seeded with ``seed``, saved by
:meth:`state_dict`). With ``data=None`` that is a fraction of the *current training batch*;
for a *fixed probe subset* pass the subset itself as ``data`` (its size is what counts).

What a probe costs, relative to the training loop (the overhead model of issue 14)::

    overhead ≈ m · r · b / T_c        (+ c₀ · b / T_c, the probe's own graph)

- m: HVPs per probe (the optimizer's ``hvp_per_probe``; it already includes k, the number
  of eigenpairs, since one Lanczos run finds all k);
- r: the time of one HVP over that of one training gradient on a batch of the same size
  (≈ 1.5 for the graph-reusing HVP used here);
- b: probe examples over training-batch examples (``last_n_examples`` / batch size: f for
  ``fraction=f`` on the current batch; |subset| / batch size for a fixed subset);
- T_c: the probe period, the optimizer's ``curvature_every``;
- c₀: the probe's forward-and-backward with ``create_graph`` (≈ 1–2 gradients), paid once
  per probe on top of the m products.

m falls with a warm start (the optimizers start each Lanczos run from the last probe's
eigenvectors) and with a loose stopping rule (their ``eigval_tol``: the relative eigenvalue
error, e.g. 1e-2 when λ₁ to 1 % is enough). b trades cost for accuracy: a probe of a small
batch is cheap, but its λ₁ is that batch's Hessian's, which overestimates the full-data λ₁
more the smaller the batch. ``benchmarks/overhead.py`` measures all of this.

No side effects: the probe never reads or writes ``p.grad`` (the update is the user's
gradient, clipped or otherwise changed as the user likes), and it runs the model through
``torch.func.functional_call`` on detached copies of the parameters with *cloned* buffers,
so BatchNorm running statistics are not updated. The model is used in the mode it is in
(train/eval), as :func:`~eosdyn.bridge.hvp` does.
"""
from __future__ import annotations

import math
import numbers

import torch

from .._validate import nonneg_int
from ._common import _batch_size, _is_pair, _move, as_batches, common_device_dtype, flatten, unflatten

PROBE_MODES = ("fixed", "stream", "current")


def _take(x, idx):
    """Rows ``idx`` (a CPU index tensor) of a batch: a tensor, a tuple/list of tensors, a sequence."""
    if isinstance(x, torch.Tensor):
        return x.index_select(0, idx.to(x.device))
    if isinstance(x, (list, tuple)) and x and isinstance(x[0], torch.Tensor):
        return type(x)(_take(t, idx) for t in x)
    return [x[i] for i in idx.tolist()]


def _graph_matvec(gs, inputs, like):
    """v ↦ ∇⟨g, v⟩ for the gradient list ``gs`` (with its graph) w.r.t. ``inputs``: H v, flat.

    ``like`` gives the shapes of the flat vector's pieces (one per entry of ``gs``); entries
    of ``gs`` that are None or do not depend on θ contribute nothing (their rows of H are 0).
    """
    live = [i for i, g in enumerate(gs) if g is not None and g.requires_grad]

    def matvec(v):
        if not live:
            return torch.zeros_like(v)
        vs = unflatten(v, like)
        with torch.enable_grad():
            hv = torch.autograd.grad([gs[i] for i in live], [inputs[i] for i in live],
                                     grad_outputs=[vs[i] for i in live], retain_graph=True,
                                     allow_unused=True)
        out = [torch.zeros_like(p) for p in like]
        for i, h in zip(live, hv):
            if h is not None:
                out[i] = h
        return flatten(out).detach()

    return matvec


class Probe:
    """The model, loss function and data an optimizer's curvature probe differentiates.

    Parameters
    ----------
    model : torch.nn.Module
        The model whose parameters the optimizer trains (it must own every one of them).
    loss_fn : callable
        ``loss_fn(outputs, targets)`` → the batch-mean loss as a scalar tensor. Required.
    data : pair, list of pairs, other iterable of pairs, or None
        The fixed probe set, a stream of batches, or ``None`` for the current batch (given
        by :meth:`set_batch`); see the module docstring. Floating-point tensors are moved to
        the parameters' device and dtype when probed.

    fraction : float in (0, 1], keyword
        The share of each batch a probe uses (default 1: all of it); see the module
        docstring ("Probe batch and cost"). ValueError outside (0, 1] (NaN included).
    seed : int >= 0, keyword
        Seed of the generator that draws the ``fraction`` subsets.

    Attributes
    ----------
    mode : {"fixed", "stream", "current"}
    fraction : float
    n_batches_drawn : int
        Batches taken from a stream (0 for the other modes).
    last_loss : float
        The probe-set loss L_P(θ) at the last probe (NaN before the first).
    last_n_examples : int
        Examples the last probe differentiated (after ``fraction``; 0 before the first).
    """

    def __init__(self, model, loss_fn=None, data=None, *, fraction=1.0, seed: int = 0):
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"Probe: model must be a torch.nn.Module, got {type(model).__name__}")
        if loss_fn is None:
            raise TypeError("Probe: loss_fn is required: a callable loss_fn(outputs, targets) -> "
                            "batch-mean loss; the curvature probe differentiates it twice")
        if not callable(loss_fn):
            raise TypeError(f"Probe: loss_fn must be callable (outputs, targets) -> mean loss, got "
                            f"{type(loss_fn).__name__}")
        if isinstance(fraction, bool) or not isinstance(fraction, numbers.Real):
            raise TypeError(f"Probe: fraction must be a real number in (0, 1], got {type(fraction).__name__}")
        if not (0.0 < float(fraction) <= 1.0):  # False for NaN too
            raise ValueError(f"Probe: fraction must be in (0, 1] (the share of each batch a probe "
                             f"uses), got {fraction!r}")
        self.model = model
        self.loss_fn = loss_fn
        self.fraction = float(fraction)
        self.seed = nonneg_int("seed", seed)
        self._generator = None
        self.n_batches_drawn = 0
        self.last_loss = float("nan")
        self.last_n_examples = 0
        self._current = None
        self._source = self._iter = None
        self._fixed = self._moved = None
        if data is None:
            self.mode = "current"
        elif _is_pair(data) or isinstance(data, (list, tuple)):
            self.mode = "fixed"
            self._fixed = as_batches(data, name="Probe data")  # checked now, moved when probed
        else:
            try:
                iter(data)
            except TypeError:
                raise TypeError("Probe: data must be an (inputs, targets) pair, a list of pairs, an "
                                f"iterable of pairs or None, got {type(data).__name__}") from None
            self.mode = "stream"
            self._source = data

    def __repr__(self) -> str:
        name = getattr(self.loss_fn, "__name__", type(self.loss_fn).__name__)
        extra = (f", {len(self._fixed.batches)} batch(es), {self._fixed.n_examples} examples"
                 if self.mode == "fixed" else "")
        if self.fraction != 1.0:
            extra += f", fraction={self.fraction:g}"
        return f"Probe(model={type(self.model).__name__}, loss_fn={name}, mode={self.mode!r}{extra})"

    def set_batch(self, inputs, targets) -> None:
        """The batch of the next probes (mode "current"); it stays until replaced."""
        if self.mode != "current":
            raise ValueError(f"Probe.set_batch: this probe draws its batches from its data (mode "
                             f"{self.mode!r}); set_batch is for Probe(model, loss_fn, data=None)")
        as_batches((inputs, targets), name="Probe.set_batch")  # same checks as the other modes
        self._current = (inputs, targets)

    # ------------------------------------------------------------------ internals
    def _gen(self):
        if self._generator is None:
            self._generator = torch.Generator()
            self._generator.manual_seed(self.seed)
        return self._generator

    def _subsample(self, batches, weights):
        """``fraction`` of each batch (uniform, without replacement), re-weighted by size."""
        if self.fraction == 1.0:
            return batches, weights
        out, sizes = [], []
        for x, y in batches:
            n = _batch_size(x, "Probe data")
            m = max(1, min(n, int(round(self.fraction * n))))
            idx = torch.randperm(n, generator=self._gen())[:m].sort().values
            out.append((_take(x, idx), _take(y, idx)))
            sizes.append(m)
        total = sum(sizes)
        return out, [s / total for s in sizes]

    def _sizes(self, batches):
        return sum(_batch_size(x, "Probe data") for x, _ in batches)

    def _batches(self, device, dtype):
        """[(x, y), ...] and their weights n_b/N for this probe (after ``fraction``)."""
        batches, weights = self._full_batches(device, dtype)
        batches, weights = self._subsample(batches, weights)
        self.last_n_examples = self._sizes(batches)
        return batches, weights

    def _full_batches(self, device, dtype):
        """[(x, y), ...] and their weights n_b/N for this probe, on (device, dtype)."""
        if self.mode == "fixed":
            key = (device, dtype)
            if self._moved is None or self._moved[0] != key:
                self._moved = (key, as_batches(self._fixed.batches, device, dtype, name="Probe data"))
            b = self._moved[1]
            return b.batches, b.weights
        if self.mode == "current":
            if self._current is None:
                raise ValueError("Probe: no batch to probe: with data=None call "
                                 "probe.set_batch(inputs, targets) before the step that probes")
            x, y = self._current
            return [(_move(x, device, dtype), _move(y, device, dtype))], [1.0]
        for _ in range(2):
            if self._iter is None:
                self._iter = iter(self._source)
            try:
                pair = next(self._iter)
            except StopIteration:
                self._iter = None
                continue
            b = as_batches([pair], device, dtype, name="Probe data")
            self.n_batches_drawn += 1
            return b.batches, [1.0]
        raise ValueError("Probe: the data stream gave no batch (empty, or a one-shot iterator "
                         "that is exhausted); pass a list of batches or a re-iterable loader")

    def _named(self, params):
        names = {id(p): n for n, p in self.model.named_parameters()}
        missing = [i for i, p in enumerate(params) if id(p) not in names]
        if missing:
            raise ValueError(f"Probe: the optimizer trains {len(missing)} parameter(s) that the probe's "
                             "model does not own; give the Probe the model the optimizer trains")
        return [names[id(p)] for p in params]

    def operator(self, params, who: str = "Probe", step: int = 0):
        """(matvec, release): v ↦ H v over ``params`` (a flat vector), and a function that
        frees the retained graphs. Raises :class:`~eosdyn.bridge.NonFiniteLossError` if the
        probe loss is not finite, ``ValueError`` if it does not depend on ``params``."""
        from .optim import NonFiniteLossError

        device, dtype = common_device_dtype(params, "params")
        names = self._named(params)
        batches, weights = self._batches(device, dtype)
        graphs, total = [], 0.0
        for (x, y), w in zip(batches, weights):
            leaves = [p.detach().requires_grad_(True) for p in params]
            buffers = {n: b.clone() for n, b in self.model.named_buffers()}
            with torch.enable_grad():
                out = torch.func.functional_call(self.model, (dict(zip(names, leaves)), buffers), (x,))
                loss = self.loss_fn(out, y)
                if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
                    raise TypeError(f"{who}: the probe's loss_fn must return the batch-mean loss as a "
                                    f"scalar tensor, got {type(loss).__name__}")
                val = float(loss.detach())
                if not math.isfinite(val):
                    raise NonFiniteLossError(step, val, f"{who} probe")
                if not loss.requires_grad:
                    raise ValueError(f"{who}: the probe's loss does not depend on the optimizer's "
                                     "parameters through autograd")
                gs = torch.autograd.grad(loss, leaves, create_graph=True, allow_unused=True)
            graphs.append((_graph_matvec(gs, leaves, params), w))
            total += w * val
        self.last_loss = total

        def matvec(v):
            if len(graphs) == 1:
                return graphs[0][0](v)
            acc = None
            for mv, w in graphs:
                hv = mv(v)
                acc = hv * w if acc is None else acc.add_(hv, alpha=w)
            return acc

        return matvec, graphs.clear

    def state_dict(self) -> dict:
        """The probe's counters and subset generator (data and model are configuration)."""
        return {"mode": self.mode, "n_batches_drawn": self.n_batches_drawn, "last_loss": self.last_loss,
                "last_n_examples": self.last_n_examples,
                "generator_state": None if self._generator is None else self._generator.get_state().clone()}

    def load_state_dict(self, state: dict) -> None:
        self.n_batches_drawn = int(state.get("n_batches_drawn", 0))
        self.last_loss = float(state.get("last_loss", float("nan")))
        self.last_n_examples = int(state.get("last_n_examples", 0))
        gs = state.get("generator_state")
        if gs is None:
            self._generator = None
        else:
            self._gen().set_state(gs.to("cpu", torch.uint8))


def probe_costs(model, loss_fn, batch, *, repeats: int = 5, inner: int = 3) -> dict:
    """Measure the unit costs of the overhead model (module docstring) on one batch.

    Returns the CPU seconds (``time.process_time``, the best over ``repeats`` of the mean of
    ``inner`` calls, so little moved by other jobs on a shared machine) of

    - ``t_grad``: one training gradient, ``loss_fn(model(x), y).backward()``;
    - ``t_graph``: a probe's own pass, the forward and the backward with ``create_graph``;
    - ``t_hvp``: one Hessian-vector product through that graph (the probe's matvec);

    and the ratios ``r = t_hvp / t_grad`` and ``c0 = t_graph / t_grad``. With these, a
    probe every T_c steps of m products on b times the training batch costs about
    m·r·b/T_c (+ c₀·b/T_c) training gradients per step (Probe's docstring). ``p.grad`` and
    the model's buffers (BatchNorm running statistics, which the timed forwards update) are
    restored as they were; the parameters are never changed.

    On a GPU, CPU time does not measure the device's work: there, time with
    ``torch.cuda.synchronize`` as ``benchmarks/overhead.py`` does.
    """
    import time

    repeats, inner = nonneg_int("repeats", repeats, minimum=1), nonneg_int("inner", inner, minimum=1)
    if not _is_pair(batch):
        raise TypeError("batch must be an (inputs, targets) pair")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no parameter that requires grad")
    x, y = batch
    saved = [None if p.grad is None else p.grad.clone() for p in params]
    buffers = [(b, b.clone()) for b in model.buffers()]  # the timed forwards update BatchNorm statistics

    def best(f):
        t = math.inf
        for _ in range(repeats):
            t0 = time.process_time()
            for _ in range(inner):
                f()
            t = min(t, (time.process_time() - t0) / inner)
        return t

    def grad():
        for p in params:
            p.grad = None
        loss_fn(model(x), y).backward()

    probe = Probe(model, loss_fn, (x, y))

    def graph():
        probe.operator(params)[1]()

    try:
        grad()  # first calls allocate; not timed
        t_grad, t_graph = best(grad), best(graph)
        matvec, release = probe.operator(params)
        v = torch.randn(sum(p.numel() for p in params), generator=torch.Generator().manual_seed(0),
                        dtype=params[0].dtype).to(params[0].device)
        matvec(v)
        t_hvp = best(lambda: matvec(v))
        release()
    finally:
        for p, g in zip(params, saved):
            p.grad = g
        with torch.no_grad():
            for b, copy in buffers:
                b.copy_(copy)
    t_grad = max(t_grad, 1e-9)
    return {"t_grad": t_grad, "t_graph": t_graph, "t_hvp": t_hvp, "r": t_hvp / t_grad, "c0": t_graph / t_grad}
