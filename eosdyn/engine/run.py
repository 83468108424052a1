"""The one way to run the stepping core from Python: :func:`run_map`.

``simulate``, ``ensemble``, the analysis's orbits and maps, noisy GD, Lyapunov spectra of a
rule and the sweep examples all call :func:`run_map` (or :func:`run_lyapunov`) and only
shape its output. It

1. checks the request and estimates its memory before allocating anything (a request that
   cannot fit is refused with the number of bytes and what to change);
2. picks the kernel (blocked where the pair allows it and the call asks for ``"auto"``) and
   gets it compiled or from the disk cache (:mod:`eosdyn.engine.kernels`);
3. runs the states in calls of growing size (about half a second each once the speed is
   known), which checks for Ctrl-C and reports progress between calls — the results do not
   depend on how the run is cut;
4. recovers, by a bit-identical replay, the last good state of every trajectory that
   failed, and blanks its records from the failure on (:mod:`eosdyn.engine.core` states the
   divergence rule).

On Ctrl-C the run stops after the call in flight and :class:`RunInterrupted` is raised; its
``partial`` holds everything computed so far (records up to ``steps_done``).
"""
from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from .._rng import rng_init_rows
from . import core as C
from .kernels import kernel_for
from .noise import NONE as NO_NOISE
from .threads import threads_for

RECORDS = ("theta", "loss", "grad_norm", "sharpness", "lambda2", "lr", "psharp", "batch_loss")
#: target wall time of one kernel call once the speed is known (seconds)
CALL_SECONDS = 0.5


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run: ``partial`` holds what was computed (see the message)."""

    def __init__(self, message, partial=None):
        super().__init__(message)
        self.partial = partial


@dataclass
class NoisePlan:
    """What the core needs of a noise model (built by ``NoiseModel.plan``): kind code, m, data."""

    kind: int
    m: int
    scal: float = 0.0
    mat: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    vec: np.ndarray = field(default_factory=lambda: np.zeros(0))
    mb_params: tuple = field(default_factory=lambda: (np.zeros((0, 0)), np.zeros(0)))
    mbX: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    mby: np.ndarray = field(default_factory=lambda: np.zeros(0))
    pex_fn: object = None
    umat_fn: object = None
    udiag_fn: object = None
    ucov_fn: object = None
    state_dependent: bool = False
    psd_raise: bool = False
    mb_eigh: bool = False
    #: "sgd" (c_t = η_t) or "proposal" (c_t = √η_t): the per-step factor of B(θ)ξ (engine.noise)
    convention: str = "sgd"


@dataclass
class MapOutput:
    """What :func:`run_map` returns: records (n, R[, d]) by name (None where not asked for),
    final θ and optimizer states (the last good state of a failed trajectory), per-trajectory
    ``status`` / ``fail_at`` / ``fail_value``, the moment sums (per block), and bookkeeping."""

    step: np.ndarray
    records: dict
    thetas: np.ndarray
    states: np.ndarray
    status: np.ndarray
    fail_at: np.ndarray
    fail_value: np.ndarray
    moments: tuple | None
    kernel: str
    generated: bool
    wall: float
    steps_done: int
    interrupted: bool = False


def available_memory() -> int | None:
    """Bytes of memory available to this process now (None if unknown)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - platform dependent
        return None


def check_memory(nbytes: int, what: str, fix: str) -> None:
    """Refuse a request whose result would not fit in the memory available now."""
    avail = available_memory()
    if avail is not None and nbytes > 0.9 * avail:
        raise ValueError(f"{what} needs about {nbytes / 2**30:.3g} GiB ({nbytes:,} bytes) but "
                         f"{avail / 2**30:.3g} GiB are available: {fix}")


#: at most this many bytes go to the per-block sums of the ensemble moments
MOMENT_BYTES = 256 * 2 ** 20


def moment_blocks(n, R, d, moments) -> int:
    """The number of blocks of trajectories whose moment sums are kept apart (then added in
    order), fixed by the request and never by the thread count, so the moments are
    thread-count independent: min(n, 256), fewer where the sums of (R, d, d) per block would
    pass :data:`MOMENT_BYTES`."""
    nb = min(n, 256)
    if moments:
        per_block = 8 * R * (d * (d if moments == 2 else 1) + d + 1)
        nb = max(1, min(nb, MOMENT_BYTES // max(per_block, 1)))
    return nb


def record_count(steps, record_start, record_every) -> int:
    """Number of record steps record_start + r·record_every ≤ steps."""
    return 0 if record_start > steps else (steps - record_start) // record_every + 1


def _blocked_unsupported(loss, rule, noise, probe_k, moments, draws=False):
    """Why the blocked (SIMD) kernel cannot run this request ("" if it can)."""
    why = []
    if draws:
        why.append(f"{type(rule).__name__} draws a minibatch at every step")
    if getattr(loss, "grad_block_fn", None) is None:
        why.append(f"{type(loss).__name__} has no grad_block_fn")
    if getattr(rule, "step_block_fn", None) is None:
        why.append(f"{type(rule).__name__} has no step_block_fn")
    if probe_k > 0:
        why.append(f"{type(rule).__name__} probes the curvature during the run")
    if noise is not None:
        why.append("the run adds noise")
    if rule.stochastic:
        why.append(f"{type(rule).__name__} is stochastic")
    if moments:
        why.append("ensemble moments are accumulated (the blocked loop records none)")
    return "; ".join(why)


class _Deferred:
    """SIGINT handler that only notes Ctrl-C, so a run stops cleanly between kernel calls."""

    def __init__(self):
        self.hit = False
        self.old = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            try:
                self.old = signal.signal(signal.SIGINT, self._handler)
            except (ValueError, OSError):  # pragma: no cover - embedded interpreters
                self.old = None
        return self

    def _handler(self, signum, frame):
        self.hit = True

    def __exit__(self, *exc):
        if self.old is not None:
            signal.signal(signal.SIGINT, self.old)
        return False


class CallPlan:
    """The kernel calls a long run is cut into: ``for s0, s1 in plan`` covers 0 … total − 1.

    Calls grow to about :data:`CALL_SECONDS` each once the speed is known (or have the fixed
    size ``fixed``); ``progress(done, total)`` is called after each; Ctrl-C only sets a flag
    while the plan runs, and the plan stops after the call in flight (``interrupted``,
    ``done``). How a run is cut never changes its results.
    """

    def __init__(self, total, first, fixed=None, progress=None):
        self.total, self.first, self.fixed, self.progress = int(total), int(first), fixed, progress
        self.done = 0
        self.interrupted = False

    def __iter__(self):
        call = max(1, int(self.fixed) if self.fixed else self.first)
        with _Deferred() as sigint:
            while self.done < self.total:
                s0, s1 = self.done, min(self.total, self.done + call)
                tc = time.perf_counter()
                yield s0, s1
                self.done = s1
                if self.progress is not None:
                    self.progress(s1, self.total)
                if sigint.hit:  # also in the last call: a Ctrl-C is never swallowed
                    self.interrupted = True
                    return
                if not self.fixed:
                    rate = (s1 - s0) / max(time.perf_counter() - tc, 1e-9)
                    call = int(max(1, min(4 * call, rate * CALL_SECONDS)))


def blank_failed_records(arrays, step_idx, status, fail_at) -> None:
    """Set to NaN, in place, each failed trajectory's records from its failing step on.

    ``arrays``: (n, R, ...) record arrays (empty ones are skipped); ``step_idx``: the R
    record steps; ``status``/``fail_at``: per trajectory. A failure can leave a partial record
    (an exception in the middle of one), so the records from ``fail_at`` on are all blanked.
    """
    failed = np.flatnonzero(status != C.ALIVE)
    if failed.size == 0:
        return
    blank = step_idx[None, :] >= fail_at[failed, None]
    for a in arrays:
        if a.shape[0] and a.shape[1]:
            sub = a[failed]
            sub[blank] = np.nan
            a[failed] = sub


def _what(kind, loss, rule):
    return f"the {kind} kernel for ({type(loss).__name__}, {type(rule).__name__})"


def initial_states(rule, thetas):
    """(n, S) optimizer states: ``rule.init_state`` per row (zeros without calling it, when the
    rule keeps the default, which is zeros)."""
    from ..rules.base import Rule

    n, d = thetas.shape
    states = np.zeros((n, rule.state_size(d)))
    if type(rule).init_state is not Rule.init_state:
        for i in range(n):
            states[i] = rule.init_state(thetas[i])
    return states


class _Run:
    """The arrays of one :func:`run_map` call and the kernel calls on them."""

    def __init__(self, loss, rule, thetas, states, hypers, icfg, fcfg, ndata, out, mom, bounds, kernel, locate):
        self.loss, self.rule, self.params = loss, rule, loss.params
        self.thetas, self.states, self.hypers = thetas, states, hypers
        self.icfg, self.fcfg, self.ndata = icfg, fcfg, ndata
        self.out, self.mom, self.bounds, self.kernel, self.locate = out, mom, bounds, kernel, locate
        n, d = thetas.shape
        self.rngs = np.zeros((n, 4), np.uint64)
        self.warms = np.zeros((n, d))
        self.curvs = np.zeros((n, max(int(icfg[C.I_CK]), 1)))
        self.status = np.zeros(n, np.int64)
        self.fail_at = np.full(n, -1, np.int64)
        self.fail_val = np.zeros(n)

    def carry(self):
        """A copy of everything a call changes except the records: the replays start from it."""
        return tuple(a.copy() for a in (self.thetas, self.states, self.rngs, self.warms, self.curvs, self.status))

    def _outs(self, o):
        return (o["theta"], o["loss"], o["grad_norm"], o["sharpness"], o["lambda2"], o["lr"], o["psharp"],
                o["batch_loss"])

    def traj(self, s0, s1):
        """The per-trajectory kernel over every live trajectory, states s0 ≤ s < s1."""
        cfg = self.icfg.copy()
        cfg[C.I_S0], cfg[C.I_S1] = s0, s1
        self.kernel.blocks(self.bounds.shape[0] - 1, self.params, self.hypers, cfg, self.fcfg, self.ndata,
                           (self.thetas, self.states, self.rngs, self.warms, self.curvs),
                           (self.status, self.fail_at, self.fail_val, np.zeros(0, np.int64)),
                           self._outs(self.out), self.mom, self.bounds,
                           threads=threads_for(self.thetas.shape[0] * (s1 - s0)))

    def rows(self, rows, s0, s1, start, stops=None, record=True, kernel=None):
        """The per-trajectory kernel on the trajectories ``rows`` only, from the carried-over
        ``start`` (a :meth:`carry`); with ``record`` their records and final state are written
        back, else (a replay up to ``stops``) only their final θ and optimizer state."""
        k = rows.size
        cfg = self.icfg.copy()
        cfg[C.I_S0], cfg[C.I_S1] = s0, s1
        th, st, rg, wm, cv = (a[rows].copy() for a in start[:5])
        stt = np.zeros(k, np.int64)
        fa = np.full(k, -1, np.int64)
        fv = np.zeros(k)
        hy = self.hypers if self.hypers.shape[0] == 1 else np.ascontiguousarray(self.hypers[rows])
        if record:
            o = {name: np.ascontiguousarray(a[rows]) if a.shape[1] > 0 else a[:k] for name, a in self.out.items()}
        else:
            cfg[C.I_REC0] = cfg[C.I_STEPS] + 1  # no record step
            o = {name: a[:k, :0] for name, a in self.out.items()}
        cfg[C.I_MOMENTS] = 0
        mom = (np.zeros((0, 0, 0)), np.zeros((0, 0, 0, 0)), np.zeros((0, 0)))
        (kernel or self.kernel).blocks(k, self.params, hy, cfg, self.fcfg, self.ndata, (th, st, rg, wm, cv),
                                       (stt, fa, fv, np.zeros(0, np.int64) if stops is None
                                        else np.ascontiguousarray(stops, dtype=np.int64)),
                                       self._outs(o), mom, np.arange(k + 1, dtype=np.int64),
                                       threads=threads_for(k * (s1 - s0)))
        self.thetas[rows], self.states[rows] = th, st
        if record:
            self.rngs[rows], self.warms[rows], self.curvs[rows] = rg, wm, cv
            self.status[rows], self.fail_at[rows], self.fail_val[rows] = stt, fa, fv
            for name, a in self.out.items():
                if a.shape[1] > 0:
                    a[rows] = o[name]

    def blocks(self, kernel, s0, s1, start):
        """The blocked kernel over every live trajectory, states s0 ≤ s < s1; a block that raised is
        rerun one trajectory at a time from ``start``, which pins the failure on its lane."""
        cfg = self.icfg.copy()
        cfg[C.I_S0], cfg[C.I_S1] = s0, s1
        n = self.thetas.shape[0]
        block_ok = np.ones((n + C.BLOCK - 1) // C.BLOCK, np.bool_)
        o = self.out
        kernel.blocks(block_ok.shape[0], self.params, self.hypers, cfg, self.fcfg, self.thetas, self.states,
                      self.status, self.fail_at, o["theta"], o["loss"], o["grad_norm"], o["sharpness"],
                      o["lambda2"], o["lr"], o["psharp"], block_ok, threads=threads_for(n * (s1 - s0)))
        for j in np.flatnonzero(~block_ok):
            rows = np.arange(j * C.BLOCK, min(n, (j + 1) * C.BLOCK))
            self.rows(rows[start[5][rows] == C.ALIVE], s0, s1, start)

    def locate_failures(self, s0, s1, start):
        """Rerun, from ``start``, the trajectories that raised where the state was not tracked, with
        the kernel that tracks it (:data:`core.FAILED_UNLOCATED`): records, moments and the failing
        state come out as if it had been tracked all along."""
        rows = np.flatnonzero(self.status == C.FAILED_UNLOCATED)
        if rows.size == 0:
            return
        self.rows(rows, s0, s1, start, kernel=self.locate())

    def recover(self, rows, s0, start, prev):
        """Replace the final state of the trajectories ``rows``, which failed in the call that
        began at state s0 from ``start``, by their last good state θ_{fail_at − 1}, replayed bit
        for bit from the start of this call or (failure at s0) of the previous one, ``prev`` =
        (its first state, its carry)."""
        f = self.fail_at[rows]
        first = rows[f == 0]
        self.thetas[first], self.states[first] = start[0][first], start[1][first]  # s0 = 0 here
        for lo, src, sel in ((s0, start, f - 1 >= s0), (None if prev is None else prev[0],
                                                       None if prev is None else prev[1], (f > 0) & (f - 1 < s0))):
            rr = rows[sel]
            if rr.size == 0:
                continue
            stops = f[sel] - 1
            self.rows(rr, lo, int(stops.max()), src, stops=stops, record=False)


def run_map(loss, rule, theta0s, steps, *, record_every=1, record_start=0, records=("loss", "lr"), seed=0,
            index0=0, t0=0, states0=None, hypers=None, exact_curvature=False, noise=None, moments=0,
            blowup=1e100, kernel="auto", progress=None, max_call_steps=None) -> MapOutput:
    """Run the stepping core for n trajectories of ``rule`` on ``loss`` (inputs already checked).

    - theta0s : (n, d) float64, copied. states0 : (n, S) or None (the rule's initial state).
    - hypers : (n, h) per-trajectory hyperparameter rows (default: ``rule.hyper`` for all).
    - records : names in :data:`RECORDS` to record at steps record_start + r·record_every.
    - exact_curvature : probe the exact curvature at every step (the analysis's map F)
      instead of the rule's own schedule.
    - noise : a :class:`NoisePlan` or None. moments : 0 none, 1 per-coordinate, 2 covariance.
    - kernel : "auto", "blocked" or "trajectory". progress : callable(states done, total).
    - max_call_steps : cap on the states per kernel call (the tests cut runs with it).

    A rule that steps on a minibatch gradient (``rule.minibatch(loss)`` not None: SGD) has its
    batch drawn by the core from each trajectory's stream; where the batch is the whole data
    set (B = n without replacement) the core steps on ∇L itself and draws nothing, and the
    ``batch_loss`` record is the ``loss`` record.
    """
    thetas = np.array(theta0s, dtype=np.float64, order="C", copy=True)
    n, d = thetas.shape
    rule.check_dimension(d)
    batch = rule.minibatch(loss)  # (B, replacement) or None; checks the loss and B against n
    draws = batch is not None and not (batch[0] == loss.n_examples and not batch[1])
    steps = int(steps)
    if states0 is None:
        states = initial_states(rule, thetas)
    else:
        states = np.array(states0, dtype=np.float64, order="C", copy=True).reshape(n, rule.state_size(d))
    S = states.shape[1]
    hypers = np.ascontiguousarray(np.asarray(rule.hyper, dtype=np.float64)[None, :] if hypers is None else hypers,
                                  dtype=np.float64)
    cmethod, ck, cevery = rule.resolved_curvature(d, exact=exact_curvature)
    R = record_count(steps, record_start, record_every)
    want = set(records)
    pre = bool(rule.preconditioned)
    rec = {name: name in want for name in RECORDS}
    rec["psharp"] = rec["psharp"] and pre
    full_batch_loss = rec["batch_loss"] and batch is not None and not draws  # the batch is the data set
    rec["batch_loss"] = rec["batch_loss"] and draws
    rec["loss"] = rec["loss"] or full_batch_loss
    track = rec["sharpness"] or rec["lambda2"] or rec["psharp"]

    # memory, before allocating anything
    nb = moment_blocks(n, R, d, moments)
    scalars = sum(rec[k] for k in RECORDS if k != "theta") + (track and not rec["sharpness"])
    per_traj = 8 * R * (d * rec["theta"] + scalars)
    mom_bytes = 8 * nb * R * (d * (d if moments == 2 else 1) + d + 1) if moments else 0
    check_memory(n * per_traj + mom_bytes + 8 * n * (3 * d + 2 * S + 12),
                 f"recording {R:,} records of {n:,} trajector{'y' if n == 1 else 'ies'}",
                 "record less often (record_every), record fewer fields (e.g. record_theta=False), "
                 "or run fewer trajectories at once")

    def arr(on, *shape):
        return np.full((n,) + (shape if on else (0,) * len(shape)), np.nan)

    out = {"theta": arr(rec["theta"], R, d), "loss": arr(rec["loss"], R), "grad_norm": arr(rec["grad_norm"], R),
           "sharpness": arr(track, R), "lambda2": arr(rec["lambda2"], R), "lr": arr(rec["lr"], R),
           "psharp": arr(rec["psharp"], R), "batch_loss": arr(rec["batch_loss"], R)}
    if moments:
        mom = (np.zeros((nb, R, d)), np.zeros((nb, R, d, d if moments == 2 else 1)), np.zeros((nb, R)))
    else:
        mom = (np.zeros((0, 0, 0)), np.zeros((0, 0, 0, 0)), np.zeros((0, 0)))
    bounds = (np.arange(nb + 1, dtype=np.int64) * n) // max(nb, 1)

    icfg = np.zeros(C.N_ICFG, np.int64)
    icfg[C.I_STEPS] = steps
    icfg[C.I_T0] = t0
    icfg[C.I_REC0] = record_start
    icfg[C.I_RECK] = record_every
    icfg[C.I_CK], icfg[C.I_CEVERY] = ck, cevery
    icfg[C.I_CM] = rule.lanczos_steps
    icfg[C.I_CNSAMP] = rule.hutchinson_samples
    icfg[C.I_MOMENTS] = int(moments)
    icfg[C.I_NKIND] = NO_NOISE
    if draws:
        icfg[C.I_BATCH], icfg[C.I_BREPLACE], icfg[C.I_NEXAMPLES] = batch[0], int(batch[1]), loss.n_examples
    fcfg = np.zeros(C.N_FCFG)
    fcfg[C.F_BLOWUP] = blowup
    ndata = (np.zeros((0, 0)), np.zeros(0), (np.zeros((0, 0)), np.zeros(0)), np.zeros((0, 0)), np.zeros(0))
    nfns = (None, None, None, None)
    if noise is not None:
        icfg[C.I_NKIND] = noise.kind
        icfg[C.I_NM] = noise.m
        icfg[C.I_PSD_RAISE] = int(noise.psd_raise)
        icfg[C.I_MB_EIGH] = int(noise.mb_eigh)
        icfg[C.I_NSGD] = int(noise.convention == "sgd")
        fcfg[C.F_NSCAL] = noise.scal
        c = np.ascontiguousarray
        ndata = (c(noise.mat, dtype=np.float64), c(noise.vec, dtype=np.float64), tuple(c(a) for a in noise.mb_params),
                 c(noise.mbX, dtype=np.float64), c(noise.mby, dtype=np.float64))
        nfns = (noise.pex_fn, noise.umat_fn, noise.udiag_fn, noise.ucov_fn)

    why = _blocked_unsupported(loss, rule, noise, ck, moments, draws)
    if kernel == "blocked" and why:
        raise ValueError(f"kernel='blocked' cannot run this pair: {why}; use kernel='auto' or 'trajectory'")
    blocked = (kernel == "blocked" or (kernel == "auto" and not why and n > 1)) and hypers.shape[0] == 1
    sel = (1 if noise is not None else None, 1 if (noise is not None and noise.state_dependent) else None,
           cmethod if ck > 0 else None, 1 if track else None)
    precond_fn = rule.precond_fn if pre else None   # None: no preconditioned-sharpness code is compiled
    fns = (loss.value_fn, loss.grad_into_fn, loss.hess_fn, loss.hvp_fn, rule.step_fn, precond_fn, *nfns,
           loss.batch_fn if draws else None)

    def traj_kernel_for(locate):
        return kernel_for("trajectory", (*sel, locate, *fns), _what("simulator", loss, rule))

    # with moments the failing state is tracked as the run goes (a rerun would count records twice);
    # else a trajectory that raises is rerun by the kernel that tracks it (locate_failures)
    traj_kernel = traj_kernel_for(1 if moments else None)
    run = _Run(loss, rule, thetas, states, hypers, icfg, fcfg, ndata, out, mom, bounds, traj_kernel,
               lambda: traj_kernel_for(1))
    rng_init_rows(np.uint64(seed), np.uint64(index0), run.rngs)
    block_kernel = None
    if blocked:
        block_kernel = kernel_for("blocked", (1 if track else None, loss.value_fn, loss.grad_block_fn, loss.hess_fn,
                                              rule.step_fn, rule.step_block_fn, precond_fn),
                                  _what("blocked", loss, rule))

    plan = CallPlan(steps + 1, max(64, 2 ** 22 // max(1, n * d)), max_call_steps, progress)
    prev = None
    t_start = time.perf_counter()
    for s0, s1 in plan:
        start = run.carry()
        if blocked:
            run.blocks(block_kernel, s0, s1, start)
        else:
            run.traj(s0, s1)
        run.locate_failures(s0, s1, start)
        newly = np.flatnonzero((run.status != C.ALIVE) & (start[5] == C.ALIVE))
        if newly.size:
            run.recover(newly, s0, start, prev)
        prev = (s0, start)
    wall = time.perf_counter() - t_start
    done, interrupted = plan.done, plan.interrupted

    step_idx = record_start + np.arange(R, dtype=np.int64) * record_every
    blank_failed_records(out.values(), step_idx, run.status, run.fail_at)
    for a in out.values():
        if interrupted and a.shape[1]:
            a[:, step_idx >= done] = np.nan
    records_out = {k: (v if k in want and v.shape[1] > 0 else None) for k, v in out.items()}
    if full_batch_loss:
        records_out["batch_loss"] = out["loss"].copy()
    return MapOutput(step=step_idx, records=records_out, thetas=thetas, states=states, status=run.status,
                     fail_at=run.fail_at, fail_value=run.fail_val, moments=mom if moments else None,
                     kernel="blocked" if blocked else "trajectory",
                     generated=(block_kernel if blocked else traj_kernel).generated is not None,
                     wall=wall, steps_done=done, interrupted=interrupted)


def run_lyapunov(loss, rule, theta0, state0, steps, transient, record_every, blowup=np.inf):
    """Benettin's method along one noise-free trajectory of the core (:func:`core.run_lyapunov`).

    For rules whose Jacobian depends on θ only through the Hessian (``rule.jacobian_fn``).
    Returns (sums + compensation (n,), running (R, n), final θ and state, the QR step at
    which it stopped or −1, the number of QR steps done).
    """
    d = loss.dim
    rule.check_dimension(d)
    theta = np.array(theta0, dtype=np.float64, copy=True)
    state = np.ascontiguousarray(np.array(state0, dtype=np.float64, copy=True))
    n = d + state.shape[0]
    cmethod, ck, cevery = rule.resolved_curvature(d, exact=True)
    icfg = np.zeros(C.N_ICFG, np.int64)
    icfg[C.I_STEPS] = transient + steps
    icfg[C.I_S0], icfg[C.I_S1] = 0, transient + steps
    icfg[C.I_LYAP0] = transient
    icfg[C.I_CK], icfg[C.I_CEVERY] = ck, cevery
    icfg[C.I_CM] = rule.lanczos_steps
    icfg[C.I_CNSAMP] = rule.hutchinson_samples
    icfg[C.I_NKIND] = NO_NOISE
    fcfg = np.zeros(C.N_FCFG)
    fcfg[C.F_BLOWUP] = blowup
    rngs = np.zeros((1, 4), np.uint64)
    rng_init_rows(np.uint64(0), np.uint64(0), rngs)
    sums, comp = np.zeros(n), np.zeros(n)
    running = np.full((steps // record_every, n), np.nan)
    status = np.zeros(1, np.int64)
    fail_at = np.full(1, -1, np.int64)
    kernel = kernel_for("lyapunov", (cmethod if ck > 0 else None, loss.grad_into_fn, loss.hess_fn, loss.hvp_fn,
                                     rule.step_fn, rule.jacobian_fn), _what("Lyapunov", loss, rule))
    done = kernel(loss.params, np.asarray(rule.deterministic_hyper(), dtype=np.float64), icfg, fcfg, theta, state,
                  rngs[0], np.zeros(d), np.zeros(max(ck, 1)), record_every, sums, comp, running, status, fail_at)
    div = max(int(fail_at[0]) - transient, 0) if status[0] != 0 else -1
    return sums + comp, running, theta, state, div, int(done)
