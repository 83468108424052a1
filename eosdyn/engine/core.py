"""The stepping core: one numba loop that steps any (loss, rule) pair, with optional noise.

Every simulator of the discrete map is a recorder around the functions of this module:
``simulate`` and ``ensemble`` (:mod:`eosdyn.sim`), the analysis's orbits, bifurcation
diagrams, basins and convergence fractions (:mod:`eosdyn.analysis`), Lyapunov spectra of a
rule, noisy GD (:func:`eosdyn.sde.noisy_gd`) and the sweep examples. Python drives them
through :func:`eosdyn.engine.run.run_map`.

**One state s of one trajectory** (s = 0, 1, …, steps; θ_s after s updates) is processed by

1. *observe* — g = ∇L(θ_s); the divergence check (:func:`is_bad`); the rule's curvature probe
   when it is due (s a multiple of ``curvature_every``; :func:`eosdyn.curvature.kernels.probe`);
   for a minibatch rule (:class:`eosdyn.rules.SGD`, slot ``batch_fn``), the minibatch B_s of the
   state (:func:`eosdyn.engine.minibatch.draw_minibatch`), its gradient g_B and loss L_B(θ_s);
2. :func:`record` — when s is a record step: L(θ_s) (checked), ‖g‖, θ_s, λ₁, λ₂, the
   preconditioned sharpness λ_max(P⁻¹H) and the ensemble moments; the batch loss L_B(θ_s);
3. *advance* — the additive noise ξ is drawn and B(θ_s)ξ formed (if any), the rule steps
   θ_s → θ_{s+1} in place (step number t = t0 + s + 1) on g — or on g_B for a minibatch rule:
   SGD is the GD / heavy-ball step fed the minibatch gradient — and c·B(θ_s)ξ is added, with
   c = η_t (the ``"sgd"`` convention, the default) or √η_t (``"proposal"``; :mod:`eosdyn.engine.noise`
   states both); η_t, the step size in force, is
   recorded as ``lr`` at a record step. The divergence check and ‖g‖ stay on the full gradient.

The three are written out in one loop (:func:`run_trajectory`): a call per state cost a third
of a cheap step in numba (measured on a depth-3 scalar net). The layers between the loop over
trajectories and the step are kept few on purpose: numba compiles each ``@njit`` callee on its
own and then optimises and emits it again inside every caller that links it, so each layer
costs seconds of a cold start (:func:`record` is inlined in numba's IR for that reason, and the
disk-cached ensemble loops call :func:`run_trajectory` and :func:`run_block` through their
address instead of linking them: :class:`eosdyn.engine.kernels.Kernel`).

**One divergence rule.** State s *fails* when some |θᵢ| ≥ ``blowup``, θ or ∇L(θ) is not
finite, or (at a record) L(θ) is not finite; when computing it raises (a loss like 1/x at
x = 0, an eigensolver meeting an infinite Hessian: no exception escapes the map kernels;
the Lyapunov recorder, one trajectory, lets it reach the caller); or,
for state s + 1, when the step or the noise of state s raises or gives an invalid noise
matrix. The trajectory stops there: ``status`` holds the reason (:data:`DIVERGED`,
:data:`FAILED`, :data:`NOT_PSD`, :data:`BAD_NOISE`), ``fail_at`` the state s, the records
from s on are NaN and its final state is the last one that passed (the Python driver
recovers it by replaying the trajectory up to s − 1, bit for bit). Every other trajectory
is computed, whatever the thread count.

**Random numbers.** Trajectory i owns the xoshiro256** stream (seed, index0 + i)
(:mod:`eosdyn._rng`), seeded by the driver before the first call and carried in ``rngs``.
Per state, draws happen in this order: the curvature probe (a random Lanczos start,
Hutchinson's directions), the minibatch (B indices, :mod:`eosdyn.engine.minibatch`), the
additive noise (one ``rng_fill_normal`` of length m), the rule's own step (EoS-Ada's noise). So results do not
depend on the thread count, and noisy GD draws exactly what the SDE's Euler–Maruyama step
draws.

**Resumable calls.** A call processes the states ``s0 ≤ s < s1`` and keeps everything a
later call needs in per-trajectory arrays: θ, the optimizer state, the random stream, the
Lanczos warm start and the curvature in force. Cutting a run into calls (to check for
Ctrl-C, to report progress) gives bit-identical results.

**Two loops over trajectories.** :func:`run_ensemble` runs trajectories one at a time
(any rule, probes, noise, moments), in ``nb`` contiguous blocks (at most 256:
:func:`eosdyn.engine.run.moment_blocks`), so the
per-block moment sums are thread-count independent. Both loops take a range of blocks and
release the GIL; :mod:`eosdyn.engine.threads` runs chunks of blocks on threads. :func:`run_ensemble_blocked` runs
blocks of :data:`BLOCK` trajectories in structure-of-arrays layout for deterministic rules
with a ``step_block_fn`` and losses with a ``grad_block_fn``: the gradient, the check and
the step are loops across the block that LLVM vectorises; records go through the same
:func:`record`, so each trajectory is bit-identical to its per-trajectory run. An exception
inside a block cannot be pinned on one lane: the block is flagged and the driver reruns
its trajectories one at a time.

The functions that take numba functions as arguments (the *slots*: the loss's and the
rule's kernels, the noise callables) are specialised per (loss family, rule) pair by
:func:`eosdyn.codegen.specialise` and cached on disk (:mod:`eosdyn.engine.kernels`).
"""
from __future__ import annotations

import numpy as np
from numba import njit

from .._arrays import copy_matrix
from .._rng import rng_fill_normal
from ..curvature.kernels import probe, record_curvature
from .minibatch import draw_minibatch
from .noise import ISO, USER_DIAG, apply_noise, diagonal_noise, noise_matrix

# --- per-trajectory status --------------------------------------------------------------
ALIVE, DIVERGED, FAILED, NOT_PSD, BAD_NOISE, LYAPUNOV_DEGENERATE = 0, 1, 2, 3, 4, 5
#: an exception was caught where the state it happened at was not tracked (the driver reruns)
FAILED_UNLOCATED = 9
#: status names, for results and messages
STATUS_NAMES = {ALIVE: "ok", DIVERGED: "diverged", FAILED: "exception", NOT_PSD: "noise covariance not PSD",
                BAD_NOISE: "noise function returned a wrong shape",
                LYAPUNOV_DEGENERATE: "Jacobian product lost rank"}

# --- icfg layout (int64) -----------------------------------------------------------------
# (the probe's method and whether the rule is preconditioned are not here: they are compile-time
# slots, ``sel_probe`` = the method's code and ``precond_fn`` = None without a preconditioner)
(I_STEPS, I_S0, I_S1, I_T0, I_REC0, I_RECK, I_CK, I_CEVERY, I_CM, I_CNSAMP,
 I_NKIND, I_NM, I_PSD_RAISE, I_MB_EIGH, I_MOMENTS, I_LYAP0, I_BATCH, I_BREPLACE, I_NEXAMPLES, I_NSGD) = range(20)
N_ICFG = 20
# --- fcfg layout (float64) ---------------------------------------------------------------
F_BLOWUP, F_NSCAL = range(2)
N_FCFG = 2

BLOCK = 64  # trajectories per block of the blocked kernel (d ≤ 16: X, G, W stay in L1)


# ----------------------------------------------------------------------- the divergence rule
@njit(cache=True)
def coord_ok(x, g, blowup):
    """|x| < blowup and g finite: |x| + (g − g) is NaN iff x is NaN or g is not finite."""
    return abs(x) + (g - g) < blowup


@njit(cache=True)
def is_bad(theta, g, blowup):
    """True if state θ with gradient g fails the divergence check."""
    for i in range(theta.shape[0]):
        if not coord_ok(theta[i], g[i], blowup):
            return True
    return False


@njit(cache=True)
def lanes_bad(X, G, blowup, alive, bad):
    """bad[b] = is_bad(X[:, b], G[:, b], blowup) for every lane, vectorised across the block.

    Returns how many live lanes are bad.
    """
    d, B = X.shape
    for b in range(B):
        bad[b] = False
    for i in range(d):
        for b in range(B):
            bad[b] = bad[b] | (not coord_ok(X[i, b], G[i, b], blowup))
    n = 0
    for b in range(B):
        n += alive[b] & bad[b]
    return n


@njit(cache=True, inline="always")
def record_index(s, rec0, reck):
    """The record index of state s (records at rec0 + r·reck), or −1 if s is not a record step."""
    if s < rec0:
        return -1
    q = s - rec0
    if q % reck != 0:
        return -1
    return q // reck


@njit(cache=True)
def probe_config(icfg):
    """(k, every, Lanczos steps, Hutchinson samples) of the probe (its method is the selector
    ``sel_probe``), read once per call:
    the loops keep their settings in registers (an array read in a loop is reloaded after
    every store, since numba cannot rule out aliasing)."""
    return icfg[I_CK], icfg[I_CEVERY], icfg[I_CM], icfg[I_CNSAMP]


# ----------------------------------------------------------------- one state: observe/record
@njit(inline="always")
def record(sel_track, value_fn, hess_fn, precond_fn, params, hyper, theta, state, g, t, r, mom, pre, blk, out_theta,
           out_loss, out_gn, out_sharp, out_l2, out_psharp, mom_sum, mom_sq, mom_cnt):
    """Record r of one trajectory (state θ at step number t); False if L(θ) is not finite.

    Nothing is written before the loss is known to be finite; the moments are accumulated
    last, so a record that raises leaves no trace in them. ``sel_track`` is None when no
    curvature is recorded (the eigensolver is then left out of the compiled kernel), and
    ``precond_fn`` is None for a rule without a preconditioner.
    """
    d = theta.shape[0]
    if out_loss.shape[0] > 0 or mom_cnt.shape[0] > 0:
        lval = value_fn(theta, params)
        if not np.isfinite(lval):
            return False
        if out_loss.shape[0] > 0:
            out_loss[r] = lval
    if out_gn.shape[0] > 0:
        gn = 0.0
        for i in range(d):
            gn += g[i] * g[i]
        out_gn[r] = np.sqrt(gn)
    if out_theta.shape[0] > 0:
        for i in range(d):
            out_theta[r, i] = theta[i]
    if sel_track is not None:
        if precond_fn is None:  # a rule without a preconditioner: no λ_max(P⁻¹H) code is compiled
            record_curvature(hess_fn(theta, params), None, r, out_sharp, out_l2, out_psharp)
        else:
            precond_fn(state, hyper, max(t, 1), pre)
            record_curvature(hess_fn(theta, params), pre, r, out_sharp, out_l2, out_psharp)
    accumulate_moments(theta, blk, r, mom, mom_sum, mom_sq, mom_cnt)
    return True


@njit(cache=True)
def accumulate_moments(theta, blk, r, mom, mom_sum, mom_sq, mom_cnt):
    """Add θ to block ``blk``'s sums at record r: count, Σθ and Σθ² (``mom`` 1) or Σθθᵀ (2).

    Per-block sums, added over the blocks in order afterwards, keep the ensemble moments
    independent of the thread count (the SDE engine and noisy GD share this function)."""
    if mom > 0:
        d = theta.shape[0]
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


# -------------------------------------------------------------------- one trajectory
@njit(no_cpython_wrapper=True)
def run_trajectory(i, blk, sel_noise, sel_state, sel_probe, sel_track, sel_locate, value_fn, grad_into_fn, hess_fn,
                   hvp_fn, step_fn, precond_fn, pex_fn, umat_fn, udiag_fn, ucov_fn, batch_fn, params, hypers, icfg,
                   fcfg, ndata, carry, flags, outs, moms):
    """Process states s0 ≤ s < s1 of trajectory i in place (see the module docstring).

    ``ndata`` = (nz_mat, nz_vec, mb_params, mbX, mby) (the noise's data), ``carry`` = (thetas,
    states, rngs, warms, curvs), ``flags`` = (status, fail_at, fail_val, stops), ``outs`` = the
    eight record arrays (the last: the batch loss), ``moms`` = the moment sums: tuples keep the
    argument count of :func:`run_ensemble`'s call under the 30 that CPython 3.11 passes without a
    list (which numba cannot type inside ``try``). An exception propagates to that loop. With
    ``sel_locate`` (None or 1) the state being processed is kept in ``fail_at[i]`` as it goes —
    the driver's rerun of a trajectory that raised, which finds the state where it did; the
    ordinary run keeps it in a register (no store per step). A non-empty ``stops`` ends
    trajectory i at ``stops[i]`` instead of s1 (the driver's replays).
    """
    nz_mat, nz_vec, mb_params, mbX, mby = ndata
    thetas, states, rngs, warms, curvs = carry
    status, fail_at, fail_val, stops = flags
    out_theta, out_loss, out_gn, out_sharp, out_l2, out_lr, out_psharp, out_bloss = outs
    mom_sum, mom_sq, mom_cnt = moms
    theta = thetas[i]
    state = states[i]
    rng = rngs[i]
    warm = warms[i]
    curv = curvs[i]
    hyper = hypers[i if hypers.shape[0] > 1 else 0]
    # the settings, read once into locals: the loop keeps them in registers (an array read in
    # the loop would be reloaded after every store: numba cannot rule out aliasing)
    steps, s0, s1, t0 = icfg[I_STEPS], icfg[I_S0], icfg[I_S1], icfg[I_T0]
    rec0, reck = icfg[I_REC0], icfg[I_RECK]
    ck, cevery, cm, cnsamp = probe_config(icfg)
    mom = icfg[I_MOMENTS]
    nkind, mb_eigh, psd_raise, m, noise_sgd = (icfg[I_NKIND], icfg[I_MB_EIGH] != 0, icfg[I_PSD_RAISE] != 0,
                                               icfg[I_NM], icfg[I_NSGD] != 0)
    nbatch, breplace, nex = icfg[I_BATCH], icfg[I_BREPLACE] != 0, icfg[I_NEXAMPLES]
    blowup = fcfg[F_BLOWUP]
    nscal = fcfg[F_NSCAL]
    if stops.shape[0] > 0:  # a replay that stops each trajectory at its own state
        s1 = min(s1, stops[i])
    o_theta, o_loss, o_gn, o_sharp = out_theta[i], out_loss[i], out_gn[i], out_sharp[i]
    o_l2, lr_out, o_psharp, o_bloss = out_l2[i], out_lr[i], out_psharp[i], out_bloss[i]
    d = theta.shape[0]
    g = np.empty(d)
    work = np.zeros(d)
    pre = np.ones(d)
    xi = np.empty(m if sel_noise is not None else 0)
    nz = np.empty(d if sel_noise is not None else 0)
    Bst = np.empty((d, m) if sel_state is not None else (0, 0))
    # the minibatch (a rule that steps on g_B): its indices, the draw's scratch, g_B and L_B
    idx = np.empty(nbatch if batch_fn is not None else 0, np.int64)
    swaps = np.empty(nbatch if batch_fn is not None else 0, np.int64)
    perm = np.empty(0, np.int64)
    if batch_fn is not None:
        if not breplace:
            perm = np.arange(nex)
    gb = np.empty(d if batch_fn is not None else 0)
    lb = 0.0
    at = s0  # the state being processed (or, during a step, the one it makes)
    for s in range(s0, s1):
        at = s
        if sel_locate is not None:
            fail_at[i] = s
        # observe: ∇L(θ_s), the divergence check, the curvature probe when due (written out in
        # the loop: as a function call it cost a third of a cheap step)
        grad_into_fn(theta, params, g)
        if is_bad(theta, g, blowup):
            status[i] = DIVERGED
            break
        if sel_probe is not None:
            if ck > 0 and (s % cevery) == 0:
                probe(sel_probe, hess_fn, hvp_fn, theta, params, ck, cm, cnsamp, rng, warm, curv)
        if batch_fn is not None:
            draw_minibatch(rng, nex, breplace, perm, swaps, idx)
            lb = batch_fn(theta, params, idx, gb)
        t = t0 + s + 1
        r = record_index(s, rec0, reck)
        if r >= 0:
            if not record(sel_track, value_fn, hess_fn, precond_fn, params, hyper, theta, state, g, t0 + s, r,
                          mom, pre, blk, o_theta, o_loss, o_gn, o_sharp,
                          o_l2, o_psharp, mom_sum, mom_sq, mom_cnt):
                status[i] = DIVERGED
                break
            if batch_fn is not None:
                if o_bloss.shape[0] > 0:
                    o_bloss[r] = lb
        if s == steps:
            if r >= 0 and lr_out.shape[0] > 0:
                # the step size in force at the final state, on a throw-away copy
                th2 = theta.copy()
                st2 = state.copy()
                rng2 = rng.copy()
                if batch_fn is not None:
                    lr_out[r] = step_fn(th2, st2, gb, curv, hyper, t, rng2, work)
                else:
                    lr_out[r] = step_fn(th2, st2, g, curv, hyper, t, rng2, work)
            break
        at = s + 1
        if sel_locate is not None:
            fail_at[i] = s + 1
        # advance: the noise B(θ_s)ξ (drawn first), the rule's step, then c·B(θ_s)ξ added (c = η_t or √η_t)
        if sel_noise is not None:
            rng_fill_normal(rng, xi)
            if nkind == USER_DIAG:
                if not diagonal_noise(theta, udiag_fn, 1.0, nz):
                    status[i] = BAD_NOISE
                    break
            elif nkind != ISO:
                if sel_state is not None:  # state-dependent kinds: B(θ_s) first
                    code, lam = noise_matrix(theta, nkind, nscal, mb_eigh, hess_fn, pex_fn, umat_fn, ucov_fn,
                                             params, mb_params, mbX, mby, Bst)
                    if code == 2 and psd_raise:  # else negative eigenvalues were clipped to 0
                        status[i] = NOT_PSD
                        fail_val[i] = lam
                        break
                    if code != 0 and code != 2:
                        status[i] = BAD_NOISE
                        break
                apply_noise(nkind, theta, xi, nz, nscal, nz_mat, nz_vec, Bst)
        if batch_fn is not None:
            lr = step_fn(theta, state, gb, curv, hyper, t, rng, work)
        else:
            lr = step_fn(theta, state, g, curv, hyper, t, rng, work)
        if sel_noise is not None:
            c = lr if noise_sgd else np.sqrt(lr)  # the convention: c = η_t ("sgd") or √η_t ("proposal")
            if nkind == ISO:
                ciso = c * nscal
                for j in range(d):
                    theta[j] = theta[j] + ciso * xi[j]
            elif nkind == USER_DIAG:
                for j in range(d):
                    theta[j] = theta[j] + c * nz[j] * xi[j]
            else:
                for j in range(d):
                    theta[j] = theta[j] + c * nz[j]
        if r >= 0 and lr_out.shape[0] > 0:
            lr_out[r] = lr


    fail_at[i] = -1 if status[i] == ALIVE else at


@njit(nogil=True, no_cfunc_wrapper=True)
def run_ensemble(traj_fn, sel_noise, sel_state, sel_probe, sel_track, sel_locate, value_fn, grad_into_fn, hess_fn,
                 hvp_fn, step_fn, precond_fn, pex_fn, umat_fn, udiag_fn, ucov_fn, batch_fn, params, hypers, icfg, fcfg,
                 ndata, carry, flags, outs, moms, bounds, b0, b1):
    """The blocks b0 ≤ b < b1 of trajectories (block b: ``bounds[b] ≤ i < bounds[b + 1]``), one
    trajectory at a time through ``traj_fn`` (:func:`run_trajectory`); trajectories whose status
    is not ALIVE are skipped. Releases the GIL: :func:`eosdyn.engine.threads.run_blocks` runs
    chunks of blocks on threads.

    No exception escapes: a trajectory that raised is flagged :data:`FAILED` — at the state
    ``fail_at[i]`` holds when ``sel_locate`` is set, else :data:`FAILED_UNLOCATED`, which the
    driver reruns with ``sel_locate``. The ``try`` sits around the call, not in the step loop
    (there it would slow every step down by 10–80 %). ``traj_fn`` is a first-class function in
    the disk-cached kernels (:class:`eosdyn.engine.kernels.Kernel`): called through its address,
    it is compiled once instead of again inside this loop."""
    for b in range(b0, b1):
        for i in range(bounds[b], bounds[b + 1]):
            if flags[0][i] != ALIVE:
                continue
            failed = False
            try:  # no ``return`` inside: numba's try/except does not catch past one
                traj_fn(i, b, sel_noise, sel_state, sel_probe, sel_track, sel_locate, value_fn, grad_into_fn,
                        hess_fn, hvp_fn, step_fn, precond_fn, pex_fn, umat_fn, udiag_fn, ucov_fn, batch_fn, params,
                        hypers, icfg, fcfg, ndata, carry, flags, outs, moms)
            except Exception:  # noqa: BLE001 - numba catches any exception; the reason is the status
                failed = True
            if failed:
                flags[0][i] = FAILED if sel_locate is not None else FAILED_UNLOCATED


# ---------------------------------------------------------------------- blocks of lanes
@njit(no_cpython_wrapper=True)
def run_block(lo, hi, sel_track, value_fn, grad_block_fn, hess_fn, step_fn, step_block_fn, precond_fn, params, hypers,
              icfg, fcfg, thetas, states, status, fail_at, out_theta, out_loss, out_gn, out_sharp, out_l2, out_lr,
              out_psharp):
    """Trajectories lo..hi−1 as one block in structure-of-arrays layout, states s0 ≤ s < s1.

    For rules with a ``step_block_fn`` and no curvature probe, noise or randomness: the
    gradient, the check and the step run across the block (SIMD across trajectories), the
    records and the failure bookkeeping per trajectory, exactly as in
    :func:`run_trajectory`, so every trajectory is bit-identical to its per-trajectory
    run. A failed lane is zeroed and ignored from then on.
    """
    B = hi - lo
    d = thetas.shape[1]
    ns = states.shape[1]
    hyper = hypers[0]
    steps, t0, rec0, reck = icfg[I_STEPS], icfg[I_T0], icfg[I_REC0], icfg[I_RECK]
    blowup = fcfg[F_BLOWUP]
    X = np.empty((d, B))
    S = np.empty((ns, B))
    G = np.empty((d, B))
    W = np.empty((d, B))
    LR = np.empty(B)
    bad = np.zeros(B, np.bool_)
    alive = np.zeros(B, np.bool_)
    n_alive = 0
    for b in range(B):
        alive[b] = status[lo + b] == ALIVE
        n_alive += alive[b]
        for i in range(d):
            X[i, b] = thetas[lo + b, i] if alive[b] else 0.0
        for i in range(ns):
            S[i, b] = states[lo + b, i] if alive[b] else 0.0
    th = np.empty(d)
    st = np.empty(ns)
    g = np.empty(d)
    pre = np.ones(d)
    work = np.zeros(d)
    curv = np.zeros(1)
    rng = np.zeros(4, np.uint64)  # unused: block rules are deterministic
    mom0 = np.zeros((0, 0, 0))
    mom1 = np.zeros((0, 0, 0, 0))
    mom2 = np.zeros((0, 0))
    for s in range(icfg[I_S0], icfg[I_S1]):
        if n_alive == 0:
            break
        grad_block_fn(X, params, G, W)
        t = t0 + s + 1
        r = record_index(s, rec0, reck)
        if r < 0 and lanes_bad(X, G, blowup, alive, bad) == 0 and s < steps:
            step_block_fn(X, S, G, hyper, t, LR)  # the common case: every lane is fine
            continue
        if r >= 0:
            lanes_bad(X, G, blowup, alive, bad)
        for b in range(B):
            if not alive[b]:
                continue
            k = lo + b
            dead = bad[b]
            if not dead and r >= 0:
                for i in range(d):
                    th[i] = X[i, b]
                    g[i] = G[i, b]
                for i in range(ns):
                    st[i] = S[i, b]
                dead = not record(sel_track, value_fn, hess_fn, precond_fn, params, hyper, th, st, g, t0 + s, r,
                                  0, pre, 0, out_theta[k], out_loss[k], out_gn[k], out_sharp[k],
                                  out_l2[k], out_psharp[k], mom0, mom1, mom2)
                if not dead and s == steps and out_lr.shape[1] > 0:
                    # the step size in force at the final state, on the lane's copy
                    out_lr[k, r] = step_fn(th, st, g, curv, hyper, t, rng, work)
            if dead:
                status[k] = DIVERGED
                fail_at[k] = s
                for i in range(d):
                    X[i, b] = 0.0
                for i in range(ns):
                    S[i, b] = 0.0
                alive[b] = False
                n_alive -= 1
        if s == steps:
            break
        step_block_fn(X, S, G, hyper, t, LR)
        if r >= 0 and out_lr.shape[1] > 0:
            for b in range(B):
                if alive[b]:
                    out_lr[lo + b, r] = LR[b]
    for b in range(B):
        if alive[b]:
            for i in range(d):
                thetas[lo + b, i] = X[i, b]
            for i in range(ns):
                states[lo + b, i] = S[i, b]


@njit(nogil=True, no_cfunc_wrapper=True)
def run_ensemble_blocked(block_fn, sel_track, value_fn, grad_block_fn, hess_fn, step_fn, step_block_fn, precond_fn,
                         params, hypers, icfg, fcfg, thetas, states, status, fail_at, out_theta, out_loss, out_gn,
                         out_sharp, out_l2, out_lr, out_psharp, block_ok, b0, b1):
    """``block_fn`` (:func:`run_block`) over the blocks b0 ≤ j < b1 of :data:`BLOCK` trajectories;
    block_ok[j] = False where block j raised (the driver then reruns its trajectories one at a
    time, which pins the failure on its lane). Releases the GIL
    (:func:`eosdyn.engine.threads.run_blocks`); ``block_fn`` is called as in :func:`run_ensemble`."""
    n = thetas.shape[0]
    for j in range(b0, b1):
        lo = j * BLOCK
        ok = True
        try:  # no ``return`` inside: numba's try/except does not catch past one
            block_fn(lo, min(lo + BLOCK, n), sel_track, value_fn, grad_block_fn, hess_fn, step_fn, step_block_fn,
                     precond_fn, params, hypers, icfg, fcfg, thetas, states, status, fail_at, out_theta, out_loss,
                     out_gn, out_sharp, out_l2, out_lr, out_psharp)
        except Exception:  # noqa: BLE001
            ok = False
        block_ok[j] = ok


# ----------------------------------------------------------------- the Lyapunov recorder
@njit(cache=True)
def _mgs_qr_logdiag(A, Q, logs):
    """Q, log|R_ii| of A = QR by modified Gram–Schmidt with one reorthogonalisation."""
    n = A.shape[0]
    m = A.shape[1]
    for j in range(m):
        v = np.empty(n)
        for k in range(n):
            v[k] = A[k, j]
        for _ in range(2):
            for i in range(j):
                c = 0.0
                for k in range(n):
                    c += Q[k, i] * v[k]
                for k in range(n):
                    v[k] -= c * Q[k, i]
        nrm = 0.0
        for k in range(n):
            nrm += v[k] * v[k]
        nrm = np.sqrt(nrm)
        if nrm > 0.0:
            logs[j] = np.log(nrm)
            for k in range(n):
                Q[k, j] = v[k] / nrm
        else:
            logs[j] = -np.inf
            for k in range(n):
                Q[k, j] = 0.0


@njit(cache=True)
def _matmul(A, B):
    """A @ B by loops (no BLAS: keeps the kernels' compile time low for the tiny matrices here)."""
    n, m = A.shape
    k = B.shape[1]
    C = np.zeros((n, k))
    for i in range(n):
        for l in range(m):
            a = A[i, l]
            if a != 0.0:
                for j in range(k):
                    C[i, j] += a * B[l, j]
    return C


@njit(cache=True)
def _neumaier_add(s, c, x):
    t = s + x
    if abs(s) >= abs(x):
        c += (s - t) + x
    else:
        c += (x - t) + s
    return t, c


@njit(cache=True)
def qr_accumulate(J, Q, Qn, logs, s, c):
    """One Benettin step: QR of J·Q, add log|diag R| to the compensated sums (s, c), Q ← Q'.
    Returns False (leaving the sums alone) when a log is not finite."""
    _mgs_qr_logdiag(_matmul(J, Q), Qn, logs)
    for i in range(logs.shape[0]):
        if not np.isfinite(logs[i]):
            return False
    for i in range(logs.shape[0]):
        s[i], c[i] = _neumaier_add(s[i], c[i], logs[i])
    copy_matrix(Qn, Q)
    return True


@njit(cache=True)
def record_running(k, record_every, s, c, running):
    """After k + 1 steps, store the running mean of the exponents every record_every steps."""
    if (k + 1) % record_every == 0:
        r = (k + 1) // record_every - 1
        for i in range(s.shape[0]):
            running[r, i] = (s[i] + c[i]) / (k + 1)


@njit
def run_lyapunov(sel_probe, grad_into_fn, hess_fn, hvp_fn, step_fn, jacobian_fn, params, hyper, icfg, fcfg, theta,
                 state, rng, warm, curv, record_every, sums, comp, running, status, fail_at):
    """The Benettin QR method along one noise-free trajectory of the core.

    States s0 ≤ s < s1 are observed and advanced as in :func:`run_trajectory`; from state
    ``icfg[I_LYAP0]`` (the end of the transient) on, the frame Q is carried by the map's
    Jacobian J(θ_s) = ``jacobian_fn(∇²L(θ_s), hyper, d)`` before each step and the logs
    of diag R are summed (compensated) in ``sums``/``comp``. Returns the number of QR steps.
    """
    d = theta.shape[0]
    n = d + state.shape[0]
    steps, lyap0, t0 = icfg[I_STEPS], icfg[I_LYAP0], icfg[I_T0]
    ck, cevery, cm, cnsamp = probe_config(icfg)
    blowup = fcfg[F_BLOWUP]
    g = np.empty(d)
    work = np.zeros(d)
    Q = np.zeros((n, n))
    for i in range(n):
        Q[i, i] = 1.0
    Qn = np.empty((n, n))
    logs = np.zeros(n)
    done = 0
    for s in range(icfg[I_S0], icfg[I_S1]):
        if s == steps:
            break
        fail_at[0] = s
        grad_into_fn(theta, params, g)
        if is_bad(theta, g, blowup):
            status[0] = DIVERGED
            return done
        if sel_probe is not None:
            if ck > 0 and (s % cevery) == 0:
                probe(sel_probe, hess_fn, hvp_fn, theta, params, ck, cm, cnsamp, rng, warm, curv)
        if s >= lyap0:
            if not qr_accumulate(jacobian_fn(hess_fn(theta, params), hyper, d), Q, Qn, logs, sums, comp):
                status[0] = LYAPUNOV_DEGENERATE
                return done
        step_fn(theta, state, g, curv, hyper, t0 + s + 1, rng, work)
        if s >= lyap0:
            done += 1
            record_running(s - lyap0, record_every, sums, comp, running)
    fail_at[0] = -1
    return done
