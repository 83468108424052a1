r"""Central, stable and gradient flows on torch models (full batch), next to GD.

The same integrator as :mod:`eosdyn.flows` (forward Euler, ``substeps`` per step, the
semidefinite complementarity problem for the oscillation covariance), with the model's
flat parameter vector w and

* ∇L by reverse mode, H v = ∇(∇L·v) and the third derivative D³L[u, v] = ∇(vᵀH u)
  by nested ``torch.func.grad`` (exact, no finite differences);
* the top eigenpairs of P^{-1/2} H P^{-1/2} *warm-started* from the last substep's
  vectors: a Rayleigh–Ritz step on the previous block costs one HVP per tracked vector
  when the block is still accurate; otherwise the block is enlarged by its residuals
  (another HVP per vector) until the residuals are below ``eig_tol``; a cold start
  uses :func:`eosdyn.curvature.top_eigenpairs` (Lanczos). ``hvp_count`` records every
  product.

Computation runs in the model's own dtype and device; the flow state is kept in float64
numpy (for float64 models nothing is rounded). Reference setup (Cohen et al., ICLR 2025,
their example): an MLP 8→16→16→1 with swish, n = 128, x, y ~ N(0, 1), MSE, GD at
η = 0.1 for 1000 steps, float64.
"""
from __future__ import annotations

import numpy as np

from .._validate import positive, step_count
from ..flows.central import _check_common, _past_edge_error, integrate
from ..sim.results import Trajectory

__all__ = ["central_flow", "stable_flow", "gradient_flow", "gd_trajectory", "discrete_trajectory", "self_stabilization",
           "ModelObjective"]


class ModelObjective:
    """L(w) = loss_fn(model(X; w), Y) on one full batch, with flat parameters w (numpy float64)."""

    def __init__(self, model, loss_fn, data, *, eig_tol=1e-4, seed=0):
        import torch

        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not callable(loss_fn):
            raise TypeError("loss_fn must be callable (outputs, targets) -> scalar loss")
        try:
            X, Y = data
        except (TypeError, ValueError):
            raise TypeError("data must be a pair (inputs, targets) of tensors: the full batch") from None
        self.model, self.loss_fn = model, loss_fn
        params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        if not params:
            raise ValueError("model has no trainable parameters")
        self.names = [n for n, _ in params]
        self.shapes = [p.shape for _, p in params]
        self.sizes = [p.numel() for _, p in params]
        self.dtype, self.device = params[0][1].dtype, params[0][1].device
        self.X = X.to(self.device)
        self.Y = Y.to(self.device)
        self.buffers = dict(model.named_buffers())
        self.dim = int(sum(self.sizes))
        self.eig_tol = positive("eig_tol", eig_tol)
        self.seed = seed
        self.hvps = 0
        self.hessians = 0
        self.thirds = 0
        self._Z = None                                    # warm start, in P^{1/2}-scaled coordinates
        f = self._loss_of_flat
        self._grad = torch.func.grad(f)

        # reverse over reverse: torch.func's forward-over-reverse trips over functorch's
        # immutable ZeroTensors for some losses (e.g. nn.MSELoss) in torch 2.13
        def hvp(w, v):
            return torch.func.grad(lambda x: torch.dot(self._grad(x), v))(w)
        self._hvp = hvp

        def third(w, u, v):
            return torch.func.grad(lambda x: torch.dot(hvp(x, u), v))(w)
        self._third = third

    def flat_parameters(self):
        import torch

        with torch.no_grad():
            return torch.cat([p.detach().reshape(-1) for _, p in self.model.named_parameters()
                              if p.requires_grad]).to(torch.float64).cpu().numpy()

    def _loss_of_flat(self, w):
        import torch

        chunks = torch.split(w, self.sizes)
        pd = {n: c.view(s) for n, c, s in zip(self.names, chunks, self.shapes)}
        out = torch.func.functional_call(self.model, (pd, self.buffers), (self.X,))
        return self.loss_fn(out, self.Y)

    def _t(self, a):
        import torch

        return torch.as_tensor(np.asarray(a), dtype=self.dtype, device=self.device)

    @staticmethod
    def _np(t):
        return t.detach().to("cpu").double().numpy()

    def value(self, w):
        import torch

        with torch.no_grad():
            return float(self._loss_of_flat(self._t(w)))

    def grad(self, w):
        return self._np(self._grad(self._t(w)))

    def hvp(self, w, v):
        self.hvps += 1
        return self._np(self._hvp(self._t(w), self._t(v)))

    def third(self, w, u, v):
        self.thirds += 1
        return self._np(self._third(self._t(w), self._t(u), self._t(v)))

    def eig(self, w, p, track_above, refresh=True):
        """Top-m eigenpairs of A = P^{-1/2} H P^{-1/2} (warm-started), returned as in the toy objective.

        With ``refresh`` False (the later substeps of a step) and a previous call to build
        on, only the tracked vectors are updated, by Rayleigh–Ritz in their own span (one
        HVP each): the step's first substep did the full, checked solve, and within a step
        w moves by O(η‖∇L‖), so the tracked span is accurate to first order.
        """
        from ..curvature import top_eigenpairs

        m = min(self.max_tracked, self.dim)
        s = 1.0 / np.sqrt(p)
        wt = self._t(w)

        def A(z):
            self.hvps += 1
            return s * self._np(self._hvp(wt, self._t(s * z)))

        Z = self._Z
        theta = None
        last = getattr(self, "_theta", None)
        if not refresh and Z is not None and last is not None and Z.shape[1] == m:
            keep = last >= track_above
            k = int(np.count_nonzero(keep))
            if k:
                Zk = Z[:, keep]
                AZk = np.column_stack([A(Zk[:, j]) for j in range(k)])
                T = Zk.T @ AZk
                lam, Q = np.linalg.eigh(0.5 * (T + T.T))
                lam, Q = lam[::-1], Q[:, ::-1]
                Z = Z.copy()
                Z[:, keep] = Zk @ Q
                theta = last.copy()
                theta[keep] = lam
                order = np.argsort(-theta, kind="stable")
                theta, Z = theta[order], Z[:, order]
                self._Z, self._theta = Z, theta
                keep = theta >= track_above
                U = Z[:, keep] * s[:, None]
                sharp = float(theta[0] * p[0]) if np.ptp(p) == 0 else float("nan")
                return theta, theta[keep], U, sharp
        if Z is not None and Z.shape[1] == m:
            # block Rayleigh–Ritz from the last vectors: products are cached, so an accurate
            # block costs m HVPs and each refinement one HVP per unconverged wanted pair
            V = Z
            AV = np.column_stack([A(V[:, j]) for j in range(m)])
            for _ in range(8):
                T = V.T @ AV
                lam, Q = np.linalg.eigh(0.5 * (T + T.T))
                lam, Q = lam[::-1][:m], Q[:, ::-1][:, :m]
                Zr, AZr = V @ Q, AV @ Q
                R = AZr - Zr * lam[None, :]
                res = np.linalg.norm(R, axis=0)
                # the tracked pairs and the top one to eig_tol; the others, which are only
                # recorded, to sqrt(eig_tol) (their eigenvalue error is ~ residual²/gap)
                need = lam >= min(track_above, lam[0])
                tol = np.where(need, self.eig_tol, np.sqrt(self.eig_tol)) * max(abs(lam[0]), 1e-300)
                bad = res > tol
                if not bad.any():
                    theta, Z = lam, Zr
                    break
                Rn = R[:, bad]
                Rn = Rn - Zr @ (Zr.T @ Rn)
                Rn, rr = np.linalg.qr(Rn)
                Rn = Rn[:, np.abs(np.diag(rr)) > 1e-12 * max(abs(lam[0]), 1e-300)]
                if Rn.shape[1] == 0:
                    break
                V = np.column_stack([Zr, Rn])
                AV = np.column_stack([AZr] + [A(Rn[:, j])[:, None] for j in range(Rn.shape[1])])
        if theta is None:
            res = top_eigenpairs(A, self.dim, k=m, method="lanczos", tol=self.eig_tol, seed=self.seed)
            theta, Z = np.asarray(res.eigenvalues), np.asarray(res.eigenvectors)
        self._Z, self._theta = Z, theta
        keep = theta >= track_above
        U = Z[:, keep] * s[:, None]
        sharp = float(theta[0] * p[0]) if np.ptp(p) == 0 else float("nan")
        return theta, theta[keep], U, sharp


def _prepare(kind, model, loss_fn, data, rule, steps, substeps, track_above, max_tracked, eig_tol, seed):
    fr, steps, substeps, track_above = _check_common(rule, steps, substeps, track_above, max_tracked)
    obj = ModelObjective(model, loss_fn, data, eig_tol=eig_tol, seed=seed)
    obj.max_tracked = max_tracked
    w = obj.flat_parameters()
    return fr, steps, substeps, track_above, obj, w


def central_flow(model, loss_fn, data, rule, steps, *, substeps=4, track_above=1.5, nu0=None, max_tracked=5,
                 eig_tol=1e-4, seed=0, project=False) -> Trajectory:
    """The central flow (:func:`eosdyn.flows.central_flow`) of ``rule`` on a torch model, full batch.

    Starts from the model's current parameters (the model is not modified). ``data`` is
    the pair (inputs, targets). Records as in :func:`eosdyn.flows.central_flow`, with
    ``theta`` the flat parameter vector (named-parameter order) and ``hvp_count`` the
    Hessian-vector products per step (eigenpairs; the third derivatives are counted in
    ``third_derivative_calls``). ``sharpness`` is λ₁(H) for GD (NaN for diagonal
    preconditioners; see ``effective_sharpness``). ``project=True`` (GD) starts a point past
    the edge from its linearised projection onto {S ≤ 2/η, ∇L·u = 0}
    (:func:`eosdyn.flows.project_to_stable_set`).
    """
    fr, steps, substeps, track_above, obj, w = _prepare("central", model, loss_fn, data, rule, steps, substeps,
                                                        track_above, max_tracked, eig_tol, seed)
    s0 = np.asarray(fr.initial_state(obj.grad(w), None if nu0 is None else np.asarray(nu0, float)), float)
    lam_all, *_ = obj.eig(w, fr.p(s0, obj.dim), np.inf, None)
    if lam_all[0] > 2.0 + 1e-6:
        if not project:
            raise _past_edge_error(lam_all[0])
        if fr.name != "gd":
            raise ValueError("project=True is implemented for GD only")
        from ..flows.selfstab import project_to_stable_set

        def geometry(th):
            lam, _, _, _ = obj.eig(th, np.full(obj.dim, 1.0), np.inf, True)
            u = obj._Z[:, 0]
            return float(lam[0]), u, obj.grad(th), obj.third(th, u, u)
        w = project_to_stable_set(geometry, fr.lr, w)
        obj._Z = None
    return integrate("central", obj, fr, w, steps, substeps, track_above, nu0, max_tracked,
                     {"model": type(model).__name__, "dim": obj.dim, "dtype": str(obj.dtype)})


def stable_flow(model, loss_fn, data, rule, steps, *, substeps=4, nu0=None, max_tracked=5, eig_tol=1e-4,
                seed=0) -> Trajectory:
    """The stable flow of ``rule`` on a torch model (gradient flow for GD); see :func:`central_flow`."""
    fr, steps, substeps, _, obj, w = _prepare("stable", model, loss_fn, data, rule, steps, substeps, 1.5,
                                              max_tracked, eig_tol, seed)
    obj.max_tracked = 1          # the stable flow needs only λ₁ (its stiffness sets the substeps)
    return integrate("stable", obj, fr, w, steps, substeps, 1.5, nu0, max_tracked,
                     {"model": type(model).__name__, "dim": obj.dim, "dtype": str(obj.dtype)})


def gradient_flow(model, loss_fn, data, lr, steps, *, substeps=4, max_tracked=5, eig_tol=1e-4,
                  seed=0) -> Trajectory:
    """Gradient flow ẇ = −η∇L (t in steps) on a torch model: :func:`stable_flow` of GD(lr)."""
    from ..rules import GD

    return stable_flow(model, loss_fn, data, GD(lr), steps, substeps=substeps, max_tracked=max_tracked,
                       eig_tol=eig_tol, seed=seed)


def gd_trajectory(model, loss_fn, data, lr, steps, *, sharpness_every=0) -> Trajectory:
    """Full-batch GD w ← w − η∇L(w) from the model's parameters: :func:`discrete_trajectory` of GD(lr)."""
    return discrete_trajectory(model, loss_fn, data, lr, steps, sharpness_every=sharpness_every)


def discrete_trajectory(model, loss_fn, data, rule, steps, *, sharpness_every=0, nu0=None) -> Trajectory:
    """The discrete full-batch run of a rule the flows cover, from the model's parameters,
    recording the flat w and L(w) at every step (the model is not modified): the process that
    :func:`eosdyn.flows.compare` sets against the flows.

    * GD (a float η or ``GD``): w ← w − η∇L;
    * RMSProp (``Adam`` with β₁ = 0, no bias correction) and :class:`eosdyn.flows.ScalarRMSProp`:
      ν ← β₂ν + (1−β₂)g^⊙2 (scalar: ‖g‖²), w ← w − η g/(√ν + ε), with ν before the first
      step = ``nu0`` (default g₀^⊙2, the flows' default), so ν₀ = g₀^⊙2.

    With ``sharpness_every`` = k > 0, λ₁(H) is recorded every k steps (Lanczos), and for
    every rule ``extra["effective_sharpness"]``, the top eigenvalue as the flows define it
    (the generalized eigenvalue of (H, P), P = diag(√ν + ε)/η; the edge is 2).
    """
    from ..curvature import top_eigenpairs
    from ..flows.central import flow_rule

    fr = flow_rule(rule)
    steps = step_count("steps", steps)
    obj = ModelObjective(model, loss_fn, data)
    w = obj.flat_parameters()
    g = obj.grad(w)
    nu = None if fr.name == "gd" else np.array(fr.initial_state(g, None if nu0 is None else np.asarray(nu0, float)),
                                                 dtype=np.float64)
    R = steps + 1
    theta = np.full((R, obj.dim), np.nan)
    loss = np.full(R, np.nan)
    sharp = np.full(R, np.nan)
    eff = np.full(R, np.nan)
    nus = None if nu is None else np.full((R, nu.size), np.nan)
    status, at = "ok", -1
    for t in range(R):
        theta[t] = w
        loss[t] = obj.value(w)
        if not np.isfinite(loss[t]):
            status, at = "diverged", t
            break
        g = obj.grad(w)
        if nu is not None:
            gg = np.array([g @ g]) if nu.size == 1 else g * g
            nu = fr.beta2 * nu + (1.0 - fr.beta2) * gg
            nus[t] = nu
        p = fr.p(nu if nu is not None else np.zeros(0), obj.dim)
        if sharpness_every and t % sharpness_every == 0:
            res = top_eigenpairs(lambda v, w=w: obj.hvp(w, v), obj.dim, k=1, method="lanczos", tol=1e-8)
            sharp[t] = res.eigenvalue
            if nu is not None:
                s = 1.0 / np.sqrt(p)
                res = top_eigenpairs(lambda v, w=w, s=s: s * obj.hvp(w, s * v), obj.dim, k=1, method="lanczos",
                                     tol=1e-8)
                eff[t] = res.eigenvalue
            else:
                eff[t] = res.eigenvalue / p[0]
        if t < steps:
            w = w - fr.lr * g if nu is None else w - g / p     # GD: exactly w − ηg
    extra = {"effective_sharpness": eff}
    if nus is not None:
        extra["nu"] = nus
    return Trajectory(step=np.arange(R), loss=loss, theta=theta, sharpness=sharp, diverged=at >= 0,
                      diverged_at=at, params={"rule": fr.name, "lr": fr.lr}, extra=extra,
                      final_theta=theta[max(at - 1, 0) if at >= 0 else steps].copy(), status=status)


class _ModelSelfStabOps:
    """:func:`eosdyn.flows.selfstab.run_self_stabilization`'s operations on a torch model."""

    def __init__(self, model, loss_fn, data, sharpness_every, eig_tol, seed):
        self.dagger = ModelObjective(model, loss_fn, data, eig_tol=eig_tol, seed=seed)
        self.dagger.max_tracked = 2
        self.gd = ModelObjective(model, loss_fn, data, eig_tol=eig_tol, seed=seed)
        self.gd.max_tracked = 2
        self.dim = self.dagger.dim
        self.every = sharpness_every

    def value(self, th):
        return self.dagger.value(th)

    def grad(self, th):
        return self.dagger.grad(th)

    def sharpness(self, th, t):
        if not self.every or t % self.every:
            return float("nan")
        lam, *_ = self.gd.eig(th, np.ones(self.dim), np.inf, True)
        return float(lam[0])

    def geometry(self, th):
        lam, *_ = self.dagger.eig(th, np.ones(self.dim), np.inf, True)
        u = self.dagger._Z[:, 0].copy()
        return float(lam[0]), u, self.dagger.grad(th), self.dagger.third(th, u, u)


def self_stabilization(model, loss_fn, data, lr, steps, *, projections=3, sharpness_every=10, eig_tol=1e-6,
                       seed=0) -> Trajectory:
    """:func:`eosdyn.flows.self_stabilization` on a torch model (full batch): GD from the model's
    parameters, the constrained trajectory θ† (projected GD onto {S ≤ 2/η, ∇L·u = 0}) and the
    reduced (x, y) prediction of Damian, Nichani & Lee (ICLR 2023). The top eigenpair of θ†
    is warm-started from the last step's vector; GD's own sharpness is recorded every
    ``sharpness_every`` steps (0: never). The model is not modified.
    """
    lr = positive("lr", lr)
    steps = step_count("steps", steps)
    from ..flows.selfstab import run_self_stabilization

    ops = _ModelSelfStabOps(model, loss_fn, data, sharpness_every, eig_tol, seed)
    th = ops.dagger.flat_parameters()
    return run_self_stabilization(ops, lr, th, steps, int(projections),
                                  {"model": type(model).__name__, "dim": ops.dim})
