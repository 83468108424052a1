"""Preloaded by the fork server of a sweep's local workers (``mp_context="forkserver"``).

Importing this module imports everything a worker needs to run a point and warms
what xarray imports lazily on first use (``dask.array`` when dask is installed, on
the first Dataset; ``scipy.io`` on the first NetCDF-3 write), so that each worker,
forked from the server, starts with all of it in memory instead of importing it
again (see :func:`eosdyn.sweep.core._preload_forkserver`).
"""
from __future__ import annotations

import contextlib

import xarray as xr

from . import core  # noqa: F401 - what unpickling the initializer and _run_point imports
from ._store import decode, encode

with contextlib.suppress(Exception):  # a warm-up only: the fork server must start whatever happens
    decode(*encode(xr.Dataset({"x": ("d", [0.0]), "s": "a", "i": 1})), "warm-up")
