r"""Square-root loss L(θ) = √(L_b(θ) − L*_b): Arora, Li & Panigrahi (ICML 2022).

Arora, Li & Panigrahi, "Understanding gradient descent on the edge of stability in deep
learning", ICML 2022, study GD on √L (of a loss L with minimum value 0), alongside
normalized GD: the curvature of √L blows up near the minimum, so GD with any small
fixed η reaches the edge of stability, and then drifts along the minimum manifold,
reducing the sharpness.

With s = L_b(θ) − L*_b ≥ 0 and g = ∇L_b, H_b = ∇²L_b,

    L  = √s,     ∇L = g / (2√s),     ∇²L = H_b / (2√s) − g gᵀ / (4 s^{3/2}).

Regularisation ``eps`` (ε ≥ 0) and behaviour at the minimum
------------------------------------------------------------
eosdyn implements the smooth surrogate

    L_ε(θ) = √( max(L_b(θ) − L*_b, 0) + ε ),

whose value, gradient and Hessian are the formulas above with s replaced by
s_ε = max(s, 0) + ε. For ε > 0 this is C² everywhere (on {s ≥ 0}), its derivatives are
consistent with its value, and ``min_value`` = √ε. The default ε = 0 gives the exact
loss of Arora et al., with ``min_value`` = 0, which is not differentiable where
L_b = L*_b (a cone-like kink: |θ| in 1-D). There, i.e. whenever s_ε = 0 (s ≤ 0, which
rounding can produce a little off the minimiser), the kernels return

* value 0 and gradient **0** — a valid subgradient at a global minimiser, so a GD step
  from an exact minimiser stays there;
* Hessian and HVP filled with **+inf** — the curvature along any direction in which
  H_b is positive diverges like 1/(2√s) as s → 0, and +inf (unlike NaN, or a silent 0)
  says so without making the sharpness look normal; :meth:`SqrtLoss.sharpness` returns
  +inf there. Pass ``eps > 0`` for finite curvature.

Also note that near L*_b the value s = L_b − L*_b is a difference of nearly equal numbers
(absolute error ≈ 1e-16·|L*_b|); with L*_b > 0 the gradient of √s is then dominated by
rounding once s ≲ 1e-14·L*_b.

Kernels are built by a factory cached on the base's kernel functions: every
``SqrtLoss`` over the same base family shares compiled code (cached on disk by numba
when the base kernels are module-level functions). Params are ``((L*_b, ε), *base.params)``.
"""
from __future__ import annotations

import math
import sys

import numpy as np
from numba import njit

from .._validate import positive
from ..codegen import file_digest, load_source
from .base import Loss

_SQRT_CACHE: dict = {}

# The four kernels, as source text: compiled with the base's kernels bound to _value_b,
# _grad_b, _hess_b, _hvp_b (see _sqrt_kernels).
_KERNELS = """
@njit(cache=CACHE)
def _s(theta, params):
    c = params[0]
    s = _value_b(theta, params[1:]) - c[0]
    if s < 0.0:
        s = 0.0
    return s + c[1]


@njit(cache=CACHE)
def value_fn(theta, params):
    return math.sqrt(_s(theta, params))


@njit(cache=CACHE)
def grad_fn(theta, params):
    s = _s(theta, params)
    if s <= 0.0:
        return np.zeros(theta.shape[0])
    return _grad_b(theta, params[1:]) / (2.0 * math.sqrt(s))


@njit(cache=CACHE)
def hess_fn(theta, params):
    s = _s(theta, params)
    d = theta.shape[0]
    if s <= 0.0:
        return np.full((d, d), np.inf)
    g = _grad_b(theta, params[1:])
    H = _hess_b(theta, params[1:])
    rs = math.sqrt(s)
    a = 1.0 / (2.0 * rs)
    b = 1.0 / (4.0 * s * rs)
    out = np.empty((d, d))
    for i in range(d):
        for j in range(i, d):
            h = a * H[i, j] - b * (g[i] * g[j])
            out[i, j] = h
            out[j, i] = h  # exactly symmetric
    return out


@njit(cache=CACHE)
def hvp_fn(theta, v, params):
    s = _s(theta, params)
    if s <= 0.0:
        return np.full(theta.shape[0], np.inf)
    g = _grad_b(theta, params[1:])
    Hv = _hvp_b(theta, v, params[1:])
    rs = math.sqrt(s)
    return Hv / (2.0 * rs) - g * ((g @ v) / (4.0 * s * rs))
"""


def _importable(fn):
    """(module, name, file) if the dispatcher ``fn`` is a module-level global, else None."""
    py = getattr(fn, "py_func", None)
    if py is None:
        return None
    mod, qual = py.__module__, py.__qualname__
    m = sys.modules.get(mod)
    if "." in qual or "<" in qual or m is None or getattr(m, qual, None) is not fn:
        return None
    return mod, qual, getattr(m, "__file__", None)


def _sqrt_kernels(value_b, grad_b, hess_b, hvp_b):
    """Compiled √ kernels for one base family, cached on the base's kernel functions.

    When the base kernels are module-level functions (every built-in family and every
    :func:`from_sympy` family), the kernels are generated as a module that imports them,
    so numba caches the compiled code on disk (the text embeds a digest of the base's
    source files, so editing those invalidates it). Otherwise (closures, e.g. an hvp
    built by ``hvp_from_hess``) they are compiled in memory for this process.
    """
    key = (id(value_b), id(grad_b), id(hess_b), id(hvp_b))
    hit = _SQRT_CACHE.get(key)
    if hit is not None:
        return hit[4:]
    base = (value_b, grad_b, hess_b, hvp_b)
    names = ("_value_b", "_grad_b", "_hess_b", "_hvp_b")
    where = [_importable(f) for f in base]
    if all(w is not None for w in where):
        files = sorted({w[2] for w in where if w[2]})
        head = ["# generated by eosdyn.losses.sqrt_loss -- do not edit"]
        head += [f"# depends on {f} sha256={file_digest(f)}" for f in files]
        head += ["import math", "import numpy as np", "from numba import njit"]
        head += [f"from {m} import {q} as {n}" for (m, q, _), n in zip(where, names)]
        mod = load_source("\n".join(head) + "\n\n" + _KERNELS.replace("CACHE", "True"), "eosdyn_sqrt")
        fns = (mod.value_fn, mod.grad_fn, mod.hess_fn, mod.hvp_fn)
    else:
        ns = {"math": math, "np": np, "njit": njit, **dict(zip(names, base))}
        exec(compile(_KERNELS.replace("CACHE", "False"), "<eosdyn.sqrt_loss kernels>", "exec"), ns)
        fns = (ns["value_fn"], ns["grad_fn"], ns["hess_fn"], ns["hvp_fn"])
    # keep the base functions alive so their ids stay valid as cache keys
    _SQRT_CACHE[key] = base + fns
    return fns


class SqrtLoss(Loss):
    r"""L(θ) = √(max(L_b(θ) − L*_b, 0) + ε) for a base loss L_b (Arora, Li & Panigrahi, ICML 2022).

    Parameters
    ----------
    base : Loss
        The base loss L_b. Its ``min_value`` L*_b must be finite unless ``base_min`` is given.
    eps : float >= 0, default 0
        Smoothing ε. ε = 0 is the exact √(L_b − L*_b): gradient 0 and Hessian/HVP = +inf
        where L_b ≤ L*_b (see module docstring). ε > 0 gives a smooth surrogate whose
        minimum value is √ε.
    base_min : float, optional
        Use this reference value instead of ``base.min_value`` (e.g. the value of a
        local minimum when the base is unbounded below). Points with L_b < base_min are
        treated as s = 0.

    ``min_value`` = √ε (0 by default). ``base`` is kept as an attribute.
    """

    name = "sqrt"

    def __init__(self, base, eps=0.0, base_min=None):
        if not isinstance(base, Loss):
            raise TypeError(f"base must be an eosdyn Loss, got {type(base).__name__}")
        eps = positive("eps", eps, allow_zero=True)
        if base_min is None:
            Lb = float(base.min_value)
            if not np.isfinite(Lb):
                raise ValueError(
                    f"SqrtLoss needs a finite base.min_value (L* of the base), got {Lb}; "
                    "pass base_min=<reference value> to use another reference")
        else:
            if isinstance(base_min, bool) or not isinstance(base_min, (int, float, np.floating, np.integer)):
                raise TypeError(f"base_min must be a real number, got {type(base_min).__name__}")
            Lb = float(base_min)
            if not np.isfinite(Lb):
                raise ValueError(f"base_min must be finite, got {base_min!r}")
        fns = _sqrt_kernels(base.value_fn, base.grad_fn, base.hess_fn, base.hvp_fn)
        params = (np.array([Lb, eps]),) + tuple(base.params)
        super().__init__(*fns, params, base.dim, math.sqrt(eps))
        self.base = base
        self.eps = eps
        self.base_min = Lb

    def _third_derivative(self, theta, u, v):
        r"""Chain rule for f = √s, s = L_b − L*_b + ε (s > 0), with g = ∇L_b, H = ∇²L_b:

        D³f[u, v] = D³L_b[u, v]/(2√s) − [(uᵀHv) g + (Hu)(g·v) + (Hv)(g·u)]/(4 s^{3/2})
                    + 3 (g·u)(g·v) g/(8 s^{5/2}).
        """
        b = self.base
        s = max(float(b.value_fn(theta, b.params)) - self.base_min, 0.0) + self.eps
        if s <= 0.0:
            return np.full(self.dim, np.inf)
        g = np.asarray(b.grad_fn(theta, b.params))
        Hu = np.asarray(b.hvp_fn(theta, u, b.params))
        Hv = np.asarray(b.hvp_fn(theta, v, b.params))
        gu, gv, uHv = float(g @ u), float(g @ v), float(u @ Hv)
        r = math.sqrt(s)
        return (b._third_derivative(theta, u, v) / (2.0 * r)
                - (uHv * g + Hu * gv + Hv * gu) / (4.0 * s * r)
                + 3.0 * gu * gv * g / (8.0 * s * s * r))

    def sharpness(self, theta) -> float:
        """λ_max(∇²L(θ)); +inf where L is not twice differentiable (s_ε = 0, only when eps = 0)."""
        H = self.hess(theta)
        if not np.all(np.isfinite(H)):
            return float("inf")
        return float(np.linalg.eigvalsh(H)[-1])

    def __repr__(self):
        return f"SqrtLoss({self.base!r}, eps={self.eps:g})"
