"""``eosdyn warmup`` and the disk caches: a fresh process compiles nothing that a warm one holds (issue 16)."""
import json
import os
import subprocess
import sys

import pytest

from eosdyn.cli import main as cli_main
from eosdyn.warmup import ENTRIES, FAMILIES, RULES, cells, run_cell, warmup

# one process: run the cells, count numba's compile events (none when every kernel comes from the disk caches)
_COUNT = """
import json, sys
from numba.core import event
from eosdyn.warmup import run_cell
cells = json.loads(sys.argv[1])
out = []
for c in cells:
    with event.install_recorder("numba:compile") as rec:
        r = run_cell(*c)
    out.append([len(rec.buffer), bool(r.params.get("generated_kernel", True))])
print(json.dumps(out))
"""


def _fresh_process_compiles(todo):
    p = subprocess.run([sys.executable, "-c", _COUNT, json.dumps(todo)], capture_output=True, text=True,
                       timeout=3000, env=dict(os.environ))
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


def _check_cached(todo):
    _fresh_process_compiles(todo)          # fills the caches if they were cold
    again = _fresh_process_compiles(todo)  # a new process: everything must come from disk
    for cell, (events, generated) in zip(todo, again):
        assert generated, f"{cell} ran the generic kernel"
        assert events == 0, f"{cell}: a fresh process compiled ({events} numba compile events)"


def test_fresh_process_loads_cached_kernels_for_a_few_pairs():
    _check_cached([["quadratic", "gd", "simulate"], ["quadratic", "gd", "ensemble"], ["scalarnet", "gd", "simulate"],
                   ["leastsquares", "sgd", "simulate"]])


@pytest.mark.slow
def test_fresh_process_loads_cached_kernels_for_every_common_cell():
    _check_cached([list(c) for c in cells("common")])


def test_cells_cover_every_family_and_rule():
    common, every = cells("common"), cells("all")
    assert {c[0] for c in common} == set(FAMILIES)
    assert {c[1] for c in common} == set(RULES)
    assert set(common) <= set(every) and len(every) > len(common)
    assert {c[2] for c in every} == set(ENTRIES)
    assert all(c[0] == "leastsquares" for c in every if c[1] == "sgd")   # SGD needs a finite sum
    assert all(c[1] == "gd" for c in every if c[2] == "sde")             # the SDE has no rule
    assert len(set(every)) == len(every)


def test_warmup_runs_the_cells_and_reports_failures_without_stopping():
    lines = []
    res = warmup(only=[("quadratic", "gd", "simulate"), ("quadratic", "sgd", "simulate")], progress=lines.append)
    assert isinstance(res[("quadratic", "gd", "simulate")], float)
    assert "does not exist" in res[("quadratic", "sgd", "simulate")]      # a bad cell is reported, not raised
    assert len(lines) == 3 and "FAILED" in lines[1] and lines[-1].startswith("warmup done: 2 cells")


@pytest.mark.parametrize("call, match", [
    (lambda: cells("some"), "which must be 'common' or 'all'"),
    (lambda: run_cell("quadratic", "gd", "lbfgs"), "entry must be one of"),
    (lambda: run_cell("cubes", "gd", "simulate"), "family must be one of"),
    (lambda: run_cell("quadratic", "rmsprop", "simulate"), "rule must be one of"),
])
def test_bad_cells_are_refused_by_name(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_cli_lists_the_cells(capsys):
    assert cli_main(["warmup", "--list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [" ".join(c) for c in cells("common")]
    assert cli_main(["warmup", "--list", "--all"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == len(cells("all"))


def test_cli_background_starts_a_detached_process_and_names_its_log(tmp_path, monkeypatch, capsys):
    started = {}

    class FakePopen:
        def __init__(self, cmd, **kw):
            started.update(cmd=cmd, **kw)
            self.pid = 4242

    monkeypatch.setenv("EOSDYN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(subprocess, "Popen", FakePopen)
    assert cli_main(["warmup"]) == 0
    out = capsys.readouterr().out
    assert "pid 4242" in out and str(tmp_path / "warmup.log") in out
    assert started["cmd"][1:] == ["-m", "eosdyn.warmup", "--foreground"] and started["start_new_session"]
