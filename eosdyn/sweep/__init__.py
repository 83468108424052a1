"""Parameter sweeps: grids to labelled, resumable results, locally, on Dask or on Slurm.

>>> from eosdyn.sweep import sweep
>>> from eosdyn.sweep.examples import noisy_gd_quadratic
>>> ds = sweep(noisy_gd_quadratic, {"eta": [0.5, 1.0, 1.9], "seed": [0, 1]},
...            store="runs/eta_seed")                             # doctest: +SKIP
>>> ds.final_loss.sel(eta=1.0)                                     # doctest: +SKIP

* :func:`sweep` runs ``fn(**point)`` over the grid, writes each point as it finishes
  (atomically: a kill loses only the points in flight), skips the points already done
  when resumed, and returns an :class:`xarray.Dataset` indexed by the grid.
* ``executor=`` runs the points on any :class:`concurrent.futures.Executor`: a local
  process pool by default, ``client.get_executor()`` for Dask (or ``client=client``),
  ``submitit.AutoExecutor(folder)`` for Slurm (``cluster="local"`` on a laptop).
* :func:`load` reads a store's results; :func:`status` counts done / failed / pending.
* :func:`run_config` / :func:`sweep_cli_main` implement ``eosdyn sweep CONFIG.toml``
  and ``eosdyn sweep --status STORE``.

The store format and its guarantees are described in :mod:`eosdyn.sweep._store`
(a directory of per-point NetCDF files, not a Zarr store: read it with :func:`load`,
and ``load(store).to_zarr(...)`` makes a Zarr copy); the executors in
:mod:`eosdyn.sweep.core`.

This module is itself callable, ``eosdyn.sweep(fn, grid, ...)`` being
``eosdyn.sweep.sweep(fn, grid, ...)``, so that the package can export it as
``eosdyn.sweep`` without hiding the submodule's other functions.
"""
from __future__ import annotations

import inspect as _inspect
import sys as _sys
import types as _types

from ._grid import Grid
from ._store import StoreError
from .config import format_status, read_config, run_config, sweep_cli_main
from .core import eosdyn_version, git_revision, load, status, sweep, to_dataset

__all__ = [
    "sweep",
    "load",
    "status",
    "run_config",
    "read_config",
    "format_status",
    "sweep_cli_main",
    "to_dataset",
    "Grid",
    "StoreError",
    "eosdyn_version",
    "git_revision",
]


class _CallableModule(_types.ModuleType):
    def __call__(self, *args, **kwargs):
        return sweep(*args, **kwargs)


__signature__ = _inspect.signature(sweep)
_sys.modules[__name__].__class__ = _CallableModule
