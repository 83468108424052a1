"""Noise models Σ(θ) = B(θ)B(θ)ᵀ for the EoS SDE and the noisy GD map, and the two noise conventions.

A noise model gives Σ(θ); the **convention** says how Σ enters one step (time t counted in GD
steps, one step = dt = 1). Two are in use, and they differ by a factor η in the per-step
noise covariance:

=============  ================================================  ====================  ==========
convention     SDE (t in steps)                                  noise per step        SGD's Σ_B
=============  ================================================  ====================  ==========
``"sgd"``      dθ = −η∇L dt + η · B(θ) dW                        η²Σ(θ)                Σ = Σ_B
``"proposal"`` dθ = −η∇L dt + √η · B(θ) dW  (= √(ηΣ) dW)          ηΣ(θ)                 Σ = ηΣ_B
=============  ================================================  ====================  ==========

- ``"sgd"`` (the default of :func:`eosdyn.sde.simulate`, :func:`eosdyn.sde.noisy_gd`, the
  stepping core's ``eosdyn.simulate/ensemble(..., noise=...)`` and
  :func:`eosdyn.analysis.stationary_covariance`) is
  Li, Malladi & Arora's SDE of SGD (arXiv 2102.12470, "On the validity of modeling SGD with
  stochastic differential equations"): dX = −∇L dτ + √(ηΣ) dW_τ in physical time τ = kη,
  which written in step time t = τ/η is dθ = −η∇L dt + η Σ^{1/2} dW. One SGD step
  θ ← θ − ηĝ_B adds noise η(∇L − ĝ_B) of covariance η²Σ_B, which this convention matches
  with Σ = Σ_B = Cov(ĝ_B) (the SDE is an order-1 weak approximation of SGD: Li, Tai & E,
  JMLR 20(40), 2019; Li, Malladi & Arora test when it holds).
- ``"proposal"`` is the form the EoS-Ada proposal wrote, dθ = −η∇L dt + √(ηΣ) dW with t
  counted in steps: it adds ηΣ per step, a factor 1/η more than SGD's η²Σ_B when Σ = Σ_B
  (its stationary covariance near a minimum is then 1/η times SGD's). It was the only
  convention of :mod:`eosdyn.sde` and of the stepping core before the ``convention`` keyword
  (pass it to reproduce earlier results). SGD's noise in this convention is Σ = ηΣ_B
  (``MinibatchNoise(..., scale=η)``).

The two agree at η = 1. The stepping core (:mod:`eosdyn.engine.noise`) multiplies B(θ)ξ by η_t
or √η_t, the step size in force (so a rule whose step size changes, like EoS-Ada, scales its
noise with it). In :mod:`eosdyn.sde` ``"sgd"`` is applied as ``"proposal"`` with Σ multiplied by
η (B by √η) for the built-in models, so both conventions run the same kernels, and a run with
``"sgd"`` equals, bit for bit, a ``"proposal"`` run of the model with Σ → ηΣ where that
rescaling is exact in floating point (e.g. ``Isotropic(σ)`` vs ``Isotropic(σ·√η)``,
``MinibatchNoise(data, B)`` vs ``MinibatchNoise(data, B, scale=η)``). A user function
(:class:`CallableNoise`) cannot be rescaled in place: there the integrator multiplies B(θ)dW
by η instead of √η.

In the ``"proposal"`` form, the SDE engine integrates

    dθ = −η ∇L(θ) dt + √η · B(θ) dW,        B(θ) B(θ)ᵀ = Σ(θ),  dW ∈ R^m,

and the noisy GD map is θ ← θ − η∇L(θ) + √η · B(θ) ξ, ξ ~ N(0, I_m) (its
Euler–Maruyama discretisation with dt = 1); in the ``"sgd"`` form √η becomes η. Every
noise model below gives the kernels a *diffusion matrix* B(θ) of shape (d, m); what matters
for the law of the process is only Σ = BBᵀ (any B with the same Σ gives the same SDE in law).

=====================  ===========================  ======  =====================
model                  Σ(θ)                         m       B(θ) used
=====================  ===========================  ======  =====================
Isotropic(σ)           σ² I                         d       σ I
ConstantMatrix(B)      B Bᵀ                         B.shape[1]  B
ConstantCovariance(Σ)  Σ (PSD, checked)             d       V diag(√w) (eigh)
HessianAligned(c)      c · H(θ)                     d       V diag(√(c·w₊)) (eigh)
CallableNoise(fn)      fn's B Bᵀ / diag(b²) / Σ     m       fn(θ) (or its eigh root)
MinibatchNoise(data,B) s · Cov(ĝ_B)(θ), see below    n or d  centred gradients / eigh
=====================  ===========================  ======  =====================

Square roots of state-dependent covariances use ``numpy.linalg.eigh`` inside the
kernel: Σ = V diag(w) Vᵀ, B = V diag(√w). A Σ with a negative eigenvalue below
−1e-10·max|w| is *not PSD*: with ``psd="clip"`` negative eigenvalues are set to 0
(the projection onto the PSD cone in Frobenius norm); with ``psd="raise"`` the run
stops and raises ``ValueError`` naming the trajectory, step and λ_min.

Noise structure decides which integrators apply (see :func:`eosdyn.sde.simulate`):
constant models are *additive* (all methods; Milstein then equals Euler–Maruyama,
srk15 is Rößler's SRA1); ``CallableNoise(kind="diagonal")`` is *diagonal* (Milstein and
srk15 valid when bᵢ depends on θᵢ only); the others are general (Euler–Maruyama).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
from numba import njit
from numba.core.registry import CPUDispatcher

from .._validate import choice, finite_matrix, finite_vector, positive, symmetric
from ..engine.noise import DIAG, HESS, ISO, MAT, MB, PSD_RTOL, USER_COV, USER_DIAG, USER_MAT, sqrt_psd  # noqa: F401
from ..losses.finite_sum import FiniteSumLoss, LeastSquares, ls_per_example_grad, minibatch_factor
from ..losses.quadratic import Quadratic

#: the noise conventions (module docstring): "sgd" adds η²Σ per step, "proposal" ηΣ
CONVENTIONS = ("sgd", "proposal")
_CONVENTION_HELP = ("'sgd' (Li–Malladi–Arora: dθ = −η∇L dt + η·Σ^{1/2} dW with t in steps, per-step noise "
                    "covariance η²Σ; matches SGD with Σ = Σ_B) or 'proposal' (the EoS-Ada proposal's "
                    "dθ = −η∇L dt + √(ηΣ) dW, per-step ηΣ)")


def noise_convention(convention) -> str:
    """``convention`` checked: one of :data:`CONVENTIONS`, else ValueError naming it and the valid values."""
    if not isinstance(convention, str) or convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {list(CONVENTIONS)}: {_CONVENTION_HELP}; got {convention!r}")
    return convention


def step_variance_factor(convention, lr) -> float:
    """c² with per-step noise covariance c²·Σ: η² for ``"sgd"``, η for ``"proposal"``."""
    return lr * lr if noise_convention(convention) == "sgd" else lr


USER_KINDS = (USER_MAT, USER_DIAG, USER_COV)


@dataclass
class NoiseSpec:
    """What the kernels need to apply a noise model (built by ``NoiseModel.spec``)."""

    kind: int
    m: int
    additive: bool
    diagonal: bool
    mat: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    vec: np.ndarray = field(default_factory=lambda: np.zeros(0))
    scal: float = 0.0
    user_fn: object = None
    pex_fn: object = None
    mb_params: tuple = field(default_factory=lambda: (np.zeros((0, 0)), np.zeros(0)))
    mb_eigh: bool = False
    psd_raise: bool = False


def scaled_spec(spec: NoiseSpec, factor: float):
    """The spec of Σ → factor·Σ (B → √factor·B), or None for a user function (not rescalable in place).

    How :mod:`eosdyn.sde` applies the ``"sgd"`` convention (factor η) on kernels written in the
    ``"proposal"`` one. ``factor == 1`` returns ``spec`` itself.
    """
    if factor == 1.0:
        return spec
    if spec.kind in USER_KINDS:
        return None
    r = float(np.sqrt(factor))
    if spec.kind == ISO:
        return replace(spec, scal=spec.scal * r)
    if spec.kind == MAT:
        return replace(spec, mat=np.ascontiguousarray(spec.mat * r))
    if spec.kind == DIAG:
        return replace(spec, vec=np.ascontiguousarray(spec.vec * r))
    if spec.kind in (HESS, MB):   # scal multiplies Σ (B = √(scal·w) from eigh, or √(scal/n)·centred gradients)
        return replace(spec, scal=spec.scal * factor)
    raise AssertionError(f"unknown noise kind {spec.kind}")  # pragma: no cover


class NoiseModel:
    """Base class. Subclasses implement :meth:`spec` and :meth:`matrix`."""

    def spec(self, loss) -> NoiseSpec:  # pragma: no cover - abstract
        raise NotImplementedError

    def plan(self, loss, theta=None, *, cov_factor=1.0, convention="sgd"):
        """The stepping core's :class:`~eosdyn.engine.NoisePlan` of this model on ``loss``.

        The core adds c_t·B(θ)ξ per step, c_t = η_t under ``convention="sgd"`` and √η_t under
        ``"proposal"`` (:mod:`eosdyn.engine.noise`); ``cov_factor`` f makes it the plan of
        Σ → f·Σ (:func:`eosdyn.sde.noisy_gd` runs ``"sgd"`` as ``"proposal"`` with f = η, which
        keeps it bit-identical to the SDE integrator's Euler step). A user function cannot be
        rescaled: ``TypeError`` if f ≠ 1 for a :class:`CallableNoise`. An unknown convention
        raises ValueError.
        """
        convention = noise_convention(convention)
        from ..engine import NoisePlan

        sp = self.spec(loss, theta) if isinstance(self, CallableNoise) else self.spec(loss)
        scaled = scaled_spec(sp, float(cov_factor))
        if scaled is None:
            raise TypeError(f"{self!r}: the core cannot rescale a user noise function (cov_factor = {cov_factor!r})")
        sp = scaled
        builtin_mb = sp.kind == MB and sp.pex_fn is None
        e2, e1 = np.zeros((0, 0)), np.zeros(0)
        mbX, mby = (sp.mb_params[0], sp.mb_params[1]) if builtin_mb else (e2, e1)
        return NoisePlan(kind=sp.kind, m=sp.m, scal=sp.scal, mat=sp.mat, vec=sp.vec, mb_params=tuple(sp.mb_params),
                         mbX=mbX, mby=mby, pex_fn=sp.pex_fn,
                         umat_fn=sp.user_fn if sp.kind == USER_MAT else None,
                         udiag_fn=sp.user_fn if sp.kind == USER_DIAG else None,
                         ucov_fn=sp.user_fn if sp.kind == USER_COV else None,
                         state_dependent=not sp.additive and sp.kind != USER_DIAG, psd_raise=sp.psd_raise,
                         mb_eigh=sp.mb_eigh, convention=convention)

    def matrix(self, theta, loss=None) -> np.ndarray:
        """B(θ), shape (d, m), computed with the same numba code the kernels use."""
        raise NotImplementedError  # pragma: no cover

    def covariance(self, theta, loss=None) -> np.ndarray:
        """Σ(θ) = B(θ) B(θ)ᵀ."""
        B = self.matrix(theta, loss)
        return B @ B.T

    def dim(self, loss) -> int:
        """m, the number of Wiener processes."""
        return self.spec(loss).m


def _const_matrix_spec(B: np.ndarray) -> NoiseSpec:
    d, m = B.shape
    if d == m and np.count_nonzero(B - np.diag(np.diag(B))) == 0:
        return NoiseSpec(DIAG, m, True, True, vec=np.ascontiguousarray(np.diag(B)))
    return NoiseSpec(MAT, m, True, False, mat=np.ascontiguousarray(B))


class Isotropic(NoiseModel):
    """Σ = σ² I (m = d): B = σ I."""

    def __init__(self, sigma):
        self.sigma = positive("sigma", sigma, allow_zero=True)

    def spec(self, loss):
        return NoiseSpec(ISO, loss.dim, True, True, scal=self.sigma)

    def matrix(self, theta, loss=None):
        d = np.asarray(theta).reshape(-1).shape[0]
        return self.sigma * np.eye(d)

    def __repr__(self):
        return f"Isotropic(sigma={self.sigma:g})"


class ConstantMatrix(NoiseModel):
    """A constant diffusion matrix B of shape (d, m): Σ = B Bᵀ (additive noise)."""

    def __init__(self, B):
        B = np.array(B, dtype=np.float64)
        if B.ndim == 1:
            B = B[:, None]
        if B.ndim != 2:
            raise ValueError(f"B must be a (d, m) matrix, got shape {B.shape}")
        self.B = finite_matrix("B", B)

    def spec(self, loss):
        if self.B.shape[0] != loss.dim:
            raise ValueError(f"B must have shape (d, m) with d = loss.dim = {loss.dim}, "
                             f"got {self.B.shape}")
        return _const_matrix_spec(self.B)

    def matrix(self, theta, loss=None):
        return self.B.copy()

    def __repr__(self):
        return f"ConstantMatrix(shape={self.B.shape})"


class ConstantCovariance(ConstantMatrix):
    """A constant covariance Σ (d, d), symmetric PSD; B = V diag(√w) from its eigendecomposition.

    Raises ``ValueError`` if Σ has an eigenvalue below −1e-10·max|w| (not PSD);
    round-off negatives above that are clipped to 0.
    """

    def __init__(self, Sigma):
        S = symmetric("Sigma", Sigma)
        B, lam_min, bad = sqrt_psd(S, 1.0)
        if bad:
            raise ValueError(f"Sigma must be positive semidefinite, its smallest eigenvalue is {lam_min:.3g}")
        self.Sigma = S
        self.B = B

    def __repr__(self):
        return f"ConstantCovariance(d={self.Sigma.shape[0]})"


class HessianAligned(NoiseModel):
    """Σ(θ) = c · ∇²L(θ), the Hessian-aligned noise model (B from ``eigh`` at every step).

    ``psd="clip"`` (default) sets negative Hessian eigenvalues to 0 (the noise then
    lives on the positive-curvature subspace); ``psd="raise"`` stops the run with a
    ``ValueError`` when H(θ) has an eigenvalue below −1e-10·max|λ|. For a loss with a
    constant Hessian (Quadratic, LeastSquares) the square root is taken once and the
    noise is additive, so every integrator applies.
    """

    def __init__(self, c, psd="clip"):
        self.c = positive("c", c, allow_zero=True)
        self.psd = choice("psd", psd, ("clip", "raise"))

    def _constant_hessian(self, loss):
        if isinstance(loss, Quadratic):
            return loss.H
        if isinstance(loss, LeastSquares):
            return loss.H
        return None

    def spec(self, loss):
        H = self._constant_hessian(loss)
        if H is not None:
            B, lam_min, bad = sqrt_psd(np.ascontiguousarray(H), self.c)
            if bad and self.psd == "raise":
                raise ValueError(f"HessianAligned(psd='raise'): Σ = c·H is not PSD, "
                                 f"λ_min(H) = {lam_min:.3g}")
            return _const_matrix_spec(B)
        return NoiseSpec(HESS, loss.dim, False, False, scal=self.c, psd_raise=self.psd == "raise")

    def matrix(self, theta, loss=None):
        if loss is None:
            raise TypeError("HessianAligned.matrix needs the loss")
        B, lam_min, bad = sqrt_psd(np.ascontiguousarray(loss.hess(theta)), self.c)
        if bad and self.psd == "raise":
            raise ValueError(f"HessianAligned(psd='raise'): Σ = c·H(θ) is not PSD, λ_min(H) = {lam_min:.3g}")
        return B

    def __repr__(self):
        return f"HessianAligned(c={self.c:g}, psd={self.psd!r})"


def _as_numba(fn, name="fn"):
    if isinstance(fn, CPUDispatcher):
        return fn
    if not callable(fn):
        raise TypeError(f"{name} must be callable, got {type(fn).__name__}")
    return njit(fn)


class CallableNoise(NoiseModel):
    """A user noise model: ``fn(theta) -> array``, interpreted by ``kind``.

    - ``kind="matrix"``: fn returns B(θ) of shape (d, m), Σ = BBᵀ (general noise:
      Euler–Maruyama only);
    - ``kind="diagonal"``: fn returns b(θ) of shape (d,), B = diag(b) (diagonal
      noise: Milstein and srk15 are valid when bᵢ depends on θᵢ only);
    - ``kind="covariance"``: fn returns Σ(θ) (d, d); B from ``eigh`` (``psd`` as in
      :class:`HessianAligned`).

    The kernels call fn inside numba: pass a ``numba.njit`` function, or a plain
    Python function that numba can compile (it is wrapped with ``njit``; if
    compilation fails, :func:`simulate` raises ``TypeError``: there is no slow
    Python fallback). The ensemble kernel is generated with fn bound as a global and
    cached on disk (:mod:`eosdyn.codegen`) when fn can be imported by name from a
    module with a source file; a closure, or a function typed at a prompt or in a
    notebook, makes it compile once per process instead.
    :meth:`matrix` calls fn from Python (usable with :func:`integrate`).
    """

    def __init__(self, fn, kind="matrix", psd="clip"):
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__}")
        self.fn = fn
        self.kind = choice("kind", kind, ("matrix", "diagonal", "covariance"))
        self.psd = choice("psd", psd, ("clip", "raise"))
        self._jit = None

    def jitted(self):
        if self._jit is None:
            self._jit = _as_numba(self.fn)
        return self._jit

    def _call_checked(self, theta, d):
        try:
            out = np.asarray(self.jitted()(np.ascontiguousarray(theta, dtype=np.float64)), dtype=np.float64)
        except Exception as exc:  # numba typing errors and user errors alike
            raise TypeError(f"CallableNoise: fn must be numba-compilable (numba.njit) and accept "
                            f"theta of shape ({d},): {type(exc).__name__}: {str(exc)[:300]}") from None
        if self.kind == "matrix":
            if out.ndim != 2 or out.shape[0] != d:
                raise ValueError(f"CallableNoise(kind='matrix'): fn(theta) must return B of shape "
                                 f"(d, m) = ({d}, m), got {out.shape}")
        elif self.kind == "diagonal":
            if out.shape != (d,):
                raise ValueError(f"CallableNoise(kind='diagonal'): fn(theta) must return shape ({d},), "
                                 f"got {out.shape}")
        elif out.shape != (d, d):
            raise ValueError(f"CallableNoise(kind='covariance'): fn(theta) must return Σ of shape "
                             f"({d}, {d}), got {out.shape}")
        return out

    def spec(self, loss, theta=None):
        d = loss.dim
        theta = np.zeros(d) if theta is None else theta
        out = self._call_checked(theta, d)
        fn = self.jitted()
        if self.kind == "matrix":
            return NoiseSpec(USER_MAT, out.shape[1], False, False, user_fn=fn)
        if self.kind == "diagonal":
            return NoiseSpec(USER_DIAG, d, False, True, user_fn=fn)
        return NoiseSpec(USER_COV, d, False, False, user_fn=fn, psd_raise=self.psd == "raise")

    def matrix(self, theta, loss=None):
        theta = np.asarray(theta, dtype=np.float64).reshape(-1)
        d = theta.shape[0]
        out = np.asarray(self.fn(theta), dtype=np.float64)
        if self.kind == "matrix":
            if out.ndim != 2 or out.shape[0] != d:
                raise ValueError(f"CallableNoise(kind='matrix'): fn(theta) must return shape ({d}, m), got {out.shape}")
            return out
        if self.kind == "diagonal":
            if out.shape != (d,):
                raise ValueError(f"CallableNoise(kind='diagonal'): fn(theta) must return shape ({d},), got {out.shape}")
            return np.diag(out)
        if out.shape != (d, d):
            raise ValueError(f"CallableNoise(kind='covariance'): fn(theta) must return shape ({d}, {d}), "
                             f"got {out.shape}")
        B, lam_min, bad = sqrt_psd(np.ascontiguousarray(0.5 * (out + out.T)), 1.0)
        if bad and self.psd == "raise":
            raise ValueError(f"CallableNoise(psd='raise'): Σ(θ) is not PSD, λ_min = {lam_min:.3g}")
        return B

    def __repr__(self):
        return f"CallableNoise({getattr(self.fn, '__name__', 'fn')}, kind={self.kind!r})"


class MinibatchNoise(NoiseModel):
    """SGD noise of a finite-sum loss: Σ(θ) = s · Cov(ĝ_B)(θ), the minibatch-gradient covariance.

    With per-example gradients gᵢ(θ) = ∇ℓᵢ(θ), ḡ = ∇L, and
    C(θ) = (1/n) Σᵢ (gᵢ − ḡ)(gᵢ − ḡ)ᵀ:

    - ``replace=False`` (default; a batch is B distinct examples drawn uniformly):
      Cov(ĝ_B) = (n − B)/(B(n − 1)) · C(θ)  (finite-population correction);
    - ``replace=True`` (B i.i.d. uniform draws): Cov(ĝ_B) = C(θ)/B.

    ``scale`` s multiplies Σ. Normalisation: SGD θ ← θ − η ĝ_B adds noise of covariance
    η²·Cov(ĝ_B) per step. Under the ``"sgd"`` convention (the default of
    :func:`eosdyn.sde.simulate` and :func:`eosdyn.sde.noisy_gd`: per-step η²Σ) the default
    ``scale=1`` is SGD's Σ_B = Cov(ĝ_B). Under ``"proposal"`` (per-step ηΣ; also the stepping
    core's ``eosdyn.simulate/ensemble(..., noise=...)``) SGD needs ``scale=lr``; the two give
    the same bits (module docstring). Either way noisy GD with this noise reproduces SGD's
    first two moments exactly on least squares (whose noise covariance is quadratic in θ:
    the mean and covariance of the map follow SGD's recursion; tested, and its stationary
    covariance is :func:`eosdyn.analysis.sgd_stationary_covariance`).

    ``sqrt`` chooses B: ``"factor"`` uses B = √(f·s/n) · (G − ḡ)ᵀ (shape (d, n), m = n:
    exact, no eigendecomposition, n normals per step); ``"eigh"`` uses the eigh root
    of Σ (m = d); ``"auto"`` picks "factor" when n ≤ d, else "eigh".

    ``data`` is a :class:`~eosdyn.losses.FiniteSumLoss` (e.g.
    :class:`~eosdyn.losses.LeastSquares`); it may differ from the loss
    being simulated (the noise is that of ``data``).
    """

    def __init__(self, data, batch_size, replace=False, scale=1.0, sqrt="auto"):
        if not isinstance(data, FiniteSumLoss):
            raise TypeError("data must be a FiniteSumLoss (e.g. eosdyn.sde.LeastSquares) with "
                            f"per-example gradients, got {type(data).__name__}")
        self.data = data
        self.replace = bool(replace)
        self.factor = minibatch_factor(data.n_examples, batch_size, self.replace)
        self.batch_size = int(batch_size)
        self.scale = positive("scale", scale, allow_zero=True)
        self.sqrt = choice("sqrt", sqrt, ("auto", "factor", "eigh"))

    def _use_eigh(self):
        if self.sqrt == "auto":
            return self.data.n_examples > self.data.dim
        return self.sqrt == "eigh"

    def spec(self, loss):
        if loss.dim != self.data.dim:
            raise ValueError(f"MinibatchNoise data has dim {self.data.dim}, the loss has dim {loss.dim}")
        eig = self._use_eigh()
        m = self.data.dim if eig else self.data.n_examples
        builtin = isinstance(self.data, LeastSquares) or self.data.per_example_grad_fn is ls_per_example_grad
        return NoiseSpec(MB, m, False, False, scal=self.factor * self.scale,
                         pex_fn=None if builtin else self.data.per_example_grad_fn,
                         mb_params=self.data.params, mb_eigh=eig)

    def matrix(self, theta, loss=None):
        theta = finite_vector("theta", theta, self.data.dim)
        G = self.data.per_example_grads(theta)
        n = G.shape[0]
        Gc = G - G.mean(axis=0)
        f = self.factor * self.scale
        if self._use_eigh():
            B, _, _ = sqrt_psd(np.ascontiguousarray(f * (Gc.T @ Gc) / n), 1.0)
            return B
        return np.sqrt(f / n) * Gc.T

    def __repr__(self):
        return (f"MinibatchNoise(n={self.data.n_examples}, batch_size={self.batch_size}, "
                f"replace={self.replace}, scale={self.scale:g})")
