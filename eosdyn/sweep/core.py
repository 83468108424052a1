"""``sweep``: run a function over a parameter grid into a resumable, labelled store.

Execution
---------
* ``client=None, n_workers=1``: every point runs in this process, one after the
  other; ``fn`` may use all cores itself (numba ``prange`` ensembles, BLAS).
* ``client=None, n_workers=k > 1`` (default ``k`` = the cores this process may use):
  a :class:`concurrent.futures.ProcessPoolExecutor` with the ``spawn`` start method.
  ``spawn`` is chosen over ``fork`` because forking a parent that already runs
  numba/OpenMP/torch thread pools can deadlock the children. The cost: ``fn`` must be
  importable by the workers (defined in a module, or in the ``__main__`` of a script
  guarded by ``if __name__ == "__main__"``). In a notebook pass
  ``mp_context="fork"`` or ``n_workers=1``. Each worker limits numba to
  ``max(1, cores // k)`` threads so that k workers do not oversubscribe the cores.

  The workers die with this process, whatever the start method, even when it is
  killed with SIGKILL: on Linux the kernel kills them (``PR_SET_PDEATHSIG``),
  elsewhere a watchdog thread in each worker exits when the parent's sentinel
  closes (see :func:`_die_with_parent`). The multiprocessing resource tracker then
  loses its last client and exits too, so nothing keeps this process's stdout open.
  On Ctrl-C the workers ignore SIGINT and this process kills them, reports
  "k/N points done; rerun the same command to resume" and re-raises the
  KeyboardInterrupt; the points in flight are lost and run again on resume.
* ``client=dask.distributed.Client(...)``: points are submitted to the cluster
  (``Client.submit``, at most a few per worker thread in flight); results come back
  to this process, which alone writes the store. Any
  :class:`concurrent.futures.Executor` is accepted the same way.

Whatever the executor, ``fn`` runs inside :func:`_run_point`, which turns its
return value into an :class:`xarray.Dataset`, serialises it to NetCDF bytes (in the
worker, in parallel), and catches its exception: a failing point is recorded with
its message and traceback and the sweep goes on. Only this process writes to the
store (see :mod:`eosdyn.sweep._store` for the format and its atomicity).
"""
from __future__ import annotations

import concurrent.futures as cf
import ctypes
import multiprocessing as mp
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from datetime import datetime, timezone
from multiprocessing.connection import wait as wait_until_ready

import numpy as np
import xarray as xr

from .._validate import nonneg_int
from ._grid import Grid
from ._store import Store, decode, encode

__all__ = ["sweep", "load", "status", "to_dataset"]


# ----------------------------------------------------------------------------- metadata
def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def eosdyn_version() -> str:
    """The installed eosdyn version (``importlib.metadata``), or ``"unknown"``."""
    try:
        from importlib.metadata import version

        return version("eosdyn")
    except Exception:  # noqa: BLE001
        import eosdyn

        return str(getattr(eosdyn, "__version__", "unknown"))


def git_revision(cwd=None) -> str | None:
    """``git rev-parse HEAD`` in ``cwd`` (default: the working directory), or None."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=cwd or os.getcwd(),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    rev = out.stdout.decode().strip()
    return rev or None


def _fn_name(fn) -> str:
    f = getattr(fn, "func", fn)  # functools.partial
    mod = getattr(f, "__module__", None) or type(f).__module__
    qual = getattr(f, "__qualname__", None) or type(f).__qualname__
    return f"{mod}:{qual}"


def _available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


# ----------------------------------------------------------------------------- results
def to_dataset(result) -> xr.Dataset:
    """Turn what ``fn`` returned into an :class:`xarray.Dataset`.

    Accepted: a Dataset; a DataArray (stored as variable ``result`` unless named); an
    object with ``to_xarray()`` (e.g. a Trajectory) or ``to_dict()``; a dict of name ->
    scalar / array / DataArray (array dimensions are named ``{name}_dim_{k}``); a bare
    scalar or array (stored as ``result``).
    """
    if isinstance(result, xr.Dataset):
        return result
    if isinstance(result, xr.DataArray):
        return result.to_dataset(name=result.name if result.name is not None else "result")
    if hasattr(result, "to_xarray") and callable(result.to_xarray):
        out = result.to_xarray()
        if isinstance(out, (xr.Dataset, xr.DataArray)):
            return to_dataset(out)
        raise TypeError(f"{type(result).__name__}.to_xarray() returned {type(out).__name__}, not an xarray Dataset")
    if hasattr(result, "to_dict") and callable(result.to_dict) and not isinstance(result, dict):
        result = result.to_dict()
    if isinstance(result, dict):
        data = {}
        for k, v in result.items():
            if not isinstance(k, str):
                raise TypeError(f"fn must return a dict with str keys, got key {k!r}")
            if isinstance(v, xr.DataArray):
                data[k] = v.variable
                continue
            a = np.asarray(v)
            if a.dtype == object:
                raise TypeError(f"result {k!r} is not numeric or str (got {type(v).__name__}); "
                                "return arrays or scalars")
            data[k] = ([f"{k}_dim_{j}" for j in range(a.ndim)], a)
        return xr.Dataset(data)
    a = np.asarray(result)
    if a.dtype == object:
        raise TypeError(
            f"fn returned {type(result).__name__}; return a dict of scalars/arrays, an xarray Dataset, "
            "or an object with to_xarray() or to_dict()"
        )
    return xr.Dataset({"result": ([f"result_dim_{j}" for j in range(a.ndim)], a)})


def _run_point(fn, index: int, params: dict):
    """Run one point; never raises for errors of ``fn``. Returns (record, NetCDF bytes or None)."""
    rec = {"index": index, "params": params, "host": socket.gethostname(), "pid": os.getpid()}
    t0 = time.perf_counter()
    rec["start"] = _now()
    payload = None
    try:
        out = fn(**params)
        rec["end"] = _now()
        rec["duration_s"] = time.perf_counter() - t0
        payload, rec["format"] = encode(to_dataset(out))
        rec["status"] = "ok"
    except Exception as exc:  # noqa: BLE001 - a failed point never stops the sweep
        rec.setdefault("end", _now())
        rec.setdefault("duration_s", time.perf_counter() - t0)
        rec["status"] = "failed"
        rec["error"] = f"{type(exc).__name__}: {exc}"
        rec["traceback"] = traceback.format_exc()
        payload = None
    return rec, payload


# ----------------------------------------------------------------------------- worker lifetime
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def _ask_kernel_to_kill_me_with_parent() -> bool:
    """Linux only: have the kernel SIGKILL this process when its parent process dies.

    ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` through libc. Returns False where there is
    no prctl (other systems) or the call fails (e.g. a seccomp filter forbids it).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _exit_when_readable(sentinel) -> None:
    wait_until_ready([sentinel])  # readable means EOF: the parent has exited
    os._exit(1)


def _die_with_parent() -> None:
    """Make this worker process end when the process that started it ends, even by SIGKILL.

    Without this, a worker whose parent was killed blocks forever on the task queue
    (it holds that queue's write end itself, so it never reads EOF), keeps the
    multiprocessing resource tracker alive, and keeps the parent's stdout open, so
    that a caller reading that output waits for ever.

    Where the parent is our direct parent and Linux offers ``PR_SET_PDEATHSIG``, the
    kernel kills us: that works even while ``fn`` runs a numba kernel that holds the
    GIL. The parent may have died between our start and the ``prctl`` call, after
    which the signal is armed against the new parent (init) and never comes: the
    ``getppid`` check after it catches that. (Linux sends the signal when the *thread*
    that started the worker ends; here that is the thread that called :func:`sweep`,
    which shuts the pool down before it returns.) Elsewhere (macOS, Windows, and under the
    ``forkserver`` start method, where our direct parent is the fork server) a daemon
    thread waits on the parent's sentinel, a pipe or process handle that becomes
    ready when the parent ends, and exits the process; it needs the GIL to do so, so
    it may wait for a GIL-holding kernel to return.
    """
    parent = mp.parent_process()
    if parent is None:  # not started by multiprocessing: nobody to die with
        return
    if os.getppid() == parent.pid and _ask_kernel_to_kill_me_with_parent():
        if os.getppid() != parent.pid:  # the parent died before the prctl call took effect
            os._exit(1)
        return
    threading.Thread(target=_exit_when_readable, args=(parent.sentinel,), daemon=True,
                     name="eosdyn-sweep-parent-watchdog").start()


def _init_worker(n_threads: int) -> None:
    """Set up a local worker process: it dies with the sweep's process, leaves Ctrl-C to
    it (which kills the workers, see :func:`_kill_workers`), and limits numba's threads."""
    _die_with_parent()
    # Ctrl-C reaches the whole process group: without this, each idle worker would print
    # its own KeyboardInterrupt traceback, and a busy one would send one back as a result
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if "numba" in sys.modules:
        import numba

        numba.set_num_threads(max(1, min(n_threads, numba.config.NUMBA_NUM_THREADS)))
    else:
        os.environ.setdefault("NUMBA_NUM_THREADS", str(n_threads))


# ----------------------------------------------------------------------------- executors
def _is_dask_client(client) -> bool:
    mod = type(client).__module__ or ""
    return mod.split(".")[0] == "distributed" and hasattr(client, "submit")


def _windowed(submit, wait, fn, tasks, window, on_result, on_broken=None):
    """Keep at most ``window`` points in flight; hand each finished one to ``on_result``.

    ``on_broken`` (local process pools) returns a fresh ``submit`` after a worker
    process died: the points in flight with it are recorded as failed and the sweep
    goes on with a new pool.
    """
    it = iter(tasks)
    inflight = {}
    sub = [submit]

    def failed(i, p, error, tb=""):
        return {"index": i, "params": p, "status": "failed", "start": None, "end": _now(),
                "error": error, "traceback": tb}

    def fill():
        while len(inflight) < window:
            try:
                i, p = next(it)
            except StopIteration:
                return
            try:
                fut = sub[0](_run_point, fn, i, p)
            except cf.BrokenExecutor:
                if on_broken is None:
                    raise
                sub[0] = on_broken()
                fut = sub[0](_run_point, fn, i, p)
            inflight[fut] = (i, p)

    fill()
    while inflight:
        done = wait(list(inflight))
        broken = False
        for fut in done:
            i, p = inflight.pop(fut)
            try:
                rec, payload = fut.result()
            except Exception as exc:  # noqa: BLE001 - infrastructure failure (worker died, pickling)
                broken = broken or isinstance(exc, cf.BrokenExecutor)
                rec = failed(i, p, f"{type(exc).__name__}: {exc} (the executor could not run this point)",
                             "".join(traceback.format_exception(exc)))
                payload = None
            on_result(rec, payload)
        if broken and on_broken is not None:
            for i, p in list(inflight.values()):
                on_result(failed(i, p, "BrokenProcessPool: a worker process died while this point was in flight"),
                          None)
            inflight.clear()
            sub[0] = on_broken()
        fill()


def _cf_wait(futs):
    done, _ = cf.wait(futs, return_when=cf.FIRST_COMPLETED)
    return done


def _check_picklable(fn, ctx_name: str):
    main = sys.modules.get("__main__")
    if (
        ctx_name != "fork"
        and getattr(fn, "__module__", None) == "__main__"
        and not getattr(main, "__file__", None)
    ):
        raise TypeError(
            "fn is defined interactively (in __main__ without a file), so spawned worker processes cannot "
            "import it; pass n_workers=1 to run in this process, mp_context='fork', or define fn in a module"
        )
    try:
        pickle.dumps(fn)
    except Exception as exc:  # noqa: BLE001
        raise TypeError(
            f"fn must be picklable to run in worker processes ({exc}); define it at module level, "
            "or pass n_workers=1 to run in this process"
        ) from None


def _kill_workers(pool: cf.ProcessPoolExecutor) -> None:
    """Kill a pool's worker processes now, on Ctrl-C or an error of the sweep itself.

    ``shutdown(cancel_futures=True)`` alone lets the points in flight run to their end,
    and the interpreter waits for them at exit, although nobody will store their results.
    """
    kill = getattr(pool, "kill_workers", None)  # Python >= 3.14
    if kill is not None:
        kill()
        return
    for proc in list((getattr(pool, "_processes", None) or {}).values()):
        proc.kill()


def _run_local_pool(fn, tasks, n_workers, mp_context, on_result):
    ctx = mp.get_context(mp_context) if isinstance(mp_context, str) else mp_context
    threads = max(1, _available_cores() // n_workers)
    pools = []

    def new_pool():
        if pools:
            pools[-1].shutdown(wait=False, cancel_futures=True)
        pools.append(
            cf.ProcessPoolExecutor(n_workers, mp_context=ctx, initializer=_init_worker, initargs=(threads,))
        )
        return pools[-1].submit

    try:
        _windowed(new_pool(), _cf_wait, fn, tasks, 2 * n_workers, on_result, on_broken=new_pool)
    except BaseException:
        for p in pools:
            _kill_workers(p)
            p.shutdown(wait=False, cancel_futures=True)
        raise
    for p in pools:
        p.shutdown(wait=True)


def _run_dask(client, fn, tasks, on_result):
    from distributed import wait as dwait

    try:
        nthreads = sum(client.nthreads().values())
    except Exception:  # noqa: BLE001
        nthreads = 1
    window = max(4, 2 * nthreads)

    def submit(f, *args):
        return client.submit(f, *args, pure=False)

    def wait(futs):
        return dwait(futs, return_when="FIRST_COMPLETED").done

    _windowed(submit, wait, fn, tasks, window, on_result)


# ----------------------------------------------------------------------------- public API
def sweep(
    fn,
    grid,
    store="runs/name.zarr",
    client=None,
    resume=True,
    *,
    n_workers=None,
    retry_failed=True,
    progress=None,
    mp_context="spawn",
    fsync=False,
) -> xr.Dataset:
    """Run ``fn(**point)`` for every point of ``grid``, saving each result as it finishes.

    Parameters
    ----------
    fn : callable
        Called as ``fn(**point)``. Returns a dict of scalars/arrays, an
        :class:`xarray.Dataset`, or an object with ``to_xarray()`` / ``to_dict()``
        (see :func:`to_dataset`).
    grid : dict or list of dict
        ``{name: values}``: the Cartesian product, one result dimension per name;
        or an explicit list of point dicts: one ``point`` dimension.
    store : path
        Directory of the store (created if needed; the suffix is free, ``.zarr`` by
        custom). One store per sweep: resuming a store with another grid raises.
    client : None, dask.distributed.Client or concurrent.futures.Executor
        ``None`` runs locally (see ``n_workers``).
    resume : bool
        ``True``: skip the points already in the store. ``False``: discard the
        store's results (it must be an eosdyn sweep store) and run every point.
    n_workers : int, optional
        Local worker processes; default one per available core; ``1`` runs the points
        in this process. Not allowed with ``client``.
    retry_failed : bool
        When resuming, re-run the points that failed before (default) or keep their
        failure records.
    progress : bool, optional
        Show a tqdm bar (points done, failed, estimated time left); default: only
        when stderr is a terminal.
    mp_context : str or multiprocessing context
        Start method of the local worker processes (default ``"spawn"``).
    fsync : bool
        Flush every point's files to disk before renaming them into place. Writes
        are atomic either way (a killed sweep loses only the points in flight);
        ``fsync=True`` also survives an OS crash or power loss, at the price of a
        disk flush per file (~10 ms on some filesystems).

    Returns
    -------
    xarray.Dataset
        Indexed by the grid's dimensions (or ``point``), with the result variables
        (NaN where a point failed or is pending) and per-point ``sweep_status``
        (``"ok"``, ``"failed"``, ``"pending"``), ``sweep_error``, ``sweep_start``,
        ``sweep_end`` and ``sweep_duration``; attributes record the store, fn, eosdyn
        version and git revision. Each point's record in the store also keeps the
        traceback, host and pid (see :func:`status`).
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    g = Grid(grid)
    st = Store(store)
    if not isinstance(resume, bool):
        raise TypeError(f"resume must be a bool, got {type(resume).__name__}")
    if not isinstance(retry_failed, bool):
        raise TypeError(f"retry_failed must be a bool, got {type(retry_failed).__name__}")
    if not isinstance(fsync, bool):
        raise TypeError(f"fsync must be a bool, got {type(fsync).__name__}")
    if progress is not None and not isinstance(progress, bool):
        raise TypeError(f"progress must be None or a bool, got {type(progress).__name__}")
    dask_client = False
    if client is not None:
        if n_workers is not None:
            raise ValueError("n_workers applies to the local executor; with a client the cluster's workers are used")
        dask_client = _is_dask_client(client)
        if not dask_client and not isinstance(client, cf.Executor):
            raise TypeError(
                "client must be None, a dask.distributed.Client or a concurrent.futures.Executor, "
                f"got {type(client).__name__}"
            )
    else:
        n_workers = _available_cores() if n_workers is None else nonneg_int("n_workers", n_workers, minimum=1)
        ctx_name = mp_context if isinstance(mp_context, str) else getattr(mp_context, "_name", "")
        if isinstance(mp_context, str) and mp_context not in mp.get_all_start_methods():
            raise ValueError(f"mp_context must be one of {mp.get_all_start_methods()}, got {mp_context!r}")
        if n_workers > 1 and g.n_points > 1:
            _check_picklable(fn, ctx_name)

    meta = {"time": _now(), "eosdyn_version": eosdyn_version(), "git_revision": git_revision()}
    st.create_or_open(g, _fn_name(fn), resume, meta)
    try:
        records = st.scan(verify=True)
        keep = {"ok"} if retry_failed else {"ok", "failed"}
        todo = [(i, g.point(i)) for i in range(g.n_points) if records.get(i, {}).get("status") not in keep]
        n_failed = sum(1 for r in records.values() if r["status"] == "failed" and "failed" in keep)

        show = sys.stderr.isatty() if progress is None else progress
        bar = None
        if show and todo:
            from tqdm.auto import tqdm

            bar = tqdm(total=g.n_points, initial=g.n_points - len(todo), desc=f"sweep {st.path.name}",
                       unit="pt", file=sys.stderr)
            bar.set_postfix(failed=n_failed, refresh=False)
        counts = {"failed": n_failed}

        loaded = {}

        def on_result(rec, payload):
            i = rec["index"]
            rec["eosdyn_version"] = meta["eosdyn_version"]
            rec["git_revision"] = meta["git_revision"]
            if payload is not None:
                # decode now (while the workers compute the next points): the final
                # assembly needs it, and a result that cannot be read back is a failure
                try:
                    loaded[i] = decode(payload, rec["format"], st.data_path(i))
                except Exception as exc:  # noqa: BLE001
                    rec.update(status="failed", error=f"the result cannot be read back: {type(exc).__name__}: {exc}",
                               traceback=traceback.format_exc())
                    payload = None
            st.write_point(rec, payload, fsync)
            records[i] = rec
            if rec["status"] == "failed":
                counts["failed"] += 1
            if bar is not None:
                bar.set_postfix(failed=counts["failed"], refresh=False)
                bar.update(1)

        try:
            if todo:
                if client is not None:
                    if dask_client:
                        _run_dask(client, fn, todo, on_result)
                    else:
                        _windowed(client.submit, _cf_wait, fn, todo, 2 * max(1, getattr(client, "_max_workers", 2)),
                                  on_result)
                elif n_workers == 1 or len(todo) == 1:
                    for i, p in todo:
                        on_result(*_run_point(fn, i, p))
                else:
                    _run_local_pool(fn, todo, min(n_workers, len(todo)), mp_context, on_result)
        except KeyboardInterrupt:
            # a traceback would hide the one thing to know: what is saved, and how to go on
            if bar is not None:
                bar.close()
            done = sum(1 for r in records.values() if r["status"] == "ok")
            print(f"\nsweep interrupted: {done}/{g.n_points} points done; rerun the same command to resume "
                  f"(store {st.path})", file=sys.stderr)
            raise
        finally:
            if bar is not None:
                bar.close()
        return st.to_dataset(records, loaded)
    finally:
        st.unlock()


def load(store) -> xr.Dataset:
    """The labelled results of a store, as :func:`sweep` returns them, without running anything.

    Every data file is checked against its SHA-256; a corrupted store raises
    :class:`~eosdyn.sweep.StoreError`.
    """
    st = Store(store)
    st.open_existing()
    return st.to_dataset(st.scan(verify=True))


def status(store, verify=False) -> dict:
    """Counts of a store's points: ``n_points``, ``done``, ``failed``, ``pending``.

    Also returns ``failures`` (a list of ``{"index", "params", "error", "traceback"}``),
    and the manifest's ``fn``, ``created``, ``eosdyn_version`` and ``git_revision``.
    ``verify=True`` also checks every data file's checksum (reads all data).
    """
    if not isinstance(verify, bool):
        raise TypeError(f"verify must be a bool, got {type(verify).__name__}")
    st = Store(store)
    m = st.open_existing()
    records = st.scan(verify=verify)
    failures = [
        {k: records[i].get(k) for k in ("index", "params", "error", "traceback")}
        for i in sorted(records)
        if records[i]["status"] == "failed"
    ]
    done = sum(1 for r in records.values() if r["status"] == "ok")
    return {
        "store": str(st.path),
        "fn": m.get("fn"),
        "created": m.get("created"),
        "eosdyn_version": m.get("eosdyn_version"),
        "git_revision": m.get("git_revision"),
        "n_points": st.grid.n_points,
        "done": done,
        "failed": len(failures),
        "pending": st.grid.n_points - done - len(failures),
        "failures": failures,
    }
