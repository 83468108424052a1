"""Tests of eosdyn.sweep: kill + resume, local vs Dask, failures, corruption, validation, CLI."""
from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
import uuid

import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import eosdyn.sweep as sw
from eosdyn.sweep import Grid, StoreError, load, status, sweep, sweep_cli_main
from eosdyn.sweep._store import Store
from eosdyn.sweep.examples import noisy_gd_quadratic

# Point functions live in a module written to a temporary directory, so that spawned
# worker processes, Dask workers and the killed subprocess can all import them.
FNS_SOURCE = '''
import os, time
import numpy as np

FAIL = {"on": True}

def slow_point(a, b):
    time.sleep(0.08)
    return {"y": a * 10.0 + b, "v": np.arange(3) * a + b, "n": np.int64(a * b), "tag": f"a{a}b{b}"}

def failing_point(a, b):
    if a == 1 and b == 2:
        raise ValueError("bad point a=1 b=2")
    return {"y": a * 10.0 + b}

def flaky_point(a, b):
    if FAIL["on"] and a == 0:
        raise RuntimeError("transient failure")
    return {"y": float(a + b)}

def ragged_point(k):
    return {"curve": np.arange(k, dtype=float), "k2": k * k}

def crash_point(a):
    if a == 1:
        os._exit(3)  # kills the worker process, as a segfault would
    time.sleep(0.05)
    return {"y": float(a)}

def trajectory_point(eta):
    class Traj:
        def to_xarray(self):
            import xarray as xr
            return xr.Dataset({"loss": ("step", np.array([1.0, eta, eta ** 2]))}, coords={"step": [0, 1, 2]})
    return Traj()
'''


@pytest.fixture(scope="module")
def fns(tmp_path_factory):
    d = tmp_path_factory.mktemp("sweepfns")
    name = f"sweepfns_{uuid.uuid4().hex[:8]}"
    (d / f"{name}.py").write_text(FNS_SOURCE)
    sys.path.insert(0, str(d))
    try:
        mod = __import__(name)
        mod.DIR = d
        yield mod
    finally:
        sys.path.remove(str(d))
        sys.modules.pop(name, None)


GRID = {"a": [0, 1, 2, 3], "b": [1, 2, 3, 4, 5]}
META = ["sweep_start", "sweep_end", "sweep_duration"]


def results(ds):
    """The result variables and statuses, without the timing of the points."""
    return ds.drop_vars(META)


# ----------------------------------------------------------------------------- kill + resume
def test_sigkill_then_resume_gives_every_point_once_and_same_results(fns, tmp_path):
    store = tmp_path / "killed.zarr"
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(fns.DIR)!r})
        from {fns.__name__} import slow_point
        from eosdyn.sweep import sweep
        if __name__ == "__main__":
            sweep(slow_point, {GRID!r}, store={str(store)!r}, n_workers=2, progress=False)
        """
    )
    (tmp_path / "run.py").write_text(script)
    proc = subprocess.Popen([sys.executable, str(tmp_path / "run.py")], start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    points = store / "points"
    deadline = time.monotonic() + 90
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if points.is_dir() and len(list(points.glob("*.json"))) >= 4:
                break
            time.sleep(0.02)
        assert proc.poll() is None, f"the sweep ended before it was killed: {proc.stdout.read().decode()}"
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and its worker processes
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    before = {p.name: p.read_bytes() for p in points.glob("*.json")}
    n_before = len(before)
    assert 4 <= n_before < 20
    st = status(store)
    assert (st["done"], st["failed"], st["pending"]) == (n_before, 0, 20 - n_before)

    resumed = sweep(fns.slow_point, GRID, store=store, n_workers=1, progress=False)
    # the points done before the kill were not run again: their records are untouched
    for name, data in before.items():
        assert (points / name).read_bytes() == data
    names = sorted(p.name for p in points.iterdir())
    assert names == sorted([f"{i:06d}.json" for i in range(20)] + [f"{i:06d}.nc" for i in range(20)])
    assert (resumed.sweep_status == "ok").all()

    fresh = sweep(fns.slow_point, GRID, store=tmp_path / "fresh.zarr", n_workers=1, progress=False)
    xr.testing.assert_identical(results(resumed).drop_attrs(), results(fresh).drop_attrs())
    xr.testing.assert_identical(results(load(store)), results(resumed))
    # values are those of the function itself, with dtypes preserved
    assert resumed.y.sel(a=3, b=5).item() == 35.0
    np.testing.assert_array_equal(resumed.v.sel(a=2, b=1).values, [1, 3, 5])
    assert resumed.n.dtype == np.int64 and resumed.tag.sel(a=1, b=4).item() == "a1b4"


def test_resume_skips_done_points_and_records_metadata(fns, tmp_path):
    store = tmp_path / "s.zarr"
    calls = []

    def counting(a, b):
        calls.append((a, b))
        return {"y": a * 10.0 + b}

    ds1 = sweep(counting, {"a": [0, 1], "b": [1, 2]}, store=store, n_workers=1)
    assert len(calls) == 4
    ds2 = sweep(counting, {"a": [0, 1], "b": [1, 2]}, store=store, n_workers=1)
    assert len(calls) == 4
    xr.testing.assert_identical(ds1, ds2)
    rec = json.loads((store / "points" / "000003.json").read_text())
    assert rec["params"] == {"a": 1, "b": 2} and rec["status"] == "ok"
    assert rec["eosdyn_version"] == sw.eosdyn_version()
    assert "git_revision" in rec and rec["start"] <= rec["end"] and rec["duration_s"] >= 0
    assert len(rec["sha256"]) == 64
    man = json.loads((store / "manifest.json").read_text())
    assert man["grid"] == {"kind": "cartesian", "dims": ["a", "b"], "values": {"a": [0, 1], "b": [1, 2]}}
    assert ds1.attrs["sweep_eosdyn_version"] == sw.eosdyn_version()
    assert (ds1.sweep_end >= ds1.sweep_start).all()


def test_git_revision_is_recorded_when_cwd_is_a_repo(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    repo.mkdir()
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@t")
    try:
        subprocess.run(["git", "init", "-q"], cwd=repo, check=True, env=env)
        subprocess.run(["git", "commit", "-q", "--allow-empty", "-m", "x"], cwd=repo, check=True, env=env)
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, check=True, capture_output=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("git is not usable here")
    monkeypatch.chdir(repo)
    ds = sweep(lambda x: {"y": x}, {"x": [1]}, store=tmp_path / "g", n_workers=1)
    assert ds.attrs["sweep_git_revision"] == head.decode().strip()


# ----------------------------------------------------------------------------- Dask
def test_dask_localcluster_matches_local_run(tmp_path):
    distributed = pytest.importorskip("distributed")
    grid = {"eta": [0.5, 1.5, 2.5], "sigma": [0.0, 0.1], "seed": [0, 1]}

    def fn_kwargs():
        return dict(n_traj=64, steps=60, dim=4)

    import functools

    fn = functools.partial(noisy_gd_quadratic, **fn_kwargs())
    # the local process pool is checked against in-process runs by the kill test
    local = sweep(fn, grid, store=tmp_path / "local.zarr", n_workers=1)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        remote = sweep(fn, grid, store=tmp_path / "dask.zarr", client=client)
        pids = {json.loads(p.read_text())["pid"] for p in (tmp_path / "dask.zarr" / "points").glob("*.json")}
    assert os.getpid() not in pids  # the points ran in the cluster's worker processes
    xr.testing.assert_identical(results(local).drop_attrs(), results(remote).drop_attrs())
    assert (remote.sweep_status == "ok").all()
    assert remote.diverged.sel(eta=2.5, sigma=0.0).values.tolist() == [1.0, 1.0]


def test_generic_executor_client(fns, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as ex:
        ds = sweep(fns.failing_point, GRID, store=tmp_path / "t", client=ex)
    ref = sweep(fns.failing_point, GRID, store=tmp_path / "r", n_workers=1)
    xr.testing.assert_identical(results(ds).drop_attrs(), results(ref).drop_attrs())


# ----------------------------------------------------------------------------- failures
def test_failing_point_is_recorded_and_the_rest_complete(fns, tmp_path):
    store = tmp_path / "f.zarr"
    ds = sweep(fns.failing_point, GRID, store=store, n_workers=1)
    bad = ds.sel(a=1, b=2)
    assert bad.sweep_status.item() == "failed"
    assert bad.sweep_error.item() == "ValueError: bad point a=1 b=2"
    assert np.isnan(bad.y.item())
    ok = ds.sweep_status == "ok"
    assert int(ok.sum()) == 19
    expected = ds.a * 10.0 + ds.b
    xr.testing.assert_equal(ds.y.where(ok), expected.where(ok).transpose("a", "b").rename("y"))
    st = status(store)
    assert (st["done"], st["failed"], st["pending"]) == (19, 1, 0)
    (f,) = st["failures"]
    assert f["params"] == {"a": 1, "b": 2} and f["error"] == "ValueError: bad point a=1 b=2"
    assert "raise ValueError" in f["traceback"]


def test_failed_points_are_retried_on_resume_unless_retry_failed_false(fns, tmp_path):
    store = tmp_path / "flaky"
    grid = {"a": [0, 1], "b": [0, 1]}
    fns.FAIL["on"] = True
    ds = sweep(fns.flaky_point, grid, store=store, n_workers=1)
    assert (ds.sweep_status.sel(a=0) == "failed").all()
    fns.FAIL["on"] = False
    try:
        kept = sweep(fns.flaky_point, grid, store=store, n_workers=1, retry_failed=False)
        assert (kept.sweep_status.sel(a=0) == "failed").all()
        retried = sweep(fns.flaky_point, grid, store=store, n_workers=1)
    finally:
        fns.FAIL["on"] = True
    assert (retried.sweep_status == "ok").all()
    np.testing.assert_array_equal(retried.y.values, [[0.0, 1.0], [1.0, 2.0]])


def test_worker_crash_is_a_failed_point_and_the_sweep_goes_on(fns, tmp_path):
    store = tmp_path / "crash"
    ds = sweep(fns.crash_point, {"a": list(range(6))}, store=store, n_workers=2)
    assert ds.sweep_status.sel(a=1).item() == "failed"
    assert "BrokenProcessPool" in ds.sweep_error.sel(a=1).item()
    for a in range(6):  # points in flight with the crash are lost with it, the others ran
        if ds.sweep_status.sel(a=a).item() == "failed":
            assert "BrokenProcessPool" in ds.sweep_error.sel(a=a).item()
        else:
            assert ds.y.sel(a=a).item() == float(a)
    assert int((ds.sweep_status == "ok").sum()) >= 2
    again = sweep(fns.crash_point, {"a": [0, 2, 3, 4, 5]}, store=tmp_path / "rest", n_workers=1)
    assert (again.sweep_status == "ok").all()


def test_netcdf4_fallback_keeps_wide_and_unsigned_integers(tmp_path):
    pytest.importorskip("netCDF4")
    fn = lambda x: {"big": np.int64(2**40) * x, "u": np.uint8(200), "c": np.arange(3, dtype=np.uint32)}  # noqa: E731
    ds = sweep(fn, {"x": [1, 2]}, store=tmp_path / "n4", n_workers=1, fsync=True)
    assert ds.big.dtype == np.int64 and ds.big.values.tolist() == [2**40, 2**41]
    assert ds.u.dtype == np.uint8 and ds.c.dtype == np.uint32
    assert json.loads((tmp_path / "n4" / "points" / "000000.json").read_text())["format"] == "netcdf4"
    xr.testing.assert_identical(load(tmp_path / "n4"), ds)


def test_unstorable_result_is_a_failed_point(tmp_path):
    ds = sweep(lambda x: {"obj": object()} if x else {"y": 1.0}, {"x": [0, 1]}, store=tmp_path / "u", n_workers=1)
    assert ds.sweep_status.values.tolist() == ["ok", "failed"]
    assert "not numeric or str" in ds.sweep_error.sel(x=1).item()


# ----------------------------------------------------------------------------- result shapes
def test_explicit_points_ragged_results_and_to_xarray(fns, tmp_path):
    pts = [{"k": 3}, {"k": 1}, {"k": 2}]
    ds = sweep(fns.ragged_point, pts, store=tmp_path / "p", n_workers=1)
    assert ds.sizes["point"] == 3 and ds.k.values.tolist() == [3, 1, 2]
    np.testing.assert_array_equal(ds.curve.isel(point=1).values, [0.0, np.nan, np.nan])
    np.testing.assert_array_equal(ds.k2.values, [9, 1, 4])
    tr = sweep(fns.trajectory_point, {"eta": [0.5, 2.0]}, store=tmp_path / "t", n_workers=1)
    np.testing.assert_array_equal(tr.loss.values, [[1.0, 0.5, 0.25], [1.0, 2.0, 4.0]])
    assert tr.loss.dims == ("eta", "step")


def test_param_echo_is_dropped_and_clashes_renamed(tmp_path):
    def echo(eta):
        return xr.Dataset({"loss": eta * 2}, coords={"eta": eta})

    ds = sweep(echo, {"eta": [0.1, 0.2]}, store=tmp_path / "e", n_workers=1)
    np.testing.assert_allclose(ds.loss.values, [0.2, 0.4])
    with pytest.warns(UserWarning, match="renamed"):
        ds = sweep(lambda eta: {"eta": eta + 1.0}, {"eta": [0.1]}, store=tmp_path / "c", n_workers=1)
    assert ds.result_eta.item() == pytest.approx(1.1)


# ----------------------------------------------------------------------------- corruption
def _done_store(fns, path):
    sweep(fns.failing_point, GRID, store=path, n_workers=1)
    return path


def test_corrupted_data_file_is_detected(fns, tmp_path):
    store = _done_store(fns, tmp_path / "c1")
    f = store / "points" / "000007.nc"
    data = bytearray(f.read_bytes())
    data[-3] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(StoreError, match=r"000007\.nc.*SHA-256"):
        load(store)
    with pytest.raises(StoreError, match=r"000007\.nc.*SHA-256"):
        sweep(fns.failing_point, GRID, store=store, n_workers=1)


def test_truncated_data_and_missing_data_are_detected(fns, tmp_path):
    store = _done_store(fns, tmp_path / "c2")
    f = store / "points" / "000003.nc"
    f.write_bytes(f.read_bytes()[:40])
    with pytest.raises(StoreError, match="point 3"):
        load(store)
    f.unlink()
    with pytest.raises(StoreError, match=r"point 3 is recorded as done but its data file .*missing"):
        sweep(fns.failing_point, GRID, store=store, n_workers=1)


def test_unreadable_or_inconsistent_record_is_detected(fns, tmp_path):
    store = _done_store(fns, tmp_path / "c3")
    rec = store / "points" / "000005.json"
    good = rec.read_text()
    rec.write_text(good[: len(good) // 2])
    with pytest.raises(StoreError, match=r"record of point 5 .*000005\.json"):
        status(store)
    r = json.loads(good)
    r["params"]["a"] = 3
    rec.write_text(json.dumps(r))
    with pytest.raises(StoreError, match="holds params"):
        load(store)
    (store / "points" / "000099.json").write_text(good)
    rec.write_text(good)
    with pytest.raises(StoreError, match="000099.json"):
        load(store)


def test_manifest_problems_are_detected(fns, tmp_path):
    store = _done_store(fns, tmp_path / "c4")
    with pytest.raises(StoreError, match=r"different grid \(values of 'b' differ"):
        sweep(fns.failing_point, {"a": [0, 1, 2, 3], "b": [1, 2, 3]}, store=store, n_workers=1)
    with pytest.raises(StoreError, match="dimensions differ"):
        sweep(fns.failing_point, {"b": GRID["b"], "a": GRID["a"]}, store=store, n_workers=1)
    (store / "manifest.json").write_text("{not json")
    with pytest.raises(StoreError, match="manifest .*cannot be read"):
        load(store)
    (store / "manifest.json").unlink()
    with pytest.raises(StoreError, match="no manifest.json"):
        sweep(fns.failing_point, GRID, store=store, n_workers=1)
    stray = tmp_path / "notastore"
    stray.mkdir()
    (stray / "data.csv").write_text("1,2")
    with pytest.raises(StoreError, match="not an eosdyn sweep store"):
        sweep(fns.failing_point, GRID, store=stray, n_workers=1)
    assert (stray / "data.csv").exists()
    afile = tmp_path / "file.zarr"
    afile.write_text("x")
    with pytest.raises(StoreError, match="not a directory"):
        sweep(fns.failing_point, GRID, store=afile, n_workers=1)
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "absent")


def test_resume_false_discards_and_other_grid_then_allowed(fns, tmp_path):
    store = _done_store(fns, tmp_path / "c5")
    ds = sweep(fns.failing_point, {"a": [5], "b": [1]}, store=store, n_workers=1, resume=False)
    assert ds.y.values.tolist() == [[51.0]]
    assert sorted(p.name for p in (store / "points").iterdir()) == ["000000.json", "000000.nc"]


def test_interrupted_write_leftovers_are_pending_not_reused(fns, tmp_path):
    store = _done_store(fns, tmp_path / "c6")
    pts = store / "points"
    # a kill between the data rename and the record rename leaves an orphan .nc,
    # a kill inside a write leaves a dot-prefixed temporary: both mean "pending"
    (pts / "000004.json").unlink()
    (pts / "000004.nc").write_bytes(b"garbage from an interrupted write")
    (pts / ".000006.json.tmp-12345").write_text("{")
    assert status(store)["pending"] == 1
    ds = sweep(fns.failing_point, GRID, store=store, n_workers=1)
    assert ds.y.sel(a=0, b=5).item() == 5.0
    assert not list(pts.glob(".*"))


def test_locked_store_is_refused(fns, tmp_path):
    store = _done_store(fns, tmp_path / "c7")
    holder = Store(store)
    holder.lock()
    try:
        with pytest.raises(RuntimeError, match=f"being written by another sweep \\(pid {os.getpid()}\\)"):
            sweep(fns.failing_point, GRID, store=store, n_workers=1)
    finally:
        holder.unlock()
    sweep(fns.failing_point, GRID, store=store, n_workers=1)


# ----------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    "grid, exc, match",
    [
        ({}, ValueError, "at least one parameter"),
        ([], ValueError, "at least one point"),
        (5, TypeError, "grid must be a dict"),
        ("eta", TypeError, "grid must be a dict"),
        ({"eta": 0.1}, TypeError, r"grid\['eta'\] must be a list of values"),
        ({"eta": "0.1"}, TypeError, r"grid\['eta'\] must be a list of values"),
        ({"eta": {"a": 1}}, TypeError, r"grid\['eta'\] must be a list of values"),
        ({"eta": []}, ValueError, r"grid\['eta'\] is empty"),
        ({"eta": np.zeros((2, 2))}, ValueError, r"grid\['eta'\] must be 1-D"),
        ({"eta": [0.1, 0.1]}, ValueError, r"grid\['eta'\] has the duplicate value 0.1"),
        # values that differ but collide as labels once the dimension has one coordinate type
        ({"lr": [1, 1.0]}, ValueError, r"grid\['lr'\] has the values 1 and 1.0 .* collide as the label 1.0"),
        ({"flag": [True, 1]}, ValueError, r"grid\['flag'\] has the values True and 1 .* collide as the label 1 "),
        ({"x": [0.5, True, 1.0]}, ValueError, r"grid\['x'\] has the values True and 1.0 \(positions 1 and 2\)"),
        ({"tag": [1, "1"]}, ValueError, r"grid\['tag'\] has the values 1 and '1' .* collide as the label '1'"),
        ({"eta": [[0.1, 0.2]]}, TypeError, r"grid\['eta'\]\[0\] must be a scalar"),
        ({"eta": [None]}, TypeError, r"grid\['eta'\]\[0\] must be a scalar"),
        ({"point": [1]}, ValueError, "reserved"),
        ({"1eta": [1]}, ValueError, "not a valid Python identifier"),
        ({3: [1]}, TypeError, "parameter names must be str"),
        ([{"a": 1}, {"b": 2}], ValueError, r"grid\[1\] has parameters \['b'\]"),
        ([{"a": 1}, 2], TypeError, r"grid\[1\] must be a dict"),
        ([{}], ValueError, r"grid\[0\] is an empty dict"),
    ],
)
def test_grid_validation(grid, exc, match, tmp_path):
    with pytest.raises(exc, match=match):
        sweep(lambda **k: {}, grid, store=tmp_path / "v")
    assert not (tmp_path / "v").exists()


def test_argument_validation(fns, tmp_path):
    s = tmp_path / "v"
    ok = {"a": [1]}
    with pytest.raises(TypeError, match="fn must be callable"):
        sweep(3, ok, store=s)
    with pytest.raises(TypeError, match="store must be a path"):
        sweep(fns.failing_point, ok, store=3)
    with pytest.raises(ValueError, match="n_workers must be an integer >= 1"):
        sweep(fns.failing_point, ok, store=s, n_workers=0)
    with pytest.raises(TypeError, match="n_workers must be an integer"):
        sweep(fns.failing_point, ok, store=s, n_workers=1.5)
    with pytest.raises(TypeError, match="client must be None, a dask.distributed.Client"):
        sweep(fns.failing_point, ok, store=s, client="tcp://x")
    with pytest.raises(ValueError, match="n_workers applies to the local executor"):
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(1) as ex:
            sweep(fns.failing_point, ok, store=s, client=ex, n_workers=2)
    with pytest.raises(TypeError, match="resume must be a bool"):
        sweep(fns.failing_point, ok, store=s, resume="yes")
    with pytest.raises(TypeError, match="retry_failed must be a bool"):
        sweep(fns.failing_point, ok, store=s, retry_failed=1)
    with pytest.raises(TypeError, match="fsync must be a bool"):
        sweep(fns.failing_point, ok, store=s, fsync=None)
    with pytest.raises(TypeError, match="progress must be None or a bool"):
        sweep(fns.failing_point, ok, store=s, progress="auto")
    with pytest.raises(ValueError, match="mp_context must be one of"):
        sweep(fns.failing_point, ok, store=s, mp_context="threads")
    with pytest.raises(TypeError, match="fn must be picklable"):
        sweep(lambda a, b: {}, {"a": [1, 2], "b": [1]}, store=s, n_workers=2)
    with pytest.raises(TypeError, match="verify must be a bool"):
        status(s, verify="no")
    assert not s.exists()


@settings(max_examples=40, deadline=None)
@given(
    floats=hnp.arrays(np.float64, st.integers(0, 5), elements=st.floats(allow_nan=True, allow_infinity=True)),
    ints=hnp.arrays(st.sampled_from([np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint32]), st.integers(0, 4)),
    flag=st.booleans(),
    text=st.text(alphabet=st.characters(exclude_categories=("Cs", "Cc")), max_size=6),
    scalar=st.floats(allow_nan=False),
)
def test_encode_decode_roundtrip_is_identity(floats, ints, flag, text, scalar):
    from eosdyn.sweep._store import decode, encode

    ds = xr.Dataset(
        {"f": ("a", floats), "i": ("b", ints), "flag": flag, "text": text, "x": scalar},
        coords={"b": np.arange(ints.size) * 2},
        attrs={"note": "r", "k": 2.5},
    )
    data, fmt = encode(ds)
    xr.testing.assert_identical(decode(data, fmt, "mem"), ds)
    if ints.dtype.kind == "i" and ints.dtype.itemsize <= 4:
        assert fmt == "netcdf3"  # NetCDF-4 only when NetCDF-3 cannot hold the values


def test_grid_enumeration_and_json_roundtrip():
    g = Grid({"x": [1, 2], "y": ["u", "v", "w"], "z": [np.float64(0.5)]})
    pts = list(g)
    assert len(pts) == g.n_points == 6 and [g.point(i) for i in range(6)] == pts
    assert pts[1] == {"x": 1, "y": "v", "z": 0.5} and type(pts[0]["z"]) is float
    assert Grid.from_json(json.loads(json.dumps(g.to_json()))).canonical() == g.canonical()
    e = Grid([{"a": 1, "b": True}, {"b": False, "a": 2}])
    assert list(e) == [{"a": 1, "b": True}, {"a": 2, "b": False}]
    assert Grid.from_json(json.loads(json.dumps(e.to_json()))).canonical() == e.canonical()


def test_grid_keeps_mixed_types_whose_labels_differ():
    g = Grid({"x": [1, 2.5], "t": [True, "a"]})
    assert list(g)[0] == {"x": 1, "t": True} and type(list(g)[0]["x"]) is int  # fn gets the values as given
    assert g.coords()["x"][1].tolist() == [1.0, 2.5] and g.coords()["t"][1].tolist() == ["True", "a"]


# ----------------------------------------------------------------------------- module, CLI
def test_module_is_callable_and_exports():
    import inspect

    import eosdyn

    assert callable(sw) and "grid" in inspect.signature(sw).parameters
    assert sw.sweep is sweep and eosdyn.sweep.status is status
    pickle.dumps(sw.core._run_point)


def test_cli_config_and_status(fns, tmp_path, capsys):
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(textwrap.dedent(f"""
        fn = "{fns.__name__}:failing_point"
        store = "runs/cli.zarr"
        n_workers = 1
        [grid]
        a = {{ range = [0, 3] }}
        b = {{ linspace = [1, 3, 3] }}
    """))
    assert sweep_cli_main([str(cfg), "--quiet"]) == 1  # point (1, 2.0) fails
    out = capsys.readouterr().out
    assert "9: 8 done, 1 failed, 0 pending" in out and "bad point" in out
    store = tmp_path / "runs" / "cli.zarr"
    assert sweep_cli_main(["--status", str(store)]) == 0
    out = capsys.readouterr().out
    assert "8 done, 1 failed, 0 pending" in out and f"{fns.__name__}:failing_point" in out
    ds = load(store)
    assert ds.b.values.tolist() == [1.0, 2.0, 3.0] and ds.a.values.tolist() == [0, 1, 2]

    bad = tmp_path / "bad.toml"
    bad.write_text('fn = "math:sqrt"\nstore = "x"\nworkers = 2\n[grid]\nx = [1]\n')
    assert sweep_cli_main([str(bad)]) == 2
    assert "unknown keys ['workers']" in capsys.readouterr().err
    bad.write_text('fn = "nosuchmodule_xyz:f"\nstore = "x"\n[grid]\nx = [1]\n')
    assert sweep_cli_main([str(bad)]) == 2
    assert "cannot import module 'nosuchmodule_xyz'" in capsys.readouterr().err
    bad.write_text('fn = "math:sqrt"\nstore = "x"\n')
    assert sweep_cli_main([str(bad)]) == 2
    assert "exactly one of a [grid] table or [[points]]" in capsys.readouterr().err
    assert sweep_cli_main([]) == 2
    assert "give either CONFIG or --status STORE" in capsys.readouterr().err
    assert sweep_cli_main(["--help"]) == 0
    assert "--status STORE" in capsys.readouterr().out
    assert sweep_cli_main(["--status", str(tmp_path / "nothing")]) == 2
    assert "no sweep store at" in capsys.readouterr().err


def test_cli_explicit_points(fns, tmp_path, capsys):
    cfg = tmp_path / "pts.toml"
    cfg.write_text(textwrap.dedent(f"""
        fn = "{fns.__name__}:ragged_point"
        store = "p.zarr"
        [[points]]
        k = 2
        [[points]]
        k = 4
    """))
    ds = sw.run_config(cfg, n_workers=1, progress=False)
    assert ds.k.values.tolist() == [2, 4] and ds.k2.values.tolist() == [4, 16]


@pytest.mark.slow
def test_sweep_of_eosdyn_ensemble_results(tmp_path):
    eosdyn = pytest.importorskip("eosdyn")
    if not hasattr(eosdyn, "ensemble"):
        pytest.skip("eosdyn.ensemble is not available")
    from eosdyn.losses import Quadratic
    from eosdyn.rules import GD

    def point(eta, seed):
        th0 = np.random.default_rng(seed).normal(size=(4, 2))
        return eosdyn.ensemble(Quadratic(eigs=[1.0, 0.5]), GD(lr=eta), th0, 30, record_every=10, seed=seed)

    ds = sweep(point, {"eta": [0.5, 2.5], "seed": [0, 1]}, store=tmp_path / "ens", n_workers=1)
    assert ds.loss.dims == ("eta", "seed", "trajectory", "step")
    direct = point(2.5, 1).to_xarray()
    np.testing.assert_array_equal(ds.loss.sel(eta=2.5, seed=1).values, direct.loss.values)
    assert ds.diverged.dtype == np.int8


# ----------------------------------------------------------------------------- example fn
def test_example_gd_matches_closed_form_without_noise():
    eigs = np.arange(1, 5) / 4.0
    for eta in (0.5, 1.9, 2.1):
        ds = noisy_gd_quadratic(eta, sigma=0.0, n_traj=3, steps=40, dim=4, record_every=5)
        t = ds.step.values[:, None]
        exact = 0.5 * np.sum(eigs * (1 - eta * eigs) ** (2 * t), axis=1)
        np.testing.assert_allclose(ds.loss.values, exact, rtol=1e-12)
    assert noisy_gd_quadratic(2.1, steps=400, n_traj=2).diverged.item() == 1.0  # η > 2/λ_max
    assert noisy_gd_quadratic(1.9, steps=400, n_traj=2).diverged.item() == 0.0


def test_example_gd_stationary_loss_matches_ar1_variance():
    eta, sigma, d = 1.0, 0.1, 8
    eigs = np.arange(1, d + 1) / d
    ds = noisy_gd_quadratic(eta, sigma=sigma, seed=3, n_traj=2048, steps=1000, dim=d, record_every=10)
    stationary = np.sum(eta * sigma**2 / (2 * (2 - eta * eigs)))
    late = ds.loss.sel(step=slice(300, None)).values.mean()
    assert late == pytest.approx(stationary, rel=0.03)


def test_example_validation():
    with pytest.raises(ValueError, match="eta must be finite and in"):
        noisy_gd_quadratic(0.0)
    with pytest.raises(ValueError, match="sigma"):
        noisy_gd_quadratic(0.1, sigma=-1.0)
    with pytest.raises(ValueError, match="n_traj must be an integer >= 1"):
        noisy_gd_quadratic(0.1, n_traj=0)
    with pytest.raises(TypeError, match="seed must be an integer"):
        noisy_gd_quadratic(0.1, seed=0.5)
