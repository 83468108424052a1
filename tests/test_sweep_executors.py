"""Sweeps on the executors the field uses (issue 18), and what a user sees when things go wrong.

* ``executor=``: a thread pool, a process pool, Dask (``Client.get_executor()`` and the
  ``client=`` shortcut), submitit's local executor (only where submitit is installed);
  a bad ``executor`` is a TypeError naming it;
* the store is named without ``.zarr`` (it is per-point NetCDF); old ``*.zarr`` stores
  are read and resumed;
* a script without ``if __name__ == "__main__":`` is told what to add, before any
  worker starts;
* Ctrl-C of ``eosdyn sweep CONFIG.toml``: "k/N points done; rerun ..." and exit 130;
* array results get dimension names from ``(dims, data)`` tuples, DataArrays, eosdyn
  results, or ``sweep(..., dims=...)``.
"""
from __future__ import annotations

import concurrent.futures as cf
import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid

import numpy as np
import pytest
import xarray as xr

from eosdyn.sweep import load, status, sweep
from eosdyn.sweep.core import to_dataset

FNS_SOURCE = '''
import os, time
import numpy as np

def point(a, b):
    return {"y": a * 10.0 + b, "v": ("k", np.arange(3) * a + b), "pid": os.getpid()}

def slow(a):
    time.sleep(0.4)
    return {"y": float(a)}

def warm(a):
    import sys
    return {"warm": int("eosdyn.sweep._warm" in sys.modules), "pid": os.getpid()}

def curve(n):
    return {"sharpness": np.linspace(0.0, 1.0, n), "m": np.ones((2, n)), "final": float(n)}
'''

GRID = {"a": [0, 1, 2], "b": [1, 2]}
META = ["sweep_start", "sweep_end", "sweep_duration"]


@pytest.fixture(scope="module")
def fns(tmp_path_factory):
    d = tmp_path_factory.mktemp("execfns")
    name = f"execfns_{uuid.uuid4().hex[:8]}"
    (d / f"{name}.py").write_text(FNS_SOURCE)
    sys.path.insert(0, str(d))
    try:
        mod = __import__(name)
        mod.DIR = d
        yield mod
    finally:
        sys.path.remove(str(d))
        sys.modules.pop(name, None)


@pytest.fixture(scope="module")
def reference(fns, tmp_path_factory):
    """The sweep of ``point`` in this process, to compare every executor against."""
    return sweep(fns.point, GRID, tmp_path_factory.mktemp("ref") / "ref", n_workers=1)


def same_results(ds, ref):
    xr.testing.assert_identical(ds.drop_vars(META + ["pid"]).drop_attrs(), ref.drop_vars(META + ["pid"]).drop_attrs())
    assert (ds.sweep_status == "ok").all()
    assert ds.v.dims == ("a", "b", "k")


# ----------------------------------------------------------------------------- executors
def test_thread_pool_executor(fns, reference, tmp_path):
    with cf.ThreadPoolExecutor(2) as ex:
        ds = sweep(fns.point, GRID, tmp_path / "threads", executor=ex)
        assert not ex._shutdown  # the caller owns the executor: the sweep does not shut it down
    same_results(ds, reference)
    assert (ds.pid == os.getpid()).all()


def test_process_pool_executor_and_resume(fns, reference, tmp_path):
    store = tmp_path / "procs"
    with cf.ProcessPoolExecutor(2, mp_context=mp.get_context("fork")) as ex:
        ds = sweep(fns.point, GRID, store, executor=ex, max_in_flight=1)
    same_results(ds, reference)
    assert os.getpid() not in set(ds.pid.values.ravel().tolist())
    # resume skips the points done, whatever executor runs the rest
    calls = []

    def counting(a, b):
        calls.append((a, b))
        return fns.point(a, b)

    with pytest.warns(UserWarning, match="it is now resumed with"):
        again = sweep(counting, GRID, store, executor=cf.ThreadPoolExecutor(1))
    assert calls == []
    same_results(again, reference)


def test_dask_executor_and_client_shortcut(fns, reference, tmp_path):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        ds = sweep(fns.point, GRID, tmp_path / "dask_ex", executor=client.get_executor())
        short = sweep(fns.point, GRID, tmp_path / "dask_client", client=client)
        with pytest.raises(ValueError, match="executor or client, not both"):
            sweep(fns.point, GRID, tmp_path / "both", client=client, executor=client.get_executor())
    same_results(ds, reference)
    same_results(short, reference)


def test_submitit_local_executor(fns, reference, tmp_path, monkeypatch):
    submitit = pytest.importorskip("submitit")
    # the local jobs are new Python processes: they import fn's module from PYTHONPATH
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(fns.DIR), os.environ.get("PYTHONPATH", "")]))
    ex = submitit.AutoExecutor(folder=tmp_path / "logs", cluster="local")
    ex.update_parameters(timeout_min=5)
    ds = sweep(fns.point, {"a": [1], "b": [1, 2]}, tmp_path / "submitit", executor=ex)
    same_results(ds, reference.sel(a=[1]))
    assert os.getpid() not in set(ds.pid.values.ravel().tolist())  # each point ran as a local job


class NotAnExecutor:
    submit = None


@pytest.mark.parametrize("bad", [42, "local", cf.ThreadPoolExecutor, NotAnExecutor(), object()])
def test_bad_executor_is_a_type_error_naming_it(fns, tmp_path, bad):
    with pytest.raises(TypeError, match="executor must be a concurrent.futures.Executor"):
        sweep(fns.point, GRID, tmp_path / "bad", executor=bad)
    assert not (tmp_path / "bad").exists()


def test_bad_client_and_n_workers_with_executor(fns, tmp_path):
    with pytest.raises(TypeError, match="client must be None, a dask.distributed.Client"):
        sweep(fns.point, GRID, tmp_path / "c", client="tcp://nowhere:8786")
    with cf.ThreadPoolExecutor(1) as ex, pytest.raises(ValueError, match="n_workers applies to the local"):
        sweep(fns.point, GRID, tmp_path / "c", executor=ex, n_workers=2)
    with cf.ThreadPoolExecutor(1) as ex, pytest.raises(ValueError, match="max_in_flight"):
        sweep(fns.point, GRID, tmp_path / "c", executor=ex, max_in_flight=0)


def test_futures_without_concurrent_futures_are_polled(fns, reference, tmp_path):
    """An executor whose futures are not concurrent.futures.Future (as submitit's jobs)."""

    class Job:
        def __init__(self, f, args):
            self.value, self.polls = f(*args), 0

        def done(self):
            self.polls += 1
            return self.polls > 2  # finishes after a few polls

        def result(self):
            return self.value

        def cancel(self):
            return False

    class JobExecutor:
        def __init__(self):
            self.jobs = []

        def submit(self, f, *args):
            self.jobs.append(Job(f, args))
            return self.jobs[-1]

    ex = JobExecutor()
    ds = sweep(fns.point, GRID, tmp_path / "jobs", executor=ex)
    same_results(ds, reference)
    assert len(ex.jobs) == 6 and all(j.polls >= 3 for j in ex.jobs)


def test_ctrl_c_cancels_the_futures_in_flight(fns, tmp_path):
    class Fut:
        cancelled = 0

        def done(self):
            raise KeyboardInterrupt  # as Ctrl-C while the sweep waits

        def cancel(self):
            Fut.cancelled += 1

    class Ex:
        def submit(self, f, *args):
            return Fut()

    with pytest.raises(KeyboardInterrupt):
        sweep(fns.point, GRID, tmp_path / "cc", executor=Ex(), max_in_flight=4)
    assert Fut.cancelled == 4
    st = status(tmp_path / "cc")
    assert (st["done"], st["pending"]) == (0, 6)


@pytest.mark.skipif("forkserver" not in mp.get_all_start_methods(), reason="no forkserver start method")
def test_default_local_workers_are_forked_from_a_preloaded_server(fns, tmp_path):
    """The default pool forks its workers from a fork server that has imported and warmed
    eosdyn.sweep._warm: a worker finds it in memory although nothing in it imports it."""
    ds = sweep(fns.warm, {"a": [0, 1, 2]}, tmp_path / "w", n_workers=2)
    assert (ds.sweep_status == "ok").all()
    assert os.getpid() not in set(ds.pid.values.tolist())
    assert ds.warm.values.tolist() == [1, 1, 1]


# ----------------------------------------------------------------------------- the store's name
def test_store_is_not_zarr_and_old_zarr_named_stores_resume(fns, reference, tmp_path):
    import inspect

    assert not str(inspect.signature(sweep).parameters["store"].default).endswith(".zarr")
    old = tmp_path / "old.zarr"  # a store made under a .zarr name, as earlier versions suggested
    sweep(fns.point, {"a": [0, 1, 2], "b": [1, 2]}, old, n_workers=1)
    (old / "points" / "000005.json").unlink()  # point 5 left pending, as by a kill
    assert status(old)["pending"] == 1
    ds = sweep(fns.point, GRID, old, n_workers=1)
    same_results(ds, reference)
    same_results(load(old), reference)
    assert json.loads((old / "manifest.json").read_text())["format"] == "eosdyn-sweep"


# ----------------------------------------------------------------------------- __main__ guard
def test_script_without_main_guard_is_told_what_to_add(fns, tmp_path):
    script = tmp_path / "noguard.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(fns.DIR)!r})
        from {fns.__name__} import point
        from eosdyn.sweep import sweep

        sweep(point, {{"a": [0, 1], "b": [1]}}, {str(tmp_path / "s")!r}, n_workers=2, progress=False)
    """))
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 1
    assert 'if __name__ == "__main__":' in p.stderr
    assert f"{script}, line 7" in p.stderr
    assert p.stderr.count("Traceback") == 1  # this process's RuntimeError only: no worker ever started
    assert not (tmp_path / "s").exists()  # refused before anything ran
    assert time.monotonic() - t0 < 60


def test_main_guard_detection(tmp_path, monkeypatch):
    """The check reads the running script: statements under the guard (in any spelling) pass."""
    from eosdyn.sweep import core

    src = textwrap.dedent("""
        import sys
        from eosdyn.sweep import core
        def run():
            return core._unguarded_main_call()
        top = run()
        if "__main__" == __name__ and True:
            guarded = run()
    """)
    script = tmp_path / "m.py"
    script.write_text(src)
    main = type(sys)("__main__")
    main.__file__ = str(script)
    monkeypatch.setitem(sys.modules, "__main__", main)
    exec(compile(src, str(script), "exec"), main.__dict__)
    assert main.top == (str(script), 6)
    assert main.guarded is None
    assert core._unguarded_main_call() is None  # not during the script's top-level code


# ----------------------------------------------------------------------------- Ctrl-C of the CLI
def test_cli_ctrl_c_says_how_to_resume_and_exits_130(fns, tmp_path):
    cfg = tmp_path / "sweep.toml"
    cfg.write_text(textwrap.dedent(f"""
        fn = "{fns.__name__}:slow"
        store = "runs/slow"
        n_workers = 1
        [grid]
        a = {{ range = [0, 40] }}
    """))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(fns.DIR), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, "-m", "eosdyn.cli", "sweep", str(cfg), "--quiet"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    points = tmp_path / "runs" / "slow" / "points"
    try:
        deadline = time.monotonic() + 60
        while len(list(points.glob("*.json"))) < 2:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the sweep did not store 2 points in 60 s"
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in a terminal
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130
    done = len(list(points.glob("*.json")))
    assert f"{done}/40 points done; rerun the same command to resume" in err
    assert "Traceback" not in err + out


# ----------------------------------------------------------------------------- dimension names
def test_dims_from_tuples_dataarrays_and_the_dims_argument(fns, tmp_path):
    ds = sweep(fns.curve, {"n": [3]}, tmp_path / "anon", n_workers=1)
    assert ds.sharpness.dims == ("n", "sharpness_dim_0")  # no name known: anonymous, as before
    ds = sweep(fns.curve, {"n": [3, 4]}, tmp_path / "named", n_workers=1,
               dims={"sharpness": "step", "m": ("chain", "step")})
    assert ds.sharpness.dims == ("n", "step") and ds.m.dims == ("n", "chain", "step")
    np.testing.assert_array_equal(ds.sharpness.sel(n=3).values[:3], [0.0, 0.5, 1.0])
    assert np.isnan(ds.sharpness.sel(n=3).values[3])  # ragged: padded
    assert ds.final.dims == ("n",)

    def tuples(eta):
        return {"loss": (("step",), np.arange(4) * eta, {"units": "nats"}),
                "theta": xr.DataArray(np.ones((4, 2)), dims=("step", "coord")),
                "s": ("step", np.arange(4.0))}

    ds = sweep(tuples, {"eta": [0.5, 1.0]}, tmp_path / "tuples", n_workers=1)
    assert ds.loss.dims == ("eta", "step") and ds.loss.attrs["units"] == "nats"
    assert ds.theta.dims == ("eta", "step", "coord") and ds.s.dims == ("eta", "step")


def test_dims_of_eosdyn_results(tmp_path):
    import eosdyn
    from eosdyn.losses import Quadratic
    from eosdyn.rules import GD

    def run(eta):
        return eosdyn.simulate(Quadratic(eigs=[1.0, 0.5]), GD(eta), [1.0, 1.0], steps=5)

    ds = sweep(run, {"eta": [0.5, 1.0]}, tmp_path / "traj", n_workers=1)
    assert "step" in ds.loss.dims and not any("_dim_" in d for v in ds.data_vars.values() for d in v.dims)


def test_bad_dims(fns, tmp_path):
    with pytest.raises(TypeError, match="dims must be a dict"):
        sweep(fns.curve, {"n": [3]}, tmp_path / "d", dims=["step"])
    with pytest.raises(TypeError, match=r"dims\['sharpness'\]"):
        sweep(fns.curve, {"n": [3]}, tmp_path / "d", dims={"sharpness": 3})
    with pytest.raises(ValueError, match="repeats"):
        sweep(fns.curve, {"n": [3]}, tmp_path / "d", dims={"m": ("s", "s")})
    # a declaration that does not fit the result: that point fails and says why
    ds = sweep(fns.curve, {"n": [3]}, tmp_path / "d", n_workers=1, dims={"m": "step", "nope": "x"})
    assert ds.sweep_status.item() == "failed"
    assert "dims['m'] names 1 dimension(s)" in ds.sweep_error.item()
    with pytest.raises(ValueError, match="has no such variable"):
        to_dataset({"y": 1.0}, dims={"nope": "x"})
    with pytest.raises(ValueError, match="has dimensions"):
        to_dataset(xr.Dataset({"y": ("t", [1.0])}), dims={"y": "step"})
