"""A generic Itô SDE integrator with sdeint's signatures: ``f(y, t) -> (d,)``, ``G(y, t) -> (d, m)``.

    dy = f(y, t) dt + G(y, t) dW,   W an m-dimensional Wiener process.

:func:`integrate` is the reference-compatible API: the user functions are plain
Python callables, so it runs a Python loop over the time steps (one path). A user
of ``sdeint.itoint``/``sdeint.itoEuler`` switches with one line, and can pass their
own Brownian increments ``dW`` of shape (len(tspan) − 1, m) — with identical ``dW``
``method="euler"`` evaluates exactly sdeint's update ``y + f(y,t)·h + G(y,t)·dW``.
For ensembles on eosdyn losses use the numba engine :func:`eosdyn.sde.simulate`.

Schemes (h the step, ΔW = dW[n], ΔZ = dZ[n] = I_(1,0) = ∫ (W_s − W_t) ds over the step)
--------------------------------------------------------------------------------------
``euler`` (Euler–Maruyama; any noise). Strong order 0.5 (1.0 for additive noise), weak 1.

``milstein`` — derivative-free (Runge–Kutta) Milstein scheme, Kloeden & Platen (1992),
*Numerical Solution of Stochastic Differential Equations*, §11.1: with b the
diffusion vector (scalar noise m = 1: b = G[:, 0]; diagonal noise: b = diag G),

    Ῡ = y + f h + b √h,   y' = y + f h + b ΔW + (b(Ῡ) − b(y)) (ΔW² − h) / (2√h)

(componentwise for diagonal noise). Strong order 1.0 when the noise is *scalar*
or *diagonal with bᵢ depending on yᵢ (and t) only* (the commutative cases: no
Lévy areas are needed). Additive noise: Milstein = Euler–Maruyama.

``srk15`` — strong order 1.5, needs ΔZ:

* additive noise (``noise_type="additive"``, G independent of y, any m): Rößler's
  SRA1 (A. Rößler, "Runge–Kutta methods for the strong approximation of solutions
  of stochastic differential equations", SIAM J. Numer. Anal. 48(3), 2010, scheme
  SRA1), with ζ = ΔZ/h::

      c0 = (0, 3/4), A0 = [[0, 0], [3/4, 0]], B0 = [[0, 0], [3/2, 0]],
      α = (1/3, 2/3), c1 = (1, 0), β1 = (1, 0), β2 = (−1, 1):
      H₂ = y + (3/4) f(y,t) h + (3/2) G(t+h) ζ
      y' = y + h (f(y,t)/3 + 2 f(H₂, t + 3h/4)/3) + G(t+h)(ΔW − ζ) + G(t) ζ

* scalar or diagonal noise (bᵢ = bᵢ(yᵢ, t)): the same two drift stages (with
  B0 acting on b(y)∘ζ — this reproduces the order-1.5 drift terms f h + ½L⁰f h² +
  Σⱼ Lʲf I_(j,0)), and the diffusion terms of the explicit order-1.5 strong scheme of
  Kloeden & Platen (1992) §11.2 (their derivative-free scalar-noise scheme, applied
  per component), with Ῡ± = y + f h ± b√h, Φ± = Ῡ₊ ± b(Ῡ₊)√h (at t + h)::

      y' = y + h (f/3 + 2 f(H₂)/3) + b ΔW
             + (b(Ῡ₊) − b(Ῡ₋)) (ΔW² − h) / (4√h)
             + (b(Ῡ₊) − 2b + b(Ῡ₋)) (ΔW h − ΔZ) / (2h)
             + (b(Φ₊) − b(Φ₋) − b(Ῡ₊) + b(Ῡ₋)) (ΔW²/3 − h) ΔW / (4h)

  Each line matches one term of the order-1.5 Itô–Taylor expansion (L¹b I_(1,1),
  L⁰b I_(0,1), L¹L¹b I_(1,1,1)); the order is verified on geometric Brownian motion.

Brownian increments. Without ``dW`` the increments are the documented stream of
:func:`eosdyn.sde.increments` (``seed``, ``index``): Euler/Milstein draw m normals per
step, srk15 2m (ΔW and the independent part of ΔZ), ΔZ = ½h^{3/2}(ξ₁ + ξ₂/√3)
(so Var ΔZ = h³/3, Cov(ΔW, ΔZ) = h²/2). For srk15 a user ``dW`` must come with its
``dZ`` (same shape); :func:`coarsen_increments` builds consistent coarse (ΔW, ΔZ)
from fine ones. sdeint's ``itoSRI2`` is strong order 1.0, not 1.5.
"""
from __future__ import annotations

import numbers

import numpy as np

from .._validate import choice, nonneg_int
from .simulate import increments, resolve_method

NOISE_TYPES = ("auto", "general", "additive", "scalar", "diagonal")


def _as_tspan(tspan):
    try:
        t = np.asarray(tspan, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError("tspan must be a 1-D array of times") from None
    if t.ndim != 1 or t.shape[0] < 2:
        raise ValueError(f"tspan must be a 1-D array of at least 2 times, got shape {t.shape}")
    if not np.all(np.isfinite(t)):
        raise ValueError("tspan must be finite")
    N = t.shape[0]
    h = (t[N - 1] - t[0]) / (N - 1)
    diffs = np.diff(t)
    if not h > 0 or np.any(diffs <= 0):
        raise ValueError(f"tspan must be strictly increasing (time step dt > 0), got dt = {h!r}")
    if np.max(np.abs(diffs - h)) > 1e-6 * h:
        raise ValueError("tspan must be equally spaced (max |Δt − dt| = "
                         f"{np.max(np.abs(diffs - h)):.3g} with dt = {h:.6g})")
    return t, h


def coarsen_increments(dW, factor, h, dZ=None):
    """Sum fine increments into coarse ones on the same Brownian path.

    ``dW`` (N, m) on a grid of step ``h``; returns ``dW_c`` (N/factor, m) and, if ``dZ``
    is given, ``dZ_c`` with I_(1,0) over a coarse step = Σᵢ (ΔZᵢ + (W(tᵢ) − W(t₀)) h).
    """
    factor = nonneg_int("factor", factor, minimum=1)
    dW = np.asarray(dW, dtype=np.float64)
    N, m = dW.shape
    if N % factor:
        raise ValueError(f"factor must divide the number of increments {N}, got {factor}")
    blocks = dW.reshape(N // factor, factor, m)
    dWc = blocks.sum(axis=1)
    if dZ is None:
        return dWc
    dZ = np.asarray(dZ, dtype=np.float64).reshape(N // factor, factor, m)
    before = np.cumsum(blocks, axis=1) - blocks   # W(t_i) - W(t_0) within each coarse step
    dZc = (dZ + before * h).sum(axis=1)
    return dWc, dZc


def _wrap_scalar(fn, matrix):
    def g(y, t):
        v = fn(y[0], t)
        if isinstance(v, numbers.Number) or np.ndim(v) == 0:
            return np.array([[float(v)]]) if matrix else np.array([float(v)])
        return np.asarray(v, dtype=np.float64)
    return g


def integrate(drift, diffusion, y0, tspan, method="euler", dW=None, seed=0, *, dZ=None,
              noise_type="auto", index=0):
    """Integrate the Itô SDE dy = f(y, t) dt + G(y, t) dW over ``tspan``; returns (len(tspan), d).

    Parameters
    ----------
    drift : callable f(y, t) -> (d,)
    diffusion : callable G(y, t) -> (d, m)
        (or -> (d,) for diagonal noise given as the vector b, G = diag(b): an
        extension of sdeint's convention that avoids d×d matrices for large systems)
    y0 : (d,) array or scalar (then f, G may return scalars, as in sdeint)
    tspan : 1-D array of equally spaced, increasing times; y[0] = y0 at tspan[0]
    method : {"euler", "milstein", "srk15"} (aliases "em", "itoEuler", "srk")
    dW : (len(tspan) − 1, m) array, optional
        Brownian increments; generated from stream (seed, index) if omitted.
    seed, index : int
        The stream of :func:`eosdyn.sde.increments` used when ``dW`` is omitted.
    dZ : (len(tspan) − 1, m) array, optional
        I_(1,0) per step, required with ``dW`` for ``srk15``.
    noise_type : {"auto", "general", "additive", "scalar", "diagonal"}
        Structure of G, used by milstein/srk15 (ignored by euler). "auto": "scalar"
        if m = 1, "diagonal" if G(y0, t0) is square and diagonal, else "general"
        (then milstein/srk15 raise: pass "additive" if G does not depend on y).

    Returns
    -------
    y : ndarray (len(tspan), d), y[0] = y0.
    """
    method = resolve_method(method)
    noise_type = choice("noise_type", noise_type, NOISE_TYPES)
    t, h = _as_tspan(tspan)
    N = t.shape[0]
    f, G = drift, diffusion
    if not callable(f):
        raise TypeError(f"drift must be callable f(y, t), got {type(f).__name__}")
    if not callable(G):
        raise TypeError(f"diffusion must be callable G(y, t), got {type(G).__name__}")
    if isinstance(y0, numbers.Number):
        y0 = np.array([float(y0)])
        f, G = _wrap_scalar(f, False), _wrap_scalar(G, True)
    y0 = np.array(y0, dtype=np.float64)
    if y0.ndim != 1:
        raise ValueError(f"y0 must be a scalar or 1-D, got shape {y0.shape}")
    if not np.all(np.isfinite(y0)):
        raise ValueError("y0 must be finite")
    d = y0.shape[0]
    a0 = np.asarray(f(y0, t[0]))
    if a0.shape != (d,):
        raise ValueError(f"drift f(y, t) must return shape (d,) = ({d},), got {a0.shape}")
    G0 = np.asarray(G(y0, t[0]))
    vector_diag = G0.ndim == 1 and G0.shape[0] == d and noise_type in ("auto", "diagonal", "additive")
    if vector_diag:
        # diagonal noise given as the vector b(y, t) of shape (d,): G = diag(b)
        G_vec = G
        if noise_type == "auto":
            noise_type = "diagonal"
        m = d
    elif G0.ndim != 2 or G0.shape[0] != d:
        raise ValueError(f"diffusion G(y, t) must return a matrix of shape (d, m) = ({d}, m) "
                         f"(or, for diagonal noise, a vector of shape ({d},)), got {G0.shape}")
    else:
        m = G0.shape[1]
    if noise_type == "auto":
        if m == 1:
            noise_type = "scalar"
        elif m == d and np.count_nonzero(G0 - np.diag(np.diag(G0))) == 0:
            noise_type = "diagonal"
        else:
            noise_type = "general"
    if noise_type == "scalar" and m != 1:
        raise ValueError(f"noise_type='scalar' needs m = 1, G has m = {m}")
    if noise_type == "diagonal" and not vector_diag:
        if m != d or np.count_nonzero(G0 - np.diag(np.diag(G0))) != 0:
            raise ValueError(f"noise_type='diagonal' needs a diagonal G(y0, t0) of shape ({d}, {d}), "
                             f"got shape {G0.shape}" + ("" if m != d else " with nonzero off-diagonal entries"))
    if method in ("milstein", "srk15") and noise_type == "general":
        raise ValueError(f"method={method!r} needs scalar (m = 1), diagonal or additive noise; "
                         f"G(y0, t0) has shape {G0.shape} and is not diagonal (pass "
                         "noise_type='additive' if G does not depend on y, or use method='euler')")
    need_dz = method == "srk15"
    if dW is None:
        if dZ is not None:
            raise ValueError("dZ was given without dW: pass both, or neither")
        gen = increments(seed, index, N - 1, m, h, dZ=need_dz)
        dW, dZ = (gen if need_dz else (gen, None))
    else:
        dW = np.asarray(dW, dtype=np.float64)
        if dW.shape != (N - 1, m):
            raise ValueError(f"dW must have shape (len(tspan) - 1, m) = ({N - 1}, {m}), got {dW.shape}")
        if need_dz:
            if dZ is None:
                raise ValueError("method='srk15' needs dZ (the double integrals I_(1,0), shape "
                                 f"({N - 1}, {m})) together with dW; see eosdyn.sde.increments and "
                                 "coarsen_increments")
            dZ = np.asarray(dZ, dtype=np.float64)
            if dZ.shape != (N - 1, m):
                raise ValueError(f"dZ must have shape (len(tspan) - 1, m) = ({N - 1}, {m}), got {dZ.shape}")
    y = np.zeros((N, d))
    y[0] = y0
    if vector_diag and (method == "euler" or (method == "milstein" and noise_type == "additive")):
        for n in range(N - 1):
            tn = t[n]
            yn = y[n]
            y[n + 1] = yn + f(yn, tn) * h + G_vec(yn, tn) * dW[n]
        return y
    if method == "euler" or (method == "milstein" and noise_type == "additive"):
        for n in range(N - 1):
            tn = t[n]
            yn = y[n]
            y[n + 1] = yn + f(yn, tn) * h + G(yn, tn).dot(dW[n])
        return y
    if vector_diag:
        def bvec(yy, tt):
            return np.asarray(G_vec(yy, tt), dtype=np.float64)
    elif noise_type == "diagonal":
        def bvec(yy, tt):
            return np.diagonal(G(yy, tt))
    elif noise_type == "scalar":
        def bvec(yy, tt):
            return G(yy, tt)[:, 0]
    sh = np.sqrt(h)
    if method == "milstein":
        for n in range(N - 1):
            tn = t[n]
            yn = y[n]
            a = f(yn, tn)
            b = bvec(yn, tn)
            dw = dW[n]
            yb = yn + a * h + b * sh
            y[n + 1] = yn + a * h + b * dw + (bvec(yb, tn) - b) * (dw * dw - h) / (2.0 * sh)
        return y
    # srk15
    if noise_type == "additive":
        if vector_diag:
            def mul(gm, v):
                return gm * v
        else:
            def mul(gm, v):
                return gm.dot(v)
        g_t = np.asarray(G(y0, t[0]), dtype=np.float64)
        for n in range(N - 1):
            tn = t[n]
            yn = y[n]
            zeta = dZ[n] / h
            g_th = np.asarray(G(yn, tn + h), dtype=np.float64)
            a1 = f(yn, tn)
            H2 = yn + 0.75 * a1 * h + 1.5 * mul(g_th, zeta)
            a2 = f(H2, tn + 0.75 * h)
            y[n + 1] = yn + h * (a1 / 3.0 + 2.0 * a2 / 3.0) + mul(g_th, dW[n] - zeta) + mul(g_t, zeta)
            g_t = g_th
        return y
    for n in range(N - 1):
        tn = t[n]
        yn = y[n]
        dw = dW[n]
        dz = dZ[n]
        zeta = dz / h
        a1 = f(yn, tn)
        b = bvec(yn, tn)
        a2 = f(yn + 0.75 * a1 * h + 1.5 * b * zeta, tn + 0.75 * h)
        base = yn + a1 * h
        up = base + b * sh
        um = base - b * sh
        t1 = tn + h
        bp = bvec(up, t1)
        bm = bvec(um, t1)
        bpp = bvec(up + bp * sh, t1)
        bpm = bvec(up - bp * sh, t1)
        y[n + 1] = (yn + h * (a1 / 3.0 + 2.0 * a2 / 3.0) + b * dw
                    + (bp - bm) * (dw * dw - h) / (4.0 * sh)
                    + (bp - 2.0 * b + bm) * (dw * h - dz) / (2.0 * h)
                    + (bpp - bpm - bp + bm) * (dw * dw / 3.0 - h) * dw / (4.0 * h))
    return y
