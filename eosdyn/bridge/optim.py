"""EoS-Ada and DCAO as ``torch.optim.Optimizer`` subclasses.

They implement *exactly* the toy rules :class:`eosdyn.rules.EoSAda` and
:class:`eosdyn.rules.DCAO` (same parameter names, defaults and update order), and get
their step size, noise, momentum and weight decay from the same scalar functions,
:mod:`eosdyn.rules.schedules` — no formula is restated here.

Curvature probe
---------------
Every ``curvature_every`` steps (T_c; at steps s = 0, T_c, 2T_c, … counted from 0, at the
parameters θ_s *before* update s + 1, as the toy simulator does) the optimizer finds the
top-k eigenvalues of the Hessian of the closure's loss by Lanczos
(:func:`eosdyn.curvature.top_eigenpairs`) with at most ``lanczos_steps`` (m) Hessian-vector
products, warm-started from the previous probe's eigenvectors. Between probes the last
eigenvalues stay in force. ``curvature="exact"`` builds the dense Hessian with n HVPs
instead (small models; it is what the toy rules' ``curvature="exact"`` computes).

The closure, and how the HVPs are taken — ``step(closure)``
------------------------------------------------------------
The closure evaluates the loss and returns it **without calling backward**::

    def closure():
        return loss_fn(model(x), y)
    opt.step(closure)

The optimizer differentiates it itself: ``torch.autograd.grad(loss, params,
create_graph=probe)``. On a probe step the gradient keeps its graph, and every
Lanczos HVP is one more backward pass through it, H v = ∇⟨∇L, v⟩ (double backward,
Pearlmutter 1994): one forward pass per step, probe or not, and no create_graph cost
on the other steps. The gradients are left in ``p.grad`` (detached), as after
``backward()``. Curvature is that of the closure's loss: full-batch, or the current
minibatch. To probe a fixed batch instead (Cohen et al. 2021 use a fixed subset), pass
``probe_closure``, a second closure of the same kind evaluated only on probe steps.

A closure is needed on probe steps only. On the other steps ``step()`` may be called
without one after the usual ``loss.backward()`` — the ``p.grad`` already there are used —
so a plain torch training loop works, provided it passes a closure every T_c steps
(``opt.needs_closure`` says whether the next step probes). A missing closure on a probe
step raises ``ValueError``; a non-finite loss raises :class:`NonFiniteLossError` before any
parameter is touched.

State
-----
``state_dict()`` holds, besides the per-parameter state (DCAO's momentum buffer), an
``"eosdyn"`` entry: the step counter, the eigenvalues in force, the last eigenvectors
(the warm start), HVP and probe counters, and the state of EoS-Ada's noise generator, so
that a run resumed from ``load_state_dict()`` continues bit-identically.
"""
from __future__ import annotations

import math
import time

import numpy as np
import torch

from .._validate import choice, in_range, nonneg_int, pair, positive
from ..rules.schedules import dcao_hyperparameters, eosada_lr, eosada_noise
from ._common import common_device_dtype, flatten, unflatten

BRIDGE_CURVATURE = ("lanczos", "exact")
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


class _CurvatureOptimizer(torch.optim.Optimizer):
    """Common machinery: the step counter, closure handling, the warm-started probe, state."""

    _name = "optimizer"

    def __init__(self, params, defaults, k, curvature_every, lanczos_steps, curvature, tol, seed):
        super().__init__(params, defaults)
        self.curvature_k = nonneg_int("k", k, minimum=1)
        self.curvature_every = nonneg_int("curvature_every", curvature_every, minimum=1)
        self.lanczos_steps = nonneg_int("lanczos_steps", lanczos_steps, minimum=1)
        self.curvature_method = choice("curvature", curvature, BRIDGE_CURVATURE)
        self.tol = None if tol is None else positive("tol", tol)
        self.seed = nonneg_int("seed", seed)
        plist = self._params()
        if not plist:
            raise ValueError(f"{self._name}: params must contain at least one tensor that requires grad")
        self.device, self.dtype = common_device_dtype(plist, "params")
        n = sum(p.numel() for p in plist)
        if self.curvature_k > n:
            raise ValueError(f"k must be in [1, number of parameters] = [1, {n}], got {self.curvature_k}")
        self._step_count = 0
        self._eigs = np.zeros(self.curvature_k)
        self._eigvecs = None
        self.n_hvp = 0
        self.n_probes = 0
        self.curvature_time = 0.0
        self.last_residuals = np.full(self.curvature_k, np.nan)
        self.lr_in_force = [float("nan")] * len(self.param_groups)

    # ---------------------------------------------------------------- helpers
    def _params(self):
        return [p for g in self.param_groups for p in g["params"] if p.requires_grad]

    @property
    def step_count(self) -> int:
        """Updates taken so far (the next step is number ``step_count``, 0-based)."""
        return self._step_count

    @property
    def needs_closure(self) -> bool:
        """Whether the next ``step()`` probes the curvature (and so needs a closure)."""
        return self._step_count % self.curvature_every == 0

    @property
    def eigenvalues(self) -> np.ndarray:
        """The top-k Hessian eigenvalues in force (descending; zeros before the first probe)."""
        return self._eigs.copy()

    def _probe(self, grads, params):
        """Top-k eigenvalues of the Hessian whose gradient graph is ``grads``."""
        t0 = time.perf_counter()
        pairs = [(i, g) for i, g in enumerate(grads) if g is not None and g.requires_grad]
        live_g = [g for _, g in pairs]
        live_p = [params[i] for i, _ in pairs]
        n = sum(p.numel() for p in params)
        count = [0]

        def matvec(v):
            count[0] += 1
            vs = unflatten(v, params)
            if not live_g:
                return torch.zeros_like(v)
            hv = torch.autograd.grad(live_g, live_p, grad_outputs=[vs[i] for i, _ in pairs],
                                     retain_graph=True, allow_unused=True)
            out = [torch.zeros_like(p) for p in params]
            for (i, _), h in zip(pairs, hv):
                if h is not None:
                    out[i] = h
            return flatten(out).detach()

        from .curvature import _top_eigenpairs

        like = torch.empty(0, device=self.device, dtype=self.dtype)
        if self.curvature_method == "exact":
            res = _top_eigenpairs()(matvec, n, k=self.curvature_k, method="exact", which="LA",
                                    like=like, force_exact=True)
        else:
            res = _top_eigenpairs()(matvec, n, k=self.curvature_k, method="lanczos", which="LA",
                                    tol=self.tol, max_iter=max(self.lanczos_steps, self.curvature_k),
                                    ncv=min(n, max(self.lanczos_steps, self.curvature_k + 2)),
                                    v0=self._eigvecs, seed=self.seed, like=like)
        eigs = np.asarray(res.eigenvalues, dtype=np.float64)
        if not np.all(np.isfinite(eigs)):
            raise NonFiniteLossError(self._step_count, float("nan"), f"{self._name} curvature probe")
        self._eigs = eigs.copy()
        self._eigvecs = res.eigenvectors.detach()
        self.last_residuals = np.asarray(res.residual_norms, dtype=np.float64)
        self.n_hvp += count[0]
        self.n_probes += 1
        self.curvature_time += time.perf_counter() - t0

    def _gradients(self, closure, probe_closure, probe):
        """Gradients (list aligned with ``_params()``) and the loss; probes if asked."""
        params = self._params()
        if closure is None:
            if probe:
                raise ValueError(
                    f"{self._name}.step() needs a closure at step {self._step_count}: it probes the "
                    f"curvature every curvature_every={self.curvature_every} steps. Pass "
                    "closure=lambda: loss_fn(model(x), y) (returning the loss, without backward)")
            grads = [p.grad for p in params]
            if all(g is None for g in grads):
                raise ValueError(f"{self._name}.step() without a closure needs gradients in p.grad "
                                 "(call loss.backward() first), or pass a closure")
            return grads, None
        with torch.enable_grad():
            loss = closure()
        val = _loss_value(loss, self._name, self._step_count)
        own_graph = probe and probe_closure is None
        try:
            with torch.enable_grad():
                grads = list(torch.autograd.grad(loss, params, create_graph=own_graph, allow_unused=True))
        except RuntimeError as exc:
            raise ValueError(f"{self._name}: could not differentiate the closure's loss ({exc}). The "
                             "closure must return the loss without calling backward()") from None
        if probe:
            if probe_closure is None:
                self._probe(grads, params)
            else:
                with torch.enable_grad():
                    ploss = probe_closure()
                    _loss_value(ploss, f"{self._name} probe_closure", self._step_count)
                    pg = list(torch.autograd.grad(ploss, params, create_graph=True, allow_unused=True))
                    self._probe(pg, params)
                del pg
            grads = [None if g is None else g.detach() for g in grads]
        for p, g in zip(params, grads):
            if g is not None:
                p.grad = g
        return grads, val

    # ---------------------------------------------------------------- state
    def _by_group(self, grads):
        """(group index, group, [(parameter, gradient), …]) per param group: ``grads`` lists one
        gradient per trainable parameter, in order; parameters without one are skipped."""
        it = iter(grads)
        for gi, group in enumerate(self.param_groups):
            pairs = []
            for p in group["params"]:
                if not p.requires_grad:
                    continue
                g = next(it)
                if g is not None:
                    pairs.append((p, g))
            yield gi, group, pairs

    def _extra_state(self) -> dict:
        return {
            "step": self._step_count,
            "eigenvalues": [float(e) for e in self._eigs],
            "eigenvectors": None if self._eigvecs is None else self._eigvecs.detach().clone(),
            "n_hvp": self.n_hvp,
            "n_probes": self.n_probes,
            "residuals": [float(r) for r in self.last_residuals],
            "lr_in_force": [float(x) for x in self.lr_in_force],
            "curvature_time": self.curvature_time,
        }

    def _load_extra_state(self, extra: dict):
        self._step_count = int(extra["step"])
        self._eigs = np.asarray(extra["eigenvalues"], dtype=np.float64)
        ev = extra["eigenvectors"]
        self._eigvecs = None if ev is None else ev.to(device=self.device, dtype=self.dtype)
        self.n_hvp = int(extra["n_hvp"])
        self.n_probes = int(extra["n_probes"])
        self.last_residuals = np.asarray(extra["residuals"], dtype=np.float64)
        self.lr_in_force = [float(x) for x in extra["lr_in_force"]]
        self.curvature_time = float(extra.get("curvature_time", 0.0))

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


# --------------------------------------------------------------------------- EoS-Ada
class EoSAda(_CurvatureOptimizer):
    """EoS-Ada (the proposal's adaptive rule) as a torch optimizer.

        η_t = α / (|λ_max| + ε),   σ_t = β · exp(−γ · λ_max),
        θ ← θ − η_t ∇L(θ) + σ_t ξ,   ξ ~ N(0, I)

    (α = ``alpha``, ε = ``eps`` > 0, β = ``noise_scale``, γ = ``noise_decay``), with η_t and σ_t
    from :func:`eosdyn.rules.schedules.eosada_lr` / :func:`~eosdyn.rules.schedules.eosada_noise`,
    λ_max the probed sharpness (largest algebraic Hessian eigenvalue).

    Negative curvature: the proposal assumes λ_max > 0. Where the probed λ_max is negative (a
    concave region, e.g. near a saddle or a maximum), α/(λ_max + ε) would be a negative step,
    i.e. gradient *ascent*; the schedule uses |λ_max| instead, so η_t stays positive and
    bounded by α/|λ_max|, and the move is a descent step. ε = 0 is allowed; where
    |λ_max| + ε = 0 (a flat probe) the step is defined as 0, as in the toy rule. Identical to the toy
    rule :class:`eosdyn.rules.EoSAda` with the same arguments (defaults too: probe every step,
    ``curvature_every=1``, ``lanczos_steps=20``). The toy rule's "power" and "hutchinson"
    estimators are not offered here; "lanczos" and "exact" are.

    ξ is drawn with a ``torch.Generator`` on the parameters' device, seeded with ``seed``;
    its state is part of ``state_dict()``. ``alpha``, ``eps``, ``noise_scale`` and
    ``noise_decay`` are per param-group; the curvature (one Hessian over all parameters)
    is shared. ``lr_in_force`` lists η_t per group after each step.

    See the module docstring for ``step(closure)``.
    """

    _name = "EoSAda"

    def __init__(self, params, alpha=1.9, eps=1e-8, noise_scale=0.0, noise_decay=0.0,
                 curvature="lanczos", curvature_every=1, lanczos_steps=20, tol=None, seed=0):
        eps = positive("eps", eps, allow_zero=True)
        defaults = dict(alpha=positive("alpha", alpha), eps=eps,
                        noise_scale=positive("noise_scale", noise_scale, allow_zero=True),
                        noise_decay=in_range("noise_decay", noise_decay, -np.inf, np.inf))
        super().__init__(params, defaults, 1, curvature_every, lanczos_steps, curvature, tol, seed)
        self._generator = None

    def _gen(self):
        if self._generator is None:
            self._generator = torch.Generator(device=self.device)
            self._generator.manual_seed(self.seed)
        return self._generator

    @torch.no_grad()
    def step(self, closure=None, probe_closure=None):
        """One EoS-Ada update; returns the closure's loss (a float) or None without closure."""
        probe = self.needs_closure
        grads, loss = self._gradients(closure, probe_closure, probe)
        lam = float(self._eigs[0])
        for gi, group, pairs in self._by_group(grads):
            lr = float(eosada_lr(lam, group["alpha"], group["eps"]))
            sigma = float(eosada_noise(lam, group["noise_scale"], group["noise_decay"]))
            for p, g in pairs:
                p.add_(g, alpha=-lr)
                if sigma != 0.0:
                    xi = torch.randn(p.shape, generator=self._gen(), device=p.device, dtype=p.dtype)
                    p.add_(xi, alpha=sigma)
            self.lr_in_force[gi] = lr
        self._step_count += 1
        return loss

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
        β = β₀ g(γ),    g(γ) = 1 + tanh(β₁(γ − γ_ref))
        λ_wd = λ₀ (1 + κ ρ/ρ_ref)
        v ← β v + ∇L + λ_wd θ,   θ ← θ − η v

    with the same parameter names and defaults as the toy rule :class:`eosdyn.rules.DCAO`:
    η₀ = ``lr``, β₀ = ``momentum``, λ₀ = ``weight_decay``, α = ``alpha``, ρ_ref = ``rho_ref``
    (default 2/η₀), (f_min, f_max) = ``lr_factor_range``, β₁ = ``beta1``, γ_ref = ``gap_ref``,
    κ = ``wd_gain``; ``variant="v1"`` the earlier form (``v1_beta``, ``v1_gamma``). Before
    the first probe nothing is in force: step 0 always probes. Hyperparameters are per
    param-group (``lr`` is η₀, so a torch LR scheduler scales the base step); the
    eigenvalues are shared. ``lr_in_force`` lists η per group after each step.

    The toy rule's "power"/"hutchinson"/"auto" estimators are not offered; "lanczos" (default)
    and "exact" are. See the module docstring for ``step(closure)``.
    """

    _name = "DCAO"

    def __init__(self, params, lr=0.01, momentum=0.45, weight_decay=0.0, alpha=0.1, rho_ref=None,
                 lr_factor_range=(0.5, 2.0), beta1=1.0, gap_ref=0.0, wd_gain=1.0, k=2,
                 curvature_every=100, lanczos_steps=20, curvature="lanczos", variant="refined",
                 v1_beta=0.1, v1_gamma=0.1, tol=None, seed=0):
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
        super().__init__(params, defaults, k, curvature_every, lanczos_steps, curvature, tol, seed)

    def schedule(self, group=None):
        """(η, β, λ_wd) of a param group (default the first) for the eigenvalues in force."""
        g = self.param_groups[0] if group is None else group
        rho_ref = 2.0 / g["lr"] if g["rho_ref"] is None else g["rho_ref"]
        lo, hi = g["lr_factor_range"]
        eigs = np.ascontiguousarray(self._eigs, dtype=np.float64)
        lr, mom, wd = dcao_hyperparameters(
            eigs, int(self.curvature_k), int(_DCAO_VARIANTS[g["variant"]]), float(g["lr"]),
            float(g["momentum"]), float(g["weight_decay"]), float(g["alpha"]), float(rho_ref),
            float(lo), float(hi), float(g["beta1"]), float(g["gap_ref"]), float(g["wd_gain"]),
            float(g["v1_beta"]), float(g["v1_gamma"]))
        return float(lr), float(mom), float(wd)

    @torch.no_grad()
    def step(self, closure=None, probe_closure=None):
        """One DCAO update; returns the closure's loss (a float) or None without closure."""
        probe = self.needs_closure
        grads, loss = self._gradients(closure, probe_closure, probe)
        for gi, group, pairs in self._by_group(grads):
            lr, mom, wd = self.schedule(group)
            for p, g in pairs:
                st = self.state[p]
                buf = st.get("momentum_buffer")
                if buf is None:
                    buf = st["momentum_buffer"] = torch.zeros_like(p)
                buf.mul_(mom).add_(g)
                if wd != 0.0:
                    buf.add_(p, alpha=wd)
                p.add_(buf, alpha=-lr)
            self.lr_in_force[gi] = lr
        self._step_count += 1
        return loss
