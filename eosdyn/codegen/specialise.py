"""The one specialiser: numba kernels that take functions as arguments, rewritten so that
numba can cache them on disk.

Numba cannot cache on disk a kernel that *receives* numba functions as arguments: it
lowers them as dynamic addresses, so every new process recompiles (1–15 s per pair of
loss family and rule). :func:`specialise` writes the kernel out as source instead — the
kernel and every callee that passes the functions along — with those *slot* parameters
removed wherever they stand, the functions imported as module globals of the same name,
and ``if slot is None`` tests resolved in the source. The module is loaded through
:func:`eosdyn.codegen.load_source` (a content-addressed file in the cache directory), so
``cache=True`` works and a new process pays about half a second. The text names the digests
of the modules it imports (so a new version of one is a new file); numba's cache of it also
follows every module those import in turn (:mod:`eosdyn.codegen.numba_cache`).

A slot may be bound to

- a numba dispatcher importable by name (a module-level function of a module with a
  source file), imported under the slot's name;
- a closure that eosdyn derives itself (``grad_into_from_grad``, ``hvp_from_hess`` of
  :mod:`eosdyn.losses.base`), re-derived as module-level code from the function it wraps;
- ``None`` (``name = None``), which also resolves ``if name is None`` in the source;
- a plain int or bool (a *selector*: ``name = 1``), which resolves ``if name is None`` the
  other way and otherwise reads as a constant.

Anything else — a closure, a function typed at a prompt or in a notebook (no source file,
so its generated module could not be tied to its code and a stale cache could be served)
— raises :class:`NotSpecialisable` with the reason; the caller then runs the generic
in-memory kernel and says so once (:func:`eosdyn.codegen.fallback_warning`).
"""
from __future__ import annotations

import ast
import inspect
import sys
import textwrap

from .source import file_digest, load_source


class NotSpecialisable(Exception):
    """The kernel cannot be specialised; ``str(exc)`` says why."""


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


def import_path(fn):
    """(module, name) under which dispatcher ``fn`` can be imported, or None (a closure)."""
    py = getattr(fn, "py_func", None)
    if py is None or "<locals>" in py.__qualname__:
        return None
    mod = sys.modules.get(py.__module__)
    if mod is None or getattr(mod, py.__qualname__, None) is not fn:
        return None
    return py.__module__, py.__qualname__


def plain_import_path(fn):
    """(module, name) of the *plain* Python function that dispatcher ``fn`` jit-wraps, when that
    function (not a dispatcher) is what the module holds: a user's ``def f(theta): ...`` that
    eosdyn wrapped with ``njit`` itself (e.g. :class:`eosdyn.sde.CallableNoise`). Else None."""
    py = getattr(fn, "py_func", None)
    if py is None or "<locals>" in getattr(py, "__qualname__", "<locals>"):
        return None
    mod = sys.modules.get(py.__module__)
    if mod is None or getattr(mod, py.__qualname__, None) is not py:
        return None
    return py.__module__, py.__qualname__


def _describe(f) -> str:
    py = getattr(f, "py_func", f)
    return f"{getattr(py, '__module__', '?')}.{getattr(py, '__qualname__', repr(f))}"


def _bind(functions):
    """(import lines, extra source, dependency modules) binding the slots as module globals."""
    from ..losses.base import DERIVED

    imports, extra, deps = [], [], set()
    for name, f in functions.items():
        if f is None or (isinstance(f, (bool, int)) and not hasattr(f, "py_func")):
            extra.append(f"{name} = {f!r}")
            continue
        how, inner = DERIVED.get(id(f), (None, None))
        target = inner if how else f
        path = import_path(target)
        wrap = False
        if path is None and not how:
            path = plain_import_path(target)
            wrap = path is not None
        if path is None:
            raise NotSpecialisable(f"slot {name!r} is {_describe(target)}, which cannot be imported by name "
                                   "(a closure or a function defined inside another)")
        if not file_digest(getattr(sys.modules[path[0]], "__file__", None)):
            raise NotSpecialisable(f"slot {name!r} is {_describe(target)}, defined in a module without a "
                                   "source file (a prompt or a notebook)")
        deps.add(path[0])
        if how:  # re-derive the closure as module-level code
            imports.append(f"from {path[0]} import {path[1]} as _inner_{name}")
            extra.append(_DERIVED_SOURCE[how].format(name=name))
        elif wrap:  # a plain function: jit it here, with numba's disk cache (keyed on its own file)
            imports.append(f"from {path[0]} import {path[1]} as _py_{name}")
            imports.append("from numba import njit as _njit")
            extra.append(f"{name} = _njit(cache=True)(_py_{name})")
        else:
            imports.append(f"from {path[0]} import {path[1]} as {name}")
    return imports, extra, deps


class _Rewriter(ast.NodeTransformer):
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
                raise NotSpecialisable(f"a starred call of {f.id}")
            for pos, pname in drop:
                a = node.args[pos] if pos < len(node.args) else None
                # the slot must be passed through under its own name (it becomes one global)
                if not (isinstance(a, ast.Name) and a.id == pname):
                    raise NotSpecialisable(f"{f.id}: argument {pos} is not passed as the slot {pname!r}")
            gone = {pos for pos, _ in drop}
            node.args = [a for i, a in enumerate(node.args) if i not in gone]
            node.func = ast.Name(id=self.renames[f.id], ctx=ast.Load())
        return node


def _is_njit(dec):
    target = dec.func if isinstance(dec, ast.Call) else dec
    name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", None)
    return name in ("njit", "jit")


def _rewrite(functions, parts, calls_through):
    """(bodies, global imports, dependency modules) of the specialised parts."""
    slots = {k: v is None for k, v in functions.items()}
    dropped, renames, trees = {}, {}, []
    for fn, new in parts:
        tree = ast.parse(textwrap.dedent(inspect.getsource(fn.py_func)))
        a = tree.body[0].args
        if any(x.arg in slots for x in a.posonlyargs + a.kwonlyargs) or a.vararg or a.kwarg:
            raise NotSpecialisable(f"{fn.__name__}: slots must be plain positional parameters")
        dropped[fn.__name__] = [(i, x.arg) for i, x in enumerate(a.args) if x.arg in slots]
        renames[fn.__name__] = new or fn.__name__
        trees.append((fn, tree))
    if "kernel" not in renames.values():
        raise NotSpecialisable("no part is named 'kernel'")
    for param, fn in calls_through.items():  # a parameter that holds a part: its calls lose the same slots
        if fn.__name__ not in dropped:
            raise NotSpecialisable(f"{param!r} is called as {fn.__name__}, which is not a part")
        dropped[param] = dropped[fn.__name__]
        renames[param] = param
    bodies, names, deps = [], {}, set()
    for fn, tree in trees:
        fdef = tree.body[0]
        own = dict(dropped)
        own.pop(fn.__name__)
        a = fdef.args
        n_def = len(a.defaults)
        if n_def and any(x.arg in slots for x in a.args[len(a.args) - n_def:]):
            raise NotSpecialisable(f"{fn.__name__}: a slot has a default value")
        a.args = [x for x in a.args if x.arg not in slots]
        fdef = _Rewriter(slots, own, renames).visit(fdef)
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
    return bodies, lines, deps


def specialise(functions, parts, prefix, calls_through=None):
    """Generate, cache and import a kernel with the slots ``functions`` made module globals.

    functions : dict name -> numba dispatcher, None, or an int/bool selector
        The slots: parameters of these names are removed from every function of
        ``parts`` that has them, wherever they stand (see the module docstring for what
        each kind of value binds). A slot must be passed to a specialised callee under its
        own name.
    parts : list of (function, new name or None)
        numba functions to rewrite, callees first; one must end up named ``kernel``.
        Positional arguments in a slot's position are removed from calls to them. Their
        decorators become ``njit(cache=True, <their other options>)``.
    prefix : str
        Module-name prefix of the generated file.
    calls_through : dict parameter name -> part, optional
        Parameters of the parts that hold one of the parts (a first-class function, called
        out of line: :class:`eosdyn.engine.kernels.Kernel`); calls to them lose that part's
        slot arguments too.

    Returns the generated ``kernel`` dispatcher (compiled at its first call, so a caller
    should compile it inside a ``try`` and fall back on an error). Raises
    :class:`NotSpecialisable` saying why when it cannot be generated.
    """
    try:
        imports, extra, deps = _bind(functions)
        bodies, lines, more = _rewrite(functions, parts, calls_through or {})
    except NotSpecialisable:
        raise
    except Exception as exc:  # a bug in the rewriter must be visible, not a silent slow-down
        raise NotSpecialisable(f"the rewriter failed: {type(exc).__name__}: {exc}") from exc
    deps |= more | {__name__}
    digest = ":".join(file_digest(getattr(sys.modules[m], "__file__", None))[:16] for m in sorted(deps))
    source = (f"# Generated by eosdyn.codegen -- do not edit.\n"
              f"# Dependencies' digest: {digest}\n" + "\n".join(lines) + "\n"
              + "\n".join(imports) + "\n" + "\n".join(extra) + "\n\n" + "\n\n".join(bodies))
    return load_source(source, prefix).kernel
