"""The on-disk sweep store: a directory of per-point NetCDF files and JSON records.

Layout (``STORE`` is the path given to :func:`eosdyn.sweep.sweep`, whatever its suffix)::

    STORE/
      manifest.json        format, grid, fn, creation time, eosdyn version, git revision
      .lock                advisory lock (flock) held by the sweep that is writing
      points/
        000017.nc          result of point 17 (NetCDF, written first)
        000017.json        record of point 17 (written last: the completion marker)

Every file is written to a temporary name in the same directory, flushed (and
fsync'ed with ``fsync=True``) and then renamed over its final name (``os.replace``,
atomic on POSIX). The record
of a point is written only after its data file is in place and holds the data
file's SHA-256, so at any instant a point is either absent (pending), or complete
and verifiable; a kill can leave at most an orphan ``.nc`` without record (treated
as pending and overwritten) and dot-prefixed temporaries (ignored, then removed).
Anything else that does not add up (an unreadable record, a data file that is
missing or fails its checksum, a record whose parameters are not those of its
index, a manifest for another grid) is reported as :class:`StoreError` naming the
file, never silently reused.

Why this format and not one Zarr array per variable: per-point files make each
write a single atomic rename, need no knowledge of the result's shape before the
first point finishes, allow ragged results, and never have two writers touching
the same chunk. NetCDF-3 is written by scipy, a core dependency, so the local
executor needs no optional package; a result NetCDF-3 cannot hold losslessly
(int64 beyond int32, unsigned integers, ...) falls back to NetCDF-4 through the
``netCDF4`` library when it is installed. Writing one small Zarr group per point
took ~20 ms against ~0.5 ms for NetCDF-3 bytes, which matters for a < 5 %
scheduling overhead.

Why store names carry no ``.zarr`` suffix (the default is ``runs/sweep``): the store
is not a Zarr store, and ``xr.open_zarr(STORE)`` fails on it, so the suffix promised
what it is not. Making it one as well was weighed and rejected: a consolidated Zarr
copy written after each run would (1) need ``zarr``, an optional dependency, for
every sweep; (2) hold every result twice; (3) be many files that no rename makes
appear at once, so a kill while it is written leaves a second, stale or half-written
copy beside the per-point files that are the truth. Instead :func:`eosdyn.sweep.load`
assembles the dataset from the verified per-point files, and
``load(STORE).to_zarr("result.zarr")`` (or ``to_netcdf``) makes a real Zarr (or
NetCDF) file when one is wanted. The format does not depend on the directory's name:
stores created under ``*.zarr`` names by earlier versions are read, resumed and
checked as before.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import warnings
from datetime import datetime
from pathlib import Path

import numpy as np
import xarray as xr

from ._grid import RESERVED, Grid

FORMAT = "eosdyn-sweep"
FORMAT_VERSION = 1
_RECORD_RE = re.compile(r"^(\d+)\.json$")
_DATA_RE = re.compile(r"^(\d+)\.nc$")
_STR_DTYPE_ATTR = "eosdyn_dtype"

try:  # POSIX advisory locks; absent on Windows, where the store is simply unlocked
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None


class StoreError(ValueError):
    """The sweep store is corrupted, partly written, or belongs to another sweep."""


# ----------------------------------------------------------------------------- encoding
def encode(ds: xr.Dataset) -> tuple[bytes, str]:
    """Serialise a point's result: NetCDF-3 (scipy) bytes, else NetCDF-4 (netCDF4).

    Integer and string variables carry their numpy dtype in the attribute
    ``eosdyn_dtype`` so that :func:`decode` restores it (NetCDF-3 stores int64 as
    int32 and reads strings back as objects).
    """
    ds = ds.copy(deep=False)
    for var in ds.variables.values():
        if var.dtype.kind in "iuUS":
            var.attrs[_STR_DTYPE_ATTR] = var.dtype.str
    errors = []
    try:
        return _netcdf3_bytes(ds), "netcdf3"
    except Exception:  # noqa: BLE001 - retry through the public writer, which reports the same errors
        pass
    try:
        return bytes(ds.to_netcdf(engine="scipy")), "netcdf3"
    except Exception as exc:  # noqa: BLE001 - fall back to NetCDF-4 for any NetCDF-3 limitation
        errors.append(f"NetCDF-3: {exc}")
    try:
        import netCDF4  # noqa: F401
    except ImportError:
        errors.append("NetCDF-4: the netCDF4 package is not installed")
    else:
        try:
            return bytes(ds.to_netcdf(engine="netcdf4")), "netcdf4"
        except Exception as exc:  # noqa: BLE001
            errors.append(f"NetCDF-4: {exc}")
    raise TypeError("the result cannot be stored as NetCDF: " + "; ".join(errors))


class _KeepOpen(io.BytesIO):
    def close(self):  # scipy's netcdf_file closes its target: keep the bytes readable
        pass


def _netcdf3_bytes(ds: xr.Dataset) -> bytes:
    """NetCDF-3 bytes of ``ds``, byte-identical to ``ds.to_netcdf(engine="scipy")``.

    ``to_netcdf`` asks dask for its scheduler on every call, which imports
    ``dask.distributed`` when it is installed (~0.4 s once per process, in every
    worker); writing through the public ``ScipyDataStore`` does not.
    """
    from xarray.backends import ScipyDataStore

    buf = _KeepOpen()
    store = ScipyDataStore(buf, mode="w", format="NETCDF3_64BIT")
    try:
        ds.dump_to_store(store)
    finally:
        store.close()
    return buf.getvalue()


def _open(source, engine: str) -> xr.Dataset:
    try:  # skip the default indexes xarray would build and that decode rebuilds anyway
        return xr.load_dataset(source, engine=engine, create_default_indexes=False)
    except TypeError as exc:  # xarray < 2025.7 has no create_default_indexes
        if "create_default_indexes" not in str(exc):
            raise
        if hasattr(source, "seek"):
            source.seek(0)
        return xr.load_dataset(source, engine=engine)


def decode(data: bytes, fmt: str, path) -> xr.Dataset:
    """The dataset :func:`encode` serialised (``path``: a name for messages)."""
    if fmt == "netcdf3":
        ds = _open(io.BytesIO(data), "scipy")
    elif fmt == "netcdf4":
        import netCDF4

        ds = _open(xr.backends.NetCDF4DataStore(netCDF4.Dataset(str(path), memory=data)), None)
    else:
        raise StoreError(f"{path}: unknown data format {fmt!r}")
    coords, data_vars = {}, {}
    for name, var in ds.variables.items():
        want = var.attrs.get(_STR_DTYPE_ATTR)
        if want is not None:
            attrs = {k: v for k, v in var.attrs.items() if k != _STR_DTYPE_ATTR}
            var = xr.Variable(var.dims, var.values.astype(want, copy=False), attrs)
        else:
            var = xr.Variable(var.dims, var.values, var.attrs)
        (coords if name in ds.coords else data_vars)[name] = var
    return xr.Dataset(data_vars, coords, ds.attrs)


# ----------------------------------------------------------------------------- file helpers
def atomic_write(path: Path, data: bytes, fsync: bool = True) -> None:
    """Write ``data`` to ``path`` atomically: temp file, (fsync,) rename.

    The rename alone makes the write atomic for other processes and across a kill
    of this one; ``fsync`` also makes it durable across an OS crash or power loss
    (without it such a crash can leave a renamed but empty file, which the
    checksums then report as corrupted).
    """
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        if fsync:
            os.fsync(f.fileno())
    os.replace(tmp, path)


def _json_bytes(obj) -> bytes:
    return (json.dumps(obj, indent=1, allow_nan=True) + "\n").encode()


def _load_json(path: Path, what: str):
    try:
        with open(path, "rb") as f:
            return json.loads(f.read().decode())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StoreError(f"{what} {path} cannot be read ({exc}); the store is corrupted") from None


def _parse_time(s):
    if not s:
        return np.datetime64("NaT", "ns")
    return np.datetime64(datetime.fromisoformat(s).replace(tzinfo=None), "ns")


# ----------------------------------------------------------------------------- the store
class Store:
    """One sweep store directory (see the module docstring for the layout)."""

    def __init__(self, path):
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"store must be a path (str or os.PathLike), got {type(path).__name__}")
        self.path = Path(path)
        if str(self.path) == "":
            raise ValueError("store must be a non-empty path")
        self.manifest_path = self.path / "manifest.json"
        self.points_dir = self.path / "points"
        self._lock_fd = None
        self.manifest = None
        self.grid = None

    # -- names ------------------------------------------------------------------
    def _stem(self, i: int) -> str:
        return f"{i:0{max(6, len(str(self.grid.n_points - 1)))}d}"

    def record_path(self, i: int) -> Path:
        return self.points_dir / f"{self._stem(i)}.json"

    def data_path(self, i: int) -> Path:
        return self.points_dir / f"{self._stem(i)}.nc"

    # -- locking ----------------------------------------------------------------
    def lock(self) -> None:
        if fcntl is None:
            return
        fd = os.open(self.path / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            try:
                holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
            finally:
                os.close(fd)
            raise RuntimeError(
                f"store {self.path} is being written by another sweep (pid {holder}); "
                "wait for it to finish or use another store path"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            finally:
                os.close(self._lock_fd)
                self._lock_fd = None

    # -- opening ----------------------------------------------------------------
    def exists(self) -> bool:
        return self.manifest_path.exists()

    def _check_dir(self):
        if self.path.exists() and not self.path.is_dir():
            raise StoreError(f"store {self.path} exists and is not a directory")

    def open_existing(self) -> dict:
        """Read and check the manifest of an existing store."""
        self._check_dir()
        if not self.path.exists():
            raise FileNotFoundError(f"no sweep store at {self.path}")
        if not self.manifest_path.exists():
            raise StoreError(
                f"{self.path} is not a (complete) eosdyn sweep store: it has no manifest.json; "
                "refusing to use it"
            )
        m = _load_json(self.manifest_path, "manifest")
        if not isinstance(m, dict) or m.get("format") != FORMAT:
            raise StoreError(f"{self.manifest_path} is not an eosdyn sweep manifest")
        if m.get("format_version") != FORMAT_VERSION:
            raise StoreError(
                f"{self.manifest_path} has format_version {m.get('format_version')!r}; "
                f"this eosdyn reads version {FORMAT_VERSION}"
            )
        try:
            self.grid = Grid.from_json(m["grid"])
        except (KeyError, TypeError, ValueError) as exc:
            raise StoreError(f"{self.manifest_path} holds an invalid grid ({exc})") from None
        if m.get("n_points") != self.grid.n_points:
            raise StoreError(f"{self.manifest_path}: n_points {m.get('n_points')!r} does not match its grid")
        self.manifest = m
        return m

    def create_or_open(self, grid: Grid, fn_name: str, resume: bool, meta: dict) -> None:
        """Open the store for writing ``grid`` (creating it if needed) and take its lock."""
        self._check_dir()
        self.path.mkdir(parents=True, exist_ok=True)
        self.lock()
        try:
            self._create_or_open_locked(grid, fn_name, resume, meta)
        except BaseException:
            self.unlock()
            raise

    def _create_or_open_locked(self, grid, fn_name, resume, meta):
        if self.manifest_path.exists():
            m = self.open_existing()
            if resume:
                if self.grid.canonical() != grid.canonical():
                    raise StoreError(
                        f"store {self.path} was created for a different grid ({self.grid.describe_difference(grid)}); "
                        "use another store path, or pass resume=False to discard its results"
                    )
                if m.get("fn") != fn_name:
                    warnings.warn(
                        f"store {self.path} was created by fn {m.get('fn')!r}, it is now resumed with {fn_name!r}",
                        UserWarning,
                        stacklevel=4,
                    )
                self._clean_temporaries()
                return
            # resume=False: discard the results of this (valid) sweep store and start again
            shutil.rmtree(self.points_dir, ignore_errors=True)
            self.manifest_path.unlink()
        else:
            stray = [p.name for p in self.path.iterdir() if not p.name.startswith(".")]
            if stray:
                raise StoreError(
                    f"{self.path} is not empty and has no manifest.json, so it is not an eosdyn sweep store "
                    f"(or its creation was interrupted); found {sorted(stray)[:5]}; refusing to use it"
                )
        self.grid = grid
        self.manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "fn": fn_name,
            "created": meta["time"],
            "eosdyn_version": meta["eosdyn_version"],
            "git_revision": meta["git_revision"],
            "n_points": grid.n_points,
            "grid": grid.to_json(),
        }
        atomic_write(self.manifest_path, _json_bytes(self.manifest))
        self.points_dir.mkdir(exist_ok=True)
        self._clean_temporaries()

    def _clean_temporaries(self):
        for d in (self.path, self.points_dir):
            if d.is_dir():
                for p in d.iterdir():
                    if p.name.startswith(".") and ".tmp-" in p.name:
                        p.unlink(missing_ok=True)

    # -- points -----------------------------------------------------------------
    def write_point(self, rec: dict, payload: bytes | None, fsync: bool = False) -> None:
        """Write one finished point: data first, then its record (the completion marker)."""
        i = rec["index"]
        data_path = self.data_path(i)
        if payload is not None:
            atomic_write(data_path, payload, fsync)
            rec["file"] = data_path.name
            rec["sha256"] = hashlib.sha256(payload).hexdigest()
            rec["nbytes"] = len(payload)
        else:
            data_path.unlink(missing_ok=True)
        atomic_write(self.record_path(i), _json_bytes(rec), fsync)

    def scan(self, verify: bool = True) -> dict[int, dict]:
        """All point records, checked. ``verify`` also checks every data file's SHA-256."""
        records = {}
        if not self.points_dir.is_dir():
            raise StoreError(f"store {self.path} has a manifest but no points/ directory; the store is corrupted")
        n = self.grid.n_points
        for p in self.points_dir.iterdir():
            m = _RECORD_RE.match(p.name)
            if m is None:
                if _DATA_RE.match(p.name) and int(_DATA_RE.match(p.name).group(1)) >= n:
                    raise StoreError(f"{p}: point index out of range for a grid of {n} points; the store is corrupted")
                continue
            i = int(m.group(1))
            if i >= n or p.name != self.record_path(i).name:
                raise StoreError(f"{p}: no point of this name in a grid of {n} points; the store is corrupted")
            rec = _load_json(p, f"record of point {i}")
            self._check_record(i, rec, p, verify)
            records[i] = rec
        return records

    def _check_record(self, i, rec, path, verify):
        hint = f"delete {path} (and {self.data_path(i).name}) to recompute point {i}"
        if not isinstance(rec, dict) or rec.get("index") != i:
            raise StoreError(f"record {path} does not describe point {i}; the store is corrupted: {hint}")
        want = self.grid.point(i)
        if json.dumps(rec.get("params")) != json.dumps(want):
            raise StoreError(
                f"record {path} holds params {rec.get('params')!r} but point {i} of the grid is {want!r}; "
                f"the store is corrupted: {hint}"
            )
        status = rec.get("status")
        if status not in ("ok", "failed"):
            raise StoreError(f"record {path} has unknown status {status!r}; the store is corrupted: {hint}")
        if status == "ok":
            dp = self.data_path(i)
            if not dp.exists():
                raise StoreError(f"point {i} is recorded as done but its data file {dp} is missing: {hint}")
            if rec.get("format") not in ("netcdf3", "netcdf4") or not isinstance(rec.get("sha256"), str):
                raise StoreError(f"record {path} lacks a valid data format or checksum: {hint}")
            if verify:
                self.read_data(i, rec)

    def read_data(self, i: int, rec: dict) -> bytes:
        dp = self.data_path(i)
        try:
            data = dp.read_bytes()
        except OSError as exc:
            raise StoreError(f"data file {dp} of point {i} cannot be read ({exc})") from None
        if hashlib.sha256(data).hexdigest() != rec.get("sha256"):
            raise StoreError(
                f"data file {dp} of point {i} fails its SHA-256 check (it was modified or partly written); "
                f"delete {dp} and {self.record_path(i)} to recompute point {i}"
            )
        return data

    def load_point(self, i: int, rec: dict) -> xr.Dataset:
        data = self.read_data(i, rec)
        try:
            return decode(data, rec["format"], self.data_path(i))
        except StoreError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise StoreError(f"data file {self.data_path(i)} of point {i} cannot be decoded ({exc})") from None

    # -- assembly ---------------------------------------------------------------
    def to_dataset(self, records: dict[int, dict], loaded: dict | None = None) -> xr.Dataset:
        """The labelled result of every point (NaN where a point failed or is pending).

        ``loaded`` maps point indices to datasets already decoded from the bytes that
        were written (by :func:`decode`, so identical to reading them back).
        """
        grid = self.grid
        n = grid.n_points
        loaded = loaded or {}
        ok = sorted(i for i, r in records.items() if r["status"] == "ok")
        parts = [
            _clean_point(loaded[i] if i in loaded else self.load_point(i, records[i]), grid.point(i)) for i in ok
        ]
        body = _stack(parts, ok, n)

        status = np.full(n, "pending", dtype="<U7")
        error = np.full(n, "", dtype=object)
        start = np.full(n, np.datetime64("NaT", "ns"))
        end = np.full(n, np.datetime64("NaT", "ns"))
        duration = np.full(n, np.nan)
        for i, r in records.items():
            status[i] = r["status"]
            error[i] = r.get("error") or ""
            start[i] = _parse_time(r.get("start"))
            end[i] = _parse_time(r.get("end"))
            duration[i] = r.get("duration_s", np.nan)
        error = error.astype(str)
        meta = {
            "sweep_status": status,
            "sweep_error": error,
            "sweep_start": start,
            "sweep_end": end,
            "sweep_duration": duration,
        }
        for k, v in meta.items():
            body[k] = ("point", v)
        body["sweep_duration"].attrs["units"] = "s"

        if grid.kind == "cartesian":
            out = xr.Dataset(coords={d: (d, np.asarray(grid.values[d])) for d in grid.dims})
            for name, var in body.variables.items():
                if name == "point":
                    continue
                if var.dims and var.dims[0] == "point":
                    data = np.asarray(var.values).reshape(grid.shape + var.shape[1:])
                    v = xr.Variable(grid.dims + var.dims[1:], data, attrs=var.attrs)
                else:
                    v = var
                if name in body.coords:
                    out = out.assign_coords({name: v})
                else:
                    out[name] = v
        else:
            out = body.assign_coords(grid.coords())
        attrs = dict(body.attrs)
        m = self.manifest
        attrs.update(
            sweep_store=str(self.path),
            sweep_fn=m["fn"],
            sweep_created=m["created"],
            sweep_eosdyn_version=m["eosdyn_version"],
        )
        if m.get("git_revision"):
            attrs["sweep_git_revision"] = m["git_revision"]
        out.attrs = attrs
        return out


def _clean_point(ds: xr.Dataset, params: dict) -> xr.Dataset:
    """Drop result variables that merely echo a parameter; rename ones that clash."""
    renames = {}
    for name in list(ds.variables):
        if name in params:
            var = ds.variables[name]
            if var.ndim == 0 and np.asarray(var.values).item() == params[name]:
                ds = ds.drop_vars(name)
                continue
        if name in params or name in RESERVED:
            renames[name] = f"result_{name}"
    for d in ds.dims:
        if (d in params or d in RESERVED) and d not in renames:
            renames[d] = f"result_{d}"
    if renames:
        warnings.warn(
            f"result names clash with grid parameters or reserved names; renamed {renames}", UserWarning, stacklevel=2
        )
        ds = ds.rename(renames)
    return ds


def _fill_for(dtype: np.dtype):
    """(dtype able to hold a missing value, the missing value) for ``dtype``."""
    k = dtype.kind
    if k in "fc":
        return dtype, np.nan
    if k in "iub":
        return np.dtype(np.float64), np.nan
    if k in "US":
        return dtype, ""
    if k in "mM":
        return dtype, np.array("NaT", dtype=dtype)
    return np.dtype(object), None


def _same_structure(parts) -> bool:
    t = parts[0]
    for p in parts[1:]:
        if set(p.variables) != set(t.variables):
            return False
        for name, v in p.variables.items():
            tv = t.variables[name]
            if v.dims != tv.dims or v.shape != tv.shape or v.dtype != tv.dtype:
                return False
            if name in t.coords and not np.array_equal(v.values, tv.values):
                return False
    return True


def _stack(parts, ok, n) -> xr.Dataset:
    """Stack point datasets along a new leading ``point`` dimension of length ``n``."""
    if not parts:
        return xr.Dataset(coords={"point": np.arange(n)})
    missing = len(ok) < n
    attrs = dict(parts[0].attrs)
    for p in parts[1:]:
        for k in list(attrs):
            if k not in p.attrs or not _equal_attr(attrs[k], p.attrs[k]):
                del attrs[k]
    if _same_structure(parts):
        t = parts[0]
        out = xr.Dataset(coords={"point": np.arange(n)})
        for name, tv in t.variables.items():
            if name in t.coords:
                out = out.assign_coords({name: tv})
                continue
            dtype, fill = _fill_for(tv.dtype) if missing else (tv.dtype, None)
            arr = np.empty((n,) + tv.shape, dtype=dtype)
            if missing:
                arr[...] = fill
            for i, p in zip(ok, parts):
                arr[i] = p.variables[name].values
            out[name] = xr.Variable(("point",) + tv.dims, arr, attrs=tv.attrs)
        out.attrs = attrs
        return out
    # ragged or heterogeneous results: give index-less dimensions whose size varies an
    # integer coordinate so that an outer join pads the short ones with NaN
    sizes = {}
    for p in parts:
        for d, s in p.sizes.items():
            sizes.setdefault(d, set()).add(s)
    ragged = [d for d, s in sizes.items() if len(s) > 1 and not any(d in p.indexes for p in parts)]
    if ragged:
        parts = [p.assign_coords({d: np.arange(p.sizes[d]) for d in ragged if d in p.dims}) for p in parts]
    import pandas as pd

    try:
        body = xr.concat(
            parts,
            dim=pd.Index(ok, name="point"),
            data_vars="all",
            coords="different",
            compat="equals",
            join="outer",
            combine_attrs="drop_conflicts",
        )
    except Exception as exc:  # noqa: BLE001
        raise StoreError(f"the results of the points cannot be combined into one dataset: {exc}") from None
    if missing:
        full = xr.Dataset(coords={"point": np.arange(n)})
        for name, var in body.variables.items():
            if name == "point":
                continue
            if "point" not in var.dims:
                full = full.assign_coords({name: var}) if name in body.coords else full.assign({name: var})
                continue
            var = var.transpose("point", ...)
            dtype, fill = _fill_for(var.dtype)
            arr = np.empty((n,) + var.shape[1:], dtype=dtype)
            arr[...] = fill
            arr[ok] = var.values
            v = xr.Variable(var.dims, arr, attrs=var.attrs)
            full = full.assign_coords({name: v}) if name in body.coords else full.assign({name: v})
        body = full
    body.attrs = attrs
    return body


def _equal_attr(a, b) -> bool:
    try:
        return bool(np.array_equal(np.asarray(a), np.asarray(b)))
    except Exception:  # noqa: BLE001
        return False
