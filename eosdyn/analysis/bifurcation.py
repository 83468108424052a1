r"""Orbit (bifurcation) diagrams over the step size, period detection, and period doublings.

For each step size η in a range, the rule's noise-free map is iterated from θ₀ for a
``transient`` and the next ``keep`` iterates are kept: plotted against η they are the
orbit diagram (May, Nature 261, 1976). For gradient descent the first bifurcation is
the edge of stability: the minimum loses stability at η = 2/λ in a period doubling
(flip) bifurcation, and a 2-cycle — the EoS oscillation — is born. On the
logistic-conjugate cubic f = x²/2 − x³/3 (:class:`eosdyn.losses.LogisticCubic`, GD = the
logistic map with r = 1 + η) the cascade is the logistic one: doublings at r = 3,
1 + √6, 3.5441, 3.5644, … accumulating at r∞ ≈ 3.5699 with Feigenbaum ratio
δ = 4.6692… (Feigenbaum, J. Stat. Phys. 19, 1978).

The trajectories for all step sizes run in one call of the stepping core
(:func:`eosdyn.engine.run_map`, one hyperparameter row per step size).

**Period detection.** The period of a kept orbit x_0 … x_{K−1} is the smallest p ≤
``max_period`` with max_n ‖x_{n+p} − x_n‖∞ ≤ tol·(1 + max‖x‖∞); 0 when there is none
(chaos, a quasi-periodic orbit, or a transient too short to settle), −1 when the
orbit diverged. Near a bifurcation the approach to the cycle is slow (its multiplier
is near ±1), so the transient sets how close to a bifurcation the period is right.

**Any map.** Both functions also take a user's map f(x, r) in place of the loss (the
parameter r is then what ``lrs`` sweeps, any real values; ``theta0`` is x₀, a number for a
scalar map or a (d,) vector): see :func:`iterate_map` for the calling conventions (a numba
``@njit`` function runs in a compiled loop; a numpy function vectorised over r is called
once per step for all r; anything else is called once per step and per r). E.g. the logistic
map ``lambda x, r: r * x * (1 - x)``.

**Doublings.** :func:`period_doubling_points` scans a range, then bisects each p → 2p
change of the detected period (batched: all brackets advance in one kernel call per
bisection step). Where the scan jumps p → 4p or into chaos it scans the bracket
more finely first. The bisection predicate is "the detected period is still p";
since convergence is slow near the bifurcation the located point lies slightly
before the true one, by about ln(1/tol)/(transient·|dμ/dη|).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numba import njit

from .._validate import finite_vector, in_range, nonneg_int, positive
from ..losses.base import Loss
from ._common import check_loss, positive_array, rule_factory, run_rules


def detect_period(orbit, tol: float = 1e-7, max_period: int | None = None) -> int:
    """Smallest period p ≤ max_period of an orbit (K, d) or (K,): 0 if none, −1 if not finite."""
    x = np.asarray(orbit, dtype=float)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ValueError(f"orbit must be (K,) or (K, d), got shape {x.shape}")
    K = x.shape[0]
    if max_period is None:
        max_period = K // 2
    max_period = nonneg_int("max_period", max_period, minimum=1)
    if 2 * max_period > K:
        raise ValueError(f"orbit must have at least 2*max_period = {2 * max_period} points, got {K}")
    if not np.all(np.isfinite(x)):
        return -1
    scale = tol * (1.0 + np.abs(x).max())
    for p in range(1, max_period + 1):
        if np.abs(x[p:] - x[:-p]).max() <= scale:
            return p
    return 0


@dataclass
class BifurcationResult:
    """Orbit diagram: ``orbit`` (m, keep, d) are the kept iterates for each value of
    ``lrs`` (m,) (the rule's step-size parameter ``parameter``); ``period`` (m,) their
    detected period (0 aperiodic, −1 diverged); ``diverged_at`` (m,) the step of
    divergence or −1."""

    lrs: np.ndarray
    orbit: np.ndarray
    period: np.ndarray
    diverged_at: np.ndarray
    parameter: str
    transient: int
    keep: int
    tol: float
    max_period: int
    params: dict = field(default_factory=dict)

    def points(self, coord: int = 0):
        """(lr, value) pairs flattened for a scatter plot of coordinate ``coord``."""
        m, K, _ = self.orbit.shape
        return np.repeat(self.lrs, K), self.orbit[:, :, coord].reshape(-1)

    def to_xarray(self):
        import xarray as xr

        return xr.Dataset(
            {"orbit": (("lr", "k", "dim"), self.orbit), "period": ("lr", self.period),
             "diverged_at": ("lr", self.diverged_at)},
            coords={"lr": self.lrs},
            attrs={"parameter": self.parameter, "transient": self.transient, "keep": self.keep,
                   "tol": self.tol, "max_period": self.max_period},
        )


# ------------------------------------------------------------------------ a user's map f(x, r)
@njit(cache=False)
def _iterate_scalar_nb(f, x0, rs, steps, start, blowup, out, div):
    """x_{s+1} = f(x_s, r) for each r; states s ≥ start go to out[j, s − start, 0]; the first
    state with |x| ≥ blowup or x not finite is div[j] (out stays NaN from there)."""
    for j in range(rs.shape[0]):
        x = x0
        r = rs[j]
        for s in range(steps + 1):
            if not abs(x) < blowup:
                div[j] = s
                break
            if s >= start:
                out[j, s - start, 0] = x
            if s < steps:
                x = f(x, r)


@njit(cache=False)
def _iterate_vector_nb(f, x0, rs, steps, start, blowup, out, div):
    """The vector form of :func:`_iterate_scalar_nb`: x (d,), f(x, r) -> (d,)."""
    d = x0.shape[0]
    for j in range(rs.shape[0]):
        x = x0.copy()
        r = rs[j]
        for s in range(steps + 1):
            bad = False
            for i in range(d):
                if not abs(x[i]) < blowup:
                    bad = True
            if bad:
                div[j] = s
                break
            if s >= start:
                out[j, s - start, :] = x
            if s < steps:
                y = f(x, r)
                if y.shape[0] != d:
                    raise ValueError("the map returned a vector of the wrong length")
                x = y.copy()


def _is_numba(f) -> bool:
    from numba.core.dispatcher import Dispatcher

    return isinstance(f, Dispatcher)


def _iterate_vectorised(f, x0, rs, steps, start, blowup, scalar, out, div, strict):
    """All r at once: x of shape (m,) (scalar map) or (d, m), r of shape (m,). Returns False (and
    leaves out/div untouched) if ``strict`` is False and the first call fails or has the wrong shape."""
    m = rs.size
    X = np.full(m, float(x0[0])) if scalar else np.repeat(x0[:, None], m, axis=1)
    alive = np.ones(m, dtype=bool)
    res = np.full(out.shape, np.nan)
    dv = np.full(m, -1, dtype=np.int64)
    with np.errstate(all="ignore"):
        for st in range(steps + 1):
            ok = np.abs(X) < blowup
            if not scalar:
                ok = ok.all(axis=0)
            bad = alive & ~ok
            dv[bad] = st
            alive &= ~bad
            if st >= start:
                res[alive, st - start, :] = (X[:, None] if scalar else X.T)[alive]
            if st == steps or not alive.any():
                break
            try:
                Y = np.asarray(f(X, rs), dtype=float)
            except Exception as exc:
                if st == 0 and not strict:
                    return False
                if st == 0:
                    raise TypeError(f"f(x, r) failed when called vectorised (x of shape {X.shape}, r of shape "
                                    f"{rs.shape}): {type(exc).__name__}: {exc}; pass vectorized=False to call it "
                                    "once per parameter value") from exc
                raise
            if Y.shape != X.shape:
                if st == 0 and not strict:
                    return False
                raise ValueError(f"f(x, r) called vectorised must return the shape of x, {X.shape}, got {Y.shape} "
                                 "(x has one column per value of r; see iterate_map)")
            X = np.where(alive, Y, np.nan)
    out[...] = res
    div[...] = dv
    return True


def _iterate_each(f, x0, rs, steps, start, blowup, scalar, out, div):
    d = x0.size
    with np.errstate(all="ignore"):
        for j, r in enumerate(rs):
            x = float(x0[0]) if scalar else x0.copy()
            for st in range(steps + 1):
                xa = np.asarray(x, dtype=float)
                if xa.shape != (() if scalar else (d,)):
                    raise ValueError(f"f(x, r) must return {'a number' if scalar else f'a vector of length {d}'} "
                                     f"like x, got shape {xa.shape}")
                if not np.all(np.abs(xa) < blowup):
                    div[j] = st
                    break
                if st >= start:
                    out[j, st - start, :] = xa
                if st < steps:
                    x = f(x, float(r)) if scalar else f(xa.copy(), float(r))


def iterate_map(f, x0, rs, steps: int, keep: int | None = None, blowup: float = 1e100,
                vectorized: bool | None = None):
    """Iterate a user's map x_{s+1} = f(x_s, r) from x₀ for every value in ``rs``.

    Parameters
    ----------
    f : callable f(x, r). Scalar map when ``x0`` is a number (x a float), vector map when
        ``x0`` is a (d,) array (x a (d,) array, f returns one of the same length).
        How it is called:

        - a numba dispatcher (``@njit``): f(x, r) per value of r, in a compiled loop
          (fastest; compiled once per process for each f);
        - ``vectorized=True``: once per step for all values of r together, with r of shape
          (m,) and x of shape (m,) for a scalar map or (d, m) for a vector map — one column
          per value of r, the convention of ``scipy.integrate.solve_ivp(vectorized=True)`` —
          so ``lambda x, r: r * x * (1 - x)`` works for both, and a vector map reads its
          coordinates as x[0], x[1], …;
        - ``vectorized=False``: f(x, r) per step and per value of r from Python (slow: about
          a microsecond or more per call);
        - ``vectorized=None`` (default): a numba dispatcher as above; otherwise try the
          vectorised call at the first step and fall back to one call per value if it raises
          or returns the wrong shape.
    x0 : number or (d,) start, the same for every r.
    rs : 1-D array of parameter values (any finite reals).
    steps : number of iterations; states x_0 … x_steps.
    keep : how many of the last states to return (default all, steps + 1).
    blowup : a state with some |xᵢ| ≥ blowup or a non-finite coordinate is divergence
        (the simulator's rule); the orbit is NaN from that state on.

    Returns
    -------
    orbit : (m, keep, d) the states x_{steps−keep+1} … x_steps (d = 1 for a scalar map).
    diverged_at : (m,) the index s of the first state that failed, or −1.
    """
    if not callable(f):
        raise TypeError(f"f must be a callable f(x, r), got {type(f).__name__}")
    scalar = np.ndim(x0) == 0
    x0a = finite_vector("theta0", x0)
    if x0a.size == 0:
        raise ValueError("theta0 (x₀) must not be empty")
    rs = finite_vector("lrs", rs)
    if rs.size == 0:
        raise ValueError("lrs (the parameter values r) must not be empty")
    steps = nonneg_int("steps", steps)
    keep = steps + 1 if keep is None else nonneg_int("keep", keep, minimum=1)
    if keep > steps + 1:
        raise ValueError(f"keep must be <= steps + 1 = {steps + 1}, got {keep}")
    blowup = _blowup(blowup)
    if vectorized not in (None, True, False):
        raise TypeError(f"vectorized must be None, True or False, got {vectorized!r}")
    m, d = rs.size, x0a.size
    start = steps - keep + 1
    out = np.full((m, keep, d), np.nan)
    div = np.full(m, -1, dtype=np.int64)
    if vectorized is None and _is_numba(f):
        if scalar:
            _iterate_scalar_nb(f, float(x0a[0]), rs, steps, start, blowup, out, div)
        else:
            _iterate_vector_nb(f, x0a, rs, steps, start, blowup, out, div)
    elif vectorized is False or not _iterate_vectorised(f, x0a, rs, steps, start, blowup, scalar, out, div,
                                                         strict=vectorized is True):
        _iterate_each(f, x0a, rs, steps, start, blowup, scalar, out, div)
    return out, div


def _blowup(value) -> float:
    """A divergence bound: a number > 0 (np.inf allowed: then only non-finite states count)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"blowup must be a number > 0, got {type(value).__name__}")
    v = float(value)
    if not v > 0:
        raise ValueError(f"blowup must be > 0 (np.inf allowed), got {value!r}")
    return v


def _is_user_map(obj) -> bool:
    return not isinstance(obj, Loss) and callable(obj)


def _map_runner(f, theta0, transient, keep, tol, max_period, blowup, vectorized):
    def run(vals):
        out, div = iterate_map(f, theta0, vals, transient + keep - 1, keep, blowup=blowup, vectorized=vectorized)
        per = np.array([detect_period(out[i], tol, max_period) for i in range(out.shape[0])], dtype=np.int64)
        return out, per, div

    return run


def _check_map_args(f, theta0, rule, state0, rule_kwargs):
    if theta0 is None:
        raise ValueError("theta0 (the start x₀) is required with a user map f(x, r): a number for a scalar map "
                         "or a (d,) vector")
    if not (isinstance(rule, str) and rule.lower() == "gd") or state0 is not None or rule_kwargs:
        raise ValueError("rule, state0 and rule keyword arguments belong to a (loss, rule) pair; with a user map "
                         "f(x, r) pass only the map, its parameter values, theta0 and the iteration settings")


def _run_periods(loss, factory, lrs, theta0, state0, transient, keep, tol, max_period, blowup):
    rules = [factory(float(v)) for v in lrs]
    n = len(rules)
    thetas = np.repeat(theta0[None, :], n, axis=0)
    states = None if state0 is None else np.repeat(state0[None, :], n, axis=0)
    out, _, div = run_rules(loss, rules, thetas, transient + keep - 1, keep, states0=states, blowup=blowup)
    per = np.array([detect_period(out[i], tol, max_period) for i in range(n)], dtype=np.int64)
    return out, per, div


def default_start(loss) -> np.ndarray:
    """θ₀ used when none is given: a known minimiser of the loss plus 0.1·(1 + |θ*|) in every
    coordinate (a start *at* a fixed point would stay there at every step size), else 0.1·1.

    Known minimisers: ``local_minimizer`` (LogisticCubic), ``center`` (Quadratic),
    ``balanced_minimum()`` (ScalarNet), ``minimizer()`` (DeepLinear).
    """
    d = loss.dim
    star = None
    for attr in ("local_minimizer", "center"):
        if hasattr(loss, attr):
            star = np.broadcast_to(np.asarray(getattr(loss, attr), float), (d,))
            break
    if star is None:
        for meth in ("balanced_minimum", "minimizer"):
            if callable(getattr(loss, meth, None)):
                star = np.asarray(getattr(loss, meth)(), float).reshape(d)
                break
    if star is None:
        return np.full(d, 0.1)
    return star + 0.1 * (1.0 + np.abs(star))


def _check_iteration(transient, keep, tol, max_period):
    """The iteration settings, checked: transient >= 0, keep >= 2, tol > 0, max_period in [1, keep/2]."""
    transient = nonneg_int("transient", transient)
    keep = nonneg_int("keep", keep, minimum=2)
    tol = positive("tol", tol)
    max_period = keep // 2 if max_period is None else nonneg_int("max_period", max_period, minimum=1)
    if keep < 2 * max_period:
        raise ValueError(f"keep must be >= 2*max_period = {2 * max_period}, got {keep}")
    return transient, keep, tol, max_period


def _check_common(loss, theta0, transient, keep, tol, max_period, state0):
    loss = check_loss(loss)
    theta0 = default_start(loss) if theta0 is None else finite_vector("theta0", theta0, loss.dim)
    transient, keep, tol, max_period = _check_iteration(transient, keep, tol, max_period)
    s0 = None if state0 is None else finite_vector("state0", state0)
    return loss, theta0, transient, keep, tol, max_period, s0


def bifurcation_diagram(loss, lrs, theta0=None, transient: int = 2000, keep: int = 64, rule="gd",
                        tol: float = 1e-7, max_period: int | None = None, state0=None,
                        blowup: float = 1e100, *, vectorized: bool | None = None, **rule_kwargs) -> BifurcationResult:
    """The orbit diagram of a rule over step sizes ``lrs``, or of a user's map f(x, r) over r.

    Parameters
    ----------
    loss : Loss, or a callable f(x, r): a map x ↦ f(x, r) with parameter r (see
        :func:`iterate_map` for how it is called; ``vectorized`` is passed on). With a map,
        ``lrs`` are the values of r (any finite reals), ``theta0`` (x₀, a number or a (d,)
        vector) is required, ``rule``/``state0``/rule keywords are not used, and the result's
        ``parameter`` is "r".
    lrs : 1-D array of step sizes, all > 0 (else ValueError). For EoS-Ada the swept
        parameter is α.
    theta0 : (d,) start, the same for every step size (default :func:`default_start`);
        ``state0`` the optimizer state (default ``rule.init_state``).
    transient, keep : steps discarded, then iterates kept.
    rule : "gd" (default), another family name ("heavyball", "nesterov", …), a Rule
        subclass, or a callable lr -> Rule; ``rule_kwargs`` are the family's other
        hyperparameters (e.g. ``momentum=0.9``).
    tol, max_period : period detection (see :func:`detect_period`); max_period
        defaults to keep // 2.
    blowup : |θᵢ| (or |xᵢ|) ≥ blowup, or a non-finite state, is divergence (period −1).
    """
    run, lrs, theta0, transient, keep, tol, max_period, param, params = _setup(
        loss, lrs, theta0, transient, keep, rule, tol, max_period, state0, blowup, vectorized, rule_kwargs)
    out, per, div = run(lrs)
    return BifurcationResult(lrs=lrs, orbit=out, period=per, diverged_at=div, parameter=param,
                             transient=transient, keep=keep, tol=tol, max_period=max_period, params=params)


def _setup(loss, lrs, theta0, transient, keep, rule, tol, max_period, state0, blowup, vectorized, rule_kwargs):
    """(runner vals -> (orbit, period, diverged_at), lrs, theta0, transient, keep, tol, max_period,
    parameter name, params) for a (loss, rule) pair or a user map."""
    if _is_user_map(loss):
        _check_map_args(loss, theta0, rule, state0, rule_kwargs)
        vals = None if lrs is None else finite_vector("lrs", lrs)
        if vals is not None and vals.size == 0:
            raise ValueError("lrs (the parameter values r) must not be empty")
        transient, keep, tol, max_period = _check_iteration(transient, keep, tol, max_period)
        x0 = theta0 if np.ndim(theta0) == 0 else finite_vector("theta0", theta0)
        finite_vector("theta0", x0)
        run = _map_runner(loss, x0, transient, keep, tol, max_period, _blowup(blowup), vectorized)
        name = getattr(loss, "__name__", type(loss).__name__)
        return (run, vals, x0, transient, keep, tol, max_period, "r",
                {"theta0": np.asarray(x0, float).tolist(), "map": name})
    if vectorized is not None:
        raise ValueError("vectorized applies to a user map f(x, r), not to a (loss, rule) pair")
    vals = None if lrs is None else positive_array("lrs", lrs)
    loss, theta0, transient, keep, tol, max_period, s0 = _check_common(loss, theta0, transient, keep, tol,
                                                                         max_period, state0)
    factory, param = rule_factory(rule, rule_kwargs)
    bl = _blowup(blowup)

    def run(v):
        return _run_periods(loss, factory, np.asarray(v, float), theta0, s0, transient, keep, tol, max_period, bl)

    return (run, vals, theta0, transient, keep, tol, max_period, param,
            {"theta0": theta0.tolist(), "rule": str(rule), **rule_kwargs})


@dataclass
class DoublingResult:
    """Period-doubling points: ``lrs`` (k,) where the detected period goes from
    ``from_period`` (k,) to twice that, sorted; ``feigenbaum_ratios`` (k−2,) the ratios
    (η_i − η_{i−1})/(η_{i+1} − η_i) of consecutive doublings of consecutive periods;
    ``scan`` the initial orbit diagram."""

    lrs: np.ndarray
    from_period: np.ndarray
    scan: BifurcationResult
    parameter: str
    n_kernel_calls: int

    @property
    def feigenbaum_ratios(self) -> np.ndarray:
        r = self.lrs
        p = self.from_period
        out = []
        for i in range(1, len(r) - 1):
            if p[i] == 2 * p[i - 1] and p[i + 1] == 2 * p[i]:
                out.append((r[i] - r[i - 1]) / (r[i + 1] - r[i]))
        return np.array(out)


def _is_doubling_chain(pa, pb, max_period):
    """pb is reached from pa by doublings (pb = 2^k pa, k ≥ 1), or pb = 0 (aperiodic) with room to double."""
    if pa <= 0:
        return False
    if pb == 0:
        return 2 * pa <= max_period
    if pb <= pa or pb % pa:
        return False
    q = pb // pa
    return q & (q - 1) == 0


def period_doubling_points(loss, lr_lo, lr_hi, theta0=None, n_scan: int = 200, transient: int = 100_000,
                           keep: int = 128, rule="gd", tol: float = 1e-7, max_period: int = 32,
                           rtol: float = 1e-10, n_refine: int = 16, max_rounds: int = 6, state0=None,
                           blowup: float = 1e100, *, vectorized: bool | None = None,
                           **rule_kwargs) -> DoublingResult:
    """Locate the period doublings of a rule's orbit in [lr_lo, lr_hi] by bisection.

    A scan of ``n_scan`` step sizes detects the period (see :func:`detect_period`);
    every change p → 2p between neighbours is bisected on "period is still p" to
    relative width ``rtol``; a change p → 2ᵏp (k > 1) or p → aperiodic is first
    re-scanned with ``n_refine`` interior points (up to ``max_rounds`` times). Only
    doublings up to period ``max_period`` are located. ``lr_lo`` and ``lr_hi`` must be
    > 0 (ValueError otherwise). ``theta0`` defaults to :func:`default_start`; the other
    arguments are those of :func:`bifurcation_diagram`.

    ``loss`` may also be a user's map f(x, r) (as in :func:`bifurcation_diagram`): then
    [lr_lo, lr_hi] is a range of r (any finite reals, lr_lo < lr_hi) and ``theta0`` = x₀ is
    required. **Accuracy**: a point is located where the orbit still settles to within
    ``tol`` in ``transient`` steps, so it lies *before* the true doubling by about
    p·ln(1/tol)/(transient·|dμ/dr|) (μ the p-cycle's multiplier): for the logistic map
    r·x(1−x) at r₁ = 3 (|dμ/dr| = 1) with tol = 1e-7 that is 1.6e-5 for transient = 10⁶. A
    numba ``@njit`` map makes 10⁶-step transients cheap (milliseconds per value); a Python
    map costs about a microsecond per call and value.
    """
    if _is_user_map(loss):
        lo = in_range("lr_lo", lr_lo, -np.inf, np.inf, lo_open=True, hi_open=True)
        hi = in_range("lr_hi", lr_hi, -np.inf, np.inf, lo_open=True, hi_open=True)
    else:
        lo = positive("lr_lo", lr_lo)
        hi = positive("lr_hi", lr_hi)
    if hi <= lo:
        raise ValueError(f"lr_hi must be > lr_lo, got lr_lo={lr_lo!r}, lr_hi={lr_hi!r}")
    n_scan = nonneg_int("n_scan", n_scan, minimum=2)
    rtol = in_range("rtol", rtol, 0.0, 0.1, lo_open=True)
    n_refine = nonneg_int("n_refine", n_refine, minimum=1)
    run, _, theta0, transient, keep, tol, max_period, param, _ = _setup(
        loss, None, theta0, transient, keep, rule, tol, max_period, state0, blowup, vectorized, rule_kwargs)
    calls = 0

    def periods(vals):
        nonlocal calls
        calls += 1
        return run(np.asarray(vals, float))

    grid = np.linspace(lo, hi, n_scan)
    out, per, div = periods(grid)
    scan = BifurcationResult(lrs=grid, orbit=out, period=per, diverged_at=div, parameter=param,
                             transient=transient, keep=keep, tol=tol, max_period=max_period)

    def pairs(xs, ps):
        return [(xs[i], xs[i + 1], int(ps[i]), int(ps[i + 1])) for i in range(len(xs) - 1)
                if ps[i] != ps[i + 1] and _is_doubling_chain(int(ps[i]), int(ps[i + 1]), max_period)]

    pending = pairs(grid, per)
    direct = []
    for _ in range(max_rounds):
        refine = []
        for a, b, pa, pb in pending:
            (direct if pb == 2 * pa else refine).append((a, b, pa, pb))
        if not refine:
            break
        xs_all = [np.linspace(lo, hi, n_refine + 2) for lo, hi, _, _ in refine]
        inner = np.concatenate([x[1:-1] for x in xs_all])
        _, pin, _ = periods(inner)
        pending = []
        for j, (_, _, pa, pb) in enumerate(refine):
            ps = np.concatenate([[pa], pin[j * n_refine:(j + 1) * n_refine], [pb]])
            pending += pairs(xs_all[j], ps)
    # batched bisection of all p -> 2p brackets
    br = np.array([[a, b] for a, b, _, _ in direct], dtype=float).reshape(-1, 2)
    pa = np.array([p for _, _, p, _ in direct], dtype=np.int64)
    for _ in range(200):
        if br.shape[0] == 0:
            break
        width = br[:, 1] - br[:, 0]
        active = width > rtol * np.maximum(np.abs(br[:, 0]), np.abs(br[:, 1]))
        if not np.any(active):
            break
        mids = 0.5 * (br[active, 0] + br[active, 1])
        _, pm, _ = periods(mids)
        idx = np.flatnonzero(active)
        still = pm == pa[active]
        br[idx[still], 0] = mids[still]
        br[idx[~still], 1] = mids[~still]
    pts = 0.5 * (br[:, 0] + br[:, 1]) if br.shape[0] else np.zeros(0)
    order = np.argsort(pts)
    return DoublingResult(lrs=pts[order], from_period=pa[order], scan=scan, parameter=param,
                          n_kernel_calls=calls)
