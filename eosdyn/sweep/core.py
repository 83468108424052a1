"""``sweep``: run a function over a parameter grid into a resumable, labelled store.

Execution
---------
``sweep(fn, grid, store, executor=...)`` runs the points on any executor: an object
with ``submit(f, *args)`` returning a future with ``done()`` and ``result()``, which is
what :class:`concurrent.futures.Executor` defines and what the executors the field
uses provide:

* ``executor=None, n_workers=1``: every point runs in this process, one after the
  other; ``fn`` may use all cores itself (eosdyn ensembles, BLAS).
* ``executor=None, n_workers=k > 1`` (the default, ``k`` = the cores this process may
  use): a local :class:`concurrent.futures.ProcessPoolExecutor` that the sweep owns,
  with the ``forkserver`` start method where there is one (Linux, macOS), else
  ``spawn``. Not ``fork``: forking a parent that already runs numba/OpenMP/torch
  thread pools can deadlock the children. The fork server is a fresh, single-threaded
  process that imports eosdyn, xarray and what they import lazily once
  (:mod:`eosdyn.sweep._warm`), and forks every worker from that state: a worker
  starts in milliseconds instead of importing everything itself (measured on 2 busy
  cores, 4 trivial points on 2 workers: first result after 3.5 s instead of 7-8.6 s
  with ``spawn``; a second sweep in the same process 0.1 s instead of 7.4 s). The
  server lives as long as this process, so workers see the environment variables of
  its start (``sys.path`` and the working directory are those of each sweep); pass
  ``mp_context="spawn"`` for a fresh interpreter per pool.
  Either way ``fn`` must be importable by the workers (defined in a module, or in the
  ``__main__`` of a script whose call to :func:`sweep` sits under
  ``if __name__ == "__main__":``, since the workers import that script again; a call
  outside that guard is refused with a RuntimeError that says so, before any worker
  starts). In a notebook pass ``mp_context="fork"`` or ``n_workers=1``. Each worker
  limits numba to ``max(1, cores // k)`` threads so that k workers do not
  oversubscribe the cores.

  These workers die with this process, whatever the start method, even when it is
  killed with SIGKILL: on Linux the kernel kills them (``PR_SET_PDEATHSIG``, armed
  against the fork server under ``forkserver``, which ends with this process), and a
  watchdog thread in each worker exits when the parent's sentinel closes (see
  :func:`_die_with_parent`). The multiprocessing resource tracker then
  loses its last client and exits too, so nothing keeps this process's stdout open.
  On Ctrl-C the workers ignore SIGINT and this process kills them.
* ``executor=ThreadPoolExecutor(...)`` / ``ProcessPoolExecutor(...)``: the points run
  on that pool (the caller owns it and shuts it down).
* Dask: ``executor=client.get_executor()``, or the shortcut ``client=client`` (which
  is exactly that, with ``pure=False``). ``fn`` and its arguments are pickled to the
  cluster's workers.
* Slurm through submitit: ``executor=submitit.AutoExecutor(folder="runs/logs")``
  (``executor.update_parameters(timeout_min=60, slurm_partition=...)`` first), one
  Slurm job per point; on a laptop ``submitit.AutoExecutor(folder=..., cluster="local")``
  or ``submitit.LocalExecutor(folder=...)`` runs the same jobs as local processes::

      import submitit
      ex = submitit.AutoExecutor(folder="runs/logs", cluster="local")   # or a Slurm cluster
      ex.update_parameters(timeout_min=30)
      ds = sweep(fn, grid, "runs/eta_seed", executor=ex, max_in_flight=8)

  submitit is not a dependency of eosdyn.

At most ``max_in_flight`` points are submitted and not yet finished at any time
(default: twice the executor's workers where it tells them, i.e. a process or thread
pool's ``max_workers`` or a Dask cluster's threads; every point at once otherwise).

What holds on every executor: ``fn`` runs inside :func:`_run_point`, which turns its
return value into an :class:`xarray.Dataset`, serialises it to NetCDF bytes (in the
worker, in parallel), and catches its exception: a failing point is recorded with its
message and traceback and the sweep goes on. Only this process writes to the store,
one atomic rename per file (see :mod:`eosdyn.sweep._store`), so however the sweep
ends (Ctrl-C, SIGKILL, a crash of this process or of a worker) the store holds every
point that was finished and written, each complete, and nothing else; resuming skips
those points and runs the others. An executor whose workers outlive this process
(a Dask cluster, Slurm jobs, submitit's local jobs) may go on computing the points
that were in flight: nobody stores their results, and a resume runs those points
again. On Ctrl-C or an error of the sweep itself, the futures in flight are
cancelled (``future.cancel()``: a Dask task or a Slurm job is cancelled; a thread
already running a point cannot be, and runs to its end); the local pool's workers are
killed.

Ctrl-C prints "k/N points done; rerun the same command to resume (store ...)" to
stderr instead of a traceback, then raises :class:`KeyboardInterrupt` (the
``eosdyn sweep`` command exits with status 130).
"""
from __future__ import annotations

import ast
import concurrent.futures as cf
import contextlib
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
from pathlib import Path

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
def _is_dims_tuple(v) -> bool:
    """Whether ``v`` is an xarray-style ``(dims, data[, attrs])`` tuple."""
    if not isinstance(v, tuple) or len(v) not in (2, 3) or isinstance(v[1], (str, bytes)):
        return False
    d = v[0]
    return isinstance(d, str) or (isinstance(d, (tuple, list)) and all(isinstance(x, str) for x in d))


def check_dims(dims) -> dict | None:
    """``dims`` as ``{name: tuple of dimension names}`` (a str names one dimension), or
    TypeError/ValueError naming ``dims``."""
    if dims is None:
        return None
    if not isinstance(dims, dict):
        raise TypeError(f"dims must be a dict of result name -> dimension names, got {type(dims).__name__}")
    out = {}
    for k, v in dims.items():
        if not isinstance(k, str):
            raise TypeError(f"dims keys must be result names (str), got {k!r}")
        d = (v,) if isinstance(v, str) else v
        if not isinstance(d, (tuple, list)) or not all(isinstance(x, str) and x for x in d):
            raise TypeError(f"dims[{k!r}] must be a dimension name or a tuple of them, got {v!r}")
        if len(set(d)) != len(d):
            raise ValueError(f"dims[{k!r}] repeats a dimension name: {tuple(d)!r}")
        out[k] = tuple(d)
    return out


def to_dataset(result, dims=None) -> xr.Dataset:
    """Turn what ``fn`` returned into an :class:`xarray.Dataset`.

    Accepted: a Dataset; a DataArray (stored as variable ``result`` unless named); an
    object with ``to_xarray()`` (e.g. eosdyn's Trajectory and EnsembleResult, whose
    records come out along ``step`` and ``trajectory``) or ``to_dict()``; a dict of
    name -> scalar, array, DataArray or xarray-style tuple ``(dims, data)`` /
    ``(dims, data, attrs)``; a bare scalar or array (stored as ``result``).

    Dimension names: those of the xarray objects and tuples; for a bare array, those
    given by ``dims`` (``{name: ("step",)}``, a str for one dimension), else
    ``{name}_dim_{k}``. A result that already has named dimensions must agree with
    ``dims`` where ``dims`` names it. A name in ``dims`` that the result lacks, or a
    number of dimensions that differs, raises ValueError (in a sweep: that point
    fails with this message).
    """
    dims = check_dims(dims) or {}
    ds = _to_dataset(result, dims)
    for name, want in dims.items():
        if name not in ds.variables:
            raise ValueError(f"dims names {name!r}, but the result has no such variable "
                             f"(it has {sorted(map(str, ds.variables))})")
        got = ds.variables[name].dims
        if got != want:
            raise ValueError(f"dims[{name!r}] is {want!r} but the result {name!r} has dimensions {got!r}")
    return ds


def _array_var(name, value, dims):
    a = np.asarray(value)
    if a.dtype == object:
        raise TypeError(f"result {name!r} is not numeric or str (got {type(value).__name__}); "
                        "return arrays or scalars")
    d = dims.get(name)
    if d is None:
        d = tuple(f"{name}_dim_{j}" for j in range(a.ndim))
    elif len(d) != a.ndim:
        raise ValueError(f"dims[{name!r}] names {len(d)} dimension(s) {d!r} but the result {name!r} has "
                         f"{a.ndim} (shape {a.shape})")
    return xr.Variable(d, a)


def _to_dataset(result, dims) -> xr.Dataset:
    if isinstance(result, xr.Dataset):
        return result
    if isinstance(result, xr.DataArray):
        return result.to_dataset(name=result.name if result.name is not None else "result")
    if hasattr(result, "to_xarray") and callable(result.to_xarray):
        out = result.to_xarray()
        if isinstance(out, (xr.Dataset, xr.DataArray)):
            return _to_dataset(out, dims)
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
            elif _is_dims_tuple(v):
                d = (v[0],) if isinstance(v[0], str) else tuple(v[0])
                a = np.asarray(v[1])
                if a.dtype == object:
                    raise TypeError(f"result {k!r} is not numeric or str (got {type(v[1]).__name__})")
                if len(d) != a.ndim:
                    raise ValueError(f"result {k!r} names {len(d)} dimension(s) {d!r} for an array of shape "
                                     f"{a.shape}")
                data[k] = xr.Variable(d, a, v[2] if len(v) == 3 else None)
            else:
                data[k] = _array_var(k, v, dims)
        return xr.Dataset(data)
    a = np.asarray(result)
    if a.dtype == object:
        raise TypeError(
            f"fn returned {type(result).__name__}; return a dict of scalars/arrays, an xarray Dataset, "
            "or an object with to_xarray() or to_dict()"
        )
    return xr.Dataset({"result": _array_var("result", a, dims)})


def _run_point(fn, index: int, params: dict, dims=None):
    """Run one point; never raises for errors of ``fn``. Returns (record, NetCDF bytes or None)."""
    rec = {"index": index, "params": params, "host": socket.gethostname(), "pid": os.getpid()}
    t0 = time.perf_counter()
    rec["start"] = _now()
    payload = None
    try:
        out = fn(**params)
        rec["end"] = _now()
        rec["duration_s"] = time.perf_counter() - t0
        payload, rec["format"] = encode(to_dataset(out, dims))
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
    which shuts the pool down before it returns.) Under the ``forkserver`` start method
    our direct parent is the fork server, which exits when the sweep's process ends:
    on Linux the same signal is armed against it. Everywhere else, and as a second
    line under ``forkserver``, a daemon thread waits on the parent's sentinel, a pipe
    or process handle that becomes ready when the parent ends, and exits the process;
    it needs the GIL to do so, so it may wait for a GIL-holding kernel to return.
    """
    parent = mp.parent_process()
    if parent is None:  # not started by multiprocessing: nobody to die with
        return
    if os.getppid() == parent.pid and _ask_kernel_to_kill_me_with_parent():
        if os.getppid() != parent.pid:  # the parent died before the prctl call took effect
            os._exit(1)
        return
    if mp.get_start_method(allow_none=True) == "forkserver" or os.getppid() != parent.pid:
        # our direct parent is the fork server, which exits when the sweep's process ends
        # (EOF on its "alive" pipe): the kernel then kills us even inside a GIL-holding
        # kernel; the watchdog below still covers a server that ended before this call
        _ask_kernel_to_kill_me_with_parent()
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
    return mod.split(".")[0] == "distributed" and hasattr(client, "submit") and hasattr(client, "get_executor")


def _all_cf_futures(futs) -> bool:
    return all(isinstance(f, cf.Future) for f in futs)


def _wait_any(futs, _poll=(0.005, 1.0)):
    """The futures of ``futs`` that are done, waiting until there is at least one.

    :class:`concurrent.futures.Future` objects are waited on without polling; other
    futures (submitit jobs, Dask futures) are polled through ``done()``, from every
    5 ms up to every second while nothing finishes.
    """
    if _all_cf_futures(futs):
        done, _ = cf.wait(futs, return_when=cf.FIRST_COMPLETED)
        return done
    delay, cap = _poll
    while True:
        done = [f for f in futs if f.done()]
        if done:
            return done
        time.sleep(delay)
        delay = min(cap, delay * 1.5)


def _cancel(futs) -> None:
    for f in futs:
        with contextlib.suppress(Exception):  # best effort: the sweep is ending anyway
            f.cancel()


def _windowed(submit, fn, tasks, window, on_result, on_broken=None, dims=None):
    """Keep at most ``window`` points in flight (None: no limit); hand each finished one
    to ``on_result``.

    ``on_broken`` (local process pools) returns a fresh ``submit`` after a worker
    process died: the points in flight with it are recorded as failed and the sweep
    goes on with a new pool. On any exception (Ctrl-C included) the futures still in
    flight are cancelled before it propagates.
    """
    it = iter(tasks)
    inflight = {}
    sub = [submit]

    def failed(i, p, error, tb=""):
        return {"index": i, "params": p, "status": "failed", "start": None, "end": _now(),
                "error": error, "traceback": tb}

    def fill():
        while window is None or len(inflight) < window:
            try:
                i, p = next(it)
            except StopIteration:
                return
            try:
                fut = sub[0](_run_point, fn, i, p, dims)
            except cf.BrokenExecutor:
                if on_broken is None:
                    raise
                sub[0] = on_broken()
                fut = sub[0](_run_point, fn, i, p, dims)
            inflight[fut] = (i, p)

    try:
        fill()
        while inflight:
            done = _wait_any(list(inflight))
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
                    on_result(failed(i, p, "BrokenProcessPool: a worker process died while this point was in "
                                           "flight"), None)
                inflight.clear()
                sub[0] = on_broken()
            fill()
    except BaseException:
        _cancel(list(inflight))
        raise


def _main_test(node) -> bool:
    """Whether an ``if`` test is ``__name__ == "__main__"`` (either way round, maybe in an ``and``)."""
    if isinstance(node, ast.BoolOp) and isinstance(node.op, ast.And):
        return any(_main_test(v) for v in node.values)
    if isinstance(node, ast.Compare) and len(node.ops) == 1 and isinstance(node.ops[0], ast.Eq):
        sides = [node.left, node.comparators[0]]
        return (any(isinstance(x, ast.Name) and x.id == "__name__" for x in sides)
                and any(isinstance(x, ast.Constant) and x.value == "__main__" for x in sides))
    return False


def _unguarded_main_call():
    """``(script, line)`` when :func:`sweep` runs during the top-level code of the
    ``__main__`` script, in a statement outside ``if __name__ == "__main__":``; else None.

    Spawned (and forkserver) workers import that script again as ``__mp_main__``, which
    would run such a statement, and so the sweep, once more in every worker.
    """
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if not path:
        return None
    f = sys._getframe(1)
    while f is not None and not (f.f_code.co_name == "<module>" and f.f_globals is main.__dict__):
        f = f.f_back
    if f is None:  # not called from the script's top-level code (e.g. later, from an interactive session)
        return None
    line = f.f_lineno
    try:
        tree = ast.parse(Path(path).read_text(), path)
    except (OSError, SyntaxError, ValueError, UnicodeDecodeError):
        return None
    for node in tree.body:
        if isinstance(node, ast.If) and _main_test(node.test) and node.lineno <= line <= (node.end_lineno or line):
            return None
    return path, line


def _main_guard_message(where: str) -> str:
    return (
        f"{where}: sweep() runs in the top-level code of this script, outside `if __name__ == \"__main__\":`. "
        "Worker processes started with 'spawn' or 'forkserver' import the script again, so each would start "
        "the sweep again (and every point would fail with BrokenProcessPool). Put the code that calls sweep() "
        "under\n\n    if __name__ == \"__main__\":\n        ...\n\n"
        "(or pass n_workers=1 to run in this process, or mp_context='fork')"
    )


def _refuse_in_bootstrapping_worker() -> None:
    """In a worker process that is importing the main script (spawn/forkserver), refuse
    to start a sweep: the script lacks its ``__main__`` guard (the parent usually
    catches this first, see :func:`_unguarded_main_call`)."""
    if mp.parent_process() is not None and getattr(mp.current_process(), "_inheriting", False):
        raise RuntimeError(_main_guard_message("worker process"))


def _check_start_method(fn, ctx_name: str):
    if ctx_name == "fork":
        return
    where = _unguarded_main_call()
    if where is not None:
        raise RuntimeError(_main_guard_message(f"{where[0]}, line {where[1]}"))
    main = sys.modules.get("__main__")
    if getattr(fn, "__module__", None) == "__main__" and not getattr(main, "__file__", None):
        raise TypeError(
            "fn is defined interactively (in __main__ without a file), so spawned worker processes cannot "
            "import it; pass n_workers=1 to run in this process, mp_context='fork', or define fn in a module"
        )


def _check_picklable(fn):
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


def _preload_forkserver(ctx) -> None:
    """With the ``forkserver`` start method, have the fork server import what a worker
    needs (:mod:`eosdyn.sweep._warm`) before it forks any: each worker then starts with
    eosdyn, xarray and their lazy imports in memory instead of importing them itself.

    The fork server is one per process and lives as long as it; it reads its preload
    list when it starts, with the first pool that uses it (if something else started
    it before, this does nothing). The list keeps what was there (``__main__`` by
    default) and adds one module.
    """
    if ctx.get_start_method() != "forkserver":
        return
    from multiprocessing import forkserver

    current = list(getattr(getattr(forkserver, "_forkserver", None), "_preload_modules", None) or ["__main__"])
    if "eosdyn.sweep._warm" not in current:
        ctx.set_forkserver_preload(current + ["eosdyn.sweep._warm"])


def _run_local_pool(fn, tasks, n_workers, mp_context, on_result, dims):
    ctx = mp.get_context(mp_context) if isinstance(mp_context, str) else mp_context
    _preload_forkserver(ctx)
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
        _windowed(new_pool(), fn, tasks, 2 * n_workers, on_result, on_broken=new_pool, dims=dims)
    except BaseException:
        for p in pools:
            _kill_workers(p)
            p.shutdown(wait=False, cancel_futures=True)
        raise
    for p in pools:
        p.shutdown(wait=True)


def _default_window(executor) -> int | None:
    """Twice the executor's workers where it tells them, else None (no limit)."""
    mw = getattr(executor, "_max_workers", None)  # ThreadPoolExecutor, ProcessPoolExecutor
    if isinstance(mw, int) and mw > 0:
        return 2 * mw
    client = getattr(executor, "_client", None)  # distributed's ClientExecutor
    if client is not None and _is_dask_client(client):
        try:
            return max(4, 2 * sum(client.nthreads().values()))
        except Exception:  # noqa: BLE001
            return 4
    return None


def _resolve_executor(executor, client):
    """The executor to submit to (None: the sweep's own local pool)."""
    if client is not None:
        if executor is not None:
            raise ValueError("give executor or client, not both (client=c is a shortcut for "
                             "executor=c.get_executor())")
        if _is_dask_client(client):
            return client.get_executor(pure=False)
        if isinstance(client, cf.Executor):  # accepted before executor= existed
            return client
        raise TypeError(
            "client must be None, a dask.distributed.Client or a concurrent.futures.Executor "
            f"(for other executors use executor=), got {type(client).__name__}"
        )
    if executor is None:
        return None
    if _is_dask_client(executor):
        return executor.get_executor(pure=False)
    if isinstance(executor, type) or not callable(getattr(executor, "submit", None)):
        raise TypeError(
            "executor must be a concurrent.futures.Executor (or an object with a submit(fn, *args) method "
            "returning a future, such as submitit's AutoExecutor or a Dask Client.get_executor()), "
            f"got {type(executor).__name__ if not isinstance(executor, type) else 'the class ' + executor.__name__}"
        )
    return executor


# ----------------------------------------------------------------------------- public API
def sweep(
    fn,
    grid,
    store="runs/sweep",
    client=None,
    resume=True,
    *,
    executor=None,
    n_workers=None,
    max_in_flight=None,
    dims=None,
    retry_failed=True,
    progress=None,
    mp_context=None,
    fsync=False,
) -> xr.Dataset:
    """Run ``fn(**point)`` for every point of ``grid``, saving each result as it finishes.

    Parameters
    ----------
    fn : callable
        Called as ``fn(**point)``. Returns a dict of scalars, arrays or xarray-style
        ``(dims, data)`` tuples, an :class:`xarray.Dataset` / ``DataArray``, or an
        object with ``to_xarray()`` / ``to_dict()`` (see :func:`to_dataset`).
    grid : dict or list of dict
        ``{name: values}``: the Cartesian product, one result dimension per name;
        or an explicit list of point dicts: one ``point`` dimension.
    store : path
        Directory of the store (created if needed). It is a directory of per-point
        NetCDF files, not a Zarr store (see :mod:`eosdyn.sweep._store`): read it with
        :func:`load`; a name without suffix (``runs/eta_seed``) says so. Stores made
        under a ``*.zarr`` name by earlier versions are read and resumed as they are.
        One store per sweep: resuming a store with another grid raises.
    client : None or dask.distributed.Client
        Shortcut for ``executor=client.get_executor(pure=False)`` (a
        ``concurrent.futures.Executor`` given here is used as ``executor``).
    resume : bool
        ``True``: skip the points already in the store. ``False``: discard the
        store's results (it must be an eosdyn sweep store) and run every point.
    executor : concurrent.futures.Executor, optional
        Where the points run (see :mod:`eosdyn.sweep.core`): any object whose
        ``submit(f, *args)`` returns a future with ``done()`` and ``result()``, e.g. a
        ``ThreadPoolExecutor``/``ProcessPoolExecutor``, a Dask
        ``Client.get_executor()``, or submitit's ``AutoExecutor`` (Slurm) /
        ``AutoExecutor(folder, cluster="local")``. The caller owns it (the sweep does
        not shut it down). Default: a local process pool (see ``n_workers``).
    n_workers : int, optional
        Local worker processes; default one per available core; ``1`` runs the points
        in this process. Not allowed with ``executor`` or ``client``.
    max_in_flight : int, optional
        Points submitted and not yet finished at most; default twice the executor's
        workers where it tells them, else every point at once (Slurm: one job each).
    dims : dict, optional
        ``{result name: dimension names}`` for array results returned without names,
        e.g. ``{"sharpness": ("step",)}`` (a str for one dimension). Without it such
        arrays get ``{name}_dim_{k}``. A point whose result lacks a named variable or
        has another number of dimensions fails with a message saying so.
    retry_failed : bool
        When resuming, re-run the points that failed before (default) or keep their
        failure records.
    progress : bool, optional
        Show a tqdm bar (points done, failed, estimated time left); default: only
        when stderr is a terminal.
    mp_context : str or multiprocessing context, optional
        Start method of the local worker processes (default ``"forkserver"`` where
        available, else ``"spawn"``; see :mod:`eosdyn.sweep.core`).
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

    Raises
    ------
    KeyboardInterrupt
        On Ctrl-C, after printing "k/N points done; rerun the same command to resume
        (store ...)" to stderr; every point finished before it is stored.
    RuntimeError
        When a script calls ``sweep`` outside ``if __name__ == "__main__":`` and the
        points would run in spawned worker processes (the message says what to add);
        when another sweep holds the store's lock.
    """
    _refuse_in_bootstrapping_worker()
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
    dims = check_dims(dims)
    if max_in_flight is not None:
        max_in_flight = nonneg_int("max_in_flight", max_in_flight, minimum=1)
    ex = _resolve_executor(executor, client)
    if ex is not None:
        if n_workers is not None:
            raise ValueError("n_workers applies to the local executor (the sweep's own process pool); with an "
                             "executor or client, that one's workers are used")
        if isinstance(ex, cf.ProcessPoolExecutor) and g.n_points > 1:
            ctx = getattr(ex, "_mp_context", None)
            _check_start_method(fn, ctx.get_start_method() if ctx is not None else "spawn")
            _check_picklable(fn)
    else:
        n_workers = _available_cores() if n_workers is None else nonneg_int("n_workers", n_workers, minimum=1)
        if mp_context is None:
            mp_context = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
        ctx_name = mp_context if isinstance(mp_context, str) else getattr(mp_context, "_name", "")
        if isinstance(mp_context, str) and mp_context not in mp.get_all_start_methods():
            raise ValueError(f"mp_context must be one of {mp.get_all_start_methods()}, got {mp_context!r}")
        if n_workers > 1 and g.n_points > 1:
            _check_start_method(fn, ctx_name)
            _check_picklable(fn)

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
                if ex is not None:
                    window = max_in_flight if max_in_flight is not None else _default_window(ex)
                    _windowed(ex.submit, fn, todo, window, on_result, dims=dims)
                elif n_workers == 1 or len(todo) == 1:
                    for i, p in todo:
                        on_result(*_run_point(fn, i, p, dims))
                else:
                    k = min(n_workers, len(todo))
                    _run_local_pool(fn, todo, k, mp_context, on_result, dims)
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
