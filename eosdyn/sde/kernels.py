"""Numba ensemble kernels of the EoS SDE  dθ = −η∇L(θ) dt + √η·B(θ) dW  (time in GD steps).

Two entry points share one per-trajectory routine, :func:`_run_traj`. Its selector
arguments ``sel_em, sel_mil, sel_srk, sel_state`` are either ``None`` or 1: numba
prunes the branches of a ``None`` selector at compile time, so each specialisation
compiles only the integrator (and, for additive noise, none of the eigh-based
state-dependent noise code) it runs:

- :func:`kernel_builtin` serves the losses whose gradient is linear (``Quadratic``,
  ``LeastSquares``) with every noise model that needs no user function. It calls
  only module-level functions, so numba caches it on disk (``cache=True``).
- :func:`kernel_generic` receives the loss's and the noise's numba functions as
  arguments (any eosdyn loss, user noise). Function slots that do not apply are
  ``None`` and the branches that would call them are pruned at compile time.
  Numba cannot disk-cache a kernel that takes functions as arguments (it would
  recompile it in every process, several seconds), so :func:`generic_kernel`
  hands :func:`simulate` a :class:`GenericKernel`: where every function is
  importable by name it runs a specialisation written out by
  :func:`eosdyn._kernelgen.specialise_by_name` — ``kernel_generic`` and its callees
  with the function parameters removed, the functions bound as module globals and
  the ``fn is None`` branches resolved in the source — which numba caches on disk
  (a new process loads it in about 0.3 s), bit-identical to ``kernel_generic``.
  Closures and functions defined at a prompt or in a notebook, or a specialisation
  that fails to compile, fall back to ``kernel_generic`` itself (compiled once per
  process and per combination of functions).

Random numbers (the documented draw order, reproduced by
:func:`eosdyn.sde.increments`): trajectory i owns the xoshiro256** stream
``rng_init(seed, i)`` (:mod:`eosdyn._rng`). At every step k = 1..steps the kernel
makes **one** call ``rng_fill_normal(s, xi)`` with ``len(xi) = m`` for Euler–Maruyama
and Milstein, ``2m`` for srk15; then ΔW = √dt·xi[:m] and, for srk15,
ΔZ = I_(1,0) = ½ dt^{3/2} (xi[:m] + xi[m:]/√3). Nothing else draws from the stream.

Trajectories are split into ``nb = min(n, 256)`` contiguous blocks (a function of n
only); blocks run in a ``prange`` and the trajectories of a block run in order, so
the per-record ensemble sums (accumulated per block, then summed over blocks in
Python) are bit-identical for any thread count.

Status codes per trajectory: 0 ok, 1 diverged (non-finite or |θᵢ| ≥ blowup, or a
non-finite loss at a record), 2 non-PSD covariance under ``psd="raise"``,
3 the user noise function returned the wrong shape.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .._rng import rng_fill_normal, rng_init
from .finite_sum import _ls_value, ls_per_example_grad
from .noise import DIAG, HESS, ISO, MAT, MB, USER_COV, USER_DIAG, USER_MAT, sqrt_psd

EULER, MILSTEIN, SRK15 = 0, 1, 2
LK_GENERIC, LK_QUAD, LK_LSQ = 0, 1, 2

# fcfg layout
F_LR, F_DT, F_SDT, F_SQLR, F_SCAL, F_BLOWUP = range(6)
N_FCFG = 6
# icfg layout
(I_METHOD, I_NKIND, I_M, I_STEPS, I_SEED, I_LKIND, I_PSD_RAISE, I_MOM, I_MB_EIGH,
 I_PATHS, I_SHARP) = range(11)
N_ICFG = 11

INV_SQRT3 = 1.0 / np.sqrt(3.0)


@njit(cache=True)
def fill_rows(s, buf):
    """Row k of ``buf`` ← one ``rng_fill_normal`` call (the kernels' per-step draw)."""
    for k in range(buf.shape[0]):
        rng_fill_normal(s, buf[k])


# --- loss pieces ---------------------------------------------------------------------
@njit
def _grad(theta, out, grad_into_fn, lp, lin_H, lin_c, lin_b, r):
    """out ← ∇L(θ): H(θ − c) − b for the built-in linear losses (``r`` is scratch), else
    grad_into_fn. For Quadratic (b = 0) this is bit-identical to its own gradient."""
    if grad_into_fn is None:
        d = theta.shape[0]
        for j in range(d):
            r[j] = theta[j] - lin_c[j]
        for i in range(d):
            acc = -lin_b[i]
            for j in range(d):
                acc += lin_H[i, j] * r[j]
            out[i] = acc
    else:
        grad_into_fn(theta, lp, out)


@njit
def _value(theta, value_fn, lp, lkind, H, c, vX, vy):
    """L(θ). The built-in branch reads only its own arrays (never ``lp``), so it types for any
    loss: numba prunes ``value_fn is None`` branches only when value_fn *is* None."""
    if value_fn is None:
        if lkind == LK_LSQ:
            return _ls_value(theta, (vX, vy))
        d = theta.shape[0]
        tot = 0.0
        for i in range(d):
            acc = 0.0
            for j in range(d):
                acc += H[i, j] * (theta[j] - c[j])
            tot += (theta[i] - c[i]) * acc
        return 0.5 * tot
    else:
        return value_fn(theta, lp)


@njit
def _sharp(theta, hess_fn, lp):
    if hess_fn is None:
        return np.nan  # constant Hessian: filled in Python
    else:
        ev = np.linalg.eigvalsh(hess_fn(theta, lp))
        return ev[ev.shape[0] - 1]


# --- noise pieces --------------------------------------------------------------------
@njit
def _noise_matrix(theta, nkind, scal, mb_eigh, hess_fn, pex_fn, umat_fn, ucov_fn, lp, mb_params,
                  mbX, mby, Bout):
    """Bout ← B(θ) for the state-dependent kinds; returns (status, λ_min)."""
    d = theta.shape[0]
    m = Bout.shape[1]
    if nkind == HESS:
        if hess_fn is None:
            return 3, np.nan  # unreachable: constant Hessians are resolved in Python
        else:
            B, lam, bad = sqrt_psd(hess_fn(theta, lp), scal)
            Bout[:, :] = B
            return (2 if bad else 0), lam
    if nkind == MB:
        if pex_fn is None:
            G = ls_per_example_grad(theta, (mbX, mby))
        else:
            G = pex_fn(theta, mb_params)
        n = G.shape[0]
        gbar = np.zeros(d)
        for i in range(n):
            for j in range(d):
                gbar[j] += G[i, j]
        for j in range(d):
            gbar[j] /= n
        if mb_eigh:
            S = np.zeros((d, d))
            for i in range(n):
                for a in range(d):
                    ca = G[i, a] - gbar[a]
                    for b in range(d):
                        S[a, b] += ca * (G[i, b] - gbar[b])
            f = scal / n
            for a in range(d):
                for b in range(d):
                    S[a, b] *= f
            B, lam, bad = sqrt_psd(S, 1.0)
            Bout[:, :] = B
            return 0, lam
        f = np.sqrt(scal / n)
        for i in range(n):
            for j in range(d):
                Bout[j, i] = f * (G[i, j] - gbar[j])
        return 0, 0.0
    if nkind == USER_MAT:
        if umat_fn is None:
            return 3, np.nan
        else:
            U = umat_fn(theta)
            if U.shape[0] != d or U.shape[1] != m:
                return 3, np.nan
            Bout[:, :] = U
            return 0, 0.0
    if nkind == USER_COV:
        if ucov_fn is None:
            return 3, np.nan
        else:
            S = ucov_fn(theta)
            if S.shape[0] != d or S.shape[1] != d:
                return 3, np.nan
            Ss = 0.5 * (S + S.T)
            B, lam, bad = sqrt_psd(Ss, 1.0)
            Bout[:, :] = B
            return (2 if bad else 0), lam
    return 3, np.nan


@njit
def _apply(nkind, theta, v, out, scal, nz_mat, nz_vec, Bst):
    """out ← B v for a matrix already known (constant kinds, or Bst for state-dependent ones)."""
    d = out.shape[0]
    if nkind == ISO:
        for j in range(d):
            out[j] = scal * v[j]
    elif nkind == DIAG:
        for j in range(d):
            out[j] = nz_vec[j] * v[j]
    elif nkind == MAT:
        m = nz_mat.shape[1]
        for j in range(d):
            acc = 0.0
            for l in range(m):
                acc += nz_mat[j, l] * v[l]
            out[j] = acc
    else:
        m = Bst.shape[1]
        for j in range(d):
            acc = 0.0
            for l in range(m):
                acc += Bst[j, l] * v[l]
            out[j] = acc


@njit
def _diag_b(theta, udiag_fn, sqlr, out):
    """out ← √η·b(θ) for the diagonal user noise; returns False if b has the wrong shape."""
    if udiag_fn is None:
        return False
    else:
        b = udiag_fn(theta)
        if b.shape[0] != out.shape[0]:
            return False
        for j in range(out.shape[0]):
            out[j] = sqlr * b[j]
        return True


# --- one trajectory ------------------------------------------------------------------
@njit
def _record(i, blk, r, theta, g, rscr, value_fn, grad_into_fn, hess_fn, lp, lkind, lin_H, lin_c,
            lin_b, vX, vy, want_sharp, want_paths, mom, out_loss, out_gn, out_sharp, out_paths,
            mom_sum, mom_sq, mom_cnt):
    """Record the state as record r; False if the loss there is not finite (divergence)."""
    d = theta.shape[0]
    lval = _value(theta, value_fn, lp, lkind, lin_H, lin_c, vX, vy)
    if not np.isfinite(lval):
        return False
    out_loss[i, r] = lval
    if out_gn.shape[0] > 0:
        _grad(theta, g, grad_into_fn, lp, lin_H, lin_c, lin_b, rscr)
        acc = 0.0
        for j in range(d):
            acc += g[j] * g[j]
        out_gn[i, r] = np.sqrt(acc)
    if want_sharp:
        out_sharp[i, r] = _sharp(theta, hess_fn, lp)
    if want_paths:
        for j in range(d):
            out_paths[i, r, j] = theta[j]
    if mom > 0:
        mom_cnt[blk, r] += 1.0
        for a in range(d):
            mom_sum[blk, r, a] += theta[a]
        if mom == 1:
            for a in range(d):
                mom_sq[blk, r, a, 0] += theta[a] * theta[a]
        else:
            for a in range(d):
                ta = theta[a]
                for b in range(d):
                    mom_sq[blk, r, a, b] += ta * theta[b]
    return True


@njit
def _run_traj(i, blk, sel_em, sel_mil, sel_srk, sel_state, value_fn, grad_into_fn, hess_fn, pex_fn,
              umat_fn, udiag_fn, ucov_fn, lp, mb_params, lin_H, lin_c, lin_b, vX, vy, mbX, mby, nz_mat, nz_vec, fcfg, icfg,
              rec_steps, theta0s, out_loss, out_gn, out_sharp, out_paths, out_final, out_div, out_status,
              out_sval, mom_sum, mom_sq, mom_cnt):
    d = theta0s.shape[1]
    lr = fcfg[F_LR]
    dt = fcfg[F_DT]
    sdt = fcfg[F_SDT]
    sqlr = fcfg[F_SQLR]
    scal = fcfg[F_SCAL]
    blowup = fcfg[F_BLOWUP]
    method = icfg[I_METHOD]
    nkind = icfg[I_NKIND]
    m = icfg[I_M]
    steps = icfg[I_STEPS]
    lkind = icfg[I_LKIND]
    psd_raise = icfg[I_PSD_RAISE] != 0
    mom = icfg[I_MOM]
    mb_eigh = icfg[I_MB_EIGH] != 0
    want_paths = icfg[I_PATHS] != 0
    want_sharp = icfg[I_SHARP] != 0
    additive = nkind == ISO or nkind == MAT or nkind == DIAG
    R = rec_steps.shape[0]

    s = np.empty(4, np.uint64)
    rng_init(np.uint64(icfg[I_SEED]), np.uint64(i), s)
    nxi = 2 * m if method == SRK15 else m
    xi = np.empty(nxi)
    theta = theta0s[i].copy()
    tn = np.empty(d)
    g = np.empty(d)
    g2 = np.empty(d)
    rscr = np.empty(d)
    nz = np.empty(d)
    nz2 = np.empty(d)
    v = np.empty(m)
    Bst = np.empty((0, 0)) if additive else np.empty((d, m))
    # diagonal-noise work arrays
    beta = np.empty(d)
    bp = np.empty(d)
    bm = np.empty(d)
    bpp = np.empty(d)
    bpm = np.empty(d)
    up = np.empty(d)
    um = np.empty(d)

    eta_dt = lr * dt
    cn = sqlr * sdt          # multiplies B ξ
    ciso = cn * scal         # isotropic fast path
    status = 0
    div_at = -1
    r = 0
    if R > 0 and rec_steps[0] == 0:
        if _record(i, blk, r, theta, g, rscr, value_fn, grad_into_fn, hess_fn, lp, lkind, lin_H,
                   lin_c, lin_b, vX, vy, want_sharp, want_paths, mom, out_loss, out_gn, out_sharp,
                   out_paths, mom_sum, mom_sq, mom_cnt):
            r = 1
        else:
            status = 1
            div_at = 0
    for k in range(1, steps + 1 if status == 0 else 1):
        # ---- one step θ → tn ---------------------------------------------------------
        rng_fill_normal(s, xi)
        st = 0
        lam = 0.0
        if sel_em is not None:
            if nkind == ISO:
                # the hot path, _grad written out: calling it (even inline="always")
                # measured 14% slower here (benchmarks/sde.py --quick, 115 vs 131 ns/step)
                if grad_into_fn is None:
                    for j in range(d):
                        rscr[j] = theta[j] - lin_c[j]
                    for a in range(d):
                        acc = -lin_b[a]
                        for j in range(d):
                            acc += lin_H[a, j] * rscr[j]
                        g[a] = acc
                else:
                    grad_into_fn(theta, lp, g)
                for j in range(d):
                    tn[j] = theta[j] - eta_dt * g[j] + ciso * xi[j]
            else:
                _grad(theta, g, grad_into_fn, lp, lin_H, lin_c, lin_b, rscr)
            if nkind == ISO:
                pass
            elif nkind == USER_DIAG:
                if not _diag_b(theta, udiag_fn, 1.0, beta):
                    st = 3
                for j in range(d):
                    tn[j] = theta[j] - eta_dt * g[j] + cn * beta[j] * xi[j]
            else:
                if sel_state is not None:
                    st, lam = _noise_matrix(theta, nkind, scal, mb_eigh, hess_fn, pex_fn, umat_fn,
                                            ucov_fn, lp, mb_params, mbX, mby, Bst)
                _apply(nkind, theta, xi, nz, scal, nz_mat, nz_vec, Bst)
                for j in range(d):
                    tn[j] = theta[j] - eta_dt * g[j] + cn * nz[j]
        if sel_mil is not None:
            # derivative-free (Runge–Kutta) Milstein for diagonal noise, Kloeden & Platen §11.1
            _grad(theta, g, grad_into_fn, lp, lin_H, lin_c, lin_b, rscr)
            ok = _diag_b(theta, udiag_fn, sqlr, beta)
            for j in range(d):
                up[j] = theta[j] - eta_dt * g[j] + beta[j] * sdt
            ok = _diag_b(up, udiag_fn, sqlr, bp) and ok
            if not ok:
                st = 3
            for j in range(d):
                dw = sdt * xi[j]
                tn[j] = (theta[j] - eta_dt * g[j] + beta[j] * dw
                         + (bp[j] - beta[j]) * (dw * dw - dt) / (2.0 * sdt))
        if sel_srk is not None:
            # srk15: drift stages of Rößler's SRA1 (c0 = (0, 3/4), A0_21 = 3/4,
            # B0_21 = 3/2, α = (1/3, 2/3)); diffusion: SRA1 for additive noise, the
            # derivative-free order-1.5 terms of Kloeden & Platen §11.2 for diagonal noise.
            for l in range(m):
                v[l] = 0.5 * sdt * (xi[l] + xi[m + l] * INV_SQRT3)   # ζ = ΔZ/dt
            _grad(theta, g, grad_into_fn, lp, lin_H, lin_c, lin_b, rscr)
            if sel_state is None:
                if nkind == ISO:
                    for j in range(d):
                        nz[j] = scal * v[j]
                        nz2[j] = scal * xi[j]
                else:
                    _apply(nkind, theta, v, nz, scal, nz_mat, nz_vec, Bst)       # B ζ
                    _apply(nkind, theta, xi, nz2, scal, nz_mat, nz_vec, Bst)     # B ξ1
                for j in range(d):
                    up[j] = theta[j] - 0.75 * eta_dt * g[j] + 1.5 * sqlr * nz[j]
                _grad(up, g2, grad_into_fn, lp, lin_H, lin_c, lin_b, rscr)
                for j in range(d):
                    tn[j] = (theta[j] - eta_dt * (g[j] / 3.0 + 2.0 * g2[j] / 3.0)
                             + cn * nz2[j])
            else:
                ok = _diag_b(theta, udiag_fn, sqlr, beta)
                for j in range(d):
                    um[j] = theta[j] - 0.75 * eta_dt * g[j] + 1.5 * beta[j] * v[j]
                _grad(um, g2, grad_into_fn, lp, lin_H, lin_c, lin_b, rscr)
                for j in range(d):
                    a1 = -lr * g[j]
                    up[j] = theta[j] + a1 * dt + beta[j] * sdt
                    um[j] = theta[j] + a1 * dt - beta[j] * sdt
                ok = _diag_b(up, udiag_fn, sqlr, bp) and ok
                ok = _diag_b(um, udiag_fn, sqlr, bm) and ok
                for j in range(d):
                    um[j] = up[j] - bp[j] * sdt
                    up[j] = up[j] + bp[j] * sdt
                ok = _diag_b(up, udiag_fn, sqlr, bpp) and ok
                ok = _diag_b(um, udiag_fn, sqlr, bpm) and ok
                if not ok:
                    st = 3
                for j in range(d):
                    dw = sdt * xi[j]
                    dz = dt * v[j]
                    tn[j] = (theta[j] - eta_dt * (g[j] / 3.0 + 2.0 * g2[j] / 3.0)
                             + beta[j] * dw
                             + (bp[j] - bm[j]) * (dw * dw - dt) / (4.0 * sdt)
                             + (bp[j] - 2.0 * beta[j] + bm[j]) * (dw * dt - dz) / (2.0 * dt)
                             + (bpp[j] - bpm[j] - bp[j] + bm[j]) * (dw * dw / 3.0 - dt) * dw / (4.0 * dt))
        # ---- checks -------------------------------------------------------------------
        if st == 2 and not psd_raise:
            st = 0
        if st != 0:
            status = st
            out_sval[i] = lam
            div_at = k
            break
        nfin = 0
        for j in range(d):            # counts |θⱼ| < blowup (False for NaN); branch-free
            nfin += abs(tn[j]) < blowup
        if nfin != d:
            status = 1
            div_at = k
            break
        for j in range(d):
            theta[j] = tn[j]
        if r < R and rec_steps[r] == k:
            if not _record(i, blk, r, theta, g, rscr, value_fn, grad_into_fn, hess_fn, lp, lkind,
                           lin_H, lin_c, lin_b, vX, vy, want_sharp, want_paths, mom, out_loss,
                           out_gn, out_sharp, out_paths, mom_sum, mom_sq, mom_cnt):
                status = 1
                div_at = k
                break
            r += 1
    for j in range(d):
        out_final[i, j] = theta[j]
    out_div[i] = div_at
    out_status[i] = status


@njit(cache=True, parallel=True)
def kernel_builtin(sel_em, sel_mil, sel_srk, sel_state, lin_H, lin_c, lin_b, vX, vy, mbX, mby,
                   nz_mat, nz_vec, fcfg, icfg, rec_steps, theta0s, bounds, out_loss, out_gn,
                   out_sharp, out_paths, out_final, out_div, out_status, out_sval, mom_sum, mom_sq,
                   mom_cnt):
    """Ensemble kernel for the built-in linear-gradient losses (disk-cached)."""
    nb = bounds.shape[0] - 1
    dummy = (lin_c,)
    for b in prange(nb):
        for i in range(bounds[b], bounds[b + 1]):
            _run_traj(i, b, sel_em, sel_mil, sel_srk, sel_state, None, None, None, None, None, None,
                      None, dummy, dummy, lin_H, lin_c, lin_b, vX, vy, mbX, mby, nz_mat, nz_vec,
                      fcfg, icfg, rec_steps, theta0s, out_loss, out_gn, out_sharp, out_paths,
                      out_final, out_div, out_status, out_sval, mom_sum, mom_sq, mom_cnt)


@njit(parallel=True)
def kernel_generic(sel_em, sel_mil, sel_srk, sel_state, value_fn, grad_into_fn, hess_fn, pex_fn,
                   umat_fn, udiag_fn, ucov_fn, lp, mb_params, lin_H, lin_c, lin_b, vX, vy, mbX, mby,
                   nz_mat, nz_vec, fcfg, icfg, rec_steps, theta0s, bounds, out_loss, out_gn,
                   out_sharp, out_paths, out_final, out_div, out_status, out_sval, mom_sum, mom_sq,
                   mom_cnt):
    """Ensemble kernel taking the loss's and the noise's functions (compiled per process;
    :func:`generic_kernel` gives its disk-cached specialisation where possible)."""
    nb = bounds.shape[0] - 1
    for b in prange(nb):
        for i in range(bounds[b], bounds[b + 1]):
            _run_traj(i, b, sel_em, sel_mil, sel_srk, sel_state, value_fn, grad_into_fn, hess_fn,
                      pex_fn, umat_fn, udiag_fn, ucov_fn, lp, mb_params, lin_H, lin_c, lin_b, vX,
                      vy, mbX, mby, nz_mat, nz_vec, fcfg, icfg, rec_steps, theta0s, out_loss,
                      out_gn, out_sharp, out_paths, out_final, out_div, out_status, out_sval,
                      mom_sum, mom_sq, mom_cnt)


# ------------------------------------------------------------------ disk-cached kernels
FN_SLOTS = ("value_fn", "grad_into_fn", "hess_fn", "pex_fn", "umat_fn", "udiag_fn", "ucov_fn")
_KERNELS: dict = {}


class GenericKernel:
    """:func:`kernel_generic` with its function slots bound: ``k(*rest)`` runs
    ``kernel_generic(sel_em, sel_mil, sel_srk, sel_state, *fns, *rest)`` (rest = from ``lp`` on).

    ``generated`` is the disk-cached specialisation (:func:`eosdyn._kernelgen.specialise_by_name`)
    or None. If it raises while no compiled version for these argument types exists
    (it failed to compile: generated code only fails at compile time, before anything
    ran), the specialisation is dropped for good and the generic kernel runs instead;
    errors raised while running (a compiled version exists) propagate.
    """

    def __init__(self, fns):
        self.fns = fns
        self.generated = None

    def __call__(self, sel_em, sel_mil, sel_srk, sel_state, *rest):
        gen = self.generated
        if gen is not None:
            args = (sel_em, sel_mil, sel_srk, sel_state, *rest)
            before = len(gen.overloads)
            try:
                return gen(*args)
            except Exception:
                if len(gen.overloads) > before or self._compiled_for(gen, args):
                    raise  # it compiled: a run-time error, the generic kernel would raise it too
                self.generated = None
        return kernel_generic(sel_em, sel_mil, sel_srk, sel_state, *self.fns, *rest)

    @staticmethod
    def _compiled_for(gen, args):
        try:
            from numba.core.typing.typeof import Purpose, typeof

            return tuple(typeof(a, Purpose.argument) for a in args) in gen.overloads
        except Exception:  # noqa: BLE001  # pragma: no cover - defensive
            return False


def generic_kernel(value_fn, grad_into_fn, hess_fn, pex_fn, umat_fn, udiag_fn, ucov_fn):
    """The :class:`GenericKernel` for these function slots (memoised per slot identities).

    The specialisation is generated where every non-None function is importable by name
    (a module-level numba function in a module with a source file, or a closure
    eosdyn derives itself); otherwise — closures, functions typed at a prompt or in a
    notebook — the in-memory :func:`kernel_generic` runs (compiled once per process).
    """
    from .._kernelgen import specialise_by_name

    fns = (value_fn, grad_into_fn, hess_fn, pex_fn, umat_fn, udiag_fn, ucov_fn)
    key = tuple(id(f) for f in fns)
    hit = _KERNELS.get(key)
    if hit is not None:
        return hit
    k = GenericKernel(fns)
    parts = [(_grad, None), (_value, None), (_sharp, None), (_noise_matrix, None), (_diag_b, None),
             (_record, None), (_run_traj, None), (kernel_generic, "kernel")]
    k.generated = specialise_by_name(dict(zip(FN_SLOTS, fns)), parts, "eosdyn_sde_kernel")
    _KERNELS[key] = k
    return k
