"""First-call times in a fresh process: simulate, ensemble and sde.simulate on every built-in (loss, rule) pair.

Each cell is a new Python process that imports eosdyn and makes one small call; the time
includes the import. ``warm`` runs with the disk caches (eosdyn's generated kernels and
numba's) as they are — after one run they hold every kernel, so this is what a user meets
from the second process on; ``--cold`` points both caches at empty folders first, which is
what a fresh clone meets once. The table also says whether the call ran the generated,
disk-cached kernel (``gen``) or fell back to the generic one.

The cells are those of ``eosdyn warmup`` (:mod:`eosdyn.warmup`): the common set by default,
every pair with ``--all``.

    python benchmarks/coldstart.py [--cold] [--quick] [--all]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from eosdyn.warmup import ENTRIES, FAMILIES, cells

SCRIPT = """
import time, json, warnings
t0 = time.perf_counter()
from eosdyn.warmup import run_cell
with warnings.catch_warnings(record=True) as w:
    warnings.simplefilter("always")
    r = run_cell({fam!r}, {rule!r}, {entry!r})
t = time.perf_counter() - t0
gen = r.params.get("generated_kernel", not any("generic kernel" in str(x.message) for x in w))
print(json.dumps([t, bool(gen)]))
"""


def cell(fam, rule, entry, env):
    p = subprocess.run([sys.executable, "-c", SCRIPT.format(fam=fam, rule=rule, entry=entry)], env=env,
                       capture_output=True, text=True, timeout=900)
    if p.returncode != 0:
        return float("nan"), f"error: {p.stderr.strip().splitlines()[-1][:80]}"
    t, gen = json.loads(p.stdout.strip().splitlines()[-1])
    return t, gen


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cold", action="store_true", help="empty eosdyn and numba caches for each cell")
    ap.add_argument("--quick", action="store_true", help="three families, GD only")
    ap.add_argument("--all", action="store_true", help="every (family, rule) pair, as `eosdyn warmup --all`")
    args = ap.parse_args(argv)
    todo = cells("all" if args.all else "common")
    if args.quick:
        todo = [c for c in todo if c[1] == "gd" and c[0] in list(FAMILIES)[:3]]
    rows = {}
    for fam, rule, entry in todo:
        rows.setdefault((fam, rule), {})[entry] = None
    print(f"{'loss family':14s}{'rule':>10s}" + "".join(f"{c:>22s}" for c in ENTRIES))
    t_all = time.perf_counter()
    for (fam, rule), entries in rows.items():
        row = []
        for entry in ENTRIES:
            if entry not in entries:
                row.append("-")
                continue
            env = dict(os.environ)
            if args.cold:
                tmp = tempfile.mkdtemp(prefix="eosdyn_cold_")
                env.update(EOSDYN_CACHE_DIR=os.path.join(tmp, "eosdyn"), NUMBA_CACHE_DIR=os.path.join(tmp, "numba"))
            t, gen = cell(fam, rule, entry, env)
            row.append(f"{t:8.2f} s ({'gen' if gen is True else 'GENERIC' if gen is False else gen})")
        print(f"{fam:14s}{rule:>10s}" + "".join(f"{c:>22s}" for c in row), flush=True)
    print(f"({'cold' if args.cold else 'warm'} caches; import included; {time.perf_counter() - t_all:.0f} s in all)")


if __name__ == "__main__":
    main()
