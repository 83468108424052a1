"""The discrete-map kernel: one compiled loop serves `simulate` (n = 1) and `ensemble`.

The kernel receives the loss's and the rule's numba functions as arguments, so
it is compiled once per (loss family, rule family) pair and reused for every
instance. Trajectories run in a ``prange`` over the ensemble; each draws from
its own random stream keyed on (seed, index) (:mod:`eosdyn._rng`), so results do
not depend on the thread count, and trajectory i of an ensemble is bit-identical
to a single run with ``stream_index=i``.

Record r holds the state after r·record_every steps. The step size recorded at
a state is the one the rule uses to leave that state (for the last record it is
computed on a throw-away copy), so ``lr * sharpness`` reads as ηλ at each record.
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
def _is_bad(theta, g, blowup):
    for i in range(theta.shape[0]):
        a = theta[i]
        if not (abs(a) < blowup) or not np.isfinite(g[i]):
            return True
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
                return s
            if track_curv:
                if preconditioned:
                    precond_fn(state, hyper, max(s, 1), pre)
                _record_curvature(hess_fn(theta, params), pre, preconditioned, r,
                                  out_sharp, out_l2, out_psharp)
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


# ------------------------------------------------------------------ disk-cached kernels
_GENERATED_HEAD = """# Generated by eosdyn.sim.kernels.ensemble_kernel from the source of run_one and
# probe: the ensemble kernel specialised to one (loss family, rule) pair, with the
# functions bound as globals (numba cannot cache code that receives functions as
# arguments). Dependencies' digest: {digest}
import numpy as np
from numba import njit, prange
from eosdyn._rng import rng_init, rng_fill_normal
from eosdyn.sim._probes import top_eigs_exact, _normalize
from eosdyn.sim.kernels import _record_curvature, _is_bad, _fill_nan_from
{imports}

"""

_GENERATED_KERNEL = """

@njit(cache=True, parallel=True)
def kernel(params, hyper, thetas, states, steps, record_every, seed, index_offset,
           cmethod, ck, cevery, cm, cnsamp, track_curv, preconditioned, blowup,
           out_theta, out_loss, out_gn, out_sharp, out_l2, out_lr, out_psharp, diverged_at):
    n = thetas.shape[0]
    for i in prange(n):
        diverged_at[i] = run_one(params, hyper, thetas[i], states[i], steps, record_every, seed,
                                 index_offset + i, cmethod, ck, cevery, cm, cnsamp, track_curv,
                                 preconditioned, blowup, out_theta[i], out_loss[i], out_gn[i],
                                 out_sharp[i], out_l2[i], out_lr[i], out_psharp[i])
"""


def _specialised_source(fn, n_function_args, renames=()):
    """Source of numba function ``fn`` with its first parameters (functions) made globals."""
    import inspect
    import re
    import textwrap

    src = textwrap.dedent(inspect.getsource(fn.py_func))
    src = re.sub(r"^@njit[^\n]*\n", "@njit(cache=True)\n", src, flags=re.M)
    params = list(inspect.signature(fn.py_func).parameters)[:n_function_args]
    head = src.index("(", src.index("def ")) + 1
    for p in params:
        src = src[:head] + re.sub(rf"^\s*{p},\s*", "", src[head:], count=1)
    for old, new in renames:
        src = src.replace(old, new)
    return src


_DERIVED_SOURCE = {
    "grad_into_from_grad": """
@njit(cache=True)
def {name}(theta, params, out):
    g = _inner_{name}(theta, params)
    for i in range(out.shape[0]):
        out[i] = g[i]
""",
    "hvp_from_hess": """
@njit(cache=True)
def {name}(theta, v, params):
    return _inner_{name}(theta, params) @ v
""",
}

_KERNELS: dict = {}


def _import_path(fn):
    """(module, name) under which dispatcher ``fn`` can be imported, or None (a closure)."""
    import sys

    py = getattr(fn, "py_func", None)
    if py is None or "<locals>" in py.__qualname__:
        return None
    mod = sys.modules.get(py.__module__)
    if mod is None or getattr(mod, py.__qualname__, None) is not fn:
        return None
    return py.__module__, py.__qualname__


def ensemble_kernel(value_fn, grad_into_fn, hess_fn, hvp_fn, step_fn, precond_fn):
    """The kernel for these functions: disk-cached where all are importable, else generic.

    Returns a callable with :func:`run_ensemble`'s arguments minus the six functions.
    """
    fns = (value_fn, grad_into_fn, hess_fn, hvp_fn, step_fn, precond_fn)
    key = tuple(id(f) for f in fns)
    hit = _KERNELS.get(key)
    if hit is not None:
        return hit[1]
    from ..losses.base import DERIVED

    names = ("value_fn", "grad_into_fn", "hess_fn", "hvp_fn", "step_fn", "precond_fn")
    paths, extra = [], []
    for f, n in zip(fns, names):
        how, inner = DERIVED.get(id(f), (None, None))
        p = _import_path(inner if how else f)
        paths.append(p)
        if how and p is not None:  # re-derive the closure as module-level code
            extra.append(_DERIVED_SOURCE[how].format(name=n))
    kernel = None
    if all(p is not None for p in paths):
        import sys

        from ..losses._codegen import file_digest, load_source

        imports = "\n".join(
            f"from {m} import {q} as {'_inner_' + n if DERIVED.get(id(f)) else n}"
            for (m, q), n, f in zip(paths, names, fns)) + "\n" + "\n".join(extra)
        deps = sorted({m for m, _ in paths} | {__name__, "eosdyn.sim._probes", "eosdyn._rng"})
        digest = ":".join(file_digest(getattr(sys.modules[m], "__file__", None))[:16] for m in deps)
        try:
            from ._probes import probe as _probe

            source = (_GENERATED_HEAD.format(digest=digest, imports=imports)
                      + _specialised_source(_probe, 2) + "\n\n"
                      + _specialised_source(run_one, 6, [("probe(hess_fn, hvp_fn, ", "probe(")])
                      + _GENERATED_KERNEL)
            kernel = load_source(source, "eosdyn_kernel").kernel
        except Exception:  # pragma: no cover - fall back to the in-memory kernel
            kernel = None
    if kernel is None:
        def kernel(*args, _fns=fns):
            return run_ensemble(*_fns, *args)
    _KERNELS[key] = (fns, kernel)
    return kernel
