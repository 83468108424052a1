"""Ensembles of the EoS SDE and of the noisy GD map, on any eosdyn loss.

The equation (time t counted in GD steps, so one step of the map is dt = 1), in one of two
**conventions** (:mod:`eosdyn.sde.noise`; keyword ``convention``)::

    "sgd" (default):  dθ = −η ∇L(θ) dt + η · B(θ) dW      per-step noise covariance η²Σ
    "proposal":       dθ = −η ∇L(θ) dt + √η · B(θ) dW     per-step noise covariance ηΣ

with Σ(θ) = B(θ)B(θ)ᵀ the noise model. ``"sgd"`` is Li, Malladi & Arora's SDE of SGD
(arXiv 2102.12470), dX = −∇L dτ + √(ηΣ) dW_τ in physical time τ = ηt: one SGD step adds
η²Σ_B, so Σ = Σ_B (``MinibatchNoise(data, B)``) is SGD's noise. ``"proposal"`` is the form
the EoS-Ada proposal wrote, dθ = −η∇L dt + √(ηΣ) dW with t in steps (in τ = ηt:
dθ = −∇L dτ + B dW_τ); with Σ = Σ_B it adds ηΣ_B per step, 1/η times SGD's. It was this
module's only form before the keyword (the stepping core's ``eosdyn.simulate``/
``ensemble(..., noise=..., convention=...)`` takes the same two). Write c = η ("sgd") or
√η ("proposal") for the coefficient of B dW. The noisy GD map

    θ_{k+1} = θ_k − η ∇L(θ_k) + c · B(θ_k) ξ_k,    ξ_k ~ N(0, I_m),

is exactly the SDE's Euler–Maruyama discretisation with dt = 1: :func:`noisy_gd` is
``simulate(..., dt=1, method="euler")`` and shares its random streams. The map's
k-th iterate is matched with the SDE at t = k (τ = k·η); see
:func:`compare_sde_and_map`.

Per-mode stationary variances on a quadratic with eigenvalue λ and Σ = σ²I
(derivation: for x' = (1 − hηλ)x + √h·c·σξ, v = hc²σ²/(1 − (1 − hηλ)²)):

- SDE:            c²σ² / (2ηλ)           ("sgd": ησ²/(2λ);  "proposal": σ²/(2λ))
- EM with step h: c²σ² / (ηλ (2 − h η λ)); h = 1 is the noisy GD map: σ²/(λ(2 − ηλ)) under
  "proposal", ησ²/(λ(2 − ηλ)) under "sgd" (:func:`eosdyn.analysis.stationary_covariance`).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from .._rng import rng_init_rows, stream
from .._validate import finite_matrix, nonneg_int, positive, seed_value, step_count
from ..engine.run import CallPlan, RunInterrupted, blank_failed_records, check_memory, moment_blocks
from ..engine.threads import threads_for
from ..losses import quadratic as _quad
from ..losses.base import Loss
from ..losses.finite_sum import LeastSquares
from ..losses.quadratic import Quadratic
from ..sim.discrete import default_tracking
from ..sim.results import EnsembleResult
from . import kernels as K
from .noise import HESS, MB, USER_COV, USER_DIAG, USER_MAT, CallableNoise, NoiseModel, noise_convention, scaled_spec

METHODS = {
    "euler": "euler", "em": "euler", "euler-maruyama": "euler", "euler_maruyama": "euler",
    "itoEuler": "euler",
    "milstein": "milstein",
    "srk15": "srk15", "srk": "srk15",
}
_METHOD_CODE = {"euler": K.EULER, "milstein": K.MILSTEIN, "srk15": K.SRK15}


def resolve_method(method) -> str:
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS)}, got {method!r}")
    return METHODS[method]


def increments(seed, index, steps, m, dt, *, dZ=False):
    """Regenerate the Brownian increments trajectory ``index`` of a run seeded ``seed`` used.

    Returns ``dW`` of shape (steps, m) — row k−1 is the increment of step k, exactly
    ``sqrt(dt) * xi[:m]`` where ``xi`` is the k-th ``rng_fill_normal`` fill of the
    stream (seed, index) — or, with ``dZ=True`` (the srk15 draw order, 2m normals per
    step), the pair ``(dW, dZ)`` with ``dZ = 0.5·dt^{3/2}·(xi[:m] + xi[m:]/√3)``, the
    double integral I_(1,0) = ∫(W_s − W_t) ds over the step. Values are bit-identical
    to those the kernels use, so a path of :func:`simulate` can be re-run by
    :func:`integrate` (or sdeint) on the same noise.
    """
    steps = nonneg_int("steps", steps)
    m = nonneg_int("m", m, minimum=1)
    dt = positive("dt", dt)
    s = stream(seed, index)
    per = 2 * m if dZ else m
    buf = np.empty((steps, per))
    K.fill_rows(s, buf)
    sdt = np.sqrt(dt)
    dW = sdt * buf[:, :m]
    if not dZ:
        return dW
    v = 0.5 * sdt * (buf[:, :m] + buf[:, m:] * K.INV_SQRT3)
    return dW, dt * v


@dataclass
class SDEResult(EnsembleResult):
    """An :class:`~eosdyn.sim.results.EnsembleResult` with per-record ensemble moments.

    Extra fields (R records): ``time`` (R,) = step·dt (in GD steps); ``theta_mean``
    (R, d) and ``theta_var`` (R, d): mean and unbiased variance of θ over the
    trajectories alive at that record; ``theta_cov`` (R, d, d) (when moments="cov");
    ``n_alive`` (R,). ``extra["grad_norm"]`` (n, R) holds ‖∇L‖ per record. Memory is
    O(n·R + R·d²), independent of the number of steps unless ``record_paths=True``
    (then ``theta`` is (n, R, d)).
    """

    time: np.ndarray | None = None
    theta_mean: np.ndarray | None = None
    theta_var: np.ndarray | None = None
    theta_cov: np.ndarray | None = None
    n_alive: np.ndarray | None = None

    def to_xarray(self):
        ds = super().to_xarray()
        if self.time is not None:
            ds = ds.assign_coords(time=("step", self.time))
        if self.theta_mean is not None:
            ds["theta_mean"] = (("step", "dim"), self.theta_mean)
            ds["theta_var"] = (("step", "dim"), self.theta_var)
            ds["n_alive"] = ("step", self.n_alive)
        if self.theta_cov is not None:
            ds["theta_cov"] = (("step", "dim", "dim2"), self.theta_cov)
        return ds


def ensemble_moments(mom_sum, mom_sq, mom_cnt, mom):
    """(mean, variance, covariance, n alive) per record from per-block sums (None where off).

    The kernels accumulate the sums per block of trajectories (a partition fixed by n), so
    the totals — summed here over the blocks in order — do not depend on the thread count.
    """
    if not mom:
        return None, None, None, None
    cnt = mom_cnt.sum(axis=0)
    S1 = mom_sum.sum(axis=0)
    S2 = mom_sq.sum(axis=0)
    theta_cov = None
    with np.errstate(invalid="ignore", divide="ignore"):
        theta_mean = S1 / cnt[:, None]
        den = (cnt - 1.0)
        if mom == 2:
            theta_cov = (S2 - cnt[:, None, None] * theta_mean[:, :, None] * theta_mean[:, None, :]) \
                / den[:, None, None]
            theta_var = np.diagonal(theta_cov, axis1=1, axis2=2).copy()
        else:
            theta_var = (S2[:, :, 0] - cnt[:, None] * theta_mean ** 2) / den[:, None]
    return theta_mean, theta_var, theta_cov, cnt.astype(np.int64)


def _moments_code(moments, d):
    code = {"auto": 2 if d <= 32 else 1, "cov": 2, "var": 1, "none": 0}.get(moments) \
        if isinstance(moments, str) else None
    if code is None:
        raise ValueError(f"moments must be one of ['auto', 'cov', 'none', 'var'], got {moments!r}")
    return code


def _noise_failure(noise, status, fail_at, fail_value, m):
    """Raise as the SDE engine does when a noise matrix could not be formed."""
    from ..engine.core import BAD_NOISE, NOT_PSD

    bad = np.flatnonzero(status == NOT_PSD)
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"{noise!r}: Σ(θ) is not positive semidefinite (psd='raise') in trajectory {i} "
                         f"at step {int(fail_at[i])}: λ_min = {fail_value[i]:.3g}")
    bad = np.flatnonzero(status == BAD_NOISE)
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"{noise!r}: the noise function returned an array of the wrong shape "
                         f"(expected m = {m}) in trajectory {i} at step {int(fail_at[i])}")


def _required(fname, name, value):
    if value is _UNSET or value is None:
        raise TypeError(f"{fname}() missing required argument {name!r}")
    return value


def _check_loss(loss):
    if not isinstance(loss, Loss):
        raise TypeError(f"loss must be an eosdyn Loss, got {type(loss).__name__}")


def _linear_data(loss):
    """(lkind, lp, H, c, b) for the built-in linear-gradient losses, else None."""
    if isinstance(loss, Quadratic) and loss.grad_fn is _quad._grad and loss.value_fn is _quad._value:
        d = loss.dim
        return K.LK_QUAD, (loss.H, loss.center), loss.H, loss.center, np.zeros(d)
    if isinstance(loss, LeastSquares):
        return K.LK_LSQ, (loss.X, loss.y), loss.H, np.zeros(loss.dim), loss.b
    return None


def step_size(rule) -> float:
    """η of the SDE's drift −η∇L from a step size or a GD rule (the drift is gradient flow's)."""
    from ..rules import GD, Rule

    if isinstance(rule, GD):
        return rule.lr
    if isinstance(rule, Rule):
        raise TypeError(f"the SDE's drift is −η∇L (gradient flow): pass a step size η or eosdyn.rules.GD(η), "
                        f"not {type(rule).__name__}; to add noise to another rule, use "
                        "eosdyn.simulate/ensemble(..., noise=...)")
    return positive("lr", rule)


_RENAMED = {"lr": "rule", "record_paths": "record_theta", "record_sharpness": "track_sharpness"}


def renamed_keywords(fname, kwargs, given):
    """Fold the deprecated keyword names of the SDE functions into the current ones, with a warning."""
    for old, value in kwargs.items():
        if old not in _RENAMED:
            raise TypeError(f"{fname}() got an unexpected keyword argument {old!r}")
        new = _RENAMED[old]
        warnings.warn(f"{fname}({old}=...) is deprecated and will be removed in the next release; use "
                      f"{new}=... (the name eosdyn.simulate and eosdyn.ensemble use)", DeprecationWarning,
                      stacklevel=3)
        if given.get(new, _UNSET) is not _UNSET:
            raise TypeError(f"{fname}() got both {old!r} and its new name {new!r}")
        given[new] = value
    return given


_UNSET = object()


_EQUATION = {"sgd": "dtheta = -lr*grad L dt + lr*B dW (t in GD steps; convention 'sgd': per-step cov lr^2*Sigma)",
             "proposal": "dtheta = -lr*grad L dt + sqrt(lr)*B dW (t in GD steps; convention 'proposal': per-step "
                         "cov lr*Sigma)"}
_MAP_EQUATION = {"sgd": "theta <- theta - lr*grad L + lr*B xi (noisy GD; EM of the SDE with dt = 1; convention 'sgd')",
                 "proposal": "theta <- theta - lr*grad L + sqrt(lr)*B xi (noisy GD; EM of the SDE with dt = 1; "
                             "convention 'proposal')"}


def _convention_spec(spec, lr, convention):
    """(spec, c): the spec the kernels run and the coefficient c of B dW (module docstring).

    ``"proposal"``: the spec as it is and c = √η. ``"sgd"``: Σ → ηΣ in the spec and c = √η (so
    the stepping core's "proposal" path, which multiplies by √η, runs it too), or, for a user function
    that cannot be rescaled, the spec as it is and c = η."""
    if convention == "proposal":
        return spec, np.sqrt(lr)
    scaled = scaled_spec(spec, lr)
    if scaled is None:
        return spec, lr
    return scaled, np.sqrt(lr)


def _prepare(loss, lr, noise, theta0s, dt, steps, method, record_every, seed):
    _check_loss(loss)
    if not isinstance(noise, NoiseModel):
        raise TypeError(f"noise must be an eosdyn.sde noise model (Isotropic, ConstantMatrix, "
                        f"HessianAligned, CallableNoise, MinibatchNoise), got {type(noise).__name__}")
    lr = step_size(lr)
    dt = positive("dt", dt)
    steps = step_count("steps", steps)
    seed = seed_value(seed)
    method = resolve_method(method)
    thetas = finite_matrix("theta0s", theta0s, loss.dim)
    if thetas.shape[0] == 0:
        raise ValueError("theta0s must hold at least one initial point (shape (n, d) with n >= 1)")
    if record_every is None:
        record_every = max(1, steps // 100)
    record_every = nonneg_int("record_every", record_every, minimum=1)
    if isinstance(noise, CallableNoise):
        spec = noise.spec(loss, thetas[0])
    else:
        spec = noise.spec(loss)
    if method != "euler" and not (spec.additive or spec.diagonal):
        raise ValueError(f"method={method!r} needs additive or diagonal noise; {noise!r} is a general "
                         "state-dependent noise (Σ(θ) not diagonal): use method='euler'")
    return lr, dt, steps, seed, method, thetas, record_every, spec


def simulate(loss, rule=_UNSET, noise=None, theta0s=None, dt=None, steps=None, method="euler", record_every=None,
             seed=0, record_theta=_UNSET, *, convention="sgd", moments="auto", track_sharpness=_UNSET,
             record_grad_norm=True, blowup=1e100, progress=None, **deprecated) -> SDEResult:
    """Integrate dθ = −η∇L(θ) dt + c·B(θ) dW (c = η, or √η) for an ensemble of initial points.

    Parameters
    ----------
    loss : eosdyn Loss
        Any loss, in a kernel generated for the loss (and noise) and cached on disk
        (:mod:`eosdyn.codegen`; closures and functions defined at a prompt fall back to a
        per-process compile); ``Quadratic`` and :class:`~eosdyn.losses.LeastSquares` run
        with an allocation-free linear drift.
    rule : float > 0 or eosdyn.rules.GD
        η (the drift is gradient flow's); formerly ``lr=`` (deprecated name).
    noise : noise model
        Σ(θ) = B(θ)Bᵀ (:mod:`eosdyn.sde.noise`).
    convention : {"sgd", "proposal"}
        How Σ enters (module docstring). ``"sgd"`` (default; Li, Malladi & Arora,
        arXiv 2102.12470): c = η, per-step noise covariance η²Σ, which is SGD's for
        Σ = Σ_B (``MinibatchNoise(data, B)``). ``"proposal"``: c = √η, per-step ηΣ, the
        EoS-Ada proposal's dθ = −η∇L dt + √(ηΣ) dW (t in steps) and this function's only form
        before the keyword: pass it to reproduce earlier results bit for bit. The two agree at
        η = 1; with Σ = Σ_B the proposal's adds 1/η times SGD's noise. Anything else raises
        ValueError naming ``convention`` and the valid values.
    theta0s : (n, d) array (or (d,) for one trajectory)
    dt : float > 0
        Time step, in GD steps (dt = 1 with ``method="euler"`` is the noisy GD map).
    steps : int
        Number of integration steps (final time steps·dt).
    method : {"euler", "milstein", "srk15"} (aliases "em", "itoEuler", "srk")
        - ``euler``: Euler–Maruyama, strong order 0.5 (1.0 for additive noise), weak 1.
        - ``milstein``: strong order 1.0 for diagonal noise (derivative-free
          Runge–Kutta form, Kloeden & Platen 1992 §11.1:
          θ' = θ + μh + βΔW + (β(Ῡ) − β)(ΔW² − h)/(2√h), Ῡ = θ + μh + β√h);
          equals Euler–Maruyama for additive noise.
        - ``srk15``: strong order 1.5 for additive noise (Rößler 2010, SRA1) and for
          diagonal noise (SRA1 drift stages + Kloeden–Platen §11.2 diffusion terms;
          see :func:`eosdyn.sde.integrate` for the tableau).

        General state-dependent noise (Hessian-aligned, minibatch, a matrix or
        covariance callable) supports ``euler`` only (ValueError otherwise).
    record_every : int, optional
        Record every k steps (records at steps 0, k, 2k, …); default steps//100.
    seed : int >= 0
        Trajectory i uses the stream (seed, i) (see :func:`increments`).
    record_theta : bool
        Also keep θ at every record, (n, R, d) (formerly ``record_paths``).
    moments : {"auto", "cov", "var", "none"}
        Per-record ensemble moments; "auto" = "cov" for d <= 32, else "var".
    track_sharpness : bool, optional
        λ_max(∇²L) per record (default: for d <= 64); constant for the built-in
        quadratic losses (formerly ``record_sharpness``).
    blowup : float
        A trajectory is declared diverged (and stopped) when some |θᵢ| ≥ blowup or
        θ or the loss at a record is non-finite, or computing it raises (status
        "exception"); its later records are NaN and its ``final_theta`` is its last state
        that passed the check. Every other path is computed.
    progress : callable(done, total), optional
        Called between the kernel calls a long run is cut into. Ctrl-C stops the run
        between calls and raises :class:`eosdyn.engine.RunInterrupted` whose ``partial``
        holds the records so far. The request's memory is estimated first, and a request
        that cannot fit is refused (ValueError with the number of bytes and what to change).

    Returns
    -------
    SDEResult (an EnsembleResult)
    """
    given = renamed_keywords("simulate", deprecated, {"rule": rule, "record_theta": record_theta,
                                                       "track_sharpness": track_sharpness})
    lr = _required("simulate", "rule", given["rule"])
    record_paths = False if given["record_theta"] is _UNSET else bool(given["record_theta"])
    record_sharpness = None if given["track_sharpness"] is _UNSET else given["track_sharpness"]
    for name, v in (("noise", noise), ("theta0s", theta0s), ("dt", dt), ("steps", steps)):
        _required("simulate", name, v)
    convention = noise_convention(convention)
    lr, dt, steps, seed, method, thetas, record_every, spec = _prepare(
        loss, lr, noise, theta0s, dt, steps, method, record_every, seed)
    spec, coef = _convention_spec(spec, lr, convention)
    blowup = positive("blowup", blowup)
    mom = _moments_code(moments, loss.dim)
    record_sharpness = default_tracking(record_sharpness, loss)
    n, d = thetas.shape
    R = steps // record_every + 1
    rec_steps = np.arange(R, dtype=np.int64) * record_every
    lin = _linear_data(loss)

    fcfg = np.zeros(K.N_FCFG)
    fcfg[K.F_LR] = lr
    fcfg[K.F_DT] = dt
    fcfg[K.F_SDT] = np.sqrt(dt)
    fcfg[K.F_SQLR] = coef   # the coefficient c of B dW (the kernels' name is the proposal's √η)
    fcfg[K.F_SCAL] = spec.scal
    fcfg[K.F_BLOWUP] = blowup
    icfg = np.zeros(K.N_ICFG, np.int64)
    icfg[K.I_METHOD] = _METHOD_CODE[method]
    icfg[K.I_NKIND] = spec.kind
    icfg[K.I_M] = spec.m
    icfg[K.I_STEPS] = steps
    icfg[K.I_SEED] = seed
    icfg[K.I_LKIND] = K.LK_GENERIC if lin is None else lin[0]
    icfg[K.I_PSD_RAISE] = int(spec.psd_raise)
    icfg[K.I_MOM] = mom
    icfg[K.I_MB_EIGH] = int(spec.mb_eigh)
    icfg[K.I_PATHS] = int(bool(record_paths))
    icfg[K.I_SHARP] = int(bool(record_sharpness) and lin is None)

    nb = moment_blocks(n, R, d, mom)
    bounds = (np.arange(nb + 1, dtype=np.int64) * n) // nb
    scalars = 1 + bool(record_grad_norm) + bool(icfg[K.I_SHARP])
    check_memory(8 * n * R * (scalars + d * bool(record_paths)) + (8 * nb * R * (d * (d if mom == 2 else 1) + d + 1)
                                                                   if mom else 0) + 8 * n * (2 * d + 8),
                 f"recording {R:,} records of {n:,} paths", "record less often (record_every), drop the paths "
                 "(record_theta=False), or use moments='var' or 'none'")
    out_loss = np.full((n, R), np.nan)
    out_gn = np.full((n, R) if record_grad_norm else (0, 0), np.nan)
    out_sharp = np.full((n, R) if icfg[K.I_SHARP] else (0, 0), np.nan)
    out_paths = np.full((n, R, d) if record_paths else (0, 0, 0), np.nan)
    out_final = np.empty((n, d))
    out_div = np.full(n, -1, np.int64)
    out_status = np.zeros(n, np.int64)
    out_sval = np.zeros(n)
    mom_sum = np.zeros((nb, R, d) if mom else (0, 0, 0))
    mom_sq = np.zeros((nb, R, d, d if mom == 2 else 1) if mom else (0, 0, 0, 0))
    mom_cnt = np.zeros((nb, R) if mom else (0, 0))
    e2, e1 = np.zeros((0, 0)), np.zeros(0)
    if lin is not None:
        lkind, lp, lin_H, lin_c, lin_b = lin
    else:
        lkind, lp, lin_H, lin_c, lin_b = K.LK_GENERIC, loss.params, e2, e1, e1
    vX, vy = (lp if lkind == K.LK_LSQ else (e2, e1))
    builtin_mb = spec.kind == MB and spec.pex_fn is None
    mbX, mby = (spec.mb_params[0], spec.mb_params[1]) if builtin_mb else (e2, e1)
    c = np.ascontiguousarray
    # the kernels take Hᵀ: they read H's columns as rows (kernels._linear_grad)
    arrays = tuple(c(a, dtype=np.float64) for a in (np.transpose(lin_H), lin_c, lin_b, vX, vy, mbX, mby))
    mbp = tuple(c(a) for a in spec.mb_params)
    outs = (out_loss, out_gn, out_sharp, out_paths, out_final, out_div, out_status, out_sval,
            mom_sum, mom_sq, mom_cnt)
    additive = spec.additive
    sel = (1 if (method == "euler" or (method == "milstein" and additive)) else None,
           1 if (method == "milstein" and not additive) else None,
           1 if method == "srk15" else None,
           None if additive else 1)
    rngs = np.zeros((n, 4), np.uint64)
    rng_init_rows(np.uint64(seed), np.uint64(0), rngs)
    data = (*arrays, c(spec.mat, dtype=np.float64), c(spec.vec, dtype=np.float64))
    gen = lin is None
    fns = (loss.value_fn if gen else None, loss.grad_into_fn if gen else None,
           loss.hess_fn if (gen and (spec.kind == HESS or record_sharpness)) else None,
           spec.pex_fn,
           spec.user_fn if spec.kind == USER_MAT else None,
           spec.user_fn if spec.kind == USER_DIAG else None,
           spec.user_fn if spec.kind == USER_COV else None)
    kernel = K.generic_kernel(sel, fns, f"the SDE kernel for ({type(loss).__name__}, {noise!r})")

    def call():
        kernel.blocks(nb, lp, mbp, data, fcfg, icfg, rec_steps, thetas, rngs, outs, bounds,
                      threads=threads_for(n * (icfg[K.I_K1] - icfg[K.I_K0])))
    # the steps 0 < k ≤ steps in kernel calls over k0 < k ≤ k1 (progress and Ctrl-C between them)
    plan = CallPlan(steps + 1, max(64, 2 ** 22 // max(1, n * d * (2 if method == 'srk15' else 1))), None, progress)
    for s0, s1 in plan:
        icfg[K.I_K0], icfg[K.I_K1] = s0, min(s1, steps)
        call()

    _noise_failure(noise, out_status, out_div, out_sval, spec.m)
    blank_failed_records((out_loss, out_gn, out_sharp, out_paths), rec_steps, out_status, out_div)
    diverged = out_status != 0
    sharp = None
    if record_sharpness:
        if lin is None:
            sharp = out_sharp
        else:
            lam = float(np.linalg.eigvalsh(lin[2])[-1])
            sharp = np.where(np.isfinite(out_loss), lam, np.nan)
    theta_mean, theta_var, theta_cov, n_alive = ensemble_moments(mom_sum, mom_sq, mom_cnt, mom)
    params = {"equation": _EQUATION[convention], "convention": convention,
              "loss": type(loss).__name__, "dim": d, "noise": repr(noise), "noise_dim": spec.m,
              "lr": lr, "dt": dt, "steps": steps, "method": method, "record_every": record_every,
              "seed": seed, "n": n, "blowup": blowup}
    extra = {"grad_norm": out_gn} if record_grad_norm else {}
    res = SDEResult(step=rec_steps, final_theta=out_final, loss=out_loss, sharpness=sharp,
                    diverged=diverged, diverged_at=out_div, lr=None, status=out_status,
                    theta=out_paths if record_paths else None, extra=extra, params=params,
                    time=rec_steps * dt, theta_mean=theta_mean, theta_var=theta_var,
                    theta_cov=theta_cov, n_alive=n_alive)
    if plan.interrupted:  # the records after the last finished call were never made: NaN already
        res.params["interrupted_after_step"] = min(plan.done, steps)
        raise RunInterrupted(f"sde.simulate interrupted after {min(plan.done, steps)} of {steps} steps; the "
                             "records so far are in exc.partial", res)
    return res


def noisy_gd(loss, rule=_UNSET, noise=None, theta0s=None, steps=None, record_every=None, seed=0,
             record_theta=_UNSET, *, convention="sgd", moments="auto", track_sharpness=_UNSET, record_grad_norm=True,
             blowup=1e100, progress=None, **deprecated) -> SDEResult:
    """The noisy GD map θ ← θ − η∇L(θ) + c·B(θ)ξ (ξ ~ N(0, I_m)) over an ensemble.

    ``convention="sgd"`` (default): c = η, per-step noise covariance η²Σ(θ), so with
    ``MinibatchNoise(data, B)`` (Σ = Σ_B) the noise has SGD's covariance η²Σ_B (Li, Malladi &
    Arora, arXiv 2102.12470). ``convention="proposal"``: c = √η, per-step ηΣ(θ), the EoS-Ada
    proposal's form, this function's only form before the keyword (pass it to reproduce
    earlier results bit for bit). See :mod:`eosdyn.sde.noise`; any other value raises ValueError.

    GD plus the stepping core's additive noise, run by the core
    (:func:`eosdyn.engine.run_map`); under ``"sgd"`` the core runs the model with Σ → ηΣ. The
    map is the Euler–Maruyama scheme of the SDE with dt = 1, and the result is identical, bit
    for bit and on the same streams, to ``simulate(loss, lr, noise, theta0s, dt=1.0, steps,
    method="euler", convention=...)``, divergence included, with one exception: a non-finite
    gradient at a finite state fails that state here, and the next one in the SDE integrator
    (which sees it as a non-finite state), so ``diverged_at`` is one step later there. A user
    noise function (:class:`CallableNoise`) under ``"sgd"`` cannot be rescaled for the core
    (which multiplies by √η); that case runs ``simulate(..., dt=1.0, method="euler")`` itself
    (the same map; ``params["runner"]`` says which ran). With ``Isotropic(σ)`` the added noise
    is c·σ·ξ and the stationary variance of a mode with curvature λ (0 < ηλ < 2) is
    c²σ²/(ηλ(2 − ηλ)): σ²/(λ(2 − ηλ)) under "proposal", ησ²/(λ(2 − ηλ)) under "sgd".

    Arguments as in :func:`simulate` (``rule`` a step size or a GD rule; ``record_theta``,
    ``track_sharpness``; the old names ``lr``, ``record_paths``, ``record_sharpness`` still
    work and warn). For another rule with noise, call ``eosdyn.ensemble(loss, rule,
    theta0s, steps, noise=...)``. ``progress`` as in :func:`eosdyn.simulate`.
    """
    from ..engine import run_map
    from ..rules import GD

    given = renamed_keywords("noisy_gd", deprecated, {"rule": rule, "record_theta": record_theta,
                                                       "track_sharpness": track_sharpness})
    lr = _required("noisy_gd", "rule", given["rule"])
    record_paths = False if given["record_theta"] is _UNSET else bool(given["record_theta"])
    record_sharpness = None if given["track_sharpness"] is _UNSET else given["track_sharpness"]
    for name, v in (("noise", noise), ("theta0s", theta0s), ("steps", steps)):
        _required("noisy_gd", name, v)
    convention = noise_convention(convention)
    lr, _, steps, seed, _, thetas, record_every, spec = _prepare(
        loss, lr, noise, theta0s, 1.0, steps, "euler", record_every, seed)
    blowup = positive("blowup", blowup)
    mom = _moments_code(moments, loss.dim)
    if convention == "sgd" and scaled_spec(spec, lr) is None:
        # a user function under "sgd": the core multiplies B by √η and cannot rescale B(θ); the SDE
        # kernel's Euler step with dt = 1 is the same map, with c = η
        res = simulate(loss, lr, noise, thetas, 1.0, steps, method="euler", record_every=record_every, seed=seed,
                       record_theta=record_paths, convention=convention, moments=moments,
                       track_sharpness=record_sharpness, record_grad_norm=record_grad_norm, blowup=blowup,
                       progress=progress)
        res.params.update(equation=_MAP_EQUATION[convention], runner="sde.simulate(dt=1, method='euler')")
        return res
    record_sharpness = default_tracking(record_sharpness, loss)
    lin = _linear_data(loss)
    records = ["loss"] + (["grad_norm"] if record_grad_norm else []) + (["theta"] if record_paths else []) + (
        ["sharpness"] if (record_sharpness and lin is None) else [])
    out = run_map(loss, GD(lr), thetas, steps, record_every=record_every, records=records, seed=seed,
                  noise=noise.plan(loss, thetas[0], cov_factor=lr if convention == "sgd" else 1.0,
                                    convention="proposal"), moments=mom,
                  blowup=blowup, kernel="trajectory", progress=progress)
    _noise_failure(noise, out.status, out.fail_at, out.fail_value, spec.m)
    rec = out.records
    sharp = None
    if record_sharpness:
        if lin is None:
            sharp = rec["sharpness"]
        else:  # a constant Hessian: λ_max once
            lam = float(np.linalg.eigvalsh(lin[2])[-1])
            sharp = np.where(np.isfinite(rec["loss"]), lam, np.nan)
    theta_mean, theta_var, theta_cov, n_alive = ensemble_moments(*(out.moments or (None, None, None)), mom)
    n, d = thetas.shape
    params = {"equation": _MAP_EQUATION[convention], "convention": convention, "runner": "engine.run_map",
              "loss": type(loss).__name__, "dim": d, "noise": repr(noise), "noise_dim": spec.m,
              "lr": lr, "dt": 1.0, "steps": steps, "method": "euler", "record_every": record_every,
              "seed": seed, "n": n, "blowup": blowup, "generated_kernel": out.generated}
    res = SDEResult(step=out.step, final_theta=out.thetas, loss=rec["loss"], sharpness=sharp,
                    diverged=out.status != 0, diverged_at=np.where(out.status != 0, out.fail_at, -1), lr=None,
                    theta=rec["theta"] if record_paths else None,
                    extra={"grad_norm": rec["grad_norm"]} if record_grad_norm else {}, params=params,
                    status=out.status, time=out.step * 1.0, theta_mean=theta_mean, theta_var=theta_var,
                    theta_cov=theta_cov, n_alive=n_alive)
    if out.interrupted:
        from ..engine import RunInterrupted

        raise RunInterrupted(f"noisy_gd interrupted after {out.steps_done - 1} of {steps} steps; the records "
                             "so far are in exc.partial", res)
    return res


@dataclass
class SDEMapComparison:
    """The noisy GD map and its SDE run side by side at matched times.

    ``map`` records iterate k at ``step`` k; ``sde`` records t = k (in GD steps),
    i.e. τ = k·η (``tau``). Both are :class:`SDEResult` with the same record times.
    """

    map: SDEResult
    sde: SDEResult
    k: np.ndarray
    tau: np.ndarray

    def loss_gap(self) -> np.ndarray:
        """E[L] of the map minus E[L] of the SDE at each matched record."""
        return self.map.mean("loss") - self.sde.mean("loss")

    def variance_ratio(self) -> np.ndarray:
        """Per-record, per-coordinate ratio Var_map(θ)/Var_SDE(θ)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.map.theta_var / self.sde.theta_var


def compare_sde_and_map(loss, lr, noise, theta0s, steps, *, dt=0.05, method="srk15",
                        record_every=None, seed=0, sde_seed=None, convention="sgd", **kwargs) -> SDEMapComparison:
    """Run noisy GD for ``steps`` iterations and the SDE to the matched time t = steps.

    The SDE uses step ``dt`` (in GD steps; 1/dt must be an integer) and ``method``
    (falls back to "euler" for general state-dependent noise); the map records
    every ``record_every`` iterations and the SDE at the same times t = k
    (physical time τ = k·η). ``sde_seed`` defaults to ``seed + 1`` (independent noise).
    Both run under the same ``convention`` (``"sgd"`` by default, or ``"proposal"``; see
    :func:`simulate`).
    """
    convention = noise_convention(convention)
    dt = positive("dt", dt)
    per = 1.0 / dt
    if abs(per - round(per)) > 1e-9 * per or round(per) < 1:
        raise ValueError(f"dt must be 1/integer so that GD steps map onto SDE steps, got {dt!r}")
    per = int(round(per))
    steps = nonneg_int("steps", steps)
    if record_every is None:
        record_every = max(1, steps // 100)
    record_every = nonneg_int("record_every", record_every, minimum=1)
    gd = noisy_gd(loss, lr, noise, theta0s, steps, record_every=record_every, seed=seed, convention=convention,
                  **kwargs)
    if not isinstance(noise, NoiseModel):
        raise TypeError(f"noise must be an eosdyn.sde noise model, got {type(noise).__name__}")
    _check_loss(loss)
    th = finite_matrix("theta0s", theta0s, loss.dim)
    spec = noise.spec(loss, th[0]) if isinstance(noise, CallableNoise) else noise.spec(loss)
    if resolve_method(method) != "euler" and not (spec.additive or spec.diagonal):
        method = "euler"
    sde = simulate(loss, lr, noise, theta0s, dt, steps * per, method=method,
                   record_every=record_every * per, seed=seed + 1 if sde_seed is None else sde_seed,
                   convention=convention, **kwargs)
    k = gd.step.copy()
    return SDEMapComparison(map=gd, sde=sde, k=k, tau=k * float(lr))
