"""Ensembles of the EoS SDE and of the noisy GD map, on any eosdyn loss.

The equation (time t counted in GD steps, so one step of the map is dt = 1)::

    dθ = −η ∇L(θ) dt + √η · B(θ) dW,       Σ(θ) = B(θ)B(θ)ᵀ  (the noise model),

i.e. dθ = −η∇L dt + √(ηΣ) dW. In "physical" time τ = η t it reads
dθ = −∇L dτ + B(θ) dW_τ. The noisy GD map

    θ_{k+1} = θ_k − η ∇L(θ_k) + √η · B(θ_k) ξ_k,    ξ_k ~ N(0, I_m),

is exactly its Euler–Maruyama discretisation with dt = 1: :func:`noisy_gd` is
``simulate(..., dt=1, method="euler")`` and shares its random streams. The map's
k-th iterate is matched with the SDE at t = k (τ = k·η); see
:func:`compare_sde_and_map`.

Per-mode stationary variances on a quadratic with eigenvalue λ and Σ = σ²I
(derivation: for x' = (1 − hηλ)x + √(hη)σξ, v = hησ²/(1 − (1 − hηλ)²)):

- SDE:            σ² / (2λ)
- EM with step h: σ² / (λ (2 − h η λ));   h = 1 is the noisy GD map: σ²/(λ(2 − ηλ)).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._rng import stream
from .._validate import finite_matrix, nonneg_int, positive
from ..losses.base import Loss
from ..losses import quadratic as _quad
from ..losses.quadratic import Quadratic
from ..sim.results import EnsembleResult, Trajectory
from . import kernels as K
from .finite_sum import LeastSquares
from .noise import HESS, MB, USER_COV, USER_DIAG, USER_MAT, NoiseModel, CallableNoise

METHODS = {
    "euler": "euler", "em": "euler", "euler-maruyama": "euler", "euler_maruyama": "euler",
    "itoEuler": "euler",
    "milstein": "milstein",
    "srk15": "srk15", "srk": "srk15",
}
_METHOD_CODE = {"euler": K.EULER, "milstein": K.MILSTEIN, "srk15": K.SRK15}
MAX_BLOCKS = 256


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

    def trajectory(self, i: int) -> Trajectory:
        """Trajectory ``i`` as a :class:`~eosdyn.sim.results.Trajectory`."""
        i = int(i)
        return Trajectory(
            step=self.step.copy(), loss=self.loss[i].copy(),
            theta=None if self.theta is None else self.theta[i].copy(),
            grad_norm=self.extra["grad_norm"][i].copy() if "grad_norm" in self.extra else None,
            sharpness=None if self.sharpness is None else self.sharpness[i].copy(),
            diverged=bool(self.diverged[i]), diverged_at=int(self.diverged_at[i]),
            params=dict(self.params, trajectory=i))


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


def _prepare(loss, lr, noise, theta0s, dt, steps, method, record_every, seed):
    _check_loss(loss)
    if not isinstance(noise, NoiseModel):
        raise TypeError(f"noise must be an eosdyn.sde noise model (Isotropic, ConstantMatrix, "
                        f"HessianAligned, CallableNoise, MinibatchNoise), got {type(noise).__name__}")
    lr = positive("lr", lr)
    dt = positive("dt", dt)
    steps = nonneg_int("steps", steps)
    seed = nonneg_int("seed", seed)
    if seed >= 2 ** 63:
        raise ValueError(f"seed must be in [0, 2**63), got {seed}")
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


def simulate(loss, lr, noise, theta0s, dt, steps, method="euler", record_every=None, seed=0,
             record_paths=False, *, moments="auto", record_sharpness=None, record_grad_norm=True,
             blowup=1e100) -> SDEResult:
    """Integrate dθ = −η∇L(θ) dt + √η·B(θ) dW for an ensemble of initial points.

    Parameters
    ----------
    loss : eosdyn Loss
        Any loss; ``Quadratic`` and :class:`~eosdyn.sde.LeastSquares` run in a
        disk-cached kernel with an allocation-free linear drift, others in a kernel
        compiled once per process.
    lr : float > 0
        η.
    noise : noise model
        Σ(θ) = B(θ)Bᵀ (:mod:`eosdyn.sde.noise`).
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
    record_paths : bool
        Also keep θ at every record, (n, R, d).
    moments : {"auto", "cov", "var", "none"}
        Per-record ensemble moments; "auto" = "cov" for d <= 32, else "var".
    record_sharpness : bool, optional
        λ_max(∇²L) per record (default: for d <= 64); constant for the built-in
        quadratic losses.
    blowup : float
        A trajectory is declared diverged (and stopped) when some |θᵢ| ≥ blowup or
        θ or the loss at a record is non-finite; its later records are NaN and its
        ``final_theta`` is its last state that passed the check.

    Returns
    -------
    SDEResult (an EnsembleResult)
    """
    lr, dt, steps, seed, method, thetas, record_every, spec = _prepare(
        loss, lr, noise, theta0s, dt, steps, method, record_every, seed)
    blowup = positive("blowup", blowup)
    moments = {"auto": "cov" if loss.dim <= 32 else "var", "cov": "cov", "var": "var",
               "none": "none"}.get(moments) if isinstance(moments, str) else None
    if moments is None:
        raise ValueError("moments must be one of ['auto', 'cov', 'none', 'var']")
    if record_sharpness is None:
        record_sharpness = loss.dim <= 64
    n, d = thetas.shape
    R = steps // record_every + 1
    rec_steps = np.arange(R, dtype=np.int64) * record_every
    lin = _linear_data(loss)
    need_generic = lin is None or spec.user_fn is not None or spec.pex_fn is not None

    fcfg = np.zeros(K.N_FCFG)
    fcfg[K.F_LR] = lr
    fcfg[K.F_DT] = dt
    fcfg[K.F_SDT] = np.sqrt(dt)
    fcfg[K.F_SQLR] = np.sqrt(lr)
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
    icfg[K.I_MOM] = {"none": 0, "var": 1, "cov": 2}[moments]
    icfg[K.I_MB_EIGH] = int(spec.mb_eigh)
    icfg[K.I_PATHS] = int(bool(record_paths))
    icfg[K.I_SHARP] = int(bool(record_sharpness) and lin is None)

    nb = min(n, MAX_BLOCKS)
    bounds = (np.arange(nb + 1, dtype=np.int64) * n) // nb
    out_loss = np.full((n, R), np.nan)
    out_gn = np.full((n, R) if record_grad_norm else (0, 0), np.nan)
    out_sharp = np.full((n, R) if icfg[K.I_SHARP] else (0, 0), np.nan)
    out_paths = np.full((n, R, d) if record_paths else (0, 0, 0), np.nan)
    out_final = np.empty((n, d))
    out_div = np.full(n, -1, np.int64)
    out_status = np.zeros(n, np.int64)
    out_sval = np.zeros(n)
    mom = icfg[K.I_MOM]
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
    mbX, mby = (spec.mb_params if builtin_mb else (e2, e1))
    c = np.ascontiguousarray
    arrays = tuple(c(a, dtype=np.float64) for a in (lin_H, lin_c, lin_b, vX, vy, mbX, mby))
    mbp = tuple(c(a) for a in spec.mb_params)
    outs = (out_loss, out_gn, out_sharp, out_paths, out_final, out_div, out_status, out_sval,
            mom_sum, mom_sq, mom_cnt)
    additive = spec.additive
    sel = (1 if (method == "euler" or (method == "milstein" and additive)) else None,
           1 if (method == "milstein" and not additive) else None,
           1 if method == "srk15" else None,
           None if additive else 1)
    common = (*arrays, c(spec.mat, dtype=np.float64), c(spec.vec, dtype=np.float64), fcfg, icfg,
              rec_steps, thetas, bounds, *outs)
    if need_generic:
        gen = lin is None
        kernel = K.generic_kernel(
            loss.value_fn if gen else None, loss.grad_into_fn if gen else None,
            loss.hess_fn if (gen and (spec.kind == HESS or record_sharpness)) else None,
            spec.pex_fn,
            spec.user_fn if spec.kind == USER_MAT else None,
            spec.user_fn if spec.kind == USER_DIAG else None,
            spec.user_fn if spec.kind == USER_COV else None)
        kernel(*sel, lp, mbp, *common)
    else:
        K.kernel_builtin(*sel, *common)

    bad2 = np.flatnonzero(out_status == 2)
    if bad2.size:
        i = int(bad2[0])
        raise ValueError(f"{noise!r}: Σ(θ) is not positive semidefinite (psd='raise') in trajectory {i} "
                         f"at step {int(out_div[i])}: λ_min = {out_sval[i]:.3g}")
    bad3 = np.flatnonzero(out_status == 3)
    if bad3.size:
        i = int(bad3[0])
        raise ValueError(f"{noise!r}: the noise function returned an array of the wrong shape "
                         f"(expected m = {spec.m}) in trajectory {i} at step {int(out_div[i])}")

    diverged = out_status == 1
    sharp = None
    if record_sharpness:
        if lin is None:
            sharp = out_sharp
        else:
            lam = float(np.linalg.eigvalsh(lin[2])[-1])
            sharp = np.where(np.isfinite(out_loss), lam, np.nan)
    theta_mean = theta_var = theta_cov = n_alive = None
    if mom:
        cnt = mom_cnt.sum(axis=0)
        S1 = mom_sum.sum(axis=0)
        S2 = mom_sq.sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            theta_mean = S1 / cnt[:, None]
            den = (cnt - 1.0)
            if mom == 2:
                theta_cov = (S2 - cnt[:, None, None] * theta_mean[:, :, None] * theta_mean[:, None, :]) \
                    / den[:, None, None]
                theta_var = np.diagonal(theta_cov, axis1=1, axis2=2).copy()
            else:
                theta_var = (S2[:, :, 0] - cnt[:, None] * theta_mean ** 2) / den[:, None]
        n_alive = cnt.astype(np.int64)
    params = {"equation": "dtheta = -lr*grad L dt + sqrt(lr)*B dW (t in GD steps)",
              "loss": type(loss).__name__, "dim": d, "noise": repr(noise), "noise_dim": spec.m,
              "lr": lr, "dt": dt, "steps": steps, "method": method, "record_every": record_every,
              "seed": seed, "n": n, "blowup": blowup}
    extra = {"grad_norm": out_gn} if record_grad_norm else {}
    return SDEResult(step=rec_steps, final_theta=out_final, loss=out_loss, sharpness=sharp,
                     diverged=diverged, diverged_at=out_div, lr=None,
                     theta=out_paths if record_paths else None, extra=extra, params=params,
                     time=rec_steps * dt, theta_mean=theta_mean, theta_var=theta_var,
                     theta_cov=theta_cov, n_alive=n_alive)


def noisy_gd(loss, lr, noise, theta0s, steps, record_every=None, seed=0, record_paths=False,
             **kwargs) -> SDEResult:
    """The noisy GD map θ ← θ − η∇L(θ) + √η·B(θ)ξ (ξ ~ N(0, I_m)) over an ensemble.

    Identical (bit for bit, same streams) to ``simulate(loss, lr, noise, theta0s,
    dt=1.0, steps, method="euler", ...)``: the map is the Euler–Maruyama scheme of
    the SDE with dt = 1. With ``Isotropic(σ)`` the added noise is √η·σ·ξ and the
    stationary variance of a mode with curvature λ (0 < ηλ < 2) is σ²/(λ(2 − ηλ)).
    """
    return simulate(loss, lr, noise, theta0s, 1.0, steps, method="euler", record_every=record_every,
                    seed=seed, record_paths=record_paths, **kwargs)


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
                        record_every=None, seed=0, sde_seed=None, **kwargs) -> SDEMapComparison:
    """Run noisy GD for ``steps`` iterations and the SDE to the matched time t = steps.

    The SDE uses step ``dt`` (in GD steps; 1/dt must be an integer) and ``method``
    (falls back to "euler" for general state-dependent noise); the map records
    every ``record_every`` iterations and the SDE at the same times t = k
    (physical time τ = k·η). ``sde_seed`` defaults to ``seed + 1`` (independent noise).
    """
    dt = positive("dt", dt)
    per = 1.0 / dt
    if abs(per - round(per)) > 1e-9 * per or round(per) < 1:
        raise ValueError(f"dt must be 1/integer so that GD steps map onto SDE steps, got {dt!r}")
    per = int(round(per))
    steps = nonneg_int("steps", steps)
    if record_every is None:
        record_every = max(1, steps // 100)
    record_every = nonneg_int("record_every", record_every, minimum=1)
    gd = noisy_gd(loss, lr, noise, theta0s, steps, record_every=record_every, seed=seed, **kwargs)
    if not isinstance(noise, NoiseModel):
        raise TypeError(f"noise must be an eosdyn.sde noise model, got {type(noise).__name__}")
    _check_loss(loss)
    th = finite_matrix("theta0s", theta0s, loss.dim)
    spec = noise.spec(loss, th[0]) if isinstance(noise, CallableNoise) else noise.spec(loss)
    if resolve_method(method) != "euler" and not (spec.additive or spec.diagonal):
        method = "euler"
    sde = simulate(loss, lr, noise, theta0s, dt, steps * per, method=method,
                   record_every=record_every * per, seed=seed + 1 if sde_seed is None else sde_seed,
                   **kwargs)
    k = gd.step.copy()
    return SDEMapComparison(map=gd, sde=sde, k=k, tau=k * float(lr))
