"""The core's kernels for one (loss family, rule) pair: disk-cached where possible, generic else.

The loops of :mod:`eosdyn.engine.core` take the loss's, the rule's and the noise's numba
functions as arguments (*slots*). :func:`kernel_for` binds them with
:func:`eosdyn.codegen.specialise`, so numba caches each pair's kernel on disk and a new
process loads it in well under a second; where a slot cannot be imported by name (a closure,
a function typed in a notebook) or the generated kernel fails to compile, the generic
in-memory loop runs instead — compiled once per process — and
:func:`eosdyn.codegen.fallback_warning` says so once, naming the loss and the rule.
"""
from __future__ import annotations

import sys
from contextlib import contextmanager

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


def _parts(kind):
    if kind in _PARTS:
        return _PARTS[kind]()
    if kind == "trajectory":
        return [(probe, None), (core.record, None), (noise_matrix, None),
                (diagonal_noise, None), (core.run_trajectory, None),
                (core.run_trajectory_safe, None), (core.run_ensemble, "kernel")]
    if kind == "blocked":
        return [(core.record, None), (core.run_block, None), (core.run_block_safe, None),
                (core.run_ensemble_blocked, "kernel")]
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


def register_kind(kind, slots, parts, generic):
    """Add a kernel kind (the SDE integrators register theirs): its slot names, a function
    giving the parts to specialise, and the generic loop."""
    SLOTS[kind] = tuple(slots)
    _PARTS[kind] = parts
    _GENERIC[kind] = generic


_PARTS: dict = {}


class Kernel:
    """A core loop with its slots bound: ``k(*rest)`` runs it on the non-slot arguments.

    ``generated`` is the disk-cached specialisation, or None when the generic loop runs.
    If the generated kernel raises before it has compiled for these argument types, it
    failed to compile (generated code fails only at compile time): it is dropped for good,
    with a warning, and the generic loop runs instead; errors raised while running
    propagate.
    """

    def __init__(self, kind, slots, what):
        self.kind = kind
        self.slots = slots
        self.what = what
        self.generated = None

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
        if gen is not None:
            before = len(gen.overloads)
            try:
                return gen(*rest)
            except Exception as exc:
                if len(gen.overloads) > before or self._compiled_for(gen, rest):
                    raise  # it compiled: a run-time error, the generic kernel would raise it too
                self.generated = None
                fallback_warning(self.what, f"the generated kernel did not compile ({type(exc).__name__}: "
                                            f"{str(exc).splitlines()[0] if str(exc) else ''})")
        return _GENERIC[self.kind](*self.slots, *rest)

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
    try:
        k.generated = specialise(dict(zip(SLOTS[kind], slots)), _parts(kind), f"eosdyn_{kind}_kernel")
    except NotSpecialisable as exc:
        fallback_warning(what, str(exc))
    _KERNELS[key] = (slots, k)  # the slots are kept alive so their ids stay unique
    return k
