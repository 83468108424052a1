"""The local worker processes of a sweep end with the sweep's process.

A sweep with ``n_workers >= 2`` is started in a subprocess whose stdout and stderr go
to one pipe. Its process is then ended while points are running:

* by SIGKILL of that process alone (not its group): every process it started (the
  workers, the multiprocessing resource tracker, the fork server) must be gone within
  seconds, and reading the pipe must reach EOF, so that a caller capturing the output
  does not hang. ``spawn`` exercises the kernel's parent-death signal on Linux,
  ``forkserver`` (where a worker's parent is the fork server) the watchdog thread;
* by Ctrl-C (SIGINT to the process group, as a terminal sends it): the sweep reports
  "k/N points done; rerun the same command to resume", raises KeyboardInterrupt, and
  no worker prints a traceback of its own.

The process tree is read from ``/proc``, so these tests run on Linux only.
"""
from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process tree from /proc")

N_POINTS = 200


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (state first), or None if gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (a fork server's workers are grandchildren)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat_fields(int(entry.name))) is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, frontier = [], [pid]
    while frontier:
        kids = children.get(frontier.pop(), [])
        found += kids
        frontier += kids
    return found


def _alive(pid: int) -> bool:
    fields = _stat_fields(pid)
    return fields is not None and fields[0] != "Z"  # a zombie has ended; only its parent has to reap it


def _read_to_eof(stream, timeout: float) -> bytes | None:
    """All that ``stream`` still gives, or None if it is not at EOF within ``timeout``."""
    fd = stream.fileno()
    os.set_blocking(fd, False)
    data, deadline = b"", time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        if select.select([fd], [], [], left)[0]:
            chunk = os.read(fd, 65536)
            if not chunk:
                return data
            data += chunk
    return None


SLOW_POINTS = """
import time


def slow_point(a):
    time.sleep(0.3)
    return {"y": float(a)}
"""

RUN_SWEEP = """
import sys

sys.path.insert(0, {here!r})
from slow_points import slow_point

from eosdyn.sweep import sweep

if __name__ == "__main__":
    try:
        sweep(slow_point, {{"a": list(range({n}))}}, store={store!r}, n_workers=2, progress=False,
              mp_context=sys.argv[1])
    except KeyboardInterrupt:
        sys.exit(130)
"""


@pytest.fixture
def running_sweep(tmp_path):
    """start(mp_context): run a 2-worker sweep of slow points in a new session; once 4 points
    are stored, return (process, store, the processes below it)."""
    started = []  # (process, the processes below it), to kill what a failed test leaves

    def start(mp_context: str):
        store = tmp_path / "store.zarr"
        (tmp_path / "slow_points.py").write_text(SLOW_POINTS)
        (tmp_path / "run.py").write_text(RUN_SWEEP.format(here=str(tmp_path), n=N_POINTS, store=str(store)))
        proc = subprocess.Popen([sys.executable, str(tmp_path / "run.py"), mp_context], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True)
        tree = []
        started.append((proc, tree))
        deadline = time.monotonic() + 90
        while len(list((store / "points").glob("*.json"))) < 4:
            assert proc.poll() is None, f"the sweep ended early: {proc.stdout.read().decode()}"
            assert time.monotonic() < deadline, "the sweep did not store 4 points in 90 s"
            time.sleep(0.02)
        tree += _descendants(proc.pid)
        assert len(tree) >= 2, "expected at least the 2 workers below the sweep's process"
        return proc, store, tree

    yield start
    for proc, tree in started:
        for pid in [proc.pid] + _descendants(proc.pid) + tree:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=10)


def _wait_until_dead(pids, timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while (alive := [p for p in pids if _alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.02)
    return alive


@pytest.mark.parametrize("mp_context", ["spawn", "forkserver"])
def test_sigkill_of_the_parent_ends_its_workers_and_frees_its_stdout(running_sweep, mp_context):
    proc, store, tree = running_sweep(mp_context)
    os.kill(proc.pid, signal.SIGKILL)  # the sweep's process alone, as an OOM kill would
    proc.wait(timeout=10)
    assert _wait_until_dead(tree, timeout=5) == [], "processes of the killed sweep are still alive"
    assert _read_to_eof(proc.stdout, timeout=5) is not None, "the killed sweep's stdout is still held open"
    done = len(list((store / "points").glob("*.json")))
    assert 4 <= done < N_POINTS


def test_ctrl_c_kills_the_workers_and_says_how_to_resume(running_sweep):
    proc, store, tree = running_sweep("spawn")
    os.killpg(proc.pid, signal.SIGINT)  # a terminal sends Ctrl-C to the whole process group
    output = _read_to_eof(proc.stdout, timeout=20)
    assert output is not None, "the interrupted sweep did not end"
    assert proc.wait(timeout=10) == 130
    assert _wait_until_dead(tree, timeout=5) == []
    text = output.decode()
    done = len(list((store / "points").glob("*.json")))
    assert f"{done}/{N_POINTS} points done; rerun the same command to resume" in text
    assert "Traceback" not in text, text
