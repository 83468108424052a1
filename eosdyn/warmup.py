"""Precompile the kernels a session is likely to need: ``eosdyn warmup``.

Every (loss family, rule) pair runs through a numba kernel that eosdyn generates for that
pair and caches on disk (:mod:`eosdyn.codegen`, numba's ``cache=True``). The first call of a
pair on a machine compiles it (8–30 s on a 2-core VM); every later process loads it from the
cache (under a second, import included). ``eosdyn warmup`` makes those first calls ahead of
time — by default in a background process, so a new user can go on reading while it runs:

    eosdyn warmup                 # the common set, in the background; prints the log's path
    eosdyn warmup --foreground    # the same, here, with a line per cell
    eosdyn warmup --all           # every built-in loss family x every rule (minutes)
    eosdyn warmup --list          # the cells, without running them

A *cell* is one small call (5 steps, 3 trajectories) of one entry point on one pair:

- ``simulate``: :func:`eosdyn.simulate` (the per-trajectory kernel);
- ``ensemble``: :func:`eosdyn.ensemble` (the blocked kernel where the pair has one);
- ``sde``: :func:`eosdyn.sde.simulate` with isotropic noise (Euler–Maruyama and srk15).

The **common set** is every built-in loss family with GD under all three entry points, and
every rule on the quadratic and the scalar net under ``simulate`` and ``ensemble``. ``--all``
adds every rule on every family. The caches live where eosdyn and numba keep them
(``EOSDYN_CACHE_DIR``, ``NUMBA_CACHE_DIR`` if set), so a warmed machine stays warm until the
source of a kernel, or of an eosdyn module that the kernel's module imports, changes (each
cache entry carries a digest of those sources: :mod:`eosdyn.codegen.numba_cache`; after a
``git pull`` that touches ``eosdyn/_rng.py``, say, run ``eosdyn warmup`` again).
``benchmarks/coldstart.py`` times the same cells in fresh processes, cold and warm.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable

__all__ = ["FAMILIES", "RULES", "ENTRIES", "cells", "make_loss", "make_rule", "run_cell", "warmup", "main"]


def _data(rng, n=6, d=2):
    return rng.standard_normal((n, d))


def _quadratic(rng):
    from .losses import Quadratic
    return Quadratic(eigs=[2.0, 1.0])


def _deeplinear(rng):
    from .losses import DeepLinear
    X = _data(rng)
    return DeepLinear(X, X @ rng.standard_normal((2, 2)), [3])


def _scalarnet(rng):
    from .losses import ScalarNet
    return ScalarNet(3, 1.0)


def _sqrt(rng):
    from .losses import Quadratic, SqrtLoss
    return SqrtLoss(Quadratic(eigs=[2.0, 1.0]), eps=1e-3)


def _sympy(rng):
    from .losses import from_sympy
    return from_sympy("(x*y - 1)**2/2", ["x", "y"])


def _cubic(rng):
    from .losses import LogisticCubic
    return LogisticCubic()


def _zhu(rng):
    from .losses import ZhuMinimalist
    return ZhuMinimalist()


def _leastsquares(rng):
    from .losses import LeastSquares
    return LeastSquares(_data(rng), rng.standard_normal(6))


#: the built-in loss families, each a small instance (name -> factory(rng))
FAMILIES: dict[str, Callable] = {
    "quadratic": _quadratic, "deeplinear": _deeplinear, "scalarnet": _scalarnet, "sqrt": _sqrt,
    "sympy": _sympy, "cubic": _cubic, "zhu": _zhu, "leastsquares": _leastsquares,
}


def _rules():
    from . import rules as R
    return {
        "gd": lambda: R.GD(0.01),
        "heavyball": lambda: R.HeavyBall(0.01, momentum=0.9),
        "nesterov": lambda: R.Nesterov(0.01, momentum=0.9),
        "ngd": lambda: R.NormalizedGD(0.01),
        "adam": lambda: R.Adam(0.01),
        "eosada": lambda: R.EoSAda(alpha=1.0),
        "dcao": lambda: R.DCAO(lr=0.01, curvature_every=2),
        "sgd": lambda: R.SGD(0.01, batch_size=2),
    }


#: the built-in rules, by name (a factory of a small instance each)
RULES = ("gd", "heavyball", "nesterov", "ngd", "adam", "eosada", "dcao", "sgd")
#: the entry points a cell can call
ENTRIES = ("simulate", "ensemble", "sde")


def make_loss(family: str):
    """A small instance of a built-in loss family (a name in :data:`FAMILIES`)."""
    import numpy as np

    if family not in FAMILIES:
        raise ValueError(f"family must be one of {sorted(FAMILIES)}, got {family!r}")
    return FAMILIES[family](np.random.default_rng(0))


def make_rule(name: str):
    """A small instance of a built-in rule (a name in :data:`RULES`)."""
    table = _rules()
    if name not in table:
        raise ValueError(f"rule must be one of {list(RULES)}, got {name!r}")
    return table[name]()


def _applies(family: str, rule: str, entry: str) -> bool:
    if rule == "sgd":  # SGD needs a finite sum the core can sample; the SDE has no rule
        return family == "leastsquares" and entry != "sde"
    return entry != "sde" or rule == "gd"


def cells(which: str = "common") -> list[tuple[str, str, str]]:
    """The (family, rule, entry) cells of ``which`` = "common" or "all" (module docstring)."""
    if which not in ("common", "all"):
        raise ValueError(f"which must be 'common' or 'all', got {which!r}")
    out = []
    for fam in FAMILIES:
        for entry in ENTRIES:
            out.append((fam, "gd", entry))
    for fam in (FAMILIES if which == "all" else ("quadratic", "scalarnet", "leastsquares")):
        for rule in RULES[1:]:
            for entry in ("simulate", "ensemble"):
                if _applies(fam, rule, entry):
                    out.append((fam, rule, entry))
    return out


def run_cell(family: str, rule: str, entry: str):
    """Make the cell's one small call (compiling its kernel if the caches lack it); returns the result."""
    import numpy as np

    import eosdyn
    import eosdyn.sde

    if entry not in ENTRIES:
        raise ValueError(f"entry must be one of {list(ENTRIES)}, got {entry!r}")
    if not _applies(family, rule, entry):
        raise ValueError(f"the cell ({family}, {rule}, {entry}) does not exist (SGD needs leastsquares; the SDE "
                         f"runs GD only)")
    loss = make_loss(family)
    th = 0.5 + np.random.default_rng(0).random((3, loss.dim))
    if entry == "simulate":
        return eosdyn.simulate(loss, make_rule(rule), th[0], 5)
    if entry == "ensemble":
        return eosdyn.ensemble(loss, make_rule(rule), th, 5)
    res = None
    for method in ("euler", "srk15"):
        res = eosdyn.sde.simulate(loss, 0.01, eosdyn.sde.Isotropic(0.1), th, 0.5, 5, method=method)
    return res


def warmup(which: str = "common", *, progress: Callable[[str], None] | None = print,
           only: Iterable[tuple[str, str, str]] | None = None) -> dict:
    """Run every cell of ``which`` in this process; returns {(family, rule, entry): seconds or error text}.

    A cell that fails is reported and skipped (the others still run). ``only`` restricts the
    run to the given cells.
    """
    todo = list(only) if only is not None else cells(which)
    out = {}
    t_all = time.perf_counter()
    for i, cell in enumerate(todo, 1):
        t0 = time.perf_counter()
        try:
            run_cell(*cell)
            out[cell] = time.perf_counter() - t0
            msg = f"{out[cell]:7.1f} s"
        except Exception as exc:  # a failing cell must not stop the others
            out[cell] = f"{type(exc).__name__}: {exc}"
            msg = f"FAILED ({out[cell][:120]})"
        if progress is not None:
            progress(f"[{i:3d}/{len(todo)}] {cell[0]:>12s} {cell[1]:>9s} {cell[2]:>8s}  {msg}")
    if progress is not None:
        progress(f"warmup done: {len(todo)} cells in {time.perf_counter() - t_all:.0f} s")
    return out


def _log_path() -> str:
    from .codegen.source import cache_base

    base = cache_base()
    os.makedirs(base, exist_ok=True)
    return os.path.join(base, "warmup.log")


def main(argv=None) -> int:
    """``eosdyn warmup [--all] [--foreground] [--list]`` (module docstring)."""
    ap = argparse.ArgumentParser(prog="eosdyn warmup", description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--all", action="store_true", help="every built-in loss family x every rule (else the common set)")
    ap.add_argument("--foreground", action="store_true", help="run here, a line per cell (else in the background)")
    ap.add_argument("--list", action="store_true", help="print the cells and exit")
    args = ap.parse_args(argv)
    which = "all" if args.all else "common"
    if args.list:
        for c in cells(which):
            print(" ".join(c))
        return 0
    if args.foreground:
        res = warmup(which, progress=lambda s: print(s, flush=True))
        return 1 if any(isinstance(v, str) for v in res.values()) else 0
    log = _log_path()
    cmd = [sys.executable, "-m", "eosdyn.warmup", "--foreground"] + (["--all"] if args.all else [])
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    print(f"warming up {len(cells(which))} kernels in the background (pid {proc.pid}); progress: {log}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
