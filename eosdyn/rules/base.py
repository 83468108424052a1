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

A rule may step on a *minibatch* gradient instead of ∇L (:meth:`Rule.minibatch`,
:class:`eosdyn.rules.SGD`): the stepping core then draws the batch from the trajectory's
stream and hands the rule's ``step_fn`` the batch gradient g_B in place of g.

For analysis (:mod:`eosdyn.analysis`), every rule also exposes the deterministic
map on its full state z = (θ, state) and its Jacobian: :meth:`Rule.map`,
:meth:`Rule.jacobian` (closed form where one is coded, central differences of
:meth:`Rule.map` otherwise; ``rule.jacobian_is_exact`` says which).
"""
from __future__ import annotations

import numpy as np
from numba import njit

from .._validate import choice, nonneg_int, positive
from ..curvature import kernels as _ck

CURVATURE_METHODS = {"none": 0, "exact": _ck.EXACT, "lanczos": _ck.LANCZOS, "power": _ck.POWER,
                     "hutchinson": _ck.HUTCHINSON, "auto": -1}
AUTO_EXACT_MAX_DIM = 64


@njit(cache=True)
def no_preconditioner(state, hyper, t, out):
    for i in range(out.shape[0]):
        out[i] = 1.0


class Rule:
    """Base class of the update rules. Subclasses set ``step_fn``, ``hyper`` and friends.

    **A rule describes itself** (:mod:`eosdyn.rules.registry` lists the fields): a subclass
    that sets ``name`` is registered when it is defined, and spec strings, the command
    line, thresholds, stability analysis and plot colours all read it from there (the
    sympy derivations of ``theory/`` are an independent check of its edge). Adding a rule
    is one class file in ``eosdyn/rules/`` (every module of the package is imported with
    it) plus one test file.
    """

    # --- self-description, read by the registry and every entry point ------------------
    #: canonical name ("gd"); a subclass that sets it is registered
    name = None
    #: other names accepted wherever a rule is named (case, "-", "_" ignored)
    aliases: tuple = ()
    #: the constructor argument that sets the step size
    step_parameter = "lr"
    #: one line for ``--help`` listings
    summary = ""
    #: the colour every figure draws this rule in (Okabe–Ito palette)
    color = "#000000"
    #: dotted path of the torch optimizer that runs the same rule on a network, or None
    torch_twin = None
    #: kinds of constructor arguments that spec strings cannot infer from the default
    #: (see :mod:`eosdyn.specs`): {"rho_ref": "optfloat", ...}
    spec_kinds: dict = {}

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

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__ and cls.name is not None:
            from .registry import register

            register(cls)

    # --- the edge of stability -----------------------------------------------------------
    def edge_constant(self) -> float | None:
        """c in the linear edge of a minimum, λ_max(P⁻¹H) = c/η, for this rule's hyperparameters.

        η is the step size in force (the ``lr`` a simulation records) and P the rule's
        :meth:`preconditioner`, so "at the edge" is one statement for every rule:
        ``preconditioned sharpness × lr = edge_constant()`` (GD: 2; heavy-ball: 2 + 2β;
        Adam with a frozen preconditioner: (2 + 2β₁)/(1 − β₁); Cohen et al. 2022).
        None where the rule has no closed-form edge.
        """
        return None

    def sharpness_threshold(self, lr=None) -> float | None:
        """The (preconditioned) sharpness above which a minimum is linearly unstable at step
        ``lr`` (default: the rule's own step-size value): ``edge_constant() / lr``."""
        c = self.edge_constant()
        if c is None:
            return None
        lr = getattr(self, self.step_parameter) if lr is None else lr
        return c / positive("lr", lr)

    @classmethod
    def threshold(cls, curvature, **hyper) -> float | None:
        """The largest stable value of the step parameter at a minimum whose (preconditioned)
        sharpness is ``curvature`` > 0, the rule's other hyperparameters being ``hyper``:
        ``edge_constant() / curvature`` (None where the rule has no closed form)."""
        lam = positive("curvature", curvature)
        c = cls(**{cls.step_parameter: 1.0}, **hyper).edge_constant()
        return None if c is None else c / lam

    def preconditioner(self, state, t: int = 10**9, *, dim: int | None = None) -> np.ndarray:
        """The diagonal P(state) of the update θ ← θ − η P⁻¹ m at step ``t`` (ones for rules
        that precondition nothing). ``dim`` is needed only where the state is empty."""
        state = np.ascontiguousarray(state, dtype=np.float64).reshape(-1)
        if dim is None:
            dim = next((d for d in range(1, state.size + 1) if self.state_size(d) == state.size), None)
            if dim is None:
                raise ValueError(f"dim is needed: {type(self).__name__}'s state of size {state.size} "
                                 "does not determine the dimension")
        dim = nonneg_int("dim", dim, minimum=1)
        if state.size != self.state_size(dim):
            raise ValueError(f"state must have size {self.state_size(dim)} for dim = {dim}, got {state.size}")
        out = np.empty(dim)
        self.precond_fn(state, self.hyper, np.int64(t), out)
        return out

    # --- the torch twin --------------------------------------------------------------------
    def torch_kwargs(self) -> dict:
        """Keyword arguments of :attr:`torch_twin` that reproduce this rule (override per rule)."""
        return dict(self.hyperparameters())

    def torch_optimizer(self, params):
        """The torch optimizer running this rule on ``params`` (e.g. ``model.parameters()``)."""
        if self.torch_twin is None:
            raise ValueError(f"{type(self).__name__} has no torch twin")
        import importlib

        module, _, cls = self.torch_twin.rpartition(".")
        return getattr(importlib.import_module(module), cls)(params, **self.torch_kwargs())

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

    def minibatch(self, loss):
        """(B, replacement) of the minibatch the stepping core draws at every step for this rule
        on ``loss``, or None: the rule steps on the full gradient ∇L. Only :class:`~eosdyn.rules.SGD`
        draws minibatches; it checks here that ``loss`` is a finite sum it can sample (every
        runner calls this through :func:`eosdyn.engine.run_map`)."""
        return None

    def check_dimension(self, dim: int) -> None:
        """Raise ValueError if this rule cannot run on a d-dimensional loss (every runner calls it)."""
        if self.curvature_k > dim:
            raise ValueError(f"{type(self).__name__} probes the top k = {self.curvature_k} Hessian eigenvalues, "
                             f"but the loss has only d = {dim} parameters: use k <= {dim}")

    # --- curvature as the kernel will probe it ---------------------------------------
    def resolved_curvature(self, dim: int, exact: bool = False) -> tuple[int, int, int]:
        """(method code, k, every) the stepping core probes for this rule on a d-dimensional loss.

        ``exact=True`` gives the deterministic map F of the analysis (:meth:`map`): the exact
        top-k eigenvalues at every step, or the mean curvature tr(H)/d for a Hutchinson rule
        (the expectation of its estimate). Method codes: :mod:`eosdyn.curvature.kernels`.
        """
        if self.curvature_k == 0:
            return 0, 0, 1
        m = self.curvature_method
        if exact:
            return (_ck.MEAN if m == "hutchinson" else _ck.EXACT), self.curvature_k, 1
        if m == "auto":
            m = "exact" if dim <= AUTO_EXACT_MAX_DIM else "lanczos"
        return CURVATURE_METHODS[m], self.curvature_k, self.curvature_every

    def _exact_curvature(self, loss, theta):
        """The curvature of the deterministic map at θ (see :meth:`resolved_curvature`)."""
        from ..curvature.kernels import mean_curvature, top_eigs_exact

        k = max(self.curvature_k, 1)
        H = np.ascontiguousarray(loss.hess(theta), dtype=np.float64)
        out = np.zeros(k)
        if self.curvature_method == "hutchinson":
            mean_curvature(H, k, out)
        else:
            top_eigs_exact(H, k, out)
        return out

    # --- the deterministic map on the full state, for analysis ---------------------------
    def map(self, loss, z, t: int = 10**9):
        """F(z): one noise-free step of the rule on the full state z = (θ, state).

        Curvature is evaluated exactly at θ (eigh of the Hessian; the mean curvature
        tr(H)/d for a Hutchinson rule), whatever the rule's probe schedule. ``t`` is the step
        number (it matters only for bias-corrected rules; the default is the
        asymptotic regime t → ∞).
        """
        d = loss.dim
        self.check_dimension(d)
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
