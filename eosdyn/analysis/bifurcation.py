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

The trajectories for all step sizes run in one numba ``prange`` kernel
(:mod:`eosdyn.analysis._kernels`, which explains why not :func:`eosdyn.ensemble`).

**Period detection.** The period of a kept orbit x_0 … x_{K−1} is the smallest p ≤
``max_period`` with max_n ‖x_{n+p} − x_n‖∞ ≤ tol·(1 + max‖x‖∞); 0 when there is none
(chaos, a quasi-periodic orbit, or a transient too short to settle), −1 when the
orbit diverged. Near a bifurcation the approach to the cycle is slow (its multiplier
is near ±1), so the transient sets how close to a bifurcation the period is right.

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

from .._validate import finite_vector, in_range, nonneg_int, positive
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


def _check_common(loss, theta0, transient, keep, tol, max_period, state0):
    loss = check_loss(loss)
    theta0 = default_start(loss) if theta0 is None else finite_vector("theta0", theta0, loss.dim)
    transient = nonneg_int("transient", transient)
    keep = nonneg_int("keep", keep, minimum=2)
    tol = positive("tol", tol)
    max_period = keep // 2 if max_period is None else nonneg_int("max_period", max_period, minimum=1)
    if keep < 2 * max_period:
        raise ValueError(f"keep must be >= 2*max_period = {2 * max_period}, got {keep}")
    s0 = None if state0 is None else finite_vector("state0", state0)
    return loss, theta0, transient, keep, tol, max_period, s0


def bifurcation_diagram(loss, lrs, theta0=None, transient: int = 2000, keep: int = 64, rule="gd",
                        tol: float = 1e-7, max_period: int | None = None, state0=None,
                        blowup: float = 1e100, **rule_kwargs) -> BifurcationResult:
    """The orbit diagram of a rule over step sizes ``lrs``.

    Parameters
    ----------
    loss : Loss.
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
    """
    lrs = positive_array("lrs", lrs)
    loss, theta0, transient, keep, tol, max_period, s0 = _check_common(loss, theta0, transient, keep, tol,
                                                                         max_period, state0)
    factory, param = rule_factory(rule, rule_kwargs)
    out, per, div = _run_periods(loss, factory, lrs, theta0, s0, transient, keep, tol, max_period, blowup)
    return BifurcationResult(lrs=lrs, orbit=out, period=per, diverged_at=div, parameter=param,
                             transient=transient, keep=keep, tol=tol, max_period=max_period,
                             params={"theta0": theta0.tolist(), "rule": str(rule), **rule_kwargs})


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
                           blowup: float = 1e100, **rule_kwargs) -> DoublingResult:
    """Locate the period doublings of a rule's orbit in [lr_lo, lr_hi] by bisection.

    A scan of ``n_scan`` step sizes detects the period (see :func:`detect_period`);
    every change p → 2p between neighbours is bisected on "period is still p" to
    relative width ``rtol``; a change p → 2ᵏp (k > 1) or p → aperiodic is first
    re-scanned with ``n_refine`` interior points (up to ``max_rounds`` times). Only
    doublings up to period ``max_period`` are located. ``lr_lo`` and ``lr_hi`` must be
    > 0 (ValueError otherwise). ``theta0`` defaults to :func:`default_start`; the other
    arguments are those of :func:`bifurcation_diagram`.
    """
    lo = positive("lr_lo", lr_lo)
    hi = positive("lr_hi", lr_hi)
    if hi <= lo:
        raise ValueError(f"lr_hi must be > lr_lo, got lr_lo={lr_lo!r}, lr_hi={lr_hi!r}")
    n_scan = nonneg_int("n_scan", n_scan, minimum=2)
    rtol = in_range("rtol", rtol, 0.0, 0.1, lo_open=True)
    n_refine = nonneg_int("n_refine", n_refine, minimum=1)
    loss, theta0, transient, keep, tol, max_period, s0 = _check_common(loss, theta0, transient, keep, tol,
                                                                         max_period, state0)
    factory, param = rule_factory(rule, rule_kwargs)
    calls = 0

    def periods(vals):
        nonlocal calls
        calls += 1
        return _run_periods(loss, factory, np.asarray(vals, float), theta0, s0, transient, keep, tol,
                            max_period, blowup)

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
        active = width > rtol * br[:, 1]
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
