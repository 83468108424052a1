"""The one code generator: source that eosdyn writes at run time so numba can cache it on disk.

Two kinds of generated code, one mechanism:

- **loss kernels** written from data — a sympy expression (:mod:`eosdyn.losses.symbolic`),
  straight-line block gradients of a quadratic or a scalar net of a given size, the
  √(L − L*) wrapper of a base family — as source text, loaded by :func:`load_source`;
- **specialised simulator kernels**: a numba kernel that receives the loss's and the
  rule's functions as arguments, rewritten by :func:`specialise` with those functions
  bound as module globals (:mod:`eosdyn.codegen.specialise`).

:func:`load_source` writes each text once to the cache directory, named by the SHA-256 of
the text, and imports it from there: ``$EOSDYN_CACHE_DIR``, else ``$XDG_CACHE_HOME/eosdyn``
or ``~/.cache/eosdyn``, subfolder ``generated`` (a fresh temporary directory if none of
these is writable). Where a kernel cannot be specialised, the caller runs the generic
in-memory kernel and :func:`fallback_warning` says so once, naming the loss and the rule.

numba's disk cache of every eosdyn kernel, generated or not, is stamped with a digest of the
kernel module's sources *and of every eosdyn module it imports* (:mod:`eosdyn.codegen.numba_cache`),
so a change in a called module (``eosdyn/_rng.py`` under a kernel of ``engine/core.py``)
recompiles the kernel instead of loading the old machine code.
"""
from __future__ import annotations

import warnings

from . import numba_cache
from .source import cache_dir, file_digest, load_source
from .specialise import NotSpecialisable, import_path, specialise

# numba's disk cache checks only a kernel's own file: make eosdyn's kernels (and the generated
# ones) also depend on the modules they import (issue 16; numba_cache's docstring)
numba_cache.install()

__all__ = ["load_source", "cache_dir", "file_digest", "specialise", "NotSpecialisable", "import_path",
           "GenericKernelWarning", "fallback_warning"]


class GenericKernelWarning(UserWarning):
    """A kernel runs in its generic form (compiled in every process) instead of a disk-cached one."""


_WARNED: set = set()


def fallback_warning(what: str, reason: str) -> None:
    """Warn once per ``what`` (e.g. "the simulator kernel for (ScalarNet, GD)") that the generic
    kernel runs, and why."""
    if what in _WARNED:
        return
    _WARNED.add(what)
    warnings.warn(f"eosdyn: {what} runs as a generic kernel, compiled in this process (a first call "
                  f"costs seconds more than a disk-cached one): {reason}", GenericKernelWarning, stacklevel=3)
