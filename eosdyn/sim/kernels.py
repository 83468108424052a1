"""The discrete-map kernels behind `simulate` and `ensemble`: one per-trajectory loop, one blocked.

- :func:`run_one` / :func:`run_ensemble`: one trajectory per ``prange`` task, for any loss
  and rule (curvature probes, noise, preconditioners). ``simulate`` is the n = 1 case.
- :func:`run_block` / :func:`run_ensemble_blocked`: blocks of :data:`BLOCK` trajectories in
  structure-of-arrays layout, for deterministic rules with a ``step_block_fn`` and losses
  with a ``grad_block_fn``. The gradient, the divergence check and the step are loops
  across the block, which LLVM vectorises (SIMD across trajectories); the records go
  through the same :func:`_record_state` as :func:`run_one`, so each trajectory is
  bit-identical to its per-trajectory run (tests/test_sim.py checks it).

Both receive the loss's and the rule's numba functions as arguments; numba cannot cache
such code on disk, so :func:`ensemble_kernel` generates a specialisation per (loss family,
rule) pair with the functions bound as globals (:mod:`eosdyn._kernelgen`), cached on
disk. Each trajectory draws from its own random stream keyed on (seed, index)
(:mod:`eosdyn._rng`), so results do not depend on the thread count, and trajectory i of
an ensemble is bit-identical to a single run with ``stream_index=i``.

Record r holds the state after r·record_every steps. The step size recorded at
a state is the one the rule uses to leave that state (for the last record it is
computed on a throw-away copy), so ``lr * sharpness`` reads as ηλ at each record.
A trajectory is stopped at the first step where |θᵢ| ≥ blowup or the loss or gradient
is not finite; that record keeps its values and later records are NaN.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .._rng import rng_init
from ._probes import probe


@njit(cache=True)
def _record_curvature(H, pre, preconditioned, r, out_sharp, out_l2, out_psharp):
    """λ₁, λ₂ of H and, for preconditioned rules, λ_max(P^{-1/2} H P^{-1/2}).

    A Hessian with a non-finite entry never reaches LAPACK: the record's curvature is
    NaN. (Divergence is decided by θ, the gradient and the loss; a +inf Hessian is
    legitimate, e.g. SqrtLoss exactly at L = L*.)
    """
    if not np.all(np.isfinite(H)):
        if out_sharp.shape[0] > 0:
            out_sharp[r] = np.nan
        if out_l2.shape[0] > 0:
            out_l2[r] = np.nan
        if preconditioned and out_psharp.shape[0] > 0:
            out_psharp[r] = np.nan
        return
    ev = np.linalg.eigvalsh(H)
    d = ev.shape[0]
    if out_sharp.shape[0] > 0:
        out_sharp[r] = ev[d - 1]
    if out_l2.shape[0] > 0:
        out_l2[r] = ev[d - 2] if d > 1 else np.nan
    if preconditioned and out_psharp.shape[0] > 0:
        S = np.empty_like(H)
        for i in range(d):
            si = 1.0 / np.sqrt(pre[i])
            for j in range(d):
                S[i, j] = si * H[i, j] / np.sqrt(pre[j])
        out_psharp[r] = np.linalg.eigvalsh(S)[d - 1]


@njit(cache=True)
def _coord_ok(x, g, blowup):
    """|x| < blowup and g finite: |x| + (g − g) is NaN iff x is NaN or g is not finite."""
    return abs(x) + (g - g) < blowup


@njit(cache=True)
def _is_bad(theta, g, blowup):
    for i in range(theta.shape[0]):
        if not _coord_ok(theta[i], g[i], blowup):
            return True
    return False


@njit
def _record_state(value_fn, hess_fn, precond_fn, theta, state, g, params, hyper, s, r,
                  track_curv, preconditioned, blowup, pre,
                  out_theta, out_loss, out_gn, out_sharp, out_l2, out_lr, out_psharp):
    """Record r of one trajectory at step s; True (and later records NaN) if it diverged here."""
    d = theta.shape[0]
    lval = value_fn(theta, params)
    out_loss[r] = lval
    gn = 0.0
    for i in range(d):
        gn += g[i] * g[i]
    if out_gn.shape[0] > 0:
        out_gn[r] = np.sqrt(gn)
    if out_theta.shape[0] > 0:
        for i in range(d):
            out_theta[r, i] = theta[i]
    if not np.isfinite(lval) or _is_bad(theta, g, blowup):
        _fill_nan_from(r, out_theta, out_loss, out_gn, out_sharp, out_l2, out_lr, out_psharp)
        return True
    if track_curv:
        if preconditioned:
            precond_fn(state, hyper, max(s, 1), pre)
        _record_curvature(hess_fn(theta, params), pre, preconditioned, r,
                          out_sharp, out_l2, out_psharp)
    return False


# Kernels that take numba functions as arguments cannot be cached on disk (their
# argument types hold the dispatchers), so they compile once per process.
@njit
def run_one(value_fn, grad_into_fn, hess_fn, hvp_fn, step_fn, precond_fn, params, hyper,
            theta, state, steps, record_every, seed, index,
            cmethod, ck, cevery, cm, cnsamp, track_curv, preconditioned, blowup,
            out_theta, out_loss, out_gn, out_sharp, out_l2, out_lr, out_psharp):
    """Run one trajectory in place; returns the step of divergence or -1."""
    d = theta.shape[0]
    rng = np.empty(4, np.uint64)
    rng_init(seed, index, rng)
    g = np.empty(d)
    work = np.zeros(d)
    warm = np.zeros(d)
    curv = np.zeros(max(ck, 1))
    pre = np.ones(d)
    for s in range(steps + 1):
        grad_into_fn(theta, params, g)
        recording = (s % record_every) == 0
        r = s // record_every
        if recording:
            if _record_state(value_fn, hess_fn, precond_fn, theta, state, g, params, hyper, s, r,
                             track_curv, preconditioned, blowup, pre,
                             out_theta, out_loss, out_gn, out_sharp, out_l2, out_lr, out_psharp):
                return s
        elif _is_bad(theta, g, blowup):
            _fill_nan_from(r, out_theta, out_loss, out_gn, out_sharp, out_l2, out_lr, out_psharp)
            return s
        if ck > 0 and (s % cevery) == 0:
            probe(hess_fn, hvp_fn, theta, params, cmethod, ck, cm, cnsamp, rng, warm, curv)
        if s == steps:
            if recording and out_lr.shape[0] > 0:
                # the step size in force at the final state, on a throw-away copy
                th2 = theta.copy()
                st2 = state.copy()
                rng2 = rng.copy()
                out_lr[r] = step_fn(th2, st2, g, curv, hyper, s + 1, rng2, work)
            break
        lr = step_fn(theta, state, g, curv, hyper, s + 1, rng, work)
        if recording and out_lr.shape[0] > 0:
            out_lr[r] = lr
    return -1


@njit(cache=True)
def _lanes_bad(X, G, blowup, alive, bad):
    """bad[b] = _is_bad(X[:, b], G[:, b], blowup) for live lanes, vectorised across the block.

    Returns how many live lanes are bad.
    """
    d, B = X.shape
    for b in range(B):
        bad[b] = False
    for i in range(d):
        for b in range(B):
            bad[b] = bad[b] | (not _coord_ok(X[i, b], G[i, b], blowup))
    n = 0
    for b in range(B):
        n += alive[b] & bad[b]
    return n


@njit
def run_block(value_fn, grad_block_fn, hess_fn, step_fn, step_block_fn, precond_fn, params, hyper,
              thetas, states, lo, hi, steps, record_every, track_curv, preconditioned, blowup,
              out_theta, out_loss, out_gn, out_sharp, out_l2, out_lr, out_psharp, diverged_at):
    """Trajectories lo..hi−1 as one block in structure-of-arrays layout.

    For rules with a ``step_block_fn`` and no curvature probe or randomness: the
    gradient and the step run across the block (SIMD across trajectories), the
    records and the divergence bookkeeping per trajectory, exactly as in
    :func:`run_one`, so every trajectory is bit-identical to its ``run_one`` run.
    A diverged trajectory keeps its state at divergence; its lane is zeroed and
    ignored from then on.
    """
    B = hi - lo
    d = thetas.shape[1]
    ns = states.shape[1]
    X = np.empty((d, B))
    S = np.empty((ns, B))
    G = np.empty((d, B))
    W = np.empty((d, B))
    LR = np.empty(B)
    bad = np.zeros(B, np.bool_)
    alive = np.ones(B, np.bool_)
    for b in range(B):
        for i in range(d):
            X[i, b] = thetas[lo + b, i]
        for i in range(ns):
            S[i, b] = states[lo + b, i]
    th = np.empty(d)
    st = np.empty(ns)
    g = np.empty(d)
    pre = np.ones(d)
    work = np.zeros(d)
    curv = np.zeros(1)
    rng = np.zeros(4, np.uint64)  # unused: block rules are deterministic
    n_alive = B
    for s in range(steps + 1):
        grad_block_fn(X, params, G, W)
        recording = (s % record_every) == 0
        r = s // record_every
        if not recording and _lanes_bad(X, G, blowup, alive, bad) == 0 and s < steps:
            step_block_fn(X, S, G, hyper, s + 1, LR)  # the common case: every lane is fine
            continue
        for b in range(B):
            if not alive[b] or (not recording and not bad[b]):
                continue
            k = lo + b
            for i in range(d):
                th[i] = X[i, b]
                g[i] = G[i, b]
            for i in range(ns):
                st[i] = S[i, b]
            if recording:
                dead = _record_state(value_fn, hess_fn, precond_fn, th, st, g, params, hyper, s, r,
                                     track_curv, preconditioned, blowup, pre,
                                     out_theta[k], out_loss[k], out_gn[k], out_sharp[k], out_l2[k],
                                     out_lr[k], out_psharp[k])
                if dead:
                    diverged_at[k] = s
                elif s == steps and out_lr.shape[1] > 0:
                    # the step size in force at the final state, on the lane's copy
                    out_lr[k, r] = step_fn(th, st, g, curv, hyper, s + 1, rng, work)
                    continue
                else:
                    continue
            else:
                _fill_nan_from(r, out_theta[k], out_loss[k], out_gn[k], out_sharp[k], out_l2[k],
                               out_lr[k], out_psharp[k])
                diverged_at[k] = s
            # lane k diverged at step s: keep its state there, retire the lane
            for i in range(d):
                thetas[k, i] = X[i, b]
                X[i, b] = 0.0
            for i in range(ns):
                states[k, i] = S[i, b]
                S[i, b] = 0.0
            alive[b] = False
            n_alive -= 1
        if n_alive == 0 or s == steps:
            break
        step_block_fn(X, S, G, hyper, s + 1, LR)
        if recording and out_lr.shape[1] > 0:
            for b in range(B):
                if alive[b]:
                    out_lr[lo + b, r] = LR[b]
    for b in range(B):
        if alive[b]:
            for i in range(d):
                thetas[lo + b, i] = X[i, b]
            for i in range(ns):
                states[lo + b, i] = S[i, b]


@njit(cache=True)
def _fill_nan_from(r, out_theta, out_loss, out_gn, out_sharp, out_l2, out_lr, out_psharp):
    """Records after the divergence step are NaN (the diverging record keeps its values)."""
    for rr in range(r + 1, out_loss.shape[0]):
        out_loss[rr] = np.nan
    for rr in range(r + 1, out_gn.shape[0]):
        out_gn[rr] = np.nan
    for rr in range(r, out_sharp.shape[0]):
        out_sharp[rr] = np.nan
    for rr in range(r, out_l2.shape[0]):
        out_l2[rr] = np.nan
    for rr in range(r, out_lr.shape[0]):
        out_lr[rr] = np.nan
    for rr in range(r, out_psharp.shape[0]):
        out_psharp[rr] = np.nan
    for rr in range(r + 1, out_theta.shape[0]):
        for i in range(out_theta.shape[1]):
            out_theta[rr, i] = np.nan


# The generic form: compiled per (loss family, rule) pair in memory. `ensemble_kernel`
# below returns a disk-cached specialisation when the functions are importable.
@njit(parallel=True)
def run_ensemble(value_fn, grad_into_fn, hess_fn, hvp_fn, step_fn, precond_fn, params, hyper,
                 thetas, states, steps, record_every, seed, index_offset,
                 cmethod, ck, cevery, cm, cnsamp, track_curv, preconditioned, blowup,
                 out_theta, out_loss, out_gn, out_sharp, out_l2, out_lr, out_psharp, diverged_at):
    """prange over trajectories of :func:`run_one`; ``thetas``/``states`` end as the final values."""
    n = thetas.shape[0]
    for i in prange(n):
        diverged_at[i] = run_one(value_fn, grad_into_fn, hess_fn, hvp_fn, step_fn, precond_fn,
                                 params, hyper, thetas[i], states[i], steps, record_every, seed,
                                 index_offset + i, cmethod, ck, cevery, cm, cnsamp, track_curv,
                                 preconditioned, blowup, out_theta[i], out_loss[i], out_gn[i],
                                 out_sharp[i], out_l2[i], out_lr[i], out_psharp[i])


BLOCK = 64  # trajectories per block of the blocked kernel (d ≤ 16: X, G, W stay in L1)


@njit(parallel=True)
def run_ensemble_blocked(value_fn, grad_block_fn, hess_fn, step_fn, step_block_fn, precond_fn, params,
                         hyper, thetas, states, steps, record_every, track_curv, preconditioned, blowup,
                         block, out_theta, out_loss, out_gn, out_sharp, out_l2, out_lr, out_psharp,
                         diverged_at):
    """prange over blocks of ``block`` trajectories of :func:`run_block`."""
    n = thetas.shape[0]
    nb = (n + block - 1) // block
    for j in prange(nb):
        lo = j * block
        run_block(value_fn, grad_block_fn, hess_fn, step_fn, step_block_fn, precond_fn, params, hyper,
                  thetas, states, lo, min(lo + block, n), steps, record_every, track_curv,
                  preconditioned, blowup, out_theta, out_loss, out_gn, out_sharp, out_l2, out_lr,
                  out_psharp, diverged_at)


# ------------------------------------------------------------------ disk-cached kernels
_GENERATED_HEAD = """
import numpy as np
from numba import njit, prange
from eosdyn._rng import rng_init, rng_fill_normal
from eosdyn.sim._probes import top_eigs_exact, _normalize
from eosdyn.sim.kernels import _record_curvature, _is_bad, _fill_nan_from, _lanes_bad
"""

_KERNELS: dict = {}


def _kernel_layout(kind):
    """(names of the function arguments, [(function, n function args, callees, new name)])."""
    from ._probes import probe

    if kind == "trajectory":
        names = ("value_fn", "grad_into_fn", "hess_fn", "hvp_fn", "step_fn", "precond_fn")
        parts = [(probe, 2, (), None), (_record_state, 3, (), None),
                 (run_one, 6, ((probe, 2), (_record_state, 3)), None),
                 (run_ensemble, 6, ((run_one, 6),), "kernel")]
    elif kind == "blocked":
        names = ("value_fn", "grad_block_fn", "hess_fn", "step_fn", "step_block_fn", "precond_fn")
        parts = [(_record_state, 3, (), None),
                 (run_block, 6, ((_record_state, 3),), None),
                 (run_ensemble_blocked, 6, ((run_block, 6),), "kernel")]
    else:  # pragma: no cover - internal
        raise ValueError(f"kind must be 'trajectory' or 'blocked', got {kind!r}")
    return names, parts


def ensemble_kernel(value_fn, grad_into_fn, hess_fn, hvp_fn, step_fn, precond_fn, *, kind="trajectory"):
    """The ensemble kernel for these functions: disk-cached where all are importable, else generic.

    ``kind="trajectory"``: the functions are (value_fn, grad_into_fn, hess_fn, hvp_fn,
    step_fn, precond_fn) and the result takes :func:`run_ensemble`'s arguments minus
    them. ``kind="blocked"``: they are (value_fn, grad_block_fn, hess_fn, step_fn,
    step_block_fn, precond_fn) and it takes :func:`run_ensemble_blocked`'s. The
    returned callable's ``generated`` attribute says whether it is the disk-cached
    specialisation (:mod:`eosdyn._kernelgen`).
    """
    from .._kernelgen import specialise

    fns = (value_fn, grad_into_fn, hess_fn, hvp_fn, step_fn, precond_fn)
    key = (kind,) + tuple(id(f) for f in fns)
    hit = _KERNELS.get(key)
    if hit is not None:
        return hit[1]
    names, parts = _kernel_layout(kind)
    generated = specialise(dict(zip(names, fns)), parts, _GENERATED_HEAD, f"eosdyn_{kind}_kernel")
    if generated is not None:
        def kernel(*args, _k=generated):
            return _k(*args)

        kernel.generated = True
    else:
        generic = run_ensemble if kind == "trajectory" else run_ensemble_blocked

        def kernel(*args, _fns=fns, _g=generic):
            return _g(*_fns, *args)

        kernel.generated = False
    _KERNELS[key] = (fns, kernel)
    return kernel
