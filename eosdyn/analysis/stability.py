r"""Linear stability of an update rule at a point, and the step-size threshold of a minimum.

A rule is a map F on its full state z = (θ, s) (θ the parameters, s the optimizer
state: momentum buffer, Adam's moments, …). At a fixed point z* = F(z*) the map is
linearly stable iff the spectral radius ρ(∂F/∂z(z*)) < 1 (e.g. Elaydi, *An
Introduction to Difference Equations*, 3rd ed., Thm 4.20 — the discrete-time
Hartman–Grobman/Lyapunov criterion). :func:`stability` computes that Jacobian with
``rule.jacobian`` (closed form for GD, heavy-ball, Nesterov and normalized GD; central
differences of ``rule.map`` otherwise) and classifies the point.

:func:`threshold` finds the largest step size at which a minimum θ* stays linearly
stable, by bisection on ρ(J(η)) − 1, and compares it with the closed forms (λ =
λ_max(∇²L(θ*)); each derived in ``theory/thresholds.py`` from the characteristic
polynomial of the 2×2 block of one Hessian eigen-mode, at the root μ = −1):

    GD                         η* = 2/λ
    heavy-ball (β)             η* = 2(1+β)/λ                      (Polyak 1964)
    Nesterov, PyTorch form     η* = (2+2β)/((1+2β)λ)
    Adam, frozen P             η* = (2+2β₁)/((1−β₁) λ_max(P⁻¹H))  (Cohen et al. 2022, §3)
    EoS-Ada (in α)             α* = 2(1+ε/λ)                       (η_t λ = αλ/(λ+ε) = 2)

Manifolds of minima: where the Hessian has a null space, GD and the momentum
methods have the neutral multiplier μ = 1 along it and ρ = 1 exactly. The
classification uses the full ρ (so such a point is "marginal"), and
``transverse_radius`` — ρ over the multipliers *not* within ``tol`` of +1 — says
whether the point is stable across the manifold; :func:`threshold` bisects on the
transverse radius.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .._validate import finite_vector, in_range, nonneg_int, positive
from ..rules import GD, Adam, EoSAda, HeavyBall, Nesterov, NormalizedGD
from ..rules.base import Rule
from ._common import check_loss, resolve_family, step_parameter


def classify(radius: float, tol: float = 1e-8) -> str:
    """"stable" if ρ < 1 − tol, "unstable" if ρ > 1 + tol, else "marginal"."""
    if not np.isfinite(radius):
        return "unstable"
    if radius < 1.0 - tol:
        return "stable"
    if radius > 1.0 + tol:
        return "unstable"
    return "marginal"


def _transverse(eigs, tol):
    """(radius over the multipliers not within tol of +1, number of such neutral ones)."""
    neutral = np.abs(eigs - 1.0) <= tol
    rest = np.abs(eigs[~neutral])
    return (float(rest.max()) if rest.size else 0.0), int(neutral.sum())


@dataclass
class StabilityResult:
    """Linearisation of a rule's map at a point of its full state z = (θ, state).

    ``eigenvalues`` are the multipliers (complex), sorted by decreasing modulus;
    ``spectral_radius`` = max |μ|; ``classification`` is "stable" (ρ < 1 − tol),
    "marginal" (|ρ − 1| ≤ tol) or "unstable" (ρ > 1 + tol); ``transverse_radius``
    and ``n_neutral`` discount the multipliers within tol of +1 (flat directions of a
    manifold of fixed points). ``fixed_point_residual`` = ‖F(z) − z‖∞: linear stability
    is only meaningful where it is ~0. ``exact`` is ``rule.jacobian_is_exact``.
    """

    jacobian: np.ndarray
    eigenvalues: np.ndarray
    spectral_radius: float
    classification: str
    tol: float
    transverse_radius: float
    n_neutral: int
    fixed_point_residual: float
    exact: bool
    z: np.ndarray = field(repr=False, default=None)

    @property
    def stable(self) -> bool:
        return self.classification == "stable"


def _spectrum(J, tol):
    eigs = np.linalg.eigvals(J)
    eigs = eigs[np.argsort(-np.abs(eigs), kind="stable")]
    rho = float(np.abs(eigs).max()) if eigs.size else 0.0
    return eigs, rho


def stability(rule, loss, theta, state=None, t: int = 10**9, tol: float = 1e-8) -> StabilityResult:
    """Jacobian of ``rule``'s map on the full state at (θ, state), its spectrum and class.

    Parameters
    ----------
    rule : Rule instance (its map and Jacobian, :meth:`eosdyn.rules.Rule.jacobian`), or a rule
        spec string such as ``"hb:lr=0.1,momentum=0.9"`` (:mod:`eosdyn.specs`).
    loss : Loss.
    theta : (d,) parameters.
    state : (S,) optimizer state; default ``rule.init_state(theta)`` (zero momentum,
        which is the state of a momentum method at rest at a critical point).
    t : step number (matters for bias-corrected rules; default: the asymptotic regime).
    tol : width of the "marginal" band around ρ = 1.
    """
    if isinstance(rule, str) and ":" in rule:  # a spec with its step size, e.g. "hb:lr=0.1"
        from ..specs import rule_from_spec

        rule = rule_from_spec(rule)
    if not isinstance(rule, Rule):
        raise TypeError(f"rule must be an eosdyn Rule instance or a rule spec with its step size such as "
                        f"'hb:lr=0.1', got {rule!r}")
    loss = check_loss(loss)
    tol = positive("tol", tol, allow_zero=True)
    theta = finite_vector("theta", theta, loss.dim)
    S = rule.state_size(loss.dim)
    if state is None:
        state = rule.init_state(theta)
    else:
        state = finite_vector("state", state, S) if S else np.zeros(0)
        if not S and np.size(state):
            raise ValueError(f"state must be empty for {type(rule).__name__} (no optimizer state)")
    z = rule.pack(theta, state)
    J = np.asarray(rule.jacobian(loss, z, t), dtype=float)
    if J.shape != (z.size, z.size):
        raise ValueError(f"rule.jacobian returned shape {J.shape}, expected {(z.size, z.size)}")
    eigs, rho = _spectrum(J, tol)
    trad, nn = _transverse(eigs, tol)
    resid = float(np.abs(rule.map(loss, z, t) - z).max()) if z.size else 0.0
    return StabilityResult(jacobian=J, eigenvalues=eigs, spectral_radius=rho,
                           classification=classify(rho, tol), tol=tol, transverse_radius=trad,
                           n_neutral=nn, fixed_point_residual=resid,
                           exact=bool(rule.jacobian_is_exact), z=z)


# ------------------------------------------------------------------------------- threshold
@dataclass
class ThresholdResult:
    """The largest stable step size at a minimum.

    ``analytic`` is the closed form (None where there is none), ``numeric`` the
    bisection value, ``ratio`` = numeric/analytic (None without a closed form);
    ``parameter`` names the step-size parameter ("lr", or "alpha" for EoS-Ada);
    ``curvature`` is the λ of the closed form (λ_max(H), or λ_max(P⁻¹H) for Adam);
    ``bracket`` the final bisection bracket (stable, unstable); ``n_evaluations`` the
    number of Jacobian spectra computed.
    """

    analytic: float | None
    numeric: float
    ratio: float | None
    parameter: str
    rule: str
    curvature: float
    bracket: tuple
    n_evaluations: int
    rule_kwargs: dict = field(default_factory=dict)


def gd_threshold(lam):
    """2/λ (:meth:`eosdyn.rules.GD.threshold`)."""
    return GD.threshold(positive("lam", lam))


def heavyball_threshold(lam, momentum):
    """2(1+β)/λ (PyTorch's heavy-ball; equivalently Polyak's θ' = θ − η∇L + β(θ − θ_prev))."""
    return HeavyBall.threshold(positive("lam", lam), momentum=momentum)


def nesterov_threshold(lam, momentum):
    """(2+2β)/((1+2β)λ) for PyTorch's Nesterov form b ← βb + g, θ ← θ − η(g + βb)."""
    return Nesterov.threshold(positive("lam", lam), momentum=momentum)


def adam_threshold(lam_pre, beta1):
    """(2+2β₁)/((1−β₁)λ) with λ = λ_max(P⁻¹H) of the frozen preconditioner P (Cohen et al. 2022)."""
    return Adam.threshold(positive("lam_pre", lam_pre), betas=(beta1, 0.999))


def eosada_threshold(lam, eps):
    """α* = 2(1 + ε/λ): EoS-Ada's effective step αλ/(λ+ε) on the top mode reaches 2."""
    return EoSAda.threshold(positive("lam", lam), eps=eps)


def preconditioned_sharpness(H, P) -> float:
    """λ_max(P⁻¹H) for a diagonal P > 0, as λ_max(P^{-1/2} H P^{-1/2}) (a symmetric eigenproblem).

    The matrix-free form of the same operator is :func:`eosdyn.curvature.preconditioned`
    (the bridge and the trainer); here H is dense, so the scaled matrix is formed at once
    and its spectrum taken exactly (``eigvalsh``, any d). P is checked as the combinator
    checks it: an entry that is not finite and > 0 raises ValueError.
    """
    from ..curvature.operators import positive_diagonal

    H = np.asarray(H, dtype=np.float64)
    s = 1.0 / np.sqrt(positive_diagonal("P", P, H.shape[0]))
    return float(np.linalg.eigvalsh(s[:, None] * H * s[None, :])[-1])


def bisect_edge(stable, guess, rtol, max_iter, never_stable, first=1.0, progress=None):
    """The bracket (lo, hi) of the edge between stable and unstable step sizes, by bisection.

    From ``guess``: halve until ``stable(lo)``; start ``hi`` at 2·lo if the guess was unstable,
    else at ``first``·guess; double until ``not stable(hi)`` (hi = inf if that never happens
    within ``max_iter`` doublings); then bisect until hi − lo ≤ rtol·hi. Raises ValueError
    with ``never_stable`` when no stable step is found. ``progress(k, total)`` follows the
    bisection. It assumes the stable step sizes form an interval (0, η*).
    """
    lo = hi = float(guess)
    k = 0
    while not stable(lo):
        lo *= 0.5
        k += 1
        if k > max_iter or lo < 1e-300:
            raise ValueError(never_stable)
    hi = 2.0 * lo if lo < hi else hi * first
    k = 0
    while stable(hi):
        lo, hi = hi, hi * 2.0
        k += 1
        if k > max_iter or not np.isfinite(hi):
            return lo, np.inf
    total = int(np.ceil(np.log2(max((hi - lo) / (rtol * lo), 2.0))))
    it = 0
    while hi - lo > rtol * hi and it < max_iter:
        mid = 0.5 * (lo + hi)
        if stable(mid):
            lo = mid
        else:
            hi = mid
        it += 1
        if progress is not None:
            progress(it, total)
    return lo, hi


def _check_rule_kwargs(cls, param, rule_kwargs) -> None:
    """TypeError naming the rule and its parameters for a keyword its constructor does not take."""
    import inspect

    takes = [q for q in inspect.signature(cls).parameters if q not in (param, "self")]
    unknown = sorted(set(rule_kwargs) - set(takes))
    if unknown:
        raise TypeError(f"rule {cls.name!r} has no parameter {unknown[0]!r}; its parameters besides the "
                        f"step size {param!r}: {', '.join(takes) or 'none'}")


def threshold(loss, rule_family, theta_star, *, preconditioner=None, state=None, grad_tol=1e-6,
              rtol=1e-12, max_iter=200, **rule_kwargs) -> ThresholdResult:
    r"""Largest step size at which the minimum θ* is linearly stable under a rule family.

    Parameters
    ----------
    loss : Loss.
    rule_family : a rule name or alias ("gd", "heavyball"/"hb", "nesterov", "adam", "eosada",
        "dcao"; :mod:`eosdyn.rules.registry`) or a Rule subclass. Normalized GD is refused:
        its map is not differentiable at a critical point.
    theta_star : (d,) a minimum: ‖∇L(θ*)‖ ≤ ``grad_tol``·max(1, ‖θ*‖) and ∇²L(θ*) PSD
        (else ValueError).
    preconditioner : (d,) diagonal P > 0 for Adam's frozen-preconditioner analysis
        (default P = 1, i.e. the identity). Adam's Jacobian is then
        ``Adam.frozen_jacobian`` on (θ, m): the preconditioner is held fixed while the
        step size varies (Cohen et al. 2022, "Adaptive gradient methods at the edge of
        stability", §3).
    state : optimizer state at the fixed point (default ``rule.init_state(θ*)``, zero
        momentum).
    rtol : relative width of the final bisection bracket.
    **rule_kwargs : the family's other hyperparameters (``momentum=0.9``,
        ``betas=(0.9, 0.999)``, ``eps=…``).

    The step-size parameter is the rule's ``step_parameter``: ``lr`` for every family
    except EoS-Ada, whose parameter is ``alpha`` (its step is η_t = α/(|λ_max| + ε)); the
    closed form is the rule's own :meth:`~eosdyn.rules.Rule.threshold`.

    Numeric: bisection on the transverse spectral radius of the Jacobian (see the
    module docstring) as a function of the step size, between a stable and an
    unstable value found by halving/doubling from an initial guess. It assumes the
    stable step sizes form an interval (0, η*), as they do for these rules at a
    minimum with PSD Hessian.
    """
    loss = check_loss(loss)
    cls = resolve_family(rule_family)
    if issubclass(cls, NormalizedGD):
        raise ValueError("rule_family 'ngd' has no linear threshold: normalized GD's map is not "
                         "differentiable at a critical point (its step η/‖∇L‖ blows up)")
    param = step_parameter(cls)
    if param in rule_kwargs:
        raise ValueError(f"{param} is the threshold being computed; do not pass it")
    _check_rule_kwargs(cls, param, rule_kwargs)
    theta = finite_vector("theta_star", theta_star, loss.dim)
    grad_tol = positive("grad_tol", grad_tol)
    rtol = in_range("rtol", rtol, 0.0, 0.1, lo_open=True)
    g = loss.grad(theta)
    if np.linalg.norm(g) > grad_tol * max(1.0, np.linalg.norm(theta)):
        raise ValueError(f"theta_star must be a critical point: ‖∇L(theta_star)‖ = {np.linalg.norm(g):.3g} "
                         f"> grad_tol = {grad_tol:g} (times max(1, ‖theta_star‖))")
    H = loss.hess(theta)
    evals = np.linalg.eigvalsh(H)
    lam = float(evals[-1])
    if evals[0] < -1e-10 * max(1.0, abs(lam)):
        raise ValueError(f"theta_star must be a minimum (PSD Hessian); the Hessian has eigenvalue "
                         f"{evals[0]:.3g} < 0, so it is unstable at every step size")
    d = loss.dim

    def make(v):
        return cls(**{param: v}, **rule_kwargs)

    probe = make(1.0)  # validates the kwargs once, with a placeholder step size
    curvature = lam
    if issubclass(cls, Adam):
        P = np.ones(d) if preconditioner is None else finite_vector("preconditioner", preconditioner, d)
        if np.any(P <= 0):
            raise ValueError("preconditioner must be > 0 elementwise (P = √v̂ + ε)")
        curvature = preconditioned_sharpness(H, P)

        def jac(v):
            return make(v).frozen_jacobian(loss, theta, P)
    else:
        if preconditioner is not None:
            raise ValueError("preconditioner is only used with rule_family 'adam'")
        S = probe.state_size(d)
        st = probe.init_state(theta) if state is None else finite_vector("state", state, S)
        z = probe.pack(theta, st)

        def jac(v):
            return make(v).jacobian(loss, z)

    if curvature <= 0:
        analytic = np.inf
    else:
        analytic = cls.threshold(curvature, **rule_kwargs)

    n_eval = 0
    tol_neutral = 1e-9

    def unstable(v):
        nonlocal n_eval
        n_eval += 1
        eigs, _ = _spectrum(jac(v), 0.0)
        rad, _ = _transverse(eigs, tol_neutral)
        return rad > 1.0

    if curvature <= 0:
        return ThresholdResult(analytic=np.inf, numeric=np.inf, ratio=None, parameter=param,
                               rule=cls.name, curvature=curvature, bracket=(np.inf, np.inf),
                               n_evaluations=0, rule_kwargs=dict(rule_kwargs))
    guess = analytic if (analytic is not None and np.isfinite(analytic)) else 2.0 / curvature
    lo, hi = bisect_edge(lambda v: not unstable(v), guess, rtol, max_iter,
                         "no stable step size found: the fixed point is unstable even for tiny steps")
    if not np.isfinite(hi):
        return ThresholdResult(analytic=analytic, numeric=np.inf, ratio=None, parameter=param,
                               rule=cls.name, curvature=curvature, bracket=(lo, np.inf),
                               n_evaluations=n_eval, rule_kwargs=dict(rule_kwargs))
    numeric = 0.5 * (lo + hi)
    ratio = None if analytic is None else numeric / analytic
    return ThresholdResult(analytic=analytic, numeric=numeric, ratio=ratio, parameter=param,
                           rule=cls.name, curvature=curvature, bracket=(lo, hi), n_evaluations=n_eval,
                           rule_kwargs=dict(rule_kwargs))


# ------------------------------------------------------------------ the edge, by simulation
@dataclass
class SimulatedThreshold:
    """The largest step at which a small kick off θ* decays, measured by runs of the map.

    ``value`` the bisection's midpoint, ``bracket`` (stable, unstable), ``runs`` the number
    of simulations of ``steps`` steps each, ``delta`` the kick's size.
    """

    value: float
    bracket: tuple
    runs: int
    steps: int
    delta: float
    parameter: str


def simulated_threshold(loss, rule_family, theta_star, *, guess=None, steps: int = 4000, delta: float = 1e-5,
                        rtol: float = 1e-7, max_expand: int = 60, progress=None, **rule_kwargs) -> SimulatedThreshold:
    """The edge of a minimum measured by simulation: bisection over runs of :func:`eosdyn.simulate`.

    Each probe runs the rule for ``steps`` steps from θ* + δ·v₁ (v₁ the top Hessian
    eigenvector, δ = ``delta``·max(1, ‖θ*‖)) and calls the step stable when the run does
    not diverge and L(θ_N) − L(θ*) < L(θ₀) − L(θ*). For a linear map the sign of that test
    is exact at any N, so the bisection resolves the edge to ``rtol`` up to the O(δ²)
    nonlinear shift — an independent check of :func:`threshold`'s linearisation.

    ``rule_family`` and ``**rule_kwargs`` as in :func:`threshold`; ``guess`` is where the
    search starts (default: the closed form, else 2/λ); ``progress(k, total)`` is called
    after each bisection run. Raises ValueError when θ* is not attracting at any step.
    """
    import eosdyn

    loss = check_loss(loss)
    cls = resolve_family(rule_family)
    param = step_parameter(cls)
    if param in rule_kwargs:
        raise ValueError(f"{param} is the threshold being measured; do not pass it")
    _check_rule_kwargs(cls, param, rule_kwargs)
    theta_star = finite_vector("theta_star", theta_star, loss.dim)
    steps = nonneg_int("steps", steps, minimum=1)
    rtol = in_range("rtol", rtol, 0.0, 0.1, lo_open=True)
    H = loss.hess(theta_star)
    w, V = np.linalg.eigh(H)
    if guess is None:
        guess = cls.threshold(w[-1], **rule_kwargs) if w[-1] > 0 else None
        guess = 2.0 / abs(w[-1]) if guess is None or not np.isfinite(guess) else guess
    d = positive("delta", delta) * max(1.0, float(np.linalg.norm(theta_star)))
    th0 = theta_star + d * V[:, -1]
    L0 = loss.value(theta_star)
    gap0 = loss.value(th0) - L0
    runs = 0

    def stable(v):
        nonlocal runs
        runs += 1
        tr = eosdyn.simulate(loss, cls(**{param: v}, **rule_kwargs), th0, steps, record_every=steps,
                             track_sharpness=False, record_theta=False)
        return not tr.diverged and loss.value(tr.final_theta) - L0 < gap0

    lo, hi = bisect_edge(stable, positive("guess", guess), rtol, max_expand,
                         "no stable step size found by simulation: θ* is not an attracting minimum", first=1.25,
                         progress=progress)
    value = 0.5 * (lo + hi) if np.isfinite(hi) else np.inf
    return SimulatedThreshold(value, (lo, hi), runs, steps, d, param)
