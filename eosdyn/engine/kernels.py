"""The core's kernels for one (loss family, rule) pair: disk-cached where possible, generic else.

The loops of :mod:`eosdyn.engine.core` take the loss's, the rule's and the noise's numba
functions as arguments (*slots*). :func:`kernel_for` binds them with
:func:`eosdyn.codegen.specialise`, so numba caches each pair's kernel on disk and a new
process loads it in well under a second; where a slot cannot be imported by name (a closure,
a function typed in a notebook) or the generated kernel fails to compile, the generic
in-memory loop runs instead — compiled once per process — and
:func:`eosdyn.codegen.fallback_warning` says so once, naming the loss and the rule.

**Out-of-line callees.** An ensemble kernel (the loop over trajectories or blocks, with the
``try`` that keeps an exception from escaping) calls the function that runs one trajectory or
block — its *callee* (:data:`CALLEES`) — through its first argument. The generated kernel
receives the generated callee as a numba first-class function (``FunctionType``) and calls it
through its address: numba then compiles the callee once, not again inside the loop that
calls it (a linked callee is optimised and emitted anew in every caller: about 1.3 s per
layer of the README example's 8 s cold compile). The generic kernel receives the callee as
an ordinary dispatcher, linked as usual.
"""
from __future__ import annotations

import sys
from contextlib import contextmanager

from numba.core import types as nbt
from numba.core.typing.typeof import Purpose, typeof

from ..codegen import NotSpecialisable, fallback_warning, specialise
from ..curvature.kernels import probe
from . import core
from .noise import diagonal_noise, noise_matrix
from .threads import run_blocks

#: slot names of each kernel kind, in the generic kernel's argument order
SLOTS = {
    "trajectory": ("sel_noise", "sel_state", "sel_probe", "sel_track", "sel_locate", "value_fn", "grad_into_fn",
                   "hess_fn", "hvp_fn", "step_fn", "precond_fn", "pex_fn", "umat_fn", "udiag_fn", "ucov_fn",
                   "batch_fn"),
    "blocked": ("sel_track", "value_fn", "grad_block_fn", "hess_fn", "step_fn", "step_block_fn", "precond_fn"),
    "lyapunov": ("sel_probe", "grad_into_fn", "hess_fn", "hvp_fn", "step_fn", "jacobian_fn"),
}


#: kinds whose kernel calls its callee out of line: kind -> (the kernel's parameter, the callee).
#: The kernel is ``kernel(callee, *slots, *rest)`` and calls ``callee(a, b, *slots, *rest[:-3])``
#: with two int64 (the trajectory and its block, or a block's first and end trajectory); the
#: last three of ``rest`` are the kernel's own (the block bounds or flags, b0, b1).
CALLEES = {"trajectory": ("traj_fn", core.run_trajectory), "blocked": ("block_fn", core.run_block)}
_OWN_TAIL = 3


def _parts(kind):
    if kind in _PARTS:
        return _PARTS[kind]()
    if kind == "trajectory":
        return [(probe, None), (core.record, None), (noise_matrix, None),
                (diagonal_noise, None), (core.run_trajectory, None), (core.run_ensemble, "kernel")]
    if kind == "blocked":
        return [(core.record, None), (core.run_block, None), (core.run_ensemble_blocked, "kernel")]
    return [(probe, None), (core.run_lyapunov, "kernel")]


@contextmanager
def compile_headroom(limit=20_000):
    """Room for numba's recursive SSA pass on a big kernel: a ``try`` around a long loop (the
    SDE integrators) has more nested blocks than Python's default recursion limit allows."""
    old = sys.getrecursionlimit()
    if old < limit:
        sys.setrecursionlimit(limit)
    try:
        yield
    finally:
        if old < limit:
            sys.setrecursionlimit(old)


_GENERIC = {"trajectory": core.run_ensemble, "blocked": core.run_ensemble_blocked, "lyapunov": core.run_lyapunov}


def register_kind(kind, slots, parts, generic, callee=None):
    """Add a kernel kind (the SDE integrators register theirs): its slot names, a function
    giving the parts to specialise, the generic loop, and its out-of-line callee (the kernel's
    parameter, the part; see :data:`CALLEES`) if it has one."""
    SLOTS[kind] = tuple(slots)
    _PARTS[kind] = parts
    _GENERIC[kind] = generic
    if callee is not None:
        CALLEES[kind] = callee


_PARTS: dict = {}


class Kernel:
    """A core loop with its slots bound: ``k(*rest)`` runs it on the non-slot arguments.

    ``generated`` is the disk-cached specialisation, or None when the generic loop runs;
    ``callee`` is the generated out-of-line callee (:data:`CALLEES`) of a kind that has one.
    A generated kernel that fails to compile is dropped for good, with a warning, and the
    generic loop runs instead; errors raised while running propagate. For a kind with a
    callee, compiling (or loading from the disk cache) happens in :meth:`_entry`, before the
    call, so the two cannot be confused; for the others, an error before the kernel has
    compiled for these argument types is taken as a failure to compile (generated code fails
    only at compile time).
    """

    def __init__(self, kind, slots, what):
        self.kind = kind
        self.slots = slots
        self.what = what
        self.generated = None
        self.callee = None
        self._entries = {}

    def __call__(self, *rest):
        with compile_headroom():
            return self._call(*rest)

    def blocks(self, nb, *rest, threads=None):
        """Run an ensemble kernel (its last two arguments: a block range b0, b1) over the blocks
        0 … nb − 1, in chunks on ``threads`` threads (default: numba's count;
        :func:`eosdyn.engine.threads.run_blocks`, which compiles it — or falls back to the
        generic loop — in this thread first)."""
        with compile_headroom():
            run_blocks(lambda b0, b1: self._call(*rest, b0, b1), nb, threads)

    def _call(self, *rest):
        gen = self.generated
        if gen is not None and self.kind in CALLEES:
            try:
                entry = self._entry(rest)
            except Exception as exc:
                self._drop(exc)
            else:
                return entry(self.callee, *rest)
        elif gen is not None:
            before = len(gen.overloads)
            try:
                return gen(*rest)
            except Exception as exc:
                if len(gen.overloads) > before or self._compiled_for(gen, rest):
                    raise  # it compiled: a run-time error, the generic kernel would raise it too
                self._drop(exc)
        callee = CALLEES.get(self.kind)
        return _GENERIC[self.kind](*((callee[1],) if callee else ()), *self.slots, *rest)

    def _entry(self, rest):
        """The generated kernel's compiled entry point for the argument types of ``rest``, with
        the callee compiled first and passed as a first-class function of its exact signature
        (both loaded from numba's disk cache when there)."""
        key = tuple(typeof(a, Purpose.argument) for a in rest)
        entry = self._entries.get(key)
        if entry is None:
            sig = nbt.none(nbt.int64, nbt.int64, *key[:-_OWN_TAIL])
            self.callee.compile(sig)
            entry = self.generated.compile((nbt.FunctionType(sig),) + key)
            self._entries[key] = entry
        return entry

    def _drop(self, exc):
        self.generated = self.callee = None
        fallback_warning(self.what, f"the generated kernel did not compile ({type(exc).__name__}: "
                                    f"{str(exc).splitlines()[0] if str(exc) else ''})")

    @staticmethod
    def _compiled_for(gen, args):
        try:
            return tuple(typeof(a, Purpose.argument) for a in args) in gen.overloads
        except Exception:  # noqa: BLE001  # pragma: no cover - defensive
            return False


_KERNELS: dict = {}


def _key(v):
    return ("v", v) if v is None or isinstance(v, (bool, int)) else ("f", id(v))


def kernel_for(kind, slots, what):
    """The :class:`Kernel` of ``kind`` ("trajectory", "blocked", "lyapunov") for the slot values
    ``slots`` (a tuple in :data:`SLOTS` order), memoised per slot identities. ``what`` names
    the pair for the fallback warning, e.g. "the simulator kernel for (ScalarNet, GD)"."""
    key = (kind,) + tuple(_key(v) for v in slots)
    hit = _KERNELS.get(key)
    if hit is not None:
        return hit[1]
    k = Kernel(kind, slots, what)
    callee = CALLEES.get(kind)
    try:
        k.generated = specialise(dict(zip(SLOTS[kind], slots)), _parts(kind), f"eosdyn_{kind}_kernel",
                                 calls_through=dict([callee]) if callee else None)
    except NotSpecialisable as exc:
        fallback_warning(what, str(exc))
    else:
        if callee is not None:
            k.callee = getattr(sys.modules[k.generated.py_func.__module__], callee[1].__name__)
    _KERNELS[key] = (slots, k)  # the slots are kept alive so their ids stay unique
    return k
