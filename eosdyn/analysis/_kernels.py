"""One small numba kernel that iterates many noise-free maps with *different* hyperparameters.

Why not :func:`eosdyn.ensemble`? The ensemble kernel runs **one** rule (one
hyperparameter vector) over n starts and records from step 0 every k steps, with
loss and curvature probes. The analysis needs something else:

* a bifurcation diagram runs n *step sizes* (one hyperparameter row per trajectory);
* it keeps only the last ``keep`` consecutive iterates after a long transient
  (10⁵–10⁶ steps), which a stride-k record from step 0 cannot give without storing
  the whole path;
* basins and convergence fractions need only the final state, and no loss or
  curvature records.

So this kernel takes the loss's kernel functions and the rule's ``step_fn`` (the
same compiled step the simulators call — no update formula is restated here) and a
(n, h) matrix of hyperparameter rows. Curvature for curvature-aware rules is the
exact one of :meth:`eosdyn.rules.Rule.map` (eigh of the Hessian), so the kernel is
the deterministic map F of the analysis.

``cache=False`` on the generic kernels that take functions as arguments: numba cannot
load such a specialisation from its on-disk cache (the dispatcher types of a new
process never match the stored key). :func:`iterate_kernel` instead returns a
specialisation written out by :mod:`eosdyn._kernelgen`, with the functions bound as
globals, which numba does cache on disk; the generic :func:`iterate_many` is the
fallback for functions that cannot be imported by name.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

CURV_NONE = 0
CURV_EIG = 1
CURV_TRACE = 2


@njit(cache=False)
def curvature(hess_fn, theta, params, curv_mode, curv):
    H = hess_fn(theta, params)
    if curv_mode == CURV_EIG:
        ev = np.linalg.eigvalsh(H)
        d = ev.shape[0]
        for j in range(curv.shape[0]):
            curv[j] = ev[d - 1 - j] if j < d else 0.0
    else:  # CURV_TRACE: E[uᵀHu] over unit directions = tr(H)/d
        s = 0.0
        for i in range(H.shape[0]):
            s += H[i, i]
        curv[0] = s / H.shape[0]
        for j in range(1, curv.shape[0]):
            curv[j] = 0.0


@njit(cache=False)
def no_curvature(hess_fn, theta, params, curv_mode, curv):
    """Stand-in for :func:`_curvature` for rules that probe none (keeps eigh out of the compile)."""
    return


@njit(cache=False)
def iterate_one(grad_into_fn, curv_fn, hess_fn, step_fn, params, hyper, theta, state, curv_mode, ck,
                steps, t0, keep, blowup, out):
    """Iterate the map ``steps`` times in place; write the last ``keep`` iterates into out.

    Iterate s (s = 0 … steps, s = 0 the start) goes to out[s − (steps − keep + 1)] when
    s ≥ steps − keep + 1. The step number passed to the rule is t0 + s + 1. Returns the
    step at which θ or the state stopped being finite or exceeded ``blowup`` (−1 if
    never); the records from then on are NaN.
    """
    d = theta.shape[0]
    g = np.empty(d)
    work = np.zeros(d)
    curv = np.zeros(max(ck, 1))
    rng = np.zeros(4, np.uint64)
    first = steps - keep + 1
    for s in range(steps + 1):
        bad = False
        for i in range(d):
            if not (abs(theta[i]) < blowup):
                bad = True
        for i in range(state.shape[0]):
            if not (abs(state[i]) < blowup):
                bad = True
        if bad:
            for r in range(max(s - first, 0), keep):
                for i in range(d):
                    out[r, i] = np.nan
            return s
        if s >= first:
            for i in range(d):
                out[s - first, i] = theta[i]
        if s == steps:
            break
        grad_into_fn(theta, params, g)
        curv_fn(hess_fn, theta, params, curv_mode, curv)
        step_fn(theta, state, g, curv, hyper, t0 + s + 1, rng, work)
    return -1


@njit(cache=False, parallel=True)
def iterate_many(grad_into_fn, curv_fn, hess_fn, step_fn, params, hypers, thetas, states, curv_mode, ck,
                 steps, t0, keep, blowup, out, diverged_at):
    """prange over rows: trajectory i uses hypers[i], starts at thetas[i], states[i] (in place).

    ``curv_fn`` is :func:`curvature` for curvature-aware rules, :func:`no_curvature` otherwise.
    """
    n = thetas.shape[0]
    for i in prange(n):
        diverged_at[i] = iterate_one(grad_into_fn, curv_fn, hess_fn, step_fn, params, hypers[i], thetas[i],
                                     states[i], curv_mode, ck, steps, t0, keep, blowup, out[i])


_HEAD = """
import numpy as np
from numba import njit, prange
from eosdyn.analysis._kernels import CURV_EIG, CURV_NONE, CURV_TRACE
"""
_ITERATE: dict = {}


def iterate_kernel(grad_into_fn, curv_fn, hess_fn, step_fn):
    """:func:`iterate_many` for these functions, minus them as arguments (disk-cached where possible)."""
    from .._kernelgen import specialise

    key = (id(grad_into_fn), id(curv_fn), id(hess_fn), id(step_fn))
    hit = _ITERATE.get(key)
    if hit is not None:
        return hit[1]
    fns = (grad_into_fn, curv_fn, hess_fn, step_fn)
    parts = [(curv_fn, 1, (), "curv_fn"),
             (iterate_one, 4, ((curv_fn, 1, "curv_fn"),), None),
             (iterate_many, 4, ((iterate_one, 4),), "kernel")]
    kernel = specialise({"grad_into_fn": grad_into_fn, "hess_fn": hess_fn, "step_fn": step_fn},
                        parts, _HEAD, "eosdyn_iterate_kernel")
    if kernel is None:
        def kernel(*args, _fns=fns):
            return iterate_many(*_fns, *args)
    _ITERATE[key] = (fns, kernel)
    return kernel
