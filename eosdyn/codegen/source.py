"""Generated source modules: written once to the cache directory, imported from there.

numba's ``cache=True`` needs a function defined in a real source file, so code that
eosdyn generates at run time (sympy-derived losses, √(L − L*) wrappers of a base family,
specialised simulator kernels) is written once to a cache directory, named by the SHA-256
of its text, and imported from there. Directory: ``$EOSDYN_CACHE_DIR``, else ``$XDG_CACHE_HOME/eosdyn`` or
``~/.cache/eosdyn``, subfolder ``generated``; a fresh temporary directory if none of
these is writable. The text of a generated module is rebuilt from the live sources in every
process, but numba's cache of it is keyed on that text only; :mod:`eosdyn.codegen.numba_cache`
adds the sources of the eosdyn modules it imports (transitively) to the key, so a change two
imports down (``eosdyn/_rng.py`` under ``engine/core.py``) recompiles it too.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import tempfile

_DIR: list = []
_MODULES: dict = {}


def cache_base() -> str:
    """eosdyn's cache folder as the environment names it now: ``$EOSDYN_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/eosdyn`` or ``~/.cache/eosdyn`` (not created)."""
    env = os.environ.get("EOSDYN_CACHE_DIR")
    if env:
        return env
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(xdg, "eosdyn")


def cache_dir() -> str:
    if _DIR:
        return _DIR[0]
    d = os.path.join(cache_base(), "generated")
    try:
        os.makedirs(d, exist_ok=True)
        probe = os.path.join(d, f".probe-{os.getpid()}")
        with open(probe, "w") as fh:
            fh.write("")
        os.remove(probe)
    except OSError:
        d = tempfile.mkdtemp(prefix="eosdyn_generated_")
    _DIR.append(d)
    return d


def load_source(source: str, prefix: str):
    """Import ``source`` as a module (written to the cache directory once); memoised per text."""
    key = hashlib.sha256(source.encode()).hexdigest()
    mod = _MODULES.get(key)
    if mod is not None:
        return mod
    modname = f"{prefix}_{key[:24]}"
    path = os.path.join(cache_dir(), modname + ".py")
    existing = None
    if os.path.exists(path):
        try:
            with open(path) as fh:
                existing = fh.read()
        except OSError:
            existing = None
    if existing != source:  # write atomically; an identical file is left alone (keeps numba's cache valid)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as fh:
            fh.write(source)
        os.replace(tmp, path)
    spec = importlib.util.spec_from_file_location(modname, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[modname] = mod
    spec.loader.exec_module(mod)
    _MODULES[key] = mod
    return mod


def file_digest(path) -> str:
    """SHA-256 of a file's bytes ('' if unreadable): ties generated code to its dependencies."""
    try:
        with open(path, "rb") as fh:
            return hashlib.sha256(fh.read()).hexdigest()
    except (OSError, TypeError):
        return ""
