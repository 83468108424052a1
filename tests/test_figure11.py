"""Figure 11 (Edge of Stochastic Stability), checked against its own JSON numbers.

As in tests/test_figures.py: the figure runs in --quick mode through the registry, and the
verdicts are recomputed from the raw numbers in the JSON (the per-record series and the toy
thresholds), not read from the script's ``holds`` flags; the files (PNG of the declared size,
not blank; PDF; strict JSON) are checked. The toy thresholds are checked against
:func:`eosdyn.analysis.sgd_threshold` recomputed here. A ``slow`` test runs the full mode and
checks the published claim itself.
"""
from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from eosdyn.plot import DPI
from eosdyn.plot.registry import find_figure, load_figure_module, run_figure

NAME = "edge-of-stochastic-stability"


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    pytest.importorskip("torch")
    out = tmp_path_factory.mktemp("fig11")
    return run_figure(NAME, quick=True, out=out, quiet=True), out


def _png_size(path):
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


def test_registered_as_figure_11():
    info = find_figure("11")
    assert info.name == NAME and info.number == 11 and "torch" in info.needs
    mod = load_figure_module(NAME)
    assert (info.name, info.number, info.description) == (mod.NAME, mod.NUMBER, mod.DESCRIPTION)
    assert mod.__doc__ and len(mod.__doc__) > 200 and callable(mod.main)


def test_files(quick):
    data, out = quick
    mod = load_figure_module(NAME)
    w, h = _png_size(out / data["files"]["png"])
    assert [w, h] == data["png_size"] == [round(mod.FIGSIZE[0] * DPI), round(mod.FIGSIZE[1] * DPI)]
    import matplotlib.image as mpimg

    img = mpimg.imread(out / data["files"]["png"])
    assert float(img[..., :3].std()) > 0.05, "the PNG is not blank"
    assert (out / data["files"]["pdf"]).read_bytes()[:5] == b"%PDF-"
    raw = (out / data["files"]["json"]).read_text()
    assert json.loads(raw, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}")) == data
    assert data["mode"] == "quick" and data["number"] == 11
    assert data["claims"] and all({"claim", "claimed", "measured", "holds"} <= set(c) for c in data["claims"])


def _net_verdicts(net):
    """(onsets, batch-sharpness medians, λ_max medians, per-b verdicts, λ < 1, λ increasing), recomputed
    from the series: the onset is the first record after step 0 with batch sharpness·η/2 ≥ the onset
    level, the window the records strictly after it (no onset: an empty window, NaN medians, the
    verdicts fail)."""
    level = net["onset_level"]
    onsets, bs_med, lam_med = [], [], []
    for s in net["series"]:
        step, bs, lam = (np.array(s[k], dtype=float) for k in ("step", "bs_eta_over_2", "lambda_max_eta_over_2"))
        hit = np.flatnonzero((step > 0) & (bs >= level))
        onset = int(step[hit[0]]) if hit.size else None
        after = step > onset if onset is not None else np.zeros(step.shape, bool)
        onsets.append(onset)
        bs_med.append(float(np.median(bs[after])) if after.any() else float("nan"))
        lam_med.append(float(np.median(lam[after])) if after.any() else float("nan"))
    return (onsets, bs_med, lam_med, [bool(0.9 <= m <= 1.1) for m in bs_med], all(v < 1 for v in lam_med),
            bool(np.all(np.diff(lam_med) > 0)))


def _same(json_values, values):
    """JSON medians (None for NaN) against the recomputed ones."""
    assert len(json_values) == len(values)
    for j, v in zip(json_values, values):
        assert (j is None and np.isnan(v)) or j == pytest.approx(v, rel=1e-12)


def test_network_claims_are_what_the_series_say(quick):
    data, _ = quick
    net = data["network"]
    assert net["batch_sizes"] == [s["batch_size"] for s in net["series"]] and len(net["batch_sizes"]) >= 2
    onsets, bs_med, lam_med, per_b, below, rising = _net_verdicts(net)
    _same(net["bs_eta_over_2_median_after_onset"], bs_med)
    _same(net["lambda_max_eta_over_2_median_after_onset"], lam_med)
    claims = {c["claim"]: c for c in data["claims"]}
    for i, (b, ok) in enumerate(zip(net["batch_sizes"], per_b)):
        (c,) = [c for k, c in claims.items() if k.startswith(f"b = {b}:")]
        assert c["holds"] == ok
        _same([c["measured"]], [bs_med[i]])
    assert claims["λ_max · η/2 < 1 after onset at every batch size"]["holds"] == below
    assert claims["λ_max · η/2 increases with the batch size"]["holds"] == rising
    for run, s, onset in zip(net["runs"], net["series"], onsets):
        assert run["onset_step"] == onset and len(s["step"]) == run["records"]
        assert run["records_after_onset"] == (sum(1 for t in s["step"] if t > onset) if onset is not None else 0)
        assert not run["diverged"] and run["loss_final"] < run["loss_initial"]
        assert run["hvps_batch_sharpness_mean"] >= net["batch_sharpness_options"]["min_batches"]
        # every series value is positive (a batch sharpness near a minimum of the squared loss)
        assert min(s["bs_eta_over_2"]) > 0 and min(s["lambda_max_eta_over_2"]) > 0
        # the small initialisation starts below the edge: the rise to 2/η is the training's doing
        assert s["bs_eta_over_2"][0] < net["onset_level"] and s["lambda_max_eta_over_2"][0] < 1
    # the batch sharpness gets to the edge within the quick run at every batch size
    assert all(o is not None for o in onsets), onsets


def test_toy_thresholds_against_the_exact_ones(quick):
    from eosdyn.analysis import sgd_threshold

    data, _ = quick
    mod = load_figure_module(NAME)
    toy = data["toy"]
    ls = mod.toy_problem(toy["config"])
    rows = toy["rows"]
    assert [r["b"] for r in rows] == list(range(1, toy["config"]["n"] + 1))
    for r in rows:
        th = sgd_threshold(ls, r["b"])
        assert r["exact"] == pytest.approx(th.threshold, rel=1e-12)
        assert r["gd"] == pytest.approx(2 / np.linalg.eigvalsh(ls.H)[-1], rel=1e-12)
    # the exact threshold rises with b to GD's at b = n (the mixture's p = 0)
    exact = [r["exact"] for r in rows]
    assert np.all(np.diff(exact) > 0) and exact[-1] == pytest.approx(rows[-1]["gd"], rel=1e-9)
    ratio = [r["simulated_ms"] / r["exact"] for r in rows]
    np.testing.assert_allclose(toy["simulated_over_exact_ms"], ratio, rtol=1e-12)
    (c,) = [c for c in data["claims"] if c["claim"].startswith("SGD's simulated mean-square")]
    assert c["holds"] == all(abs(q - 1) <= 0.03 for q in ratio)
    # the measured mean-square thresholds: within 3% of the exact ones in --quick mode
    assert all(abs(q - 1) <= 0.03 for q in ratio), ratio
    # the typical (a.s.) threshold is not below the mean-square one (Jensen), and well above it at b = 1
    assert all(r["simulated_lyapunov"] >= 0.98 * r["exact"] for r in rows)
    assert rows[0]["simulated_lyapunov"] > 1.2 * rows[0]["exact"]


@pytest.mark.slow
def test_full_mode_edge_of_stochastic_stability(tmp_path):
    """The published claim on the MLP (full mode): after onset, the median of batch sharpness·η/2
    lies in [0.9, 1.1] at every batch size, and λ_max·η/2 < 1 and increases with the batch size."""
    pytest.importorskip("torch")
    data = run_figure(NAME, quick=False, out=tmp_path, quiet=True)
    net = data["network"]
    assert net["batch_sizes"] == [8, 32, 128]
    onsets, bs_med, lam_med, per_b, below, rising = _net_verdicts(net)
    assert not any(r["diverged"] for r in net["runs"])
    # a real window after the onset: the onset in the first half of the run
    assert all(o is not None and o <= net["steps"] / 2 for o in onsets), onsets
    assert all(per_b), f"batch sharpness·η/2 medians after onset: {bs_med}"
    assert below and rising, f"λ_max·η/2 medians after onset: {lam_med}"
