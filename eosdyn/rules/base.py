"""The update-rule contract: a pure map (θ, state, ∇L, curvature) → (θ', state').

Each rule is a small Python object holding its hyperparameters in a float64 array
``hyper`` and pointing at module-level numba functions, so the simulators'
kernels (:mod:`eosdyn.sim`) call it without Python overhead::

    step_fn(theta, state, g, curv, hyper, t, rng, work) -> lr_used
        updates θ (d,) and the optimizer state (S,) in place, given the gradient
        g = ∇L(θ), the latest curvature probe ``curv`` (top-k eigenvalues,
        descending; or a Hutchinson estimate in curv[0]), the step number t ≥ 1,
        the trajectory's random stream ``rng`` (see :mod:`eosdyn._rng`) and a
        scratch vector ``work`` (d,); returns the step size in force.
    step_block_fn(X, S, G, hyper, t, LR)       (optional)
        the same step on a block of B trajectories in structure-of-arrays layout:
        X (d, B), S (state size, B), G (d, B) and the step sizes LR (B,). Rules
        whose step is coordinate-wise and needs no curvature or randomness (GD,
        heavy-ball, Nesterov, normalized GD, Adam) write it through the same per-coordinate
        helper as ``step_fn``, so both give bit-identical results; the ensemble
        simulator then vectorises across trajectories.
    precond_fn(state, hyper, t, out)
        writes the diagonal preconditioner P (d,) of the update θ ← θ − η P⁻¹ m,
        so the preconditioned sharpness λ_max(P⁻¹H) can be measured.

Curvature is *probed by the kernel*, not by the rule: a rule declares how many
eigenvalues it needs (``curvature_k``), how (``curvature_method``: "exact" eigh,
"lanczos", "power", "hutchinson" or "auto" = exact for d ≤ 64, Lanczos above),
how often (``curvature_every``) and with how many Lanczos steps.

For analysis (:mod:`eosdyn.analysis`), every rule also exposes the deterministic
map on its full state z = (θ, state) and its Jacobian: :meth:`Rule.map`,
:meth:`Rule.jacobian` (closed form where one is coded, central differences of
:meth:`Rule.map` otherwise; ``rule.jacobian_is_exact`` says which).
"""
from __future__ import annotations

import numpy as np
from numba import njit

from .._validate import choice, nonneg_int

CURVATURE_METHODS = {"none": 0, "exact": 1, "lanczos": 2, "power": 3, "hutchinson": 4, "auto": -1}
AUTO_EXACT_MAX_DIM = 64


@njit(cache=True)
def no_preconditioner(state, hyper, t, out):
    for i in range(out.shape[0]):
        out[i] = 1.0


class Rule:
    """Base class of the update rules. Subclasses set ``step_fn``, ``hyper`` and friends."""

    name = "rule"
    step_fn = None
    step_block_fn = None
    precond_fn = staticmethod(no_preconditioner)
    # numba (H, hyper, d) -> J of the map on the full state, for rules whose Jacobian
    # depends on θ only through the Hessian H (GD, heavy-ball, Nesterov); else None
    jacobian_fn = None
    preconditioned = False
    curvature_k = 0
    curvature_method = "none"
    curvature_every = 1
    lanczos_steps = 20
    hutchinson_samples = 1
    jacobian_is_exact = False

    @property
    def stochastic(self) -> bool:
        return False

    # --- state layout -------------------------------------------------------------
    def state_size(self, dim: int) -> int:
        return 0

    def init_state(self, theta0: np.ndarray) -> np.ndarray:
        return np.zeros(self.state_size(theta0.shape[0]))

    def pack(self, theta, state) -> np.ndarray:
        return np.concatenate([np.asarray(theta, float), np.asarray(state, float)])

    def unpack(self, z, dim):
        z = np.asarray(z, float)
        return z[:dim].copy(), z[dim:].copy()

    def hyperparameters(self) -> dict:
        """The rule's settings as a plain dict (recorded with every result)."""
        return {}

    # --- curvature as the kernel will probe it ---------------------------------------
    def resolved_curvature(self, dim: int) -> tuple[int, int]:
        """(method code, k) the kernel uses for this rule on a d-dimensional loss."""
        if self.curvature_k == 0:
            return 0, 0
        m = self.curvature_method
        if m == "auto":
            m = "exact" if dim <= AUTO_EXACT_MAX_DIM else "lanczos"
        return CURVATURE_METHODS[m], self.curvature_k

    def _exact_curvature(self, loss, theta):
        """Top-k Hessian eigenvalues (descending), or the Hutchinson mean, computed exactly."""
        k = max(self.curvature_k, 1)
        H = loss.hess(theta)
        if self.curvature_method == "hutchinson":
            # E over unit directions u of uᵀHu = tr(H)/d: the deterministic map uses the mean.
            out = np.zeros(k)
            out[0] = np.trace(H) / H.shape[0]
            return out
        ev = np.linalg.eigvalsh(H)[::-1]
        out = np.zeros(k)
        out[: min(k, ev.size)] = ev[:k]
        return out

    # --- the deterministic map on the full state, for analysis ---------------------------
    def map(self, loss, z, t: int = 10**9):
        """F(z): one noise-free step of the rule on the full state z = (θ, state).

        Curvature is evaluated exactly at θ (eigh of the Hessian). ``t`` is the step
        number (it matters only for bias-corrected rules; the default is the
        asymptotic regime t → ∞).
        """
        d = loss.dim
        theta, state = self.unpack(z, d)
        g = loss.grad(theta)
        curv = self._exact_curvature(loss, theta) if self.curvature_k else np.zeros(1)
        hyper = self.deterministic_hyper()
        rng = np.zeros(4, np.uint64)
        work = np.zeros(d)
        self.step_fn(theta, state, g, curv, hyper, np.int64(t), rng, work)
        return self.pack(theta, state)

    def deterministic_hyper(self) -> np.ndarray:
        """``hyper`` with any noise switched off (for :meth:`map`)."""
        return self.hyper

    def jacobian(self, loss, z, t: int = 10**9, h: float = 1e-6):
        """∂F/∂z on the full state; central differences of :meth:`map` unless overridden."""
        z = np.asarray(z, float)
        n = z.size
        J = np.empty((n, n))
        for j in range(n):
            step = h * max(1.0, abs(z[j]))
            zp = z.copy()
            zm = z.copy()
            zp[j] += step
            zm[j] -= step
            J[:, j] = (self.map(loss, zp, t) - self.map(loss, zm, t)) / (2 * step)
        return J

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.hyperparameters().items())
        return f"{type(self).__name__}({args})"


def check_curvature(method: str, k: int, every: int, lanczos_steps: int, hutchinson_samples: int = 1):
    choice("curvature", method, [m for m in CURVATURE_METHODS if m != "none"])
    nonneg_int("k", k, minimum=1)
    nonneg_int("curvature_every", every, minimum=1)
    nonneg_int("lanczos_steps", lanczos_steps, minimum=1)
    nonneg_int("hutchinson_samples", hutchinson_samples, minimum=1)
