"""numba's disk cache, made to notice changes in the modules a cached kernel calls.

**The hazard.** ``@njit(cache=True)`` stamps a cache entry with the source file of the
cached function only. A kernel compiled into the cache inlines (or links) the code of every
jitted function it calls and freezes every global it reads; when one of those lives in
*another* module — ``eosdyn/_rng.py``'s sampler, called from ``engine/core.py``,
``sde/kernels.py``, ``rules/adaptive.py`` and every generated kernel — and that module
changes (a ``git pull``, an upgrade), numba still loads the old machine code: stale results,
silently. CI starts with empty caches and never sees it; developers and users do.

**The fix.** :class:`DependencyLocator`, a numba cache *locator* registered ahead of numba's
own (``CacheImpl._locator_classes``, the list numba tries in order for every function with
``cache=True``). For a function defined in eosdyn (or in a module that :mod:`eosdyn.codegen`
generated) it asks numba's own locators where the cache goes — so ``NUMBA_CACHE_DIR``, the
in-tree ``__pycache__`` and numba's user-wide fallback behave exactly as before, and
``EOSDYN_CACHE_DIR`` still places the generated modules and therefore their caches — and it
adds to numba's freshness stamp (the file's own hash or mtime) a SHA-256 of the module's
**dependency closure**: the module's source and that of every eosdyn module it imports,
transitively (:func:`closure_files`). When the stamp differs, numba treats the index as
empty, recompiles and overwrites it. A kernel can only call functions and read globals that
its module's namespace holds, and those come from the module itself or from the modules it
imports, so the import closure covers every source its machine code can depend on. Generated
modules (:mod:`eosdyn.codegen.source`) import eosdyn by absolute name; their closure is read
from the generated file the same way. That was the second half of the hazard: a generated
module's *text* is rebuilt from the live sources in every process (and embeds its direct
dependencies' digests), but a change two levels down (``_rng.py`` under ``engine/core.py``)
left the text, and so numba's stamp, unchanged.

**Why a stamp, not a folder per digest.** The alternative (a cache folder named by one
digest of all of eosdyn's kernel sources) was considered and not taken:

- one package-wide digest invalidates every kernel on any edit (the whole test suite
  recompiles: about 43 min on 2 cores instead of 8); per-module closures invalidate only
  the kernels whose closure changed (an edit of ``cli.py`` or ``analysis/spectra.py``
  recompiles nothing; one of ``_rng.py`` the kernels of 11 of the 18 modules with cached
  kernels, and every generated kernel that imports one of those);
- a folder per digest grows by one full copy of the caches per source change and needs
  pruning; a stamp reuses numba's files in place (numba overwrites stale entries);
- numba keeps choosing the folder, so ``NUMBA_CACHE_DIR``, read-only installs (numba's
  user-wide fallback) and zip imports keep working without eosdyn re-implementing them.

The price of a stamp: switching between two checkouts with different sources recompiles
the kernels that differ each time — as numba already does for the file that changed.

**Cost.** Every eosdyn module with a cached kernel computes its closure digest once, at
import (numba builds the stamp when ``@njit(cache=True)`` runs). Each file is read, hashed
and scanned for its import lines (string search, not ``ast``) once per process: the 116
cached kernels of ``eosdyn``, ``eosdyn.sde``, ``eosdyn.analysis`` and ``eosdyn.flows`` have
closures over 39 files (0.3 MB); with the locator objects and the rebuilt early caches about
10 ms of import time (measured in CHANGELOG.md).

**Registration.** :func:`install` runs when :mod:`eosdyn.codegen` is imported, which
``eosdyn.losses`` does; modules with cached kernels that were imported before it (the first
loss modules) get their dispatchers' caches rebuilt with the new locator
(``Dispatcher.enable_caching()``, before anything has compiled). tests/test_numba_cache_staleness.py
checks that every cached kernel of eosdyn ends up on this locator.

**Limits.** A dependency that is not imported by name — a module loaded with
``importlib.import_module(name)`` by a computed name, or a global injected at run time — is
outside the closure; eosdyn's kernels have none. User modules are not tracked (their kernels
keep numba's own stamp); a user function bound into a generated module is covered by the
digest of its file that :func:`eosdyn.codegen.specialise` writes into the generated text. If
``NUMBA_CACHE_LOCATOR_CLASSES`` is set, numba uses that list instead of its default one and
this locator is bypassed unless the list names it
(``eosdyn.codegen.numba_cache.DependencyLocator``). Works with numba 0.58–0.68 (it uses only
``_CacheLocator``'s abstract interface, ``CacheImpl._locator_classes`` and
``Dispatcher.enable_caching``).
"""
from __future__ import annotations

import hashlib
import os
import re
import sys

from numba.core import caching as _caching

__all__ = ["DependencyLocator", "install", "track_package", "closure_files", "closure_digest", "covers"]

# numba 0.58-0.68 call it CacheImpl; older releases _CacheImpl
_CacheImpl = getattr(_caching, "CacheImpl", None) or _caching._CacheImpl

#: package name -> its directory (real path): the sources whose modules are tracked
_PACKAGES: dict[str, str] = {"eosdyn": os.path.dirname(os.path.dirname(os.path.realpath(__file__)))}
#: real path -> (sha256 hex of the bytes, dependency paths)
_FILES: dict[str, tuple[str, tuple[str, ...]]] = {}
#: real path -> closure digest
_DIGESTS: dict[str, str] = {}
#: module name -> its source file (None: not tracked); a function's file name -> covers()
_WHERE: dict[str, str | None] = {}
_COVERS: dict[str, str | None] = {}

#: the text of an import statement after "from"/"import" (one line, or a parenthesised list)
_STATEMENT = re.compile(r"[^\n#;(]*(?:\([^)]*\))?")


def track_package(name: str, directory: str) -> None:
    """Track the kernels of package ``name`` (its sources under ``directory``) as eosdyn's are.

    eosdyn tracks itself; this is for a package built on eosdyn's pattern (and for the tests).
    Clears the memoised digests."""
    _PACKAGES[name] = os.path.realpath(directory)
    for memo in (_FILES, _DIGESTS, _WHERE, _COVERS):
        memo.clear()


def _generated_dirs() -> list[str]:
    from . import source

    return [os.path.realpath(d) for d in source._DIR]


def _module_of(path: str):
    """(package name, dotted module name, is a package) of a tracked source file, or None."""
    for pkg, root in _PACKAGES.items():
        if path.startswith(root + os.sep) and path.endswith(".py"):
            parts = path[len(root) + 1:-3].split(os.sep)
            is_pkg = parts[-1] == "__init__"
            if is_pkg:
                parts = parts[:-1]
            return pkg, ".".join([pkg, *parts]), is_pkg
    return None


def covers(py_file) -> str | None:
    """The real path of ``py_file`` if its kernels are tracked (an eosdyn source or a module
    that :mod:`eosdyn.codegen` generated), else None."""
    if not isinstance(py_file, str) or not py_file.endswith(".py"):
        return None
    if py_file in _COVERS:
        return _COVERS[py_file]
    path = os.path.realpath(py_file)
    if _module_of(path) is None and os.path.dirname(path) not in _generated_dirs():
        path = None
    if path is None or _module_of(path) is not None:  # generated files are not memoised (their folder may move)
        _COVERS[py_file] = path
    return path


def _file_of(module: str) -> str | None:
    """The source file of a tracked module (a path under its package's real directory), or None."""
    if module in _WHERE:
        return _WHERE[module]
    found = None
    for pkg, root in _PACKAGES.items():
        if module == pkg or module.startswith(pkg + "."):
            base = os.path.join(root, *module.split(".")[1:])
            for cand in (base + ".py", os.path.join(base, "__init__.py")):
                if os.path.isfile(cand):
                    found = cand
                    break
    _WHERE[module] = found
    return found


def _statements(text: str):
    """("from"|"import", the rest) of every line that starts (after indentation) with an import
    statement; a parenthesised name list may span lines. Over-inclusive (an import in a function
    or a docstring counts too), which only makes the closure larger."""
    out = []
    for kw in ("import ", "from "):
        i = text.find(kw)
        while i >= 0:
            j = i
            while j > 0 and text[j - 1] in " \t":
                j -= 1
            if j == 0 or text[j - 1] == "\n":
                m = _STATEMENT.match(text, i + len(kw))
                out.append((kw.strip(), m.group(0).replace("\n", " ").replace("\\", " ")))
            i = text.find(kw, i + len(kw))
    return out


def _read(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


def _scan(path: str) -> tuple[str, tuple[str, ...]]:
    """(digest of the file, the tracked files it imports), memoised per process."""
    hit = _FILES.get(path)
    if hit is not None:
        return hit
    try:
        data = _read(path)
    except OSError:
        _FILES[path] = ("", ())
        return _FILES[path]
    text = data.decode("utf-8", "replace")
    me = _module_of(path)
    if me is None:
        package = None
    else:
        package = me[1] if me[2] else me[1].rpartition(".")[0]
    targets = []
    for kind, rest in _statements(text):
        if kind == "import":
            targets += [item.strip().split(" ")[0] for item in rest.split(",")]
            continue
        mod, sep, names = rest.partition(" import ")
        mod = mod.strip()
        if not sep or not mod:
            continue
        dots = len(mod) - len(mod.lstrip("."))
        if dots:
            if package is None:
                continue
            base = package.split(".")[:len(package.split(".")) - (dots - 1)]
            if not base:
                continue
            full = ".".join(base + ([mod[dots:]] if mod[dots:] else []))
        else:
            full = mod
        targets.append(full)
        if (_file_of(full) or "").endswith("__init__.py"):  # ``from package import submodule``
            for n in names.strip().strip("()").split(","):
                n = n.strip().split(" ")[0]
                if n.isidentifier():
                    targets.append(f"{full}.{n}")
    deps = []
    for t in targets:
        f = _file_of(t)
        if f is not None and f != path and f not in deps:
            deps.append(f)
    _FILES[path] = (hashlib.sha256(data).hexdigest(), tuple(deps))
    return _FILES[path]


def closure_files(path) -> list[str]:
    """The source file ``path`` and every tracked file it imports, transitively (real paths, sorted)."""
    path = os.path.realpath(path)
    seen, todo = {path}, [path]
    while todo:
        for d in _scan(todo.pop())[1]:
            if d not in seen:
                seen.add(d)
                todo.append(d)
    return sorted(seen)


def _label(path: str) -> str:
    m = _module_of(path)
    return m[1] if m is not None else os.path.basename(path)


def closure_digest(path) -> str:
    """SHA-256 (hex) of the sources of ``path``'s dependency closure (:func:`closure_files`),
    each labelled by its module name; memoised per process."""
    hit = _DIGESTS.get(path)
    if hit is None:
        h = hashlib.sha256()
        for f in closure_files(path):
            h.update(f"{_label(f)}:{_scan(f)[0]}\n".encode())
        hit = _DIGESTS[path] = _DIGESTS[os.path.realpath(path)] = h.hexdigest()
    return hit


def _inner_classes():
    return [c for c in _CacheImpl._locator_classes if not (isinstance(c, type) and issubclass(c, DependencyLocator))]


class DependencyLocator(_caching._CacheLocator):
    """numba's own locator for the function, with the function's dependency-closure digest
    added to the source stamp (module docstring)."""

    def __init__(self, inner, path):
        self._inner = inner
        self._path = path
        self._digest = closure_digest(path)

    def ensure_cache_path(self):
        self._inner.ensure_cache_path()

    def get_cache_path(self):
        return self._inner.get_cache_path()

    def get_source_stamp(self):
        return (self._inner.get_source_stamp(), "eosdyn-closure", self._digest)

    def get_disambiguator(self):
        return self._inner.get_disambiguator()

    @classmethod
    def from_function(cls, py_func, py_file):
        path = covers(py_file)
        if path is None:
            return None
        for klass in _inner_classes():
            inner = klass.from_function(py_func, py_file)
            if inner is not None:
                return cls(inner, path)
        return None


def _uses_locator(dispatcher) -> bool | None:
    """Whether a dispatcher's disk cache goes through :class:`DependencyLocator` (None: no disk cache)."""
    impl = getattr(getattr(dispatcher, "_cache", None), "_impl", None)
    if impl is None:
        return None
    return isinstance(getattr(impl, "locator", None), DependencyLocator)


def _refit(prefixes) -> int:
    """Rebuild the disk caches of the cached dispatchers already defined in modules under ``prefixes``."""
    from numba.core.dispatcher import Dispatcher

    n = 0
    for name, mod in list(sys.modules.items()):
        if mod is None or not any(name == p or name.startswith(p + ".") for p in prefixes):
            continue
        for obj in list(getattr(mod, "__dict__", {}).values()):
            if not isinstance(obj, Dispatcher) or _uses_locator(obj) is not False:
                continue
            code = getattr(getattr(obj, "py_func", None), "__code__", None)
            if code is not None and covers(code.co_filename):
                obj.enable_caching()
                n += 1
    return n


def install() -> int:
    """Register :class:`DependencyLocator` first in numba's locator list (once) and rebuild the
    caches of tracked kernels defined before it; returns how many were rebuilt."""
    classes = _CacheImpl._locator_classes
    if DependencyLocator not in classes:
        classes.insert(0, DependencyLocator)
    return _refit(list(_PACKAGES))
