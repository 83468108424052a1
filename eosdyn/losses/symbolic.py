r"""Losses written as sympy expressions: exact gradient and Hessian, compiled with numba.

:func:`from_sympy` differentiates the expression symbolically (sympy), prints value,
gradient and Hessian as plain Python/``math`` code (common subexpressions eliminated
with ``sympy.cse``), and compiles that code with ``numba.njit(cache=True)``.

* The constants named in ``params`` are *not* baked into the code: they are read from
  ``params[0]`` at run time, so losses that differ only in constant values share the
  compiled kernels (one compilation per expression family), and
  :meth:`SympyLoss.with_params` is free.
* The generated source is written once to a cache directory (``$EOSDYN_CACHE_DIR``,
  else ``$XDG_CACHE_HOME/eosdyn`` or ``~/.cache/eosdyn``, subfolder ``generated``; a
  temporary directory if none is writable), named by the SHA-256 of its text, so numba's
  on-disk cache also works across processes (see ``eosdyn.losses._codegen``).
* Every variable and constant is treated as a *real* symbol (so that e.g. d|x|/dx is
  sign(x)). Derivatives that produce ``DiracDelta`` (second derivatives of ``Abs``,
  ``sign``, ``Heaviside``, ``Max``…) are taken almost everywhere: the delta terms are
  dropped. Functions that cannot be printed as ``math``-module code raise ValueError.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from ._codegen import load_source
from .base import Loss

_DERIV_CACHE: dict = {}      # (srepr, names, param names) -> (grad, hess, source)


# --------------------------------------------------------------------------------------
# input handling
# --------------------------------------------------------------------------------------
def _names_of_symbols(symbols):
    import sympy as sp

    if isinstance(symbols, str):
        parsed = sp.symbols(symbols)
        symbols = list(parsed) if isinstance(parsed, (tuple, list)) else [parsed]
    if isinstance(symbols, sp.Symbol):
        symbols = [symbols]
    try:
        items = list(symbols)
    except TypeError:
        raise TypeError(f"symbols must be a list of sympy Symbols or names, got {type(symbols).__name__}") from None
    names = []
    for s in items:
        if isinstance(s, sp.Symbol):
            names.append(s.name)
        elif isinstance(s, str) and s.strip():
            names.append(s.strip())
        else:
            raise TypeError(f"symbols must contain sympy Symbols or non-empty names, got {s!r}")
    if not names:
        raise ValueError("symbols must name at least one variable (the coordinates of theta)")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"symbols must be distinct, repeated: {dup}")
    return names


def _param_dict(params, names):
    import sympy as sp

    if params is None:
        return {}
    if not isinstance(params, dict):
        raise TypeError(f"params must be a dict name -> value, got {type(params).__name__}")
    out = {}
    for k, v in params.items():
        if isinstance(k, sp.Symbol):
            k = k.name
        if not isinstance(k, str) or not k:
            raise TypeError(f"params keys must be names or sympy Symbols, got {k!r}")
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            raise TypeError(f"params[{k!r}] must be a real number, got {type(v).__name__}")
        if not math.isfinite(float(v)):
            raise ValueError(f"params[{k!r}] must be finite, got {v!r}")
        if k in names:
            raise ValueError(f"params name {k!r} is also listed in symbols (a name is either a variable or a constant)")
        out[k] = float(v)
    return out


def _parse(expr, local):
    import sympy as sp
    from sympy.parsing.sympy_parser import parse_expr, standard_transformations

    if isinstance(expr, str):
        try:
            e = parse_expr(expr, local_dict=dict(local), transformations=standard_transformations)
        except Exception as exc:  # SyntaxError, TokenError, SympifyError, TypeError...
            raise ValueError(f"expr could not be parsed as a sympy expression: {expr!r} ({type(exc).__name__}: {exc})") from None
    elif isinstance(expr, sp.Basic):
        e = expr
    elif isinstance(expr, numbers.Real) and not isinstance(expr, bool):
        e = sp.Float(expr) if isinstance(expr, float) else sp.Integer(int(expr))
    else:
        raise TypeError(f"expr must be a sympy expression or a string, got {type(expr).__name__}")
    if not isinstance(e, sp.Expr) or getattr(e, "is_Matrix", False):
        raise TypeError(f"expr must be a scalar sympy expression, got {type(e).__name__}: {e}")
    return e


# --------------------------------------------------------------------------------------
# code generation
# --------------------------------------------------------------------------------------
def _drop_delta(e):
    import sympy as sp

    if e.has(sp.DiracDelta):
        e = e.replace(lambda a: isinstance(a, sp.DiracDelta), lambda a: sp.Integer(0))
    return e


def _block(printer, exprs, prefix):
    """cse + print: returns (list of 'name = code' lines, list of final codes)."""
    import sympy as sp

    reps, reduced = sp.cse(exprs, symbols=sp.numbered_symbols(prefix))
    lines = [f"    {printer.doprint(s)} = {printer.doprint(v)}" for s, v in reps]
    return lines, [printer.doprint(r) for r in reduced]


def _generate(expr, syms, psyms):
    """Return (gradient exprs, Hessian matrix, generated module source)."""
    import sympy as sp
    from sympy.printing.pycode import PythonCodePrinter

    d = len(syms)
    grad = [sp.diff(expr, s) for s in syms]
    hess = sp.zeros(d, d)
    for i in range(d):
        for j in range(i, d):
            h = _drop_delta(sp.diff(grad[i], syms[j]))
            hess[i, j] = h
            hess[j, i] = h
    grad = [_drop_delta(g) for g in grad]
    for e in [expr, *grad, *hess]:
        if e.has(sp.Derivative) or e.has(sp.Subs):
            raise ValueError(f"expr could not be differentiated in closed form (left an unevaluated derivative in {e})")

    # print with neutral names: variables t_i, constants p_j
    tvars = [sp.Symbol(f"_t{i}", real=True) for i in range(d)]
    pvars = [sp.Symbol(f"_p{j}", real=True) for j in range(len(psyms))]
    sub = dict(zip(syms, tvars))
    sub.update(zip(psyms, pvars))

    def neutral(e):
        return e.xreplace(sub)

    printer = PythonCodePrinter({"fully_qualified_modules": True, "strict": True})
    head = [f"    _t{i} = theta[{i}]" for i in range(d)]
    head += [f"    _p{j} = params[0][{j}]" for j in range(len(psyms))]
    try:
        vl, (vcode,) = _block(printer, [neutral(expr)], "_v")
        gl, gcodes = _block(printer, [neutral(g) for g in grad], "_g")
        upper = [(i, j) for i in range(d) for j in range(i, d)]
        hl, hcodes = _block(printer, [neutral(hess[i, j]) for i, j in upper], "_h")
    except Exception as exc:  # PrintMethodNotImplementedError and friends
        raise ValueError(f"expr uses a function that cannot be compiled (numba/math code): {exc}") from None

    src = ["# generated by eosdyn.losses.symbolic.from_sympy -- do not edit",
           f"# expr: {sp.sstr(neutral(expr))[:2000]}",
           "import math", "import numpy as np", "from numba import njit", "", "",
           "@njit(cache=True)", "def value_fn(theta, params):", *head, *vl,
           f"    return float({vcode})", "", "",
           "@njit(cache=True)", "def grad_into_fn(theta, params, out):", *head, *gl]
    src += [f"    out[{i}] = {c}" for i, c in enumerate(gcodes)]
    src += ["", "",
            "@njit(cache=True)", "def grad_fn(theta, params):",
            f"    out = np.empty({d})",
            "    grad_into_fn(theta, params, out)",
            "    return out", "", "",
            # the same lines with the trajectories innermost: straight-line code per
            # trajectory, which LLVM vectorises across the block (bit-identical to grad_into_fn)
            "@njit(cache=True)", "def grad_block_fn(X, params, G, W):",
            *[f"    _p{j} = params[0][{j}]" for j in range(len(psyms))],
            "    for _b in range(X.shape[1]):",
            *[f"        _t{i} = X[{i}, _b]" for i in range(d)],
            *["    " + line for line in gl]]
    src += [f"        G[{i}, _b] = {c}" for i, c in enumerate(gcodes)]
    src += ["", "",
            "@njit(cache=True)", "def hess_fn(theta, params):", *head, *hl,
            f"    H = np.empty(({d}, {d}))"]
    for (i, j), c in zip(upper, hcodes):
        src.append(f"    H[{i}, {j}] = {c}")
        if i != j:
            src.append(f"    H[{j}, {i}] = H[{i}, {j}]")
    src += ["    return H", "", "",
            "@njit(cache=True)", "def hvp_fn(theta, v, params):",
            "    H = hess_fn(theta, params)",
            f"    out = np.zeros({d})",
            f"    for i in range({d}):",
            f"        for j in range({d}):",
            "            out[i] += H[i, j] * v[j]",
            "    return out", ""]
    return grad, hess, "\n".join(src)


def _compile(source):
    mod = load_source(source, "eosdyn_sym")
    return mod.value_fn, mod.grad_fn, mod.hess_fn, mod.hvp_fn, mod.grad_into_fn, mod.grad_block_fn


# --------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------
class SympyLoss(Loss):
    """A :class:`Loss` defined by a sympy expression (built by :func:`from_sympy`).

    Attributes: ``expr`` (with real symbols), ``symbols`` (the variables, θ order),
    ``param_names`` and ``param_values``, ``gradient`` (list of sympy expressions),
    ``hessian`` (sympy Matrix) and ``source`` (the generated Python code).
    """

    name = "sympy"

    def __init__(self, expr, symbols, params=None, *, min_value=float("nan")):
        import sympy as sp

        names = _names_of_symbols(symbols)
        pvals = _param_dict(params, names)
        if isinstance(min_value, bool) or not isinstance(min_value, numbers.Real):
            raise TypeError(f"min_value must be a real number (nan if unknown), got {type(min_value).__name__}")
        syms = [sp.Symbol(n, real=True) for n in names]
        psyms = [sp.Symbol(n, real=True) for n in pvals]
        local = {s.name: s for s in syms + psyms}
        e = _parse(expr, local)
        # identify the expression's symbols with ours by name (any assumptions)
        e = e.xreplace({s: local[s.name] for s in e.free_symbols if isinstance(s, sp.Symbol) and s.name in local})
        free = sorted(s.name for s in e.free_symbols if s.name not in local)
        if free:
            raise ValueError(f"expr has free symbols {free} that are neither in symbols {names} nor in params "
                             f"{sorted(pvals)}; list them in symbols (variables) or params (constants)")
        undef = sorted(str(f.func) for f in e.atoms(sp.core.function.AppliedUndef))
        if undef:
            raise ValueError(f"expr uses undefined functions {undef}")
        if e.has(sp.I) or e.has(sp.zoo) or e.has(sp.nan) or e.has(sp.oo) or e.has(-sp.oo):
            raise ValueError(f"expr must be a finite real expression, got {e}")
        key = (sp.srepr(e), tuple(names), tuple(pvals))
        hit = _DERIV_CACHE.get(key)
        if hit is None:
            hit = _generate(e, syms, psyms)
            _DERIV_CACHE[key] = hit
        grad, hess, source = hit
        value_fn, grad_fn, hess_fn, hvp_fn, grad_into_fn, grad_block_fn = _compile(source)
        pv = np.array(list(pvals.values()), dtype=np.float64) if pvals else np.zeros(0)
        super().__init__(value_fn, grad_fn, hess_fn, hvp_fn, (pv,), len(syms), float(min_value),
                         grad_into_fn=grad_into_fn, grad_block_fn=grad_block_fn)
        self.expr = e
        self.symbols = tuple(syms)
        self.param_names = tuple(pvals)
        self.param_values = dict(pvals)
        self.gradient = list(grad)
        self.hessian = hess
        self.source = source

    def with_params(self, values, *, min_value=float("nan")) -> "SympyLoss":
        """The same expression with some constants changed (shares the compiled kernels)."""
        if not isinstance(values, dict):
            raise TypeError(f"values must be a dict name -> value, got {type(values).__name__}")
        unknown = sorted(str(k) for k in values if str(k) not in self.param_values)
        if unknown:
            raise ValueError(f"values names unknown params {unknown}; known: {sorted(self.param_values)}")
        new = dict(self.param_values)
        new.update({str(k): v for k, v in values.items()})
        return SympyLoss(self.expr, self.symbols, new, min_value=min_value)

    def __repr__(self):
        return f"SympyLoss({self.expr}, symbols={[s.name for s in self.symbols]}, params={self.param_values})"


def from_sympy(expr, symbols, params=None, *, min_value=float("nan")) -> SympyLoss:
    """Build a compiled :class:`Loss` from a sympy expression (or a string sympy can parse).

    Parameters
    ----------
    expr : sympy.Expr or str
        The loss L(θ), a real scalar expression.
    symbols : list of sympy.Symbol or str (or one whitespace/comma separated string)
        The variables, in θ order (θ[i] is ``symbols[i]``). Matched to the symbols of
        ``expr`` by name.
    params : dict name -> float, optional
        Constants of ``expr``. Their values live in the loss's params array (not in the
        compiled code), so changing them does not recompile; see :meth:`SympyLoss.with_params`.
    min_value : float, default nan
        L* if known (nan = unknown).

    Raises
    ------
    ValueError
        if ``expr`` cannot be parsed, has free symbols that are neither variables nor
        params (the message names them), is not real/finite, or uses a function that
        cannot be compiled.
    TypeError
        for arguments of the wrong type.

    Example
    -------
    >>> L = from_sympy("a*x**2/2 + (x*y - 1)**2/2", ["x", "y"], params={"a": 0.1})
    >>> L.grad([1.0, 2.0])          # doctest: +SKIP
    """
    return SympyLoss(expr, symbols, params, min_value=min_value)
