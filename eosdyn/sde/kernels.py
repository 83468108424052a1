"""Numba ensemble kernels of the EoS SDE  dθ = −η∇L(θ) dt + √η·B(θ) dW  (time in GD steps).

One kernel, :func:`kernel_generic`, loops over the paths and calls the per-path routine
:func:`_run_traj`. Its selector arguments ``sel_em, sel_mil, sel_srk, sel_state`` are either
``None`` or 1, and so is every function slot that does not apply: numba prunes the branches of
a ``None`` argument at compile time, so each specialisation compiles only the integrator (and,
for additive noise, none of the eigh-based state-dependent noise code) it runs. The losses
whose gradient is linear (``Quadratic``, ``LeastSquares``) run with every loss slot ``None``
(their gradient, value and constant Hessian come from arrays). Numba cannot disk-cache a
kernel that takes functions as arguments, so :func:`simulate` gets it through
:func:`eosdyn.engine.kernels.kernel_for` (kind ``"sde"``): the one specialiser,
:func:`eosdyn.codegen.specialise`, writes out ``kernel_generic`` and ``_run_traj`` with the
slots bound as module globals, which numba caches on disk, bit-identical to
``kernel_generic``. Where that is not possible (closures, functions defined at a prompt) it
falls back to ``kernel_generic`` itself, compiled once per process, and warns once
(:class:`eosdyn.codegen.GenericKernelWarning`).

Random numbers (the documented draw order, reproduced by
:func:`eosdyn.sde.increments`): trajectory i owns the xoshiro256** stream
``stream(seed, i)`` (:mod:`eosdyn._rng`), seeded by :func:`eosdyn.sde.simulate` and
carried in ``rngs`` from one kernel call to the next: a long run is cut into calls over the
steps ``k0 < k ≤ k1`` (so Ctrl-C and progress are seen between them), with bit-identical
results. Step k = 1..steps takes the next ``len(xi)`` normals of the stream, ``m`` for
Euler–Maruyama and Milstein, ``2m`` for srk15; then ΔW = √dt·xi[:m] and, for srk15,
ΔZ = I_(1,0) = ½ dt^{3/2} (xi[:m] + xi[m:]/√3). Nothing else draws from the stream. (The
normals of several steps are drawn by one ``rng_fill_normal`` call; the stream's values do not
depend on how its draws are grouped into calls.)

Trajectories are split into ``nb`` contiguous blocks (:func:`eosdyn.engine.run.moment_blocks`:
at most 256, fewer when the per-block moment sums would pass ``MOMENT_BYTES``; a function of
n, the record count and d only); chunks of blocks run on threads (:mod:`eosdyn.engine.threads`)
and the trajectories of a block run in order, so
the per-record ensemble sums (accumulated per block, then summed over blocks in
Python) are bit-identical for any thread count.

Status codes per trajectory (the stepping core's, :mod:`eosdyn.engine.core`): 0 ok,
1 diverged (non-finite or |θᵢ| ≥ blowup, or a non-finite loss at a record), 2 an
exception was raised (a user loss or noise function, an eigensolver): caught, so no
exception escapes the kernel and every other path is computed, 3 non-PSD covariance
under ``psd="raise"``, 4 the user noise function returned the wrong shape. A path
that fails stops; ``out_final`` keeps its last state that passed, ``out_div`` the step
that failed. The divergence rule is the core's, checked on the state each step
produces (a non-finite gradient shows up one step later, as a non-finite state).
"""
from __future__ import annotations

import numpy as np
from numba import njit

# Normals: eosdyn._rng's ziggurat (CHANGELOG.md). numba's disk cache checks only this file's
# stamp, not the modules it calls: this file changed with the sampler so that cached kernels recompile.
from .._rng import rng_fill_normal
from ..engine.core import accumulate_moments
from ..engine.noise import DIAG, ISO, MAT, USER_DIAG, apply_noise, diagonal_noise, noise_matrix
from ..losses.finite_sum import _ls_value
from ..losses.quadratic import _value as _quadratic_value

EULER, MILSTEIN, SRK15 = 0, 1, 2
LK_GENERIC, LK_QUAD, LK_LSQ = 0, 1, 2

# fcfg layout
F_LR, F_DT, F_SDT, F_SQLR, F_SCAL, F_BLOWUP = range(6)
N_FCFG = 6
# icfg layout
(I_METHOD, I_NKIND, I_M, I_STEPS, I_SEED, I_LKIND, I_PSD_RAISE, I_MOM, I_MB_EIGH,
 I_PATHS, I_SHARP, I_K0, I_K1) = range(13)
N_ICFG = 13

INV_SQRT3 = 1.0 / np.sqrt(3.0)
AXPY_MIN_DIM = 12   # from this d on, H(θ − c) runs as axpys (see _linear_grad)
XI_CHUNK = 64       # normals per sampler call for the steps of one path (_run_traj)


@njit(cache=True)
def fill_rows(s, buf):
    """Row k of ``buf`` ← one ``rng_fill_normal`` call (the kernels' per-step draw)."""
    for k in range(buf.shape[0]):
        rng_fill_normal(s, buf[k])


# --- loss pieces ---------------------------------------------------------------------
@njit(cache=True, inline="always")
def _linear_grad(theta, out, lin_Ht, lin_c, lin_b, r):
    """out ← H(θ − c) − b, each out[i] summed as −b[i] + Σⱼ H[i, j](θ − c)[j] in the order of j.
    ``lin_Ht`` is Hᵀ (contiguous), so column j of H is a row: from AXPY_MIN_DIM on the sums run
    as axpys over j (vectorised across i; the same additions in the same order, so the same bits
    as the dot products below, which are faster for small d: measured crossover d ≈ 8–12)."""
    d = theta.shape[0]
    for j in range(d):
        r[j] = theta[j] - lin_c[j]
    if d >= AXPY_MIN_DIM:
        for i in range(d):
            out[i] = -lin_b[i]
        for j in range(d):
            rj = r[j]
            for i in range(d):
                out[i] += lin_Ht[j, i] * rj
    else:
        for i in range(d):
            acc = -lin_b[i]
            for j in range(d):
                acc += lin_Ht[j, i] * r[j]
            out[i] = acc


@njit
def _grad(theta, out, grad_into_fn, lp, lin_Ht, lin_c, lin_b, r):
    """out ← ∇L(θ): H(θ − c) − b for the built-in linear losses (``r`` is scratch; ``lin_Ht`` = Hᵀ),
    else grad_into_fn. For Quadratic (b = 0) this is bit-identical to its own gradient."""
    if grad_into_fn is None:
        _linear_grad(theta, out, lin_Ht, lin_c, lin_b, r)
    else:
        grad_into_fn(theta, lp, out)


@njit
def _value(theta, value_fn, lp, lkind, H, c, vX, vy):
    """L(θ). The built-in branch reads only its own arrays (never ``lp``), so it types for any
    loss: numba prunes ``value_fn is None`` branches only when value_fn *is* None."""
    if value_fn is None:
        if lkind == LK_LSQ:
            return _ls_value(theta, (vX, vy))
        return _quadratic_value(theta, (H, c))
    else:
        return value_fn(theta, lp)


@njit
def _sharp(theta, hess_fn, lp):
    if hess_fn is None:
        return np.nan  # constant Hessian: filled in Python
    else:
        ev = np.linalg.eigvalsh(hess_fn(theta, lp))
        return ev[ev.shape[0] - 1]


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
    accumulate_moments(theta, blk, r, mom, mom_sum, mom_sq, mom_cnt)
    return True


@njit(no_cpython_wrapper=True)
def _run_traj(i, blk, sel_em, sel_mil, sel_srk, sel_state, value_fn, grad_into_fn, hess_fn, pex_fn, umat_fn, udiag_fn,
              ucov_fn, lp, mb_params, data, fcfg, icfg, rec_steps, theta0s, rngs, outs):
    """Steps k0 < k ≤ k1 of path i. ``data`` = (lin_H, lin_c, lin_b, vX, vy, mbX, mby, nz_mat,
    nz_vec) — ``lin_H`` holds Hᵀ of the built-in linear losses (equal to H for a Quadratic, whose
    H is exactly symmetric: its loss value reads it as H) —, ``outs`` = (out_loss, out_gn,
    out_sharp, out_paths, out_final, out_div, out_status, out_sval, mom_sum, mom_sq, mom_cnt): tuples
    keep :func:`kernel_generic`'s call under the 30 arguments CPython 3.11 passes without a list
    (which numba cannot type inside ``try``)."""
    lin_H, lin_c, lin_b, vX, vy, mbX, mby, nz_mat, nz_vec = data
    (out_loss, out_gn, out_sharp, out_paths, out_final, out_div, out_status, out_sval, mom_sum, mom_sq,
     mom_cnt) = outs
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
    lkind = icfg[I_LKIND]
    psd_raise = icfg[I_PSD_RAISE] != 0
    mom = icfg[I_MOM]
    mb_eigh = icfg[I_MB_EIGH] != 0
    want_paths = icfg[I_PATHS] != 0
    want_sharp = icfg[I_SHARP] != 0
    additive = nkind == ISO or nkind == MAT or nkind == DIAG
    R = rec_steps.shape[0]

    k0 = icfg[I_K0]
    if out_status[i] != 0:  # failed in an earlier call
        return
    s = rngs[i]  # the stream (seed, i), carried from call to call
    nxi = 2 * m if method == SRK15 else m
    xi = np.empty(nxi)
    # the normals of up to `csteps` steps are drawn by one sampler call (the same stream, in the
    # same order: a call per step cost 40 % of an Euler step at d = 1); a chunk never reaches
    # past this call's last step, so the stream a later call starts from is the same
    csteps = max(1, XI_CHUNK // nxi)
    xib = np.empty(csteps * nxi if csteps > 1 else 0)
    kc = 0
    nc = 0
    k1 = icfg[I_K1]
    theta = out_final[i]  # always the last state that passed the checks
    if k0 == 0:
        for j in range(d):
            theta[j] = theta0s[i, j]
    # the work vectors: rows of one allocation (one per path and call, not 13: at d = 1 and
    # 200 steps a path, the allocations cost a quarter of the run)
    W = np.empty((13, d))
    tn, g, g2, rscr, nz, nz2 = W[0], W[1], W[2], W[3], W[4], W[5]
    beta, bp, bm, bpp, bpm, up, um = W[6], W[7], W[8], W[9], W[10], W[11], W[12]  # diagonal noise
    v = np.empty(m)
    Bst = np.empty((0, 0)) if additive else np.empty((d, m))

    eta_dt = lr * dt
    cn = sqlr * sdt          # multiplies B ξ
    ciso = cn * scal         # isotropic fast path
    status = 0
    div_at = -1
    out_div[i] = k0  # where an exception would have happened
    r = np.searchsorted(rec_steps, k0, side="right") if k0 > 0 else 0  # skip records of earlier calls
    if k0 == 0 and R > 0 and rec_steps[0] == 0:
        if _record(i, blk, r, theta, g, rscr, value_fn, grad_into_fn, hess_fn, lp, lkind, lin_H,
                   lin_c, lin_b, vX, vy, want_sharp, want_paths, mom, out_loss, out_gn, out_sharp,
                   out_paths, mom_sum, mom_sq, mom_cnt):
            r = 1
        else:
            status = 1
            div_at = 0
    for k in range(k0 + 1, icfg[I_K1] + 1 if status == 0 else k0 + 1):
        out_div[i] = k  # where an exception would have happened
        # ---- one step θ → tn ---------------------------------------------------------
        if csteps == 1:
            rng_fill_normal(s, xi)
        else:
            if kc == nc:
                nc = min(csteps, k1 - k + 1)
                rng_fill_normal(s, xib[:nc * nxi])
                kc = 0
            xo = kc * nxi
            for j in range(nxi):
                xi[j] = xib[xo + j]
            kc += 1
        st = 0
        lam = 0.0
        if sel_em is not None:
            if nkind == ISO:
                # the hot path, _grad written out: calling it (even inline="always")
                # measured 14% slower here (benchmarks/sde.py --quick, 115 vs 131 ns/step)
                if grad_into_fn is None:
                    for j in range(d):
                        rscr[j] = theta[j] - lin_c[j]
                    if d >= AXPY_MIN_DIM:  # _linear_grad's axpy form: the same sums, vectorised
                        for a in range(d):
                            g[a] = -lin_b[a]
                        for j in range(d):
                            rj = rscr[j]
                            for a in range(d):
                                g[a] += lin_H[j, a] * rj
                    else:
                        for a in range(d):
                            acc = -lin_b[a]
                            for j in range(d):
                                acc += lin_H[j, a] * rscr[j]
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
                if not diagonal_noise(theta, udiag_fn, 1.0, beta):
                    st = 3
                for j in range(d):
                    tn[j] = theta[j] - eta_dt * g[j] + cn * beta[j] * xi[j]
            else:
                if sel_state is not None:
                    st, lam = noise_matrix(theta, nkind, scal, mb_eigh, hess_fn, pex_fn, umat_fn,
                                            ucov_fn, lp, mb_params, mbX, mby, Bst)
                apply_noise(nkind, theta, xi, nz, scal, nz_mat, nz_vec, Bst)
                for j in range(d):
                    tn[j] = theta[j] - eta_dt * g[j] + cn * nz[j]
        if sel_mil is not None:
            # derivative-free (Runge–Kutta) Milstein for diagonal noise, Kloeden & Platen §11.1
            _grad(theta, g, grad_into_fn, lp, lin_H, lin_c, lin_b, rscr)
            ok = diagonal_noise(theta, udiag_fn, sqlr, beta)
            for j in range(d):
                up[j] = theta[j] - eta_dt * g[j] + beta[j] * sdt
            ok = diagonal_noise(up, udiag_fn, sqlr, bp) and ok
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
                    apply_noise(nkind, theta, v, nz, scal, nz_mat, nz_vec, Bst)       # B ζ
                    apply_noise(nkind, theta, xi, nz2, scal, nz_mat, nz_vec, Bst)     # B ξ1
                for j in range(d):
                    up[j] = theta[j] - 0.75 * eta_dt * g[j] + 1.5 * sqlr * nz[j]
                _grad(up, g2, grad_into_fn, lp, lin_H, lin_c, lin_b, rscr)
                for j in range(d):
                    tn[j] = (theta[j] - eta_dt * (g[j] / 3.0 + 2.0 * g2[j] / 3.0)
                             + cn * nz2[j])
            else:
                ok = diagonal_noise(theta, udiag_fn, sqlr, beta)
                for j in range(d):
                    um[j] = theta[j] - 0.75 * eta_dt * g[j] + 1.5 * beta[j] * v[j]
                _grad(um, g2, grad_into_fn, lp, lin_H, lin_c, lin_b, rscr)
                for j in range(d):
                    a1 = -lr * g[j]
                    up[j] = theta[j] + a1 * dt + beta[j] * sdt
                    um[j] = theta[j] + a1 * dt - beta[j] * sdt
                ok = diagonal_noise(up, udiag_fn, sqlr, bp) and ok
                ok = diagonal_noise(um, udiag_fn, sqlr, bm) and ok
                for j in range(d):
                    um[j] = up[j] - bp[j] * sdt
                    up[j] = up[j] + bp[j] * sdt
                ok = diagonal_noise(up, udiag_fn, sqlr, bpp) and ok
                ok = diagonal_noise(um, udiag_fn, sqlr, bpm) and ok
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
            status = 3 if st == 2 else 4   # the engine's NOT_PSD / BAD_NOISE
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
        if r < R and rec_steps[r] == k:  # recorded before it is kept: θ (out_final) stays the last good state
            if not _record(i, blk, r, tn, g, rscr, value_fn, grad_into_fn, hess_fn, lp, lkind,
                           lin_H, lin_c, lin_b, vX, vy, want_sharp, want_paths, mom, out_loss,
                           out_gn, out_sharp, out_paths, mom_sum, mom_sq, mom_cnt):
                status = 1
                div_at = k
                break
            r += 1
        for j in range(d):
            theta[j] = tn[j]
    out_div[i] = div_at
    out_status[i] = status


@njit(nogil=True, no_cfunc_wrapper=True)
def kernel_generic(traj_fn, sel_em, sel_mil, sel_srk, sel_state, value_fn, grad_into_fn, hess_fn, pex_fn, umat_fn,
                   udiag_fn, ucov_fn, lp, mb_params, data, fcfg, icfg, rec_steps, theta0s, rngs, outs, bounds, b0, b1):
    """The ensemble kernel over the blocks b0 ≤ b < b1 (:func:`eosdyn.engine.threads.run_blocks`
    runs chunks of them on threads): ``traj_fn`` (:func:`_run_traj`) on every path of a block,
    with any exception caught (status 2, the engine's FAILED, at the step ``out_div`` holds;
    ``out_final`` keeps the last state that passed), so no exception escapes the kernel and every
    other path is computed. The ``try`` sits around the call, not the step loop: inside the loop
    it slows every step down. Function slots that do not apply are ``None`` (their branches are
    pruned); :func:`generic_kernel` gives its disk-cached specialisation, which receives the
    specialised :func:`_run_traj` as a first-class function (:class:`eosdyn.engine.kernels.Kernel`)."""
    for b in range(b0, b1):
        for i in range(bounds[b], bounds[b + 1]):
            failed = False
            try:  # no ``return`` inside: numba's try/except does not catch past one
                traj_fn(i, b, sel_em, sel_mil, sel_srk, sel_state, value_fn, grad_into_fn, hess_fn, pex_fn, umat_fn,
                        udiag_fn, ucov_fn, lp, mb_params, data, fcfg, icfg, rec_steps, theta0s, rngs, outs)
            except Exception:  # noqa: BLE001
                failed = True
            if failed:
                outs[6][i] = 2


# ------------------------------------------------------------------ disk-cached kernels
FN_SLOTS = ("sel_em", "sel_mil", "sel_srk", "sel_state", "value_fn", "grad_into_fn", "hess_fn", "pex_fn",
            "umat_fn", "udiag_fn", "ucov_fn")


def _parts():
    return [(_grad, None), (_value, None), (_sharp, None), (noise_matrix, None), (diagonal_noise, None),
            (_record, None), (_run_traj, None), (kernel_generic, "kernel")]


def generic_kernel(sel, fns, what):
    """:func:`kernel_generic` with its selectors ``sel`` (sel_em, sel_mil, sel_srk, sel_state: None
    or 1) and function slots ``fns`` (value_fn, grad_into_fn, hess_fn, pex_fn, umat_fn, udiag_fn,
    ucov_fn) bound: disk-cached where every function is importable by name, else the generic
    in-memory kernel (:func:`eosdyn.engine.kernels.kernel_for`, which warns once)."""
    from ..engine.kernels import kernel_for

    return kernel_for("sde", (*sel, *fns), what)


def _register():
    from ..engine.kernels import register_kind

    register_kind("sde", FN_SLOTS, _parts, kernel_generic, callee=("traj_fn", _run_traj))


_register()
