"""EoS-Ada and DCAO as ``torch.optim.Optimizer`` subclasses, drop-in like torch's own.

They implement *exactly* the toy rules :class:`eosdyn.rules.EoSAda` and
:class:`eosdyn.rules.DCAO` (same parameter names, defaults and update order), and get
their step size, noise, momentum and weight decay from the same scalar functions,
:mod:`eosdyn.rules.schedules` — no formula is restated here.

The update uses ``p.grad``
--------------------------
Like every torch optimizer, ``step()`` moves each parameter along the gradient in
``p.grad`` — whatever the user's loop left there: accumulated, clipped
(``torch.nn.utils.clip_grad_norm_``), scaled. The curvature probe only *estimates* the
Hessian's top eigenvalues, in its own autograd pass; it never reads or overwrites
``p.grad``. So the ordinary loop works unchanged::

    probe = Probe(model, loss_fn, (X_probe, Y_probe))      # where the Hessian comes from
    opt = DCAO(model.parameters(), lr=0.05, probe=probe)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=100)
    for x, y in loader:
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()

Curvature probe
---------------
Every ``curvature_every`` steps (T_c; at steps s = 0, T_c, 2T_c, … counted from 0, at the
parameters θ_s *before* update s + 1, as the toy simulator does) the optimizer finds the
top-k eigenvalues of a Hessian by Lanczos (:func:`eosdyn.curvature.top_eigenpairs`, which
"LA": largest algebraic) with at most ``lanczos_steps`` (m) Hessian-vector products,
warm-started from the previous probe's eigenvectors. Between probes the last eigenvalues
stay in force. ``curvature="exact"`` builds the dense Hessian with n HVPs instead (small
models; it is what the toy rules' ``curvature="exact"`` computes). EoS-Ada alone also offers
``curvature="hutchinson"``, the proposal's own estimator: the mean of uᵀHu over
``hutchinson_samples`` random unit directions, an estimate of tr(H)/d, *not* of λ_max
(:class:`EoSAda`). Every product is a double backward, H v = ∇⟨∇L, v⟩ (Pearlmutter 1994).
``add_param_group`` resets the warm start (the vector space has changed) and makes the next step probe.

Cost of a probe: warm starts, the stopping rule, the probe batch
-----------------------------------------------------------------
Each Lanczos run starts from the previous probe's Ritz vectors (``warm_start=True``, the
default; ``warm_start=False`` starts every probe from the seeded random vector). It stops at
``lanczos_steps`` products or when the stopping rule holds: ``tol``, the relative residual
(the curvature module's default, 1e-8 in float64 and 1e-4 in float32, when neither is
given), and/or ``eigval_tol``, the estimated relative *eigenvalue* error, as
:func:`~eosdyn.bridge.sharpness` has it. The eigenvalue error is quadratic in the residual,
so ``eigval_tol=1e-2`` (λ to about 1 %) stops after a few products — a warm start helps most
there. The counts are kept: ``n_hvp`` (all probes), ``n_probes``, ``last_probe_hvps`` and
``hvp_per_probe`` (the mean), also in ``state_dict()["eosdyn"]``. The probe batch is the
:class:`~eosdyn.bridge.probe.Probe`'s (a fixed subset, or ``fraction=f`` of the current
batch). The wall-time overhead over the same loop without probes is about

    k·m·r·b / T_c     (+ c₀·b / T_c for the probe's own graph)

m = ``hvp_per_probe`` (single-vector Lanczos: block size k = 1, and m counts the products for
all ``k`` eigenpairs), r the time of one HVP over one training gradient (≈ 1.5–1.9 measured on
a CPU), b the probe examples over the training batch's, T_c = ``curvature_every`` and c₀ ≈
1–1.5 gradients. ``benchmarks/overhead.py --part grid`` measures it against the model.

Which Hessian, on a probing step (the first that applies):

1. ``step(closure, probe_closure=pc)``: that of ``pc()``'s loss (a forward-only closure,
   evaluated only on probe steps);
2. ``probe=Probe(model, loss_fn, data)`` given at construction: that of
   ``loss_fn(model(x), y)`` on the probe's data — a fixed probe subset, the next batch of
   a data iterator, or the current batch (:class:`~eosdyn.bridge.probe.Probe`);
3. a forward-only closure passed to ``step`` (below): that of its loss, through the very
   graph its gradient was taken on (one forward pass per step, probe or not).

Without any of them a probing step raises ``ValueError`` (``opt.needs_closure`` says
whether the next step needs a closure; ``opt.probes_next`` whether it probes).

Closures — ``step(closure=None)``
---------------------------------
- **None** (the plain loop above): the gradient is ``p.grad``; ``step`` returns None.
- **torch's convention** (as for ``torch.optim.LBFGS``): the closure zeroes the gradients,
  evaluates the loss, calls ``backward()`` and returns the loss. It is called once, and the
  ``p.grad`` it leaves are the gradient. Its graph is consumed by ``backward()``, so on a
  probing step the Hessian must come from 1. or 2.
- **forward-only** (eosdyn's convention, kept for existing callers): the closure returns
  the loss *without* calling ``backward()``; the optimizer differentiates it,
  ``torch.autograd.grad(loss, params, create_graph=<probing with 3.>)``, and stores the
  detached gradient in ``p.grad`` (replacing what was there; None for a parameter the loss
  does not depend on), as ``zero_grad(); backward()`` would.

The two are told apart by whether calling the closure changed any ``p.grad`` (a
post-accumulate-grad hook, or a new or bumped gradient tensor): one that did follows torch's
convention. ``step`` returns what torch's optimizers return: the closure's return value (a
forward-only closure's loss detached from its graph), or None without a closure. A
non-finite loss (the closure's, or the probe's) raises :class:`NonFiniteLossError` before any
parameter is touched.

``lr`` and schedulers
---------------------
Every param group has an ``lr``, so torch's LR schedulers (``StepLR``,
``CosineAnnealingLR``, ``OneCycleLR``, ``ReduceLROnPlateau``, …) work. The step in force is
``lr × lr_factor``, the factor set by the rule from the curvature:

- EoS-Ada: ``lr`` is a multiplier on η_t = α/(|λ_max| + ε) (default 1.0: the rule as
  published); the noise σ_t is not scaled by it.
- DCAO: ``lr`` is the base step η₀, and the rule scales it by f(ρ) ∈ [f_min, f_max]
  (``lr_factor_range``, default [0.5, 2]): the step in force can be up to f_max·lr.

At every step ``lr`` must be finite and >= 0 (a scheduler that sets a negative one gets a
``ValueError`` naming ``lr``). After each step, the state of every stepped parameter holds
what was in force: ``lr_in_force`` (the step), ``lr_factor_in_force`` (η_t, or f(ρ)), and
for DCAO ``momentum_in_force`` (β), ``momentum_bound`` (the supremum of β over all
curvatures) and ``weight_decay_in_force`` (λ_wd); ``opt.lr_in_force`` lists the step per group.

State
-----
``state_dict()`` holds, besides the per-parameter state, an ``"eosdyn"`` entry: the step
counter, the next probing step, the eigenvalues in force, the last eigenvectors (the warm
start), HVP and probe counters, the probe's counters, and the state of EoS-Ada's noise
generator, so that a run resumed from ``load_state_dict()`` continues bit-identically
(for a probe on a fixed set or the current batch; a data stream's position is not saved).
"""
from __future__ import annotations

import math
import numbers
import time

import numpy as np
import torch

from .._validate import choice, in_range, nonneg_int, pair, positive
from ..rules.schedules import dcao_hyperparameters, eosada_lr, eosada_noise
from ._common import common_device_dtype
from .probe import Probe, _graph_matvec

BRIDGE_CURVATURE = ("lanczos", "exact")
#: EoS-Ada's estimators: DCAO's, plus the proposal's Hutchinson mean curvature (tr(H)/d).
EOSADA_CURVATURE = BRIDGE_CURVATURE + ("hutchinson",)
_DCAO_VARIANTS = {"refined": 0, "v1": 1}


class NonFiniteLossError(FloatingPointError):
    """The loss was NaN or infinite at step ``step`` (0-based); nothing was updated."""

    def __init__(self, step: int, value: float, who: str = "optimizer"):
        self.step = int(step)
        self.value = float(value)
        super().__init__(f"{who}: non-finite loss {value} at step {step}; parameters were not updated")


def _loss_value(loss, who, step):
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        raise TypeError(f"{who}: the closure must return the loss as a scalar tensor, got "
                        f"{type(loss).__name__}")
    val = float(loss.detach())
    if not math.isfinite(val):
        raise NonFiniteLossError(step, val, who)
    if not loss.requires_grad:
        raise ValueError(f"{who}: the closure's loss does not depend on the parameters through "
                         "autograd (was it computed under torch.no_grad() or detached?)")
    return val


def _group_lr(who, gi, group):
    """The group's ``lr`` as a float; ValueError unless it is a finite number >= 0."""
    lr = group.get("lr")
    if isinstance(lr, torch.Tensor) and lr.numel() == 1:
        lr = float(lr)
    if isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not math.isfinite(float(lr)) or lr < 0:
        raise ValueError(f"{who}: param group {gi} has lr = {lr!r}; lr must be a finite number >= 0 "
                         "(was it set by an LR scheduler, e.g. a LambdaLR factor below 0?)")
    return float(lr)


class _CurvatureOptimizer(torch.optim.Optimizer):
    """Common machinery: the step counter, closures, the warm-started probe, groups, state."""

    _name = "optimizer"
    _curvature_methods = BRIDGE_CURVATURE
    hutchinson_samples = None  # EoS-Ada's "hutchinson" sets it

    def __init__(self, params, defaults, k, curvature_every, lanczos_steps, curvature, tol, seed,
                 probe=None, eigval_tol=None, warm_start=True):
        if probe is not None and not isinstance(probe, Probe):
            raise TypeError(f"{self._name}: probe must be an eosdyn.bridge.Probe(model, loss_fn, data) "
                            f"or None, got {type(probe).__name__}")
        super().__init__(params, defaults)
        self.probe = probe
        self.curvature_k = nonneg_int("k", k, minimum=1)
        if isinstance(curvature_every, bool) or not isinstance(curvature_every, numbers.Integral):
            raise TypeError(f"curvature_every (the probe period T_c) must be an integer >= 1, got "
                            f"{type(curvature_every).__name__}")
        if curvature_every < 1:
            raise ValueError(f"curvature_every (the probe period T_c) must be an integer >= 1, got "
                             f"{curvature_every!r}")
        self.curvature_every = int(curvature_every)
        self.lanczos_steps = nonneg_int("lanczos_steps", lanczos_steps, minimum=1)
        self.curvature_method = choice("curvature", curvature, self._curvature_methods)
        self.tol = None if tol is None else positive("tol", tol)
        self.eigval_tol = None if eigval_tol is None else positive("eigval_tol", eigval_tol)
        if not isinstance(warm_start, bool):
            raise TypeError(f"warm_start must be True or False, got {type(warm_start).__name__}")
        self.warm_start = warm_start
        self.seed = nonneg_int("seed", seed)
        plist = self._params()
        if not plist:
            raise ValueError(f"{self._name}: params must contain at least one tensor that requires grad")
        self.device, self.dtype = common_device_dtype(plist, "params")
        n = sum(p.numel() for p in plist)
        if self.curvature_k > n:
            raise ValueError(f"k must be in [1, number of parameters] = [1, {n}], got {self.curvature_k}")
        if probe is not None:
            probe._named(plist)  # the probe's model must own every parameter
        self._step_count = 0
        self._next_probe = 0
        self._eigs = np.zeros(self.curvature_k)
        self._eigvecs = None
        self.n_hvp = 0
        self.n_probes = 0
        self.last_probe_hvps = 0
        self.curvature_time = 0.0
        self.last_residuals = np.full(self.curvature_k, np.nan)
        self.last_standard_error = float("nan")
        self.lr_in_force = [float("nan")] * len(self.param_groups)

    # ---------------------------------------------------------------- groups
    def _check_group(self, gi, group):
        """Validate a param group's hyperparameters (at add_param_group and every step)."""
        _group_lr(self._name, gi, group)

    def add_param_group(self, param_group):
        """torch's ``add_param_group``, plus: the group's hyperparameters are checked, and
        once training has begun the warm start is reset and the next step probes (the
        Hessian is now over more parameters)."""
        super().add_param_group(param_group)
        gi = len(self.param_groups) - 1
        started = hasattr(self, "_step_count")
        try:
            self._check_group(gi, self.param_groups[gi])
            if started:
                common_device_dtype(self._params(), "params")
                if self.probe is not None:
                    self.probe._named(self._params())
        except Exception:
            self.param_groups.pop()
            raise
        if started:
            self._eigvecs = None
            self._next_probe = self._step_count
            self.lr_in_force.append(float("nan"))

    # ---------------------------------------------------------------- helpers
    def _params(self):
        return [p for g in self.param_groups for p in g["params"] if p.requires_grad]

    @property
    def step_count(self) -> int:
        """Updates taken so far (the next step is number ``step_count``, 0-based)."""
        return self._step_count

    @property
    def probes_next(self) -> bool:
        """Whether the next ``step()`` probes the curvature."""
        return self._step_count >= self._next_probe

    @property
    def needs_closure(self) -> bool:
        """Whether the next ``step()`` needs a closure: it probes and no ``probe`` was given."""
        return self.probes_next and self.probe is None

    @property
    def hvp_per_probe(self) -> float:
        """Mean HVPs per curvature probe so far (m of the overhead model; NaN before a probe)."""
        return self.n_hvp / self.n_probes if self.n_probes else float("nan")

    @property
    def eigenvalues(self) -> np.ndarray:
        """The top-k Hessian eigenvalues in force (descending; zeros before the first probe)."""
        return self._eigs.copy()

    def _curvature(self, matvec, n):
        """Top-k eigenpairs of the operator ``matvec`` (warm-started), or the Hutchinson mean
        curvature; stores them."""
        t0 = time.perf_counter()
        count = [0]

        def counted(v):
            count[0] += 1
            return matvec(v)

        from .curvature import _top_eigenpairs

        like = torch.empty(0, device=self.device, dtype=self.dtype)
        if self.curvature_method == "hutchinson":
            est, se = self._mean_curvature(counted, n, like)
            self._eigs = np.full(self.curvature_k, est)
            self._eigvecs = None
            self.last_residuals = np.full(self.curvature_k, np.nan)
            self.last_standard_error = se
            self.n_hvp += count[0]
            self.last_probe_hvps = count[0]
            self.n_probes += 1
            self.curvature_time += time.perf_counter() - t0
            return
        if self.curvature_method == "exact":
            res = _top_eigenpairs()(counted, n, k=self.curvature_k, method="exact", which="LA",
                                    like=like, force_exact=True)
        else:
            res = _top_eigenpairs()(counted, n, k=self.curvature_k, method="lanczos", which="LA",
                                    tol=self.tol, eigval_tol=self.eigval_tol,
                                    max_iter=max(self.lanczos_steps, self.curvature_k),
                                    ncv=min(n, max(self.lanczos_steps, self.curvature_k + 2)),
                                    v0=self._eigvecs if self.warm_start else None, seed=self.seed,
                                    like=like)
        eigs = np.asarray(res.eigenvalues, dtype=np.float64)
        if not np.all(np.isfinite(eigs)):
            raise NonFiniteLossError(self._step_count, float("nan"), f"{self._name} curvature probe")
        self._eigs = eigs.copy()
        self._eigvecs = res.eigenvectors.detach()
        self.last_residuals = np.asarray(res.residual_norms, dtype=np.float64)
        self.n_hvp += count[0]
        self.last_probe_hvps = count[0]
        self.n_probes += 1
        self.curvature_time += time.perf_counter() - t0

    def hutchinson_stream(self, step: int) -> int:
        """The seed of the random stream of the Hutchinson probe at ``step`` (0-based): the
        probe's direction i is the normalised Gaussian vector i of this stream
        (:func:`eosdyn.curvature.hutchinson_trace`'s ``seed``), a function of ``seed`` and
        the step only, so runs are reproducible and successive probes independent."""
        ss = np.random.SeedSequence([self.seed, nonneg_int("step", step)])
        return int(ss.generate_state(1, np.uint64)[0])

    def _mean_curvature(self, matvec, n, like):
        """(estimate, standard error) of the mean of uᵀHu over ``hutchinson_samples`` unit
        directions u = v/‖v‖, v Gaussian: :func:`eosdyn.curvature.hutchinson_trace` (the
        estimator, its seeding and its standard error) on the operator v ↦ H(v/‖v‖)/‖v‖,
        whose quadratic form vᵀ(H(v/‖v‖)/‖v‖) is uᵀHu."""
        from ..curvature import hutchinson_trace

        step = self._step_count

        def on_unit(v):
            r = torch.linalg.vector_norm(v)
            hu = matvec(v / r)
            if not bool(torch.isfinite(hu).all()):
                raise NonFiniteLossError(step, float("nan"), f"{self._name} curvature probe")
            return hu / r

        res = hutchinson_trace(on_unit, n, self.hutchinson_samples, dist="gaussian",
                               seed=self.hutchinson_stream(step), like=like)
        if not math.isfinite(res.estimate):  # pragma: no cover - on_unit raises first
            raise NonFiniteLossError(step, res.estimate, f"{self._name} curvature probe")
        return float(res.estimate), float(res.standard_error)

    def _call_closure(self, closure, params, own_graph):
        """Run the closure; (what step returns, gradients with their graph or None).

        A closure that changes any ``p.grad`` follows torch's convention (its ``p.grad`` is
        the gradient); otherwise it is forward-only and is differentiated here."""
        before = [(p.grad, None if p.grad is None else p.grad._version) for p in params]
        fired = [False]

        def hook(_):
            fired[0] = True

        handles = [p.register_post_accumulate_grad_hook(hook) for p in params]
        try:
            with torch.enable_grad():
                out = closure()
        finally:
            for h in handles:
                h.remove()
        changed = fired[0] or any(p.grad is not g0 or (g0 is not None and g0._version != v0)
                                  for p, (g0, v0) in zip(params, before))
        if changed:  # torch's convention: backward() was called, p.grad is the gradient
            val = None
            if isinstance(out, torch.Tensor) and out.numel() == 1:
                val = float(out.detach())
            elif isinstance(out, numbers.Real) and not isinstance(out, bool):
                val = float(out)
            if val is not None and not math.isfinite(val):
                raise NonFiniteLossError(self._step_count, val, self._name)
            return out, None
        _loss_value(out, self._name, self._step_count)
        try:
            with torch.enable_grad():
                grads = list(torch.autograd.grad(out, params, create_graph=own_graph, allow_unused=True))
        except RuntimeError as exc:
            raise ValueError(f"{self._name}: could not differentiate the closure's loss ({exc}). A "
                             "closure either returns the loss without calling backward() (the "
                             "optimizer differentiates it), or calls backward() itself (torch's "
                             "convention)") from None
        for p, g in zip(params, grads):
            p.grad = None if g is None else g.detach()
        return out.detach(), (grads if own_graph else None)

    def _no_curvature_error(self, torch_closure):
        s = self._step_count
        if torch_closure:
            return ValueError(
                f"{self._name}.step() probes the curvature at step {s} (every curvature_every="
                f"{self.curvature_every} steps), but the closure called backward() (torch's "
                "convention), which consumes the graph the Hessian would come from. Either give "
                f"the optimizer a probe: {self._name}(params, ..., probe=Probe(model, loss_fn, data)), "
                "or pass a closure that returns the loss without calling backward()")
        return ValueError(
            f"{self._name}.step() needs a closure at step {s}: it probes the curvature every "
            f"curvature_every={self.curvature_every} steps. Give the optimizer a probe, "
            f"{self._name}(params, ..., probe=Probe(model, loss_fn, data)), so that the plain loop "
            "works, or pass closure=lambda: loss_fn(model(x), y) (returning the loss, without backward)")

    def _prepare(self, closure, probe_closure):
        """Everything before the update: checks, the closure, the probe. Returns step's value."""
        for gi, group in enumerate(self.param_groups):
            self._check_group(gi, group)
        params = self._params()
        probing = self.probes_next
        if probing and closure is None and probe_closure is None and self.probe is None:
            raise self._no_curvature_error(False)
        own_graph = probing and probe_closure is None and self.probe is None
        ret, graph = None, None
        if closure is not None:
            ret, graph = self._call_closure(closure, params, own_graph)
            if own_graph and graph is None:
                raise self._no_curvature_error(True)
        if all(p.grad is None for p in params):
            raise ValueError(f"{self._name}.step() needs gradients in p.grad (call loss.backward() "
                             "first), or a closure")
        if probing:
            n = sum(p.numel() for p in params)
            if probe_closure is not None:
                with torch.enable_grad():
                    ploss = probe_closure()
                    _loss_value(ploss, f"{self._name} probe_closure", self._step_count)
                    pg = list(torch.autograd.grad(ploss, params, create_graph=True, allow_unused=True))
                self._curvature(_graph_matvec(pg, params, params), n)
                del pg
            elif self.probe is not None:
                matvec, release = self.probe.operator(params, self._name, self._step_count)
                try:
                    self._curvature(matvec, n)
                finally:
                    release()
            else:
                self._curvature(_graph_matvec(graph, params, params), n)
            del graph
        return ret, probing

    def _finish(self, probing):
        if probing:
            self._next_probe = self._step_count + self.curvature_every
        self._step_count += 1

    def _stepped(self, group):
        return [p for p in group["params"] if p.grad is not None]

    # ---------------------------------------------------------------- state
    def _extra_state(self) -> dict:
        return {
            "step": self._step_count,
            "next_probe": self._next_probe,
            "eigenvalues": [float(e) for e in self._eigs],
            "eigenvectors": None if self._eigvecs is None else self._eigvecs.detach().clone(),
            "n_hvp": self.n_hvp,
            "n_probes": self.n_probes,
            "last_probe_hvps": self.last_probe_hvps,
            "residuals": [float(r) for r in self.last_residuals],
            "standard_error": float(self.last_standard_error),
            "lr_in_force": [float(x) for x in self.lr_in_force],
            "curvature_time": self.curvature_time,
            "probe": None if self.probe is None else self.probe.state_dict(),
        }

    def _load_extra_state(self, extra: dict):
        self._step_count = int(extra["step"])
        # older states: probes at multiples of curvature_every
        default_next = -(-self._step_count // self.curvature_every) * self.curvature_every
        self._next_probe = int(extra.get("next_probe", default_next))
        self._eigs = np.asarray(extra["eigenvalues"], dtype=np.float64)
        ev = extra["eigenvectors"]
        self._eigvecs = None if ev is None else ev.to(device=self.device, dtype=self.dtype)
        self.n_hvp = int(extra["n_hvp"])
        self.n_probes = int(extra["n_probes"])
        self.last_probe_hvps = int(extra.get("last_probe_hvps", 0))
        self.last_residuals = np.asarray(extra["residuals"], dtype=np.float64)
        self.last_standard_error = float(extra.get("standard_error", float("nan")))
        self.lr_in_force = [float(x) for x in extra["lr_in_force"]]
        self.curvature_time = float(extra.get("curvature_time", 0.0))
        if self.probe is not None and extra.get("probe") is not None:
            self.probe.load_state_dict(extra["probe"])

    def state_dict(self):
        sd = super().state_dict()
        sd["eosdyn"] = self._extra_state()
        return sd

    def load_state_dict(self, state_dict):
        state_dict = dict(state_dict)
        extra = state_dict.pop("eosdyn", None)
        if extra is None:
            raise ValueError(f"{self._name}.load_state_dict: state_dict lacks the 'eosdyn' entry "
                             "(curvature state); was it saved by the same optimizer class?")
        super().load_state_dict(state_dict)
        self._load_extra_state(extra)

    # ---------------------------------------------------------------- repr
    def _notes(self, group) -> dict:
        return {}

    def __repr__(self) -> str:
        s = f"{type(self).__name__} ("
        for i, group in enumerate(self.param_groups):
            s += f"\nParameter Group {i}\n"
            notes = self._notes(group)
            for key in sorted(group):
                if key == "params":
                    continue
                s += f"    {key}: {group[key]}" + (f"   # {notes[key]}" if key in notes else "") + "\n"
        probe = "probe: none (closure)" if self.probe is None else f"probe: {self.probe!r}"
        if self.curvature_method == "hutchinson":
            what = (f"mean curvature tr(H)/d by hutchinson ({self.hutchinson_samples} unit "
                    "direction(s))")
        else:
            what = f"top-{self.curvature_k} by {self.curvature_method}"
        s += f"Curvature: {what} every {self.curvature_every} step(s), {probe}\n)"
        return s


# --------------------------------------------------------------------------- EoS-Ada
class EoSAda(_CurvatureOptimizer):
    """EoS-Ada (the proposal's adaptive rule) as a torch optimizer.

        η_t = α / (|λ_max| + ε),   σ_t = β · exp(−γ · λ_max),
        θ ← θ − lr · η_t · g + σ_t ξ,   ξ ~ N(0, I)

    (α = ``alpha``, ε = ``eps`` >= 0, β = ``noise_scale``, γ = ``noise_decay``), with η_t and σ_t
    from :func:`eosdyn.rules.schedules.eosada_lr` / :func:`~eosdyn.rules.schedules.eosada_noise`,
    λ_max the probed sharpness (largest algebraic Hessian eigenvalue) and g = ``p.grad``.

    ``lr`` (keyword, default 1.0) is a **multiplier** on η_t, there so that torch's LR schedulers
    (which set ``param_groups[i]["lr"]``) work: the step in force is lr·η_t, the rule as published
    at lr = 1. It must be finite and >= 0 at every step. It does not scale the noise σ_t.

    Negative curvature: the proposal assumes λ_max > 0. Where the probed λ_max is negative (a
    concave region, e.g. near a saddle or a maximum), α/(λ_max + ε) would be a negative step,
    i.e. gradient *ascent*; the schedule uses |λ_max| instead, so η_t stays positive and
    bounded by α/|λ_max|, and the move is a descent step. ε = 0 is allowed; where
    |λ_max| + ε = 0 (a flat probe) the step is defined as 0, as in the toy rule. Identical to the toy
    rule :class:`eosdyn.rules.EoSAda` with the same arguments and lr = 1 (defaults too: probe every
    step, ``curvature_every=1``, ``lanczos_steps=20``, ``hutchinson_samples=10``).

    ``curvature`` picks the estimate put where λ_max stands above:

    - ``"lanczos"`` (default): λ_max by warm-started Lanczos (module docstring);
    - ``"exact"``: λ_max of the dense Hessian (n HVPs; small models);
    - ``"hutchinson"``: the proposal's own estimator, as in the toy rule: the mean of uᵢᵀHuᵢ
      over ``hutchinson_samples`` (k, default 10, an integer >= 1) random unit directions
      uᵢ = vᵢ/‖vᵢ‖, vᵢ ~ N(0, I), i.e. uniform on the unit sphere of ℝᵈ (d the number of
      parameters), with k HVPs per probe. Since ‖u‖ = 1 and, by symmetry, E[uuᵀ] = I/d,

          E[uᵀHu] = tr(H E[uuᵀ]) = tr(H)/d,

      the *mean* eigenvalue of H — not λ_max (and Var[uᵀHu] = 2(tr(H²)/d − (tr(H)/d)²)/(d + 2)).
      The step α/(|tr(H)/d| + ε) is then set by the average curvature and can exceed the edge
      2/λ_max by far; it is offered faithfully, for comparison with the proposal. The estimate is
      kept where λ_max is (``eigenvalues[0]``), its standard error over the k directions in
      ``last_standard_error``; the directions of the probe at step s come from the stream
      :meth:`hutchinson_stream` (``seed``, s), so runs are reproducible, and resumable from
      ``state_dict()``. ``lanczos_steps``, ``tol``, ``eigval_tol`` and ``warm_start`` do not
      apply to it. The toy rule's "power" estimator is not offered here.

    ξ is drawn with a ``torch.Generator`` on the parameters' device, seeded with ``seed``;
    its state is part of ``state_dict()``. ``lr``, ``alpha``, ``eps``, ``noise_scale`` and
    ``noise_decay`` are per param-group; the curvature (one Hessian over all parameters)
    is shared. After each step ``lr_in_force`` lists lr·η_t per group, and each stepped
    parameter's state holds ``lr_in_force`` (lr·η_t), ``lr_factor_in_force`` (η_t) and
    ``noise_in_force`` (σ_t).

    ``probe``: a :class:`~eosdyn.bridge.probe.Probe` that supplies the Hessian, so that a plain
    ``backward(); step()`` loop works. See the module docstring for ``step(closure)``.
    ``eigval_tol`` (float > 0, optional) and ``warm_start`` (bool, default True): the probe's
    stopping rule and warm start (module docstring, "Cost of a probe").
    """

    _name = "EoSAda"

    _curvature_methods = EOSADA_CURVATURE

    def __init__(self, params, alpha=1.9, eps=1e-8, noise_scale=0.0, noise_decay=0.0,
                 curvature="lanczos", curvature_every=1, lanczos_steps=20, tol=None, seed=0, *,
                 lr=1.0, probe=None, eigval_tol=None, warm_start=True, hutchinson_samples=10):
        self.hutchinson_samples = nonneg_int("hutchinson_samples", hutchinson_samples, minimum=1)
        eps = positive("eps", eps, allow_zero=True)
        defaults = dict(lr=positive("lr", lr), alpha=positive("alpha", alpha), eps=eps,
                        noise_scale=positive("noise_scale", noise_scale, allow_zero=True),
                        noise_decay=in_range("noise_decay", noise_decay, -np.inf, np.inf))
        super().__init__(params, defaults, 1, curvature_every, lanczos_steps, curvature, tol, seed, probe,
                         eigval_tol, warm_start)
        self._generator = None

    def _notes(self, group):
        return {"lr": "multiplier on eta_t = alpha/(|lambda_max| + eps): the step in force is lr*eta_t"}

    def _gen(self):
        if self._generator is None:
            self._generator = torch.Generator(device=self.device)
            self._generator.manual_seed(self.seed)
        return self._generator

    @torch.no_grad()
    def step(self, closure=None, probe_closure=None):
        """One EoS-Ada update from ``p.grad``; returns the closure's loss, or None without one."""
        ret, probing = self._prepare(closure, probe_closure)
        lam = float(self._eigs[0])
        for gi, group in enumerate(self.param_groups):
            eta = float(eosada_lr(lam, group["alpha"], group["eps"]))
            lr = float(group["lr"]) * eta
            sigma = float(eosada_noise(lam, group["noise_scale"], group["noise_decay"]))
            for p in self._stepped(group):
                p.add_(p.grad, alpha=-lr)
                if sigma != 0.0:
                    xi = torch.randn(p.shape, generator=self._gen(), device=p.device, dtype=p.dtype)
                    p.add_(xi, alpha=sigma)
                self.state[p].update(lr_in_force=lr, lr_factor_in_force=eta, noise_in_force=sigma)
            self.lr_in_force[gi] = lr
        self._finish(probing)
        return ret

    def _extra_state(self):
        extra = super()._extra_state()
        extra["generator_state"] = None if self._generator is None else self._generator.get_state().clone()
        return extra

    def _load_extra_state(self, extra):
        super()._load_extra_state(extra)
        gs = extra.get("generator_state")
        if gs is None:
            self._generator = None
        else:
            self._gen().set_state(gs.to("cpu", torch.uint8))


# ------------------------------------------------------------------------------ DCAO
class DCAO(_CurvatureOptimizer):
    """DCAO as a torch optimizer: momentum SGD with spectrum-driven step, momentum and decay.

    Every ``curvature_every`` (T_c) steps the top-``k`` Hessian eigenvalues are probed by at
    most ``lanczos_steps`` (m) Lanczos HVPs, warm-started; ρ = λ₁, γ = λ₁ − λ₂. Then
    (:func:`eosdyn.rules.schedules.dcao_hyperparameters`, refined form)

        η = η₀ f(ρ),    f(ρ) = clip(exp(−α(ρ − ρ_ref)), f_min, f_max)
        β = β₀ g(γ),    g(γ) = 1 + tanh(β₁(γ − γ_ref))  ∈ (0, 2)
        λ_wd = λ₀ (1 + κ ρ/ρ_ref)
        v ← β v + g_θ + λ_wd θ,   θ ← θ − η v        (g_θ = ``p.grad``)

    with the same parameter names and defaults as the toy rule :class:`eosdyn.rules.DCAO`:
    η₀ = ``lr``, β₀ = ``momentum``, λ₀ = ``weight_decay``, α = ``alpha``, ρ_ref = ``rho_ref``
    (default 2/lr, read from the group at every step, so it follows an LR scheduler; +inf when
    lr = 0), (f_min, f_max) = ``lr_factor_range``, β₁ = ``beta1``, γ_ref = ``gap_ref``,
    κ = ``wd_gain``; ``variant="v1"`` the earlier form (η = η₀e^(−αρ), β = β₀e^(−v1_beta·gap),
    λ_wd = λ₀e^(−v1_gamma·ρ)). Before the first probe nothing is in force: step 0 always probes.

    ``lr`` is the **base** step η₀: the rule multiplies it by f(ρ) ∈ [f_min, f_max], so the step
    in force can be up to f_max·lr (2·lr by default). ``momentum`` is the **base** β₀: the
    momentum in force is β₀·g(γ), whose supremum over all spectra — the *bound* — is 2β₀ in the
    refined form with β₁ > 0 (g → 2 as the gap grows), β₀ when β₁ = 0 or in the v1 form. A
    heavy-ball momentum >= 1 diverges, so a configuration whose bound reaches 1 (refined form:
    ``momentum >= 0.5``) is rejected with ``ValueError`` — at construction, in
    ``add_param_group``, and at a step after a scheduler (e.g. ``OneCycleLR`` with
    ``cycle_momentum=True``, which sets momentum to 0.85–0.95) changed it.

    Hyperparameters are per param-group; the eigenvalues are shared. After each step
    ``lr_in_force`` lists η per group, and each stepped parameter's state holds
    ``lr_in_force`` (η), ``lr_factor_in_force`` (η/η₀ = f(ρ)), ``momentum_in_force`` (β),
    ``momentum_bound`` and ``weight_decay_in_force`` (λ_wd), besides ``momentum_buffer``.

    The toy rule's "power"/"hutchinson"/"auto" estimators are not offered; "lanczos" (default)
    and "exact" are. In particular ``curvature="hutchinson"`` (EoS-Ada's mean curvature, the mean
    of uᵀHu over random unit directions u, whose expectation is tr(H)/d) raises ``ValueError``:
    DCAO needs λ₁ and the gap λ₁ − λ₂, which a single trace estimate does not give.
    ``probe``: a :class:`~eosdyn.bridge.probe.Probe` that supplies the Hessian,
    so that a plain ``backward(); step()`` loop works. See the module docstring for
    ``step(closure)``. ``eigval_tol`` (float > 0, optional) and ``warm_start`` (bool, default
    True): the probe's stopping rule and warm start (module docstring, "Cost of a probe").
    """

    _name = "DCAO"

    def __init__(self, params, lr=0.01, momentum=0.45, weight_decay=0.0, alpha=0.1, rho_ref=None,
                 lr_factor_range=(0.5, 2.0), beta1=1.0, gap_ref=0.0, wd_gain=1.0, k=2,
                 curvature_every=100, lanczos_steps=20, curvature="lanczos", variant="refined",
                 v1_beta=0.1, v1_gamma=0.1, tol=None, seed=0, *, probe=None, eigval_tol=None,
                 warm_start=True):
        if isinstance(curvature, str) and curvature == "hutchinson":
            raise ValueError(
                "DCAO: curvature='hutchinson' is not offered: Hutchinson's estimator gives the mean "
                "curvature tr(H)/d (the mean of u^T H u over random unit directions u), but DCAO "
                "needs the top eigenvalues lambda_1 and lambda_2 (its step follows rho = lambda_1, "
                "its momentum the gap lambda_1 - lambda_2). Use curvature='lanczos' or 'exact' "
                "(EoSAda offers 'hutchinson')")
        lr = positive("lr", lr)
        lo, hi = pair("lr_factor_range", lr_factor_range)
        lo = positive("lr_factor_range[0]", lo)
        hi = positive("lr_factor_range[1]", hi)
        if lo > hi:
            raise ValueError(f"lr_factor_range must satisfy low <= high, got {lr_factor_range!r}")
        defaults = dict(
            lr=lr, momentum=in_range("momentum", momentum, 0.0, 1.0, hi_open=True),
            weight_decay=positive("weight_decay", weight_decay, allow_zero=True),
            alpha=positive("alpha", alpha, allow_zero=True),
            rho_ref=None if rho_ref is None else positive("rho_ref", rho_ref),
            lr_factor_range=(lo, hi), beta1=positive("beta1", beta1, allow_zero=True),
            gap_ref=positive("gap_ref", gap_ref, allow_zero=True),
            wd_gain=positive("wd_gain", wd_gain, allow_zero=True),
            variant=choice("variant", variant, _DCAO_VARIANTS),
            v1_beta=positive("v1_beta", v1_beta, allow_zero=True),
            v1_gamma=positive("v1_gamma", v1_gamma, allow_zero=True))
        self._check_momentum(None, defaults)
        super().__init__(params, defaults, k, curvature_every, lanczos_steps, curvature, tol, seed, probe,
                         eigval_tol, warm_start)

    # ---------------------------------------------------------------- the bound
    @staticmethod
    def momentum_bound(group) -> float:
        """sup over spectra of the momentum in force: 2β₀ (refined, β₁ > 0), else β₀."""
        b0 = float(group["momentum"])
        if group["variant"] == "refined" and float(group["beta1"]) > 0.0:
            return 2.0 * b0
        return b0

    def _check_momentum(self, gi, group):
        where = "" if gi is None else f" in param group {gi}"
        m = group.get("momentum")
        if isinstance(m, bool) or not isinstance(m, numbers.Real) or not (0.0 <= float(m) < 1.0):
            raise ValueError(f"DCAO: momentum{where} must be in [0, 1), got {m!r} (a scheduler with "
                             "cycle_momentum, e.g. OneCycleLR, sets it: pass cycle_momentum=False or "
                             "max_momentum < 0.5)")
        bound = self.momentum_bound(group)
        if bound >= 1.0:
            raise ValueError(
                f"DCAO: momentum{where} = {float(m)!r} is the base β₀ of the momentum in force "
                f"β = β₀·g(γ), g(γ) = 1 + tanh(β₁(γ − γ_ref)) ∈ (0, 2); its bound 2β₀ = {bound!r} "
                "reaches 1, where heavy-ball momentum diverges. Use momentum < 0.5 (or beta1=0, "
                "which makes β = β₀). A scheduler with cycle_momentum (OneCycleLR: 0.85-0.95) must "
                "be given cycle_momentum=False or base/max_momentum < 0.5")

    def _check_group(self, gi, group):
        super()._check_group(gi, group)
        self._check_momentum(gi, group)

    def _notes(self, group):
        lo, hi = group["lr_factor_range"]
        return {"lr": f"base step eta0: the step in force is lr*f(rho), f in [{lo}, {hi}], up to "
                      f"{hi}*lr",
                "momentum": f"base beta0: the momentum in force is beta0*g(gap) < bound "
                            f"{self.momentum_bound(group)}"}

    # ---------------------------------------------------------------- the schedule
    def _in_force(self, group):
        """(η, f, β, λ_wd) of a group for the eigenvalues in force; η = lr·f exactly."""
        lr = float(group["lr"])
        if group["rho_ref"] is not None:
            rho_ref = float(group["rho_ref"])
        else:
            rho_ref = 2.0 / lr if lr > 0.0 else math.inf
        lo, hi = group["lr_factor_range"]
        eigs = np.ascontiguousarray(self._eigs, dtype=np.float64)
        f, mom, wd = dcao_hyperparameters(
            eigs, int(self.curvature_k), int(_DCAO_VARIANTS[group["variant"]]), 1.0,
            float(group["momentum"]), float(group["weight_decay"]), float(group["alpha"]), rho_ref,
            float(lo), float(hi), float(group["beta1"]), float(group["gap_ref"]),
            float(group["wd_gain"]), float(group["v1_beta"]), float(group["v1_gamma"]))
        f = float(f)
        eta = lr * f if lr > 0.0 else 0.0
        return eta, f, float(mom), float(wd)

    def schedule(self, group=None):
        """(η, β, λ_wd) of a param group (default the first) for the eigenvalues in force."""
        eta, _, mom, wd = self._in_force(self.param_groups[0] if group is None else group)
        return eta, mom, wd

    @torch.no_grad()
    def step(self, closure=None, probe_closure=None):
        """One DCAO update from ``p.grad``; returns the closure's loss, or None without one."""
        ret, probing = self._prepare(closure, probe_closure)
        for gi, group in enumerate(self.param_groups):
            lr, factor, mom, wd = self._in_force(group)
            bound = self.momentum_bound(group)
            for p in self._stepped(group):
                st = self.state[p]
                buf = st.get("momentum_buffer")
                if buf is None:
                    buf = st["momentum_buffer"] = torch.zeros_like(p)
                buf.mul_(mom).add_(p.grad)
                if wd != 0.0:
                    buf.add_(p, alpha=wd)
                p.add_(buf, alpha=-lr)
                st.update(lr_in_force=lr, lr_factor_in_force=factor, momentum_in_force=mom,
                          momentum_bound=bound, weight_decay_in_force=wd)
            self.lr_in_force[gi] = lr
        self._finish(probing)
        return ret
