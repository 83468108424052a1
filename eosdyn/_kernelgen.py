"""Disk-cacheable specialisations of numba kernels that take functions as arguments.

Numba cannot cache on disk a kernel that *receives* numba functions as arguments: it
lowers them as dynamic addresses, so every new process recompiles (1–15 s per pair of
loss family and rule). :func:`specialise` writes the kernel out as source instead —
the kernel and the callees that pass the functions along, with those function
parameters removed and the functions imported as module globals — and loads it
through :mod:`eosdyn.losses._codegen` (a content-addressed file in the cache
directory), so ``cache=True`` works and a new process pays about half a second.

Functions that cannot be imported by name (closures) make :func:`specialise` return
None; the caller then runs the generic in-memory kernel. Closures that eosdyn derives
itself (``grad_into_from_grad``, ``hvp_from_hess`` in :mod:`eosdyn.losses.base`) are
re-derived as module-level code from the function they wrap. Functions from a
module without a source file (``python -c``, a notebook's ``__main__``) also give
None: their generated file could not be tied to their code, so numba's cache
could serve a stale compilation to a later process.

:func:`specialise` strips the *leading* parameters of each function with regular
expressions. :func:`specialise_by_name` does it with :mod:`ast` for kernels whose
function parameters sit anywhere in the signatures: parameters are removed by
name, the matching positional arguments are removed from calls to the other
specialised functions, ``if fn is None:`` tests on them are resolved in the
source (a slot may be None), and the module globals the functions use are
imported from their defining modules.
"""
from __future__ import annotations

import ast
import inspect
import re
import sys
import textwrap

_DERIVED_SOURCE = {
    "grad_into_from_grad": """
@njit(cache=True)
def {name}(theta, params, out):
    g = _inner_{name}(theta, params)
    for i in range(out.shape[0]):
        out[i] = g[i]
""",
    "hvp_from_hess": """
@njit(cache=True)
def {name}(theta, v, params):
    return _inner_{name}(theta, params) @ v
""",
}


def function_params(fn, n):
    """Names of the first ``n`` parameters of numba function ``fn``."""
    return list(inspect.signature(fn.py_func).parameters)[:n]


def specialised_source(fn, n_function_args, callees=(), name=None):
    """Source of numba function ``fn`` with its first parameters (functions) made globals.

    ``callees``: (function, n) or (function, n, name it is called by) tuples whose calls
    inside ``fn`` drop their first n (function) arguments, because those callees are
    specialised the same way. ``name`` renames ``fn``. The decorator becomes
    ``njit(cache=True)``, keeping ``parallel=True``.
    """
    src = textwrap.dedent(inspect.getsource(fn.py_func))
    parallel = ", parallel=True" if re.search(r"^@njit\([^\n]*parallel=True", src, flags=re.M) else ""
    src = re.sub(r"^@njit[^\n]*\n", f"@njit(cache=True{parallel})\n", src, flags=re.M)
    head = src.index("(", src.index("def ")) + 1
    for p in function_params(fn, n_function_args):
        src = src[:head] + re.sub(rf"^\s*{p},\s*", "", src[head:], count=1)
    for callee in callees:
        callee_fn, n = callee[0], callee[1]
        call = callee[2] if len(callee) > 2 else callee_fn.__name__
        args = r",\s*".join(function_params(callee_fn, n))
        src = re.sub(rf"\b{call}\(\s*{args},\s*", f"{call}(", src)
    if name is not None:
        src = src.replace(f"def {fn.__name__}(", f"def {name}(", 1)
    return src


def import_path(fn):
    """(module, name) under which dispatcher ``fn`` can be imported, or None (a closure)."""
    py = getattr(fn, "py_func", None)
    if py is None or "<locals>" in py.__qualname__:
        return None
    mod = sys.modules.get(py.__module__)
    if mod is None or getattr(mod, py.__qualname__, None) is not fn:
        return None
    return py.__module__, py.__qualname__


def _bind(functions):
    """(import lines, extra source, dependency modules) binding ``functions`` as module globals,
    or None when one cannot be imported by name. A None value binds ``name = None``."""
    from .losses._codegen import file_digest
    from .losses.base import DERIVED

    imports, extra, deps = [], [], set()
    for name, f in functions.items():
        if f is None:
            extra.append(f"{name} = None")
            continue
        how, inner = DERIVED.get(id(f), (None, None))
        path = import_path(inner if how else f)
        if path is None or not file_digest(getattr(sys.modules[path[0]], "__file__", None)):
            return None
        deps.add(path[0])
        if how:  # re-derive the closure as module-level code
            imports.append(f"from {path[0]} import {path[1]} as _inner_{name}")
            extra.append(_DERIVED_SOURCE[how].format(name=name))
        else:
            imports.append(f"from {path[0]} import {path[1]} as {name}")
    return imports, extra, deps


def _load(prefix, deps, head, imports, extra, bodies):
    from .losses._codegen import file_digest, load_source

    digest = ":".join(file_digest(getattr(sys.modules[m], "__file__", None))[:16] for m in sorted(deps))
    source = (f"# Generated by eosdyn._kernelgen -- do not edit.\n"
              f"# Dependencies' digest: {digest}\n" + head.strip() + "\n"
              + "\n".join(imports) + "\n" + "\n".join(extra) + "\n\n"
              + "\n\n".join(bodies))
    return load_source(source, prefix).kernel


def specialise(functions, parts, head, prefix):
    """Generate, cache and import the specialised kernel; returns its ``kernel`` or None.

    functions : dict name -> numba dispatcher
        The function arguments, bound as module globals under these names.
    parts : list of (function, n function args, callees, new name)
        The functions to specialise, callees first; one of them must be named ``kernel``.
    head : str
        Import lines the parts need (numpy, numba, helpers without function arguments).
    prefix : str
        Module-name prefix of the generated file.
    """
    bound = _bind(functions)
    if bound is None:
        return None
    imports, extra, deps = bound
    deps |= {p[0].py_func.__module__ for p in parts} | {__name__}
    bodies = [specialised_source(fn, nf, callees, name) for fn, nf, callees, name in parts]
    try:
        return _load(prefix, deps, head, imports, extra, bodies)
    except Exception:  # pragma: no cover - the caller falls back to the generic kernel
        return None


# --------------------------------------------------------------------- ast-based variant
class _Specialiser(ast.NodeTransformer):
    """Rewrites one function: drops the slot parameters, the slot arguments of calls to the
    other specialised functions, and resolves ``if slot is None`` / ``is not None``."""

    def __init__(self, slots, dropped, renames):
        self.slots = slots          # slot name -> bool (bound to None)
        self.dropped = dropped      # original callee name -> [(position, parameter name)]
        self.renames = renames      # original callee name -> name in the generated module

    def visit_If(self, node):
        self.generic_visit(node)
        t = node.test
        if (isinstance(t, ast.Compare) and isinstance(t.left, ast.Name) and t.left.id in self.slots
                and len(t.ops) == 1 and isinstance(t.ops[0], (ast.Is, ast.IsNot))
                and isinstance(t.comparators[0], ast.Constant) and t.comparators[0].value is None):
            taken = self.slots[t.left.id] == isinstance(t.ops[0], ast.Is)
            return (node.body if taken else node.orelse) or [ast.Pass()]
        return node

    def visit_Call(self, node):
        self.generic_visit(node)
        f = node.func
        if isinstance(f, ast.Name) and f.id in self.dropped:
            drop = self.dropped[f.id]
            if any(isinstance(a, ast.Starred) for a in node.args):
                raise ValueError(f"starred call of {f.id}")
            for pos, pname in drop:
                a = node.args[pos] if pos < len(node.args) else None
                # the slot must be passed through under its own name (it becomes one global)
                if not (isinstance(a, ast.Name) and a.id == pname):
                    raise ValueError(f"{f.id}: argument {pos} is not the slot {pname}")
            gone = {pos for pos, _ in drop}
            node.args = [a for i, a in enumerate(node.args) if i not in gone]
            node.func = ast.Name(id=self.renames[f.id], ctx=ast.Load())
        return node


def _is_njit(dec):
    target = dec.func if isinstance(dec, ast.Call) else dec
    name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", None)
    return name in ("njit", "jit")


def specialise_by_name(functions, parts, prefix, head=""):
    """Generate, cache and import a kernel with the function slots ``functions`` made globals.

    functions : dict name -> numba dispatcher or None
        The slots: parameters of these names are removed from every function of
        ``parts`` that has them, wherever they stand; a dispatcher is imported as a
        module global of that name (:func:`import_path`; eosdyn's derived closures
        are re-derived), None binds ``name = None`` and resolves ``if name is None``
        tests in the source (so do dispatchers, the other way). A slot must be
        passed to a specialised callee under its own name.
    parts : list of (function, new name or None)
        numba functions to rewrite, callees first; one must end up named ``kernel``.
        Positional arguments in a slot's position are removed from calls to them.
        Their decorators become ``njit(cache=True, <their other options>)``.
    prefix : str
        Module-name prefix of the generated file.
    head : str
        Extra import lines. The module globals the parts read (numpy, constants,
        other numba helpers) are imported from the parts' modules automatically.

    Returns the generated ``kernel`` dispatcher, or None when a function cannot be
    imported by name or the rewrite fails. The kernel is compiled at its first call,
    so a caller should compile it inside a ``try`` and fall back on an error.
    """
    try:
        bound = _bind(functions)
        if bound is None:
            return None
        imports, extra, deps = bound
        slots = {k: v is None for k, v in functions.items()}
        dropped, renames, trees = {}, {}, []
        for fn, new in parts:
            tree = ast.parse(textwrap.dedent(inspect.getsource(fn.py_func)))
            fdef = tree.body[0]
            a = fdef.args
            if any(x.arg in slots for x in a.posonlyargs + a.kwonlyargs) or a.vararg or a.kwarg:
                return None
            dropped[fn.__name__] = [(i, x.arg) for i, x in enumerate(a.args) if x.arg in slots]
            renames[fn.__name__] = new or fn.__name__
            trees.append((fn, tree))
        bodies, names = [], {}
        for fn, tree in trees:
            fdef = tree.body[0]
            own = dict(dropped)
            own.pop(fn.__name__)
            a = fdef.args
            keep = [x for x in a.args if x.arg not in slots]
            n_def = len(a.defaults)
            if n_def and any(x.arg in slots for x in a.args[len(a.args) - n_def:]):
                return None
            a.args = keep
            fdef = _Specialiser(slots, own, renames).visit(fdef)
            fdef.name = renames[fn.__name__]
            decs = []
            for dec in fdef.decorator_list:
                if _is_njit(dec):
                    kws = [k for k in getattr(dec, "keywords", []) if k.arg != "cache"]
                    dec = ast.Call(func=ast.Name(id="njit", ctx=ast.Load()), args=[],
                                   keywords=[ast.keyword(arg="cache", value=ast.Constant(True))] + kws)
                decs.append(dec)
            fdef.decorator_list = decs
            tree.body[0] = fdef
            ast.fix_missing_locations(tree)
            bodies.append(ast.unparse(tree))
            # module globals it reads: every loaded name that is not local, a slot or a part
            local = {x.arg for x in a.args} | {n.id for n in ast.walk(fdef)
                                                if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
            g = fn.py_func.__globals__
            for n in ast.walk(fdef):
                if (isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load) and n.id not in local
                        and n.id not in slots and n.id not in renames.values() and n.id in g):
                    names[n.id] = (fn.py_func.__module__, g[n.id])
            deps.add(fn.py_func.__module__)
        lines = ["from numba import njit"]
        for n, (mod, obj) in sorted(names.items()):
            if n == "njit":
                continue
            if isinstance(obj, type(sys)):
                lines.append(f"import {obj.__name__} as {n}")
            else:
                lines.append(f"from {mod} import {n}")
                sub = getattr(getattr(obj, "py_func", None), "__module__", None)
                if sub in sys.modules:
                    deps.add(sub)
        if "kernel" not in renames.values():
            return None
        deps.add(__name__)
        return _load(prefix, deps, head + "\n" + "\n".join(lines), imports, extra, bodies)
    except Exception:  # noqa: BLE001 - the caller falls back to the generic kernel
        return None
