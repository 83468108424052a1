"""First-call times in a fresh process: simulate, ensemble and sde.simulate on every built-in loss family.

Each cell is a new Python process that imports eosdyn and makes one small call; the time
includes the import. ``warm`` runs with the disk caches (eosdyn's generated kernels and
numba's) as they are — after one run they hold every kernel, so this is what a user meets
from the second process on; ``--cold`` points both caches at empty folders first, which is
what a fresh clone meets once. The table also says whether the call ran the generated,
disk-cached kernel (``gen``) or fell back to the generic one.

    python benchmarks/coldstart.py [--cold] [--quick]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

FAMILIES = {
    "quadratic": "Quadratic(eigs=[2.0, 1.0])",
    "deeplinear": "DeepLinear(X, X @ rng.standard_normal((2, 2)), [3])",
    "scalarnet": "ScalarNet(3, 1.0)",
    "sqrt": "SqrtLoss(Quadratic(eigs=[2.0, 1.0]), eps=1e-3)",
    "sympy": "from_sympy('(x*y - 1)**2/2', ['x', 'y'])",
    "cubic": "LogisticCubic()",
    "zhu": "ZhuMinimalist()",
    "leastsquares": "LeastSquares(X, rng.standard_normal(6))",
}
CALLS = {
    "simulate": "eosdyn.simulate(loss, GD(0.01), th[0], 5)",
    "ensemble": "eosdyn.ensemble(loss, GD(0.01), th, 5)",
    "sde.simulate": "eosdyn.sde.simulate(loss, 0.01, eosdyn.sde.Isotropic(0.1), th, 0.5, 5)",
}
SCRIPT = """
import time, json, warnings
t0 = time.perf_counter()
import numpy as np, eosdyn, eosdyn.sde
from eosdyn.losses import *
from eosdyn.rules import GD
rng = np.random.default_rng(0)
X = rng.standard_normal((6, 2))
loss = {loss}
th = 0.5 + rng.random((3, loss.dim))
with warnings.catch_warnings(record=True) as w:
    warnings.simplefilter("always")
    r = {call}
t = time.perf_counter() - t0
gen = r.params.get("generated_kernel", not any("generic kernel" in str(x.message) for x in w))
print(json.dumps([t, bool(gen)]))
"""


def cell(loss, call, env):
    p = subprocess.run([sys.executable, "-c", SCRIPT.format(loss=FAMILIES[loss], call=CALLS[call])], env=env,
                       capture_output=True, text=True, timeout=900)
    if p.returncode != 0:
        return float("nan"), f"error: {p.stderr.strip().splitlines()[-1][:80]}"
    t, gen = json.loads(p.stdout.strip().splitlines()[-1])
    return t, gen


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cold", action="store_true", help="empty eosdyn and numba caches for each cell")
    ap.add_argument("--quick", action="store_true", help="three families only")
    args = ap.parse_args(argv)
    fams = list(FAMILIES)[:3] if args.quick else list(FAMILIES)
    print(f"{'loss family':14s}" + "".join(f"{c:>22s}" for c in CALLS))
    t_all = time.perf_counter()
    for fam in fams:
        row = []
        for call in CALLS:
            env = dict(os.environ)
            if args.cold:
                tmp = tempfile.mkdtemp(prefix="eosdyn_cold_")
                env.update(EOSDYN_CACHE_DIR=os.path.join(tmp, "eosdyn"), NUMBA_CACHE_DIR=os.path.join(tmp, "numba"))
            t, gen = cell(fam, call, env)
            row.append(f"{t:8.2f} s ({'gen' if gen is True else 'GENERIC' if gen is False else gen})")
        print(f"{fam:14s}" + "".join(f"{c:>22s}" for c in row), flush=True)
    print(f"({'cold' if args.cold else 'warm'} caches; import included; {time.perf_counter() - t_all:.0f} s in all)")


if __name__ == "__main__":
    main()
