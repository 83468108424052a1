"""``eosdyn sweep CONFIG.toml`` and ``eosdyn sweep --status STORE``.

A config file::

    fn = "eosdyn.sweep.examples:noisy_gd_quadratic"   # "module:function"
    store = "runs/eta_sigma"         # relative paths are relative to this file
    n_workers = 2                    # optional; default one per core
    retry_failed = true              # optional
    max_in_flight = 8                # optional
    # client = "tcp://10.0.0.5:8786" # optional: a dask scheduler (eosdyn[distributed])

    [grid]                           # Cartesian grid ...
    eta = [0.5, 1.0, 1.5, 1.9, 2.1]
    sigma = { linspace = [0.0, 0.2, 5] }   # also { logspace = [a, b, n] }, { range = [a, b, step] }
    seed = { range = [0, 4] }

    [dims]                           # optional: names of the dimensions of array results
    loss = ["step"]

    # ... or an explicit list of points instead of [grid]:
    # [[points]]
    # eta = 0.5
    # seed = 0

The directory of the config file is put on ``sys.path`` so that ``fn`` may live in
a module next to it.

Trust: ``fn`` names Python code to import and run, so a config file is as trusted as
a script; run only configs you would run as code. Its *values* are data: nothing here
evaluates a string, and a loss expression in a grid value (``"sympy:expr=..."`` given
to a point function that builds the loss with :func:`eosdyn.specs.loss_from_spec` or
:func:`eosdyn.losses.from_sympy`) goes through the whitelist parser of
:mod:`eosdyn.losses.symbolic`, which never runs it. ``fn`` may not name dunder
attributes (``module:obj.__class__``...): only a module and its functions.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

import numpy as np

from .core import status, sweep

__all__ = ["run_config", "read_config", "format_status", "sweep_cli_main"]

_KEYS = {"fn", "store", "n_workers", "retry_failed", "client", "grid", "points", "mp_context", "dims",
         "max_in_flight"}


def _expand(name: str, spec):
    """Grid values from a TOML value: a list, or {linspace|logspace|range = [...]}."""
    if not isinstance(spec, dict):
        return spec
    if len(spec) != 1:
        raise ValueError(f"grid.{name} must be a list or one of {{linspace, logspace, range}} = [...], got {spec!r}")
    (kind, args), = spec.items()
    if not isinstance(args, list):
        raise TypeError(f"grid.{name}.{kind} must be a list of numbers, got {args!r}")
    if kind in ("linspace", "logspace"):
        if len(args) != 3 or not float(args[2]).is_integer() or int(args[2]) < 1:
            raise ValueError(f"grid.{name}.{kind} must be [start, stop, num] with an integer num >= 1, got {args!r}")
        f = np.linspace if kind == "linspace" else np.logspace
        return [float(v) for v in f(float(args[0]), float(args[1]), int(args[2]))]
    if kind == "range":
        if not 1 <= len(args) <= 3:
            raise ValueError(f"grid.{name}.range must be [stop], [start, stop] or [start, stop, step], got {args!r}")
        start, stop, step = ([0] + list(args) + [1])[-3:] if len(args) == 1 else (list(args) + [1])[:3]
        if not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in (start, stop, step)) or step == 0:
            raise ValueError(f"grid.{name}.range must hold numbers with a non-zero step, got {args!r}")
        if all(isinstance(a, int) for a in (start, stop, step)):
            return list(range(start, stop, step))
        return [float(v) for v in np.arange(float(start), float(stop), float(step))]
    raise ValueError(f"grid.{name}: unknown generator {kind!r}; use linspace, logspace or range")


def import_fn(spec: str):
    """Import ``"module:function"`` (a dotted attribute path after the colon is allowed)."""
    if not isinstance(spec, str) or spec.count(":") != 1:
        raise ValueError(f"fn must be a string 'module:function', got {spec!r}")
    mod_name, attr = spec.split(":")
    dunder = [p for p in mod_name.split(".") + attr.split(".") if p.startswith("__") and p.endswith("__")]
    if dunder:
        raise ValueError(f"fn {spec!r}: dunder name {dunder[0]!r} is not allowed; name a module and a function "
                         f"('module:function')")
    try:
        obj = importlib.import_module(mod_name)
    except ImportError as exc:
        raise ValueError(f"fn {spec!r}: cannot import module {mod_name!r} ({exc})") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"fn {spec!r}: module {mod_name!r} has no attribute {attr!r}") from None
    if not callable(obj):
        raise TypeError(f"fn {spec!r} is not callable")
    return obj


def read_config(path) -> dict:
    """Parse and check a sweep config; returns keyword arguments for :func:`sweep`."""
    import tomllib

    path = Path(path)
    try:
        with open(path, "rb") as f:
            cfg = tomllib.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"sweep config {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"sweep config {path} is not valid TOML: {exc}") from None
    unknown = set(cfg) - _KEYS
    if unknown:
        raise ValueError(f"sweep config {path}: unknown keys {sorted(unknown)}; allowed: {sorted(_KEYS)}")
    for key in ("fn", "store"):
        if key not in cfg:
            raise ValueError(f"sweep config {path}: missing required key {key!r}")
    if ("grid" in cfg) == ("points" in cfg):
        raise ValueError(f"sweep config {path}: give exactly one of a [grid] table or [[points]] tables")
    if "grid" in cfg:
        if not isinstance(cfg["grid"], dict):
            raise TypeError(f"sweep config {path}: grid must be a table")
        grid = {k: _expand(k, v) for k, v in cfg["grid"].items()}
    else:
        grid = cfg["points"]
    base = path.resolve().parent
    if str(base) not in sys.path:
        sys.path.insert(0, str(base))
    store = Path(cfg["store"])
    if not store.is_absolute():
        store = base / store
    kw = {"fn": import_fn(cfg["fn"]), "grid": grid, "store": store}
    for key in ("n_workers", "retry_failed", "mp_context", "dims", "max_in_flight"):
        if key in cfg:
            kw[key] = cfg[key]
    if "client" in cfg:
        kw["client"] = cfg["client"]
    return kw


def run_config(path, *, resume=True, n_workers=None, progress=None):
    """Run the sweep described by the TOML file ``path``; returns the result dataset."""
    kw = read_config(path)
    if n_workers is not None:
        kw["n_workers"] = n_workers
    address = kw.pop("client", None)
    if address is None:
        return sweep(resume=resume, progress=progress, **kw)
    try:
        from distributed import Client
    except ImportError:
        raise ImportError("a client address needs dask.distributed: pip install 'eosdyn[distributed]'") from None
    with Client(address) as client:
        return sweep(client=client, resume=resume, progress=progress, **kw)


def format_status(st: dict, max_failures: int = 10) -> str:
    """Human-readable summary of :func:`~eosdyn.sweep.status`."""
    lines = [
        f"store    {st['store']}",
        f"fn       {st['fn']}",
        f"created  {st['created']}  (eosdyn {st['eosdyn_version']}, git {st['git_revision'] or 'n/a'})",
        f"points   {st['n_points']}: {st['done']} done, {st['failed']} failed, {st['pending']} pending",
    ]
    for f in st["failures"][:max_failures]:
        lines.append(f"  failed point {f['index']} {f['params']}: {f['error']}")
    if len(st["failures"]) > max_failures:
        lines.append(f"  ... and {len(st['failures']) - max_failures} more failures")
    return "\n".join(lines)


def sweep_cli_main(argv=None) -> int:
    """Entry point of ``eosdyn sweep``; returns the exit code: 0 all points done (or
    ``--status`` / ``--help`` printed), 1 some points failed, 2 bad usage, config or store."""
    parser = argparse.ArgumentParser(prog="eosdyn sweep", description="Run a parameter sweep from a TOML config.")
    parser.add_argument("config", nargs="?", help="sweep config (TOML)")
    parser.add_argument("--status", metavar="STORE", help="print points done / failed / pending of STORE and exit")
    parser.add_argument("--verify", action="store_true", help="with --status: also check every data checksum")
    parser.add_argument("--n-workers", type=int, default=None, help="local worker processes (default: config / cores)")
    parser.add_argument("--no-resume", action="store_true", help="discard the store's results and start again")
    parser.add_argument("--progress", dest="progress", action="store_true", default=None, help="force the progress bar")
    parser.add_argument("--quiet", dest="progress", action="store_false", help="no progress bar")
    try:
        args = parser.parse_args(argv)
        if (args.config is None) == (args.status is None):
            parser.error("give either CONFIG or --status STORE")
    except SystemExit as exc:  # --help: 0, usage errors: 2; returned, not raised, for `eosdyn` to pass on
        return int(exc.code or 0)
    try:
        if args.status is not None:
            print(format_status(status(args.status, verify=args.verify)))
            return 0
        ds = run_config(args.config, resume=not args.no_resume, n_workers=args.n_workers, progress=args.progress)
    except (ValueError, TypeError, FileNotFoundError, RuntimeError, ImportError) as exc:
        print(f"eosdyn sweep: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # sweep() has printed "k/N points done; rerun the same command to resume"
        return 130
    st = status(ds.attrs["sweep_store"])
    print(format_status(st))
    return 0 if st["done"] == st["n_points"] else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(sweep_cli_main())
