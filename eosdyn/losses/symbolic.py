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
  on-disk cache also works across processes (see :mod:`eosdyn.codegen`).
* Every variable and constant is treated as a *real* symbol (so that e.g. d|x|/dx is
  sign(x)). Derivatives that produce ``DiracDelta`` (second derivatives of ``Abs``,
  ``sign``, ``Heaviside``, ``Max``…) are taken almost everywhere: the delta terms are
  dropped. Functions that cannot be printed as ``math``-module code raise ValueError.
* A *string* expression is never evaluated: it is parsed with :mod:`ast` and checked
  against a small grammar (numbers, declared names, + - * / **, a list of functions;
  see :func:`from_sympy`) before the sympy expression is built from the checked tree
  with sympy's constructors. ``sympify``/``parse_expr``/``eval`` never see it, so an
  expression from the command line or a sweep config cannot run code.
"""
from __future__ import annotations

import ast
import math
import numbers
import operator

import numpy as np

from ..codegen import load_source
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


# --------------------------------------------------------------------------------------
# string expressions: a whitelist parser (no string ever reaches eval/sympify/parse_expr)
# --------------------------------------------------------------------------------------
#: the functions a string expression may call: name -> (sympy function, least and most
#: number of arguments; None = any number)
FUNCTIONS = {
    "exp": ("exp", 1, 1), "log": ("log", 1, 2), "sqrt": ("sqrt", 1, 1),
    "sin": ("sin", 1, 1), "cos": ("cos", 1, 1), "tan": ("tan", 1, 1),
    "sinh": ("sinh", 1, 1), "cosh": ("cosh", 1, 1), "tanh": ("tanh", 1, 1),
    "asin": ("asin", 1, 1), "acos": ("acos", 1, 1), "atan": ("atan", 1, 1), "atan2": ("atan2", 2, 2),
    "asinh": ("asinh", 1, 1), "acosh": ("acosh", 1, 1), "atanh": ("atanh", 1, 1),
    "abs": ("Abs", 1, 1), "Abs": ("Abs", 1, 1), "sign": ("sign", 1, 1), "Heaviside": ("Heaviside", 1, 1),
    "Max": ("Max", 1, None), "Min": ("Min", 1, None),
}
#: the named constants a string expression may use (a variable or param of the same name wins)
CONSTANTS = {"pi": "pi", "E": "E"}
#: the longest string expression accepted, in characters
MAX_EXPR_CHARS = 10_000
#: the deepest nesting accepted (function calls, parentheses, powers, unary signs; a flat
#: chain of + - * / is one level however long)
MAX_EXPR_DEPTH = 100
#: the most bits an exact number in a string expression may have (9**9**9 would never finish;
#: float64 code cannot use more)
MAX_EXACT_BITS = 4096

_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
           ast.Div: operator.truediv, ast.Pow: operator.pow}
_UNARYOPS = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_CHAIN = (ast.Add, ast.Sub, ast.Mult, ast.Div)  # flattened by sympy: no nesting depth
_OP_TEXT = {ast.FloorDiv: "//", ast.Mod: "%", ast.MatMult: "@", ast.BitXor: "^", ast.BitOr: "|",
            ast.BitAnd: "&", ast.LShift: "<<", ast.RShift: ">>", ast.Invert: "~", ast.Not: "not",
            ast.And: "and", ast.Or: "or", ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=",
            ast.Gt: ">", ast.GtE: ">=", ast.Is: "is", ast.IsNot: "is not", ast.In: "in", ast.NotIn: "not in"}
_KINDS = {ast.Attribute: "attribute access", ast.Subscript: "subscript", ast.Slice: "slice",
          ast.Lambda: "lambda", ast.IfExp: "conditional expression", ast.NamedExpr: "assignment (:=)",
          ast.Dict: "dict", ast.Set: "set", ast.List: "list", ast.Tuple: "tuple",
          ast.ListComp: "comprehension", ast.SetComp: "comprehension", ast.DictComp: "comprehension",
          ast.GeneratorExp: "generator expression", ast.Starred: "starred argument",
          ast.JoinedStr: "f-string", ast.FormattedValue: "f-string", ast.Await: "await",
          ast.Yield: "yield", ast.YieldFrom: "yield"}
_GRAMMAR = ("a string expr may only use numbers, the declared symbols and params, the constants "
            f"{', '.join(CONSTANTS)}, the operators + - * / ** (unary + and -), parentheses and calls "
            f"of {', '.join(FUNCTIONS)}")


def _short(text, limit=60):
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _is_dunder(name):
    return name.startswith("__") and name.endswith("__")


def _refusals(tree, text, local):
    """(refused, unknown): each construct of ``tree`` outside the grammar as (position, token,
    reason), in source order, and the sorted names that are neither declared nor constants."""
    def seg(node):
        return _short(ast.get_source_segment(text, node) or type(node).__name__)

    def pos(node):
        return (node.lineno, node.col_offset, node.end_lineno, node.end_col_offset)

    calls = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    out, unknown = [], set()
    for node in ast.walk(tree):  # iterative: no recursion limit
        if isinstance(node, (ast.Expression, ast.operator, ast.unaryop, ast.expr_context, ast.cmpop, ast.boolop,
                             ast.arguments, ast.comprehension)):
            continue  # judged with the node that holds them (an operator, a lambda, a comprehension)
        if isinstance(node, ast.keyword):
            out.append((pos(node), f"{node.arg}=" if node.arg else "**", "keyword argument"))
        elif isinstance(node, ast.BinOp):
            if type(node.op) not in _BINOPS:
                tok = _OP_TEXT.get(type(node.op), type(node.op).__name__)
                out.append(((node.left.end_lineno, node.left.end_col_offset, 0, 0), tok,
                            "operator" + (" (use ** for a power)" if tok == "^" else "")))
        elif isinstance(node, ast.UnaryOp):
            if type(node.op) not in _UNARYOPS:
                out.append((pos(node), _OP_TEXT.get(type(node.op), type(node.op).__name__), "operator"))
        elif isinstance(node, (ast.Compare, ast.BoolOp)):
            ops = node.ops if isinstance(node, ast.Compare) else [node.op]
            out.append((pos(node), _OP_TEXT.get(type(ops[0]), type(ops[0]).__name__),
                        "comparison or logic operator (expr must be a real scalar)"))
        elif isinstance(node, ast.Constant):
            v = node.value
            if isinstance(v, complex):
                out.append((pos(node), seg(node), "imaginary number (expr must be real)"))
            elif isinstance(v, bool) or not isinstance(v, (int, float)):
                out.append((pos(node), seg(node), "constant (only int and float numbers are allowed)"))
        elif isinstance(node, ast.Name):
            if id(node) in calls:
                if node.id not in FUNCTIONS:
                    out.append((pos(node), node.id, "call of a function that is not in the list"))
            elif _is_dunder(node.id):
                out.append((pos(node), node.id, "dunder name"))
            elif node.id in local or node.id in CONSTANTS:
                pass
            elif node.id == "I":
                out.append((pos(node), node.id, "imaginary unit (expr must be real)"))
            elif node.id in FUNCTIONS:
                out.append((pos(node), node.id, "function name without a call"))
            else:
                unknown.add(node.id)
        elif isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name):
                if isinstance(node.func, (ast.Call, ast.Constant, ast.BinOp, ast.UnaryOp)):
                    out.append((pos(node), seg(node), "call of something that is not a function name"))
                continue  # an attribute, subscript, lambda... is refused as itself
            spec = FUNCTIONS.get(node.func.id)
            if spec is not None and not node.keywords and not any(isinstance(a, ast.Starred) for a in node.args):
                lo, hi = spec[1], spec[2]
                n = len(node.args)
                if n < lo or (hi is not None and n > hi):
                    want = f"{lo}" if lo == hi else (f"at least {lo}" if hi is None else f"{lo} to {hi}")
                    out.append((pos(node), seg(node), f"{node.func.id} takes {want} argument(s), got {n}"))
        else:
            out.append((pos(node), seg(node) if not isinstance(node, ast.Attribute) else f".{node.attr}",
                        _KINDS.get(type(node), type(node).__name__)))
    return sorted(out, key=lambda r: r[0]), sorted(unknown)


def _bits(r):
    return max(int(r.p).bit_length(), int(r.q).bit_length())


def _check_exact(e, node, text, base=None, exp=None):
    """Refuse an exact number of more than MAX_EXACT_BITS bits: before a power ``base**exp``
    of exact numbers is taken (9**9**9 would not finish), and in every result ``e``."""
    import sympy as sp

    if base is not None:
        if not (base.is_number and isinstance(exp, sp.Rational) and not base.has(sp.Float)
                and base not in (sp.S.Zero, sp.S.One, sp.S.NegativeOne)):
            return
        size = max(1, sum(_bits(r) for r in base.atoms(sp.Rational))) * abs(exp)
    else:
        c = e.as_coeff_Mul()[0] if isinstance(e, sp.Expr) else sp.S.One
        size = _bits(c) if isinstance(c, sp.Rational) else 0
    if size > MAX_EXACT_BITS:
        raise ValueError(f"expr: the exact number {_short(ast.get_source_segment(text, node) or '**')!r} would "
                         f"have more than {MAX_EXACT_BITS} bits (float64 code cannot hold it)")
    return e


def _build(node, text, local, depth=0):
    """The sympy expression of a tree that passed :func:`_refusals` (sympy constructors only)."""
    import sympy as sp

    if depth > MAX_EXPR_DEPTH:
        raise ValueError(f"expr is nested too deeply (more than {MAX_EXPR_DEPTH} levels)")
    if isinstance(node, ast.BinOp) and isinstance(node.op, _CHAIN):
        spine = []  # a left-deep chain a + b - c * d ...: built in a loop, left to right as Python does
        while isinstance(node, ast.BinOp) and isinstance(node.op, _CHAIN):
            spine.append(node)
            node = node.left
        acc = _build(node, text, local, depth + 1)
        for b in reversed(spine):
            acc = _check_exact(_BINOPS[type(b.op)](acc, _build(b.right, text, local, depth + 1)), b, text)
        return acc
    if isinstance(node, ast.BinOp):  # **
        base, exp = _build(node.left, text, local, depth + 1), _build(node.right, text, local, depth + 1)
        _check_exact(None, node, text, base, exp)
        return _check_exact(base ** exp, node, text)
    if isinstance(node, ast.UnaryOp):
        return _UNARYOPS[type(node.op)](_build(node.operand, text, local, depth + 1))
    if isinstance(node, ast.Constant):
        if isinstance(node.value, int):
            return sp.Integer(node.value)
        # from the literal's digits, as sympy's own parser does: Float('0.1'), not Float(0.1)
        return sp.Float(ast.get_source_segment(text, node).replace("_", ""))
    if isinstance(node, ast.Name):
        return local[node.id] if node.id in local else getattr(sp, CONSTANTS[node.id])
    if isinstance(node, ast.Call):
        fn = getattr(sp, FUNCTIONS[node.func.id][0])
        return fn(*[_build(a, text, local, depth + 1) for a in node.args])
    raise AssertionError(f"unchecked node {type(node).__name__}")  # pragma: no cover - _refusals sees all


def _parse_string(text, local):
    """The sympy expression of the string ``text`` (grammar: :func:`from_sympy`), built from its
    checked syntax tree; ``local`` maps the declared names to their Symbols. Never runs ``text``."""
    if len(text) > MAX_EXPR_CHARS:
        raise ValueError(f"expr is too long: {len(text)} characters (at most {MAX_EXPR_CHARS})")
    src = text.strip()
    try:
        tree = ast.parse(src, mode="eval")  # builds a syntax tree only; runs nothing
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        why = "too long a chain or too deeply nested" if isinstance(exc, (RecursionError, MemoryError)) else exc
        raise ValueError(f"expr could not be parsed as an expression: {_short(src)!r} "
                         f"({type(exc).__name__}: {why})") from None
    bad, unknown = _refusals(tree, src, local)
    if bad:
        (_, tok, why), rest = bad[0], list(dict.fromkeys(t for _, t, _ in bad[1:] if t != bad[0][1]))
        more = f"; also not allowed: {', '.join(repr(t) for t in rest[:5])}" if rest else ""
        raise ValueError(f"expr: {tok!r} is not allowed ({why}){more}. {_GRAMMAR}")
    if unknown:
        raise ValueError(f"expr has free symbols {unknown} that are neither in symbols nor in params; list "
                         f"them in symbols (variables) or params (constants). Names allowed in expr: "
                         f"{list(local) + list(CONSTANTS)}; functions: {', '.join(FUNCTIONS)}")
    try:
        return _build(tree.body, src, local)
    except RecursionError:
        raise ValueError("expr is nested too deeply") from None


def _parse(expr, local):
    import sympy as sp

    if isinstance(expr, str):
        e = _parse_string(expr, local)
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
def sp_symbol(name):
    import sympy as sp

    return sp.Symbol(name, real=True)


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


def _generate_third(hess, syms, psyms):
    """Source of ``third_fn(theta, u, v, params)`` = Σ_jk ∂_i H_jk u_j v_k (exact, symbolic).

    The tensor T_ijk = ∂³L/∂θ_i∂θ_j∂θ_k is symmetric; its d(d+1)(d+2)/6 distinct entries
    are differentiated once, cse'd and printed as plain Python (no numba: these losses are
    small and this is called a few times per flow step, not in a kernel).
    """
    import sympy as sp
    from sympy.printing.pycode import PythonCodePrinter

    d = len(syms)
    triples = [(i, j, k) for i in range(d) for j in range(i, d) for k in range(j, d)]
    entries = []
    for i, j, k in triples:
        e = _drop_delta(sp.diff(hess[j, k], syms[i]))
        if e.has(sp.Derivative) or e.has(sp.Subs):
            raise ValueError(f"expr's third derivative is not in closed form ({e})")
        entries.append(e)
    tvars = [sp.Symbol(f"_t{i}", real=True) for i in range(d)]
    pvars = [sp.Symbol(f"_p{j}", real=True) for j in range(len(psyms))]
    sub = dict(zip(syms, tvars))
    sub.update(zip(psyms, pvars))
    printer = PythonCodePrinter({"fully_qualified_modules": True, "strict": True})
    try:
        lines, codes = _block(printer, [e.xreplace(sub) for e in entries], "_c")
    except Exception as exc:
        raise ValueError(f"expr's third derivative cannot be printed as math-module code: {exc}") from None
    src = ["# generated by eosdyn.losses.symbolic (third derivatives) -- do not edit",
           "import math", "import numpy as np", "", "",
           "def third_fn(theta, u, v, params):",
           *[f"    _t{i} = float(theta[{i}])" for i in range(d)],
           *[f"    _p{j} = float(params[0][{j}])" for j in range(len(psyms))],
           *lines, f"    T = np.empty(({d}, {d}, {d}))"]
    for (i, j, k), c in zip(triples, codes):
        src.append(f"    T[{i}, {j}, {k}] = {c}")
    src += ["    for i in range(T.shape[0]):",
            "        for j in range(T.shape[0]):",
            "            for k in range(T.shape[0]):",
            "                a, b, c = sorted((i, j, k))",
            "                T[i, j, k] = T[a, b, c]",
            "    return np.einsum('ijk,j,k->i', T, u, v)", ""]
    return "\n".join(src)


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
        self._deriv_key = key

    def _third_derivative(self, theta, u, v):
        """Exact D³L[u, v] from the symbolic third-derivative tensor (generated on first use)."""
        fn = getattr(self, "_third_fn", None)
        if fn is None:
            key = ("third", self._deriv_key)
            source = _DERIV_CACHE.get(key)
            if source is None:
                source = _generate_third(self.hessian, self.symbols, [sp_symbol(n) for n in self.param_names])
                _DERIV_CACHE[key] = source
            fn = self._third_fn = load_source(source, "eosdyn_sym3").third_fn
        return fn(theta, u, v, self.params)

    def with_params(self, values, *, min_value=float("nan")) -> SympyLoss:
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
    """Build a compiled :class:`Loss` from a sympy expression or a string in a small grammar.

    Parameters
    ----------
    expr : sympy.Expr or str
        The loss L(θ), a real scalar expression. A sympy expression object is taken as
        it is. A string is **never evaluated as code**: it is parsed as a Python
        expression with :mod:`ast` (nothing runs) and every node of the tree is checked
        against this grammar before any sympy object is made::

            expr   := expr OP expr | ("+" | "-") expr | "(" expr ")" | NUMBER | NAME | call
            OP     := "+" | "-" | "*" | "/" | "**"
            call   := FUNC "(" expr ("," expr)* ")"     (positional arguments only)
            NUMBER := an int or float literal            (1, 0.5, 1e-3, .25; not 1j)
            NAME   := a name of ``symbols`` or ``params``, else pi or E
            FUNC   := exp | log (1 or 2 args) | sqrt | sin | cos | tan | sinh | cosh | tanh
                    | asin | acos | atan | atan2 (2 args) | asinh | acosh | atanh
                    | abs | Abs | sign | Heaviside | Max | Min (1 or more args)

        (the lists are ``FUNCTIONS`` and ``CONSTANTS`` of this module). Anything else —
        attribute access (``x.real``), subscripts, strings, dunder names, ``lambda``,
        comprehensions, comparisons, ``^``, ``//``, ``%``, keyword arguments, calls of
        other names, ``I`` and complex literals, names that are neither declared nor
        constants — raises ValueError naming the offending token. So do strings longer
        than ``MAX_EXPR_CHARS`` characters, nesting deeper than ``MAX_EXPR_DEPTH`` and
        exact numbers of more than ``MAX_EXACT_BITS`` bits (``9**9**9``). The expression is
        built from the checked tree with sympy's constructors (``Integer``, ``Float`` of
        the literal's digits, Python operators on sympy objects, the listed functions):
        the same expression, and the same compiled code, as sympy's own parser would give.
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
        if ``expr`` cannot be parsed or leaves the grammar above (the message names the
        token), has free symbols that are neither variables nor params (the message
        names them), is not real/finite, or uses a function that cannot be compiled.
    TypeError
        for arguments of the wrong type.

    Example
    -------
    >>> L = from_sympy("a*x**2/2 + (x*y - 1)**2/2", ["x", "y"], params={"a": 0.1})
    >>> L.grad([1.0, 2.0])          # doctest: +SKIP
    """
    return SympyLoss(expr, symbols, params, min_value=min_value)
