"""Every figure's --quick mode, run in this process, checked against its own JSON numbers.

For each figure the test recomputes its verdicts from the raw numbers in the JSON (not
from the script's own ``holds`` flags): plateaus within 10% of 2/η, thresholds against
closed forms, period doublings against the logistic map's, variances against σ²/(2λ) and
σ²/(λ(2−ηλ)), claimed-vs-measured records present and consistent. It also checks the
files: a PNG of the declared pixel size that is not blank, a PDF, strict JSON.
"""
from __future__ import annotations

import json
import math
import struct
import subprocess
import sys

import numpy as np
import pytest

from eosdyn.plot import DPI, edge_line, mean_sd, new_figure, savefig, seed_band, to_jsonable
from eosdyn.plot import registry
from eosdyn.plot.registry import FIGURES, find_figure, load_figure_module, run_figure

_CACHE: dict = {}


@pytest.fixture(scope="module")
def outdir(tmp_path_factory):
    return tmp_path_factory.mktemp("figures")


def figure(name, outdir):
    if name not in _CACHE:
        info = find_figure(name)
        if "torch" in info.needs:
            pytest.importorskip("torch")
        _CACHE[name] = run_figure(name, quick=True, out=outdir, quiet=True)
    return _CACHE[name]


def png_size(path):
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


def check_files(data, outdir, name):
    mod = load_figure_module(name)
    png = outdir / data["files"]["png"]
    w, h = png_size(png)
    assert [w, h] == data["png_size"] == [round(mod.FIGSIZE[0] * DPI), round(mod.FIGSIZE[1] * DPI)]
    assert png.stat().st_size > 20_000
    import matplotlib.image as mpimg

    img = mpimg.imread(png)
    assert img.shape[:2] == (h, w)
    assert float(img[..., :3].std()) > 0.05, "the PNG is not blank"
    pdf = outdir / data["files"]["pdf"]
    assert pdf.read_bytes()[:5] == b"%PDF-"
    raw = (outdir / data["files"]["json"]).read_text()
    assert json.loads(raw, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}")) == data
    assert data["mode"] == "quick" and data["number"] == find_figure(name).number
    assert data["claims"], "every figure states claimed vs measured"
    for c in data["claims"]:
        assert {"claim", "claimed", "measured", "holds"} <= set(c)


# ----------------------------------------------------------------------------- figures
# The two figures that integrate flows on a torch network (about 28 s each on 2 cores, most of it
# torch HVPs) run with the slow tests (CI runs those as a step of their own); their numerics stay
# in the default run through tests/test_flows.py (the central flow and self-stabilization on the
# same reference MLP, against GD and against the toy).
HEAVY = {"central-flow", "self-stabilization"}


@pytest.mark.parametrize("name", [pytest.param(f.name, marks=pytest.mark.slow) if f.name in HEAVY else f.name
                                  for f in FIGURES])
def test_files(name, outdir):
    check_files(figure(name, outdir), outdir, name)


def test_fig1_sharpness_hovers_at_edge(outdir):
    d = figure("sharpness-net", outdir)
    assert len(d["runs"]) >= 3
    for r in d["runs"]:
        edge = 2 / r["lr"]
        assert r["edge_2_over_lr"] == pytest.approx(edge)
        assert r["sharpness_initial"] < edge                       # it has to rise to the edge
        assert r["sharpness_plateau"] == pytest.approx(edge, rel=0.10)
        assert r["first_step_at_95pct_edge"] is not None
        assert r["loss_final"] < 0.2 * r["loss_initial"]           # falling ...
        assert r["loss_increases_after_edge"] > 0                   # ... non-monotonically
        assert not r["diverged"]


def test_fig2_drift_to_flat_minimum(outdir):
    d = figure("ngd-sqrt", outdir)
    for key in ("ngd", "sqrt-gd"):
        r = d["runs"][key]
        assert r["lambda1_start"] > 10
        assert r["lambda1_end_mean"] == pytest.approx(d["min_manifold_sharpness"], rel=0.10)
        # on the manifold xy = 1: the final point is near it and near the flattest point (1, 1)
        x, y = r["final_theta"]
        assert x * y == pytest.approx(1.0, abs=0.1)
    assert d["runs"]["sqrt-gd"]["eff_sharpness_median_after_10pct"] == pytest.approx(2.0, rel=0.05)


def test_fig3_linear_networks(outdir):
    d = figure("linear-nets", outdir)
    for net in d["networks"]:
        f = np.array(net["lr_over_critical"])
        frac = np.array(net["fraction_converged"])
        assert np.all(frac[f > 1.0] == 0)
        assert np.all(frac[f <= 0.9] > 0)
        assert net["max_limit_eta_lambda_over_2"] <= 1 + 1e-6
        if net["analytic_min_sharpness"] is not None:
            assert net["critical_lr"] == pytest.approx(2 / net["analytic_min_sharpness"], rel=1e-4)
        lo, hi = net["measured_edge_bracket"]
        assert lo < 1.0 < hi


def _check_speedup_claims(claims, threshold):
    for c in claims:
        if isinstance(c["measured"], (int, float)) and isinstance(c["claimed"], str) and "×" in c["claimed"]:
            assert c["holds"] == (c["measured"] >= threshold)


def test_fig4_eosada_claims_reported(outdir):
    d = figure("eosada", outdir)
    toy, net = d["toy"], d["network"]
    assert d["seeds"] == 5
    # the speed-ups are recomputed from the per-seed steps in the JSON
    base = toy["runs"][toy["best_baseline"]]["steps_to_target_mean"]
    eos = toy["runs"]["EoS-Ada α=1.9"]["steps_to_target_mean"]
    assert toy["speedup_default_alpha"] == pytest.approx(base / eos)
    inf = float("inf")  # null in the JSON = never reached the target
    for fam in ("gd", "heavyball", "adam", "eosada"):
        best = toy["runs"][toy["best"][fam]]["steps_to_target_mean"]
        others = [r["steps_to_target_mean"] for r in toy["runs"].values() if r["family"] == fam]
        assert (inf if best is None else best) == min(inf if v is None else v for v in others)
    assert toy["runs"][toy["best"]["gd"]]["steps_to_target_mean"] is not None
    assert net["speedup_steps"] >= 0 and net["speedup_wall_clock"] >= 0
    assert net["wall_clock"]["eosada"]["hvp_per_step"] > 0 and net["wall_clock"]["gd"]["hvp_per_step"] == 0
    assert len(d["claims"]) == 4 and all(c["claimed"] == "2–3×" for c in d["claims"])
    _check_speedup_claims(d["claims"], 2.0)


def test_fig5_dcao_claims_reported(outdir):
    d = figure("dcao", outdir)
    net = d["network"]
    t = net["time_per_epoch_s"]
    assert net["overhead_vs_sgdm"] == pytest.approx(t["dcao"] / t["sgdm"] - 1)
    ov = [c for c in d["claims"] if "overhead" in c["claim"]][0]
    assert ov["claimed"] == "< 7%" and ov["holds"] == (net["overhead_vs_sgdm"] < 0.07)
    ep = net["epochs_to_target_mean"]
    assert ep["sgdm"] is not None and ep["sgdm"] <= net["config"]["epochs"]  # the target is SGD+mom's own
    fewer = net["fraction_fewer_epochs"]["sgdm"]
    if ep["dcao"] is not None:
        assert fewer == pytest.approx(1 - ep["dcao"] / ep["sgdm"])
    for acc in net["final_test_accuracy_mean"].values():
        assert 0.5 < acc <= 1.0


def test_fig6_period_doublings(outdir):
    d = figure("bifurcation", outdir)
    meas = np.array(d["doubling_lrs_measured"])
    exact = np.array([3.0, 1 + math.sqrt(6), 3.544090359551922, 3.564407266095]) - 1
    assert len(meas) >= 4
    np.testing.assert_allclose(meas[:4], exact, rtol=1e-3)
    assert np.all(meas[:4] <= exact + 1e-12)  # the bisection stops just before each doubling
    fr = np.array(d["feigenbaum_ratios_measured"])
    np.testing.assert_allclose(fr[:2], [4.7514, 4.6562], rtol=0.02)
    assert d["lyapunov_at_lr_3"] == pytest.approx(math.log(2), rel=0.02)
    ly = np.array(d["lyapunov"]["exponent"])
    lr = np.array(d["lyapunov"]["lr"])
    assert np.all(ly[lr < 1.99] < 0) and np.max(ly[lr > 2.9]) > 0.3


def test_fig7_phase_plane(outdir):
    d = figure("phase-plane", outdir)
    lam = 2 + math.sqrt(2)
    assert d["sharpness_at_minimum"] == pytest.approx(lam, rel=1e-12)
    assert d["edge_2_over_lambda"] == pytest.approx(2 - math.sqrt(2), rel=1e-12)
    assert d["threshold_ratio"] == pytest.approx(1.0, abs=1e-6)
    below, at, above = d["orbits"]
    assert below["final_distance"] < 1e-8
    assert 1e-6 < at["final_distance"] < 0.05          # marginal: converging, slowly
    assert above["period"] == 2 and above["half_width"] > 1e-2
    assert d["flip"]["fitted_exponent"] == pytest.approx(0.5, abs=0.05)
    for fr in d["basins"]["fractions"]:
        total = sum(v for k, v in fr.items() if k not in ("factor", "lr"))
        assert total == pytest.approx(1.0)
    last = d["basins"]["fractions"][-1]
    assert last["minimum_plus"] + last["minimum_minus"] < 0.01     # above 2/λ the minima attract ~nothing
    assert last["cycle_plus"] > 0.2 and last["cycle_plus"] == pytest.approx(last["cycle_minus"], abs=0.02)


def test_fig8_stationary_variance(outdir):
    d = figure("stationary-variance", outdir)
    hl = np.array(d["eta_lambda"])
    lam = hl / d["lr"]
    s2 = d["sigma"] ** 2
    np.testing.assert_allclose(d["variance_map"], s2 / (lam * (2 - hl)), rtol=0.05)
    np.testing.assert_allclose(d["variance_sde"], s2 / (2 * lam), rtol=0.05)
    ratio = np.array(d["variance_map"]) / np.array(d["variance_sde"])
    assert ratio[-1] > 5 * ratio[0]  # the map's variance blows up towards the edge, the SDE's does not


@pytest.mark.slow
def test_fig9_central_flow(outdir):
    d = figure("central-flow", outdir)
    assert d["distance_ratio"] <= 0.25                              # GD follows the central flow, not GF
    assert d["loss_error_max_after_settle"] < 0.05                  # predicted vs smoothed GD loss
    lo, hi = d["central_flow_eta_lambda1_range"]
    assert 1.98 <= lo and hi <= 2.02                                # the edge is held
    assert d["gradient_flow_eta_lambda1_final"] > 2.0               # gradient flow sharpens past it


@pytest.mark.slow
def test_fig10_self_stabilization(outdir):
    d = figure("self-stabilization", outdir)
    assert d["whole_cycles"] >= 10
    assert abs(d["mean_x_sq"] / (2 * d["g"]) - 1) < 0.02          # δ² = 2α/β = 2g
    assert abs(d["mean_sharpness"] * d["lr"] / 2 - 1) < 0.01        # S averages 2/η
    assert d["max_prediction_error"] < 1e-8                         # the reduced system is GD on this toy
    assert d["central_flow_sigma_sq"] == pytest.approx(2 * d["g"], rel=1e-6)
    assert d["mlp_status"] == "ok"
    assert abs(d["mlp_mean_x_sq"] / d["mlp_mean_delta_sq"] - 1) < 0.10    # δ² = 2α/β on a network too


# ----------------------------------------------------------------------------- plot helpers
def test_plot_helpers(tmp_path):
    fig, ax = new_figure(1, 2, size=(4.0, 2.0))
    v = edge_line(ax[0], 0.25)
    assert v == 8.0
    assert ax[0].lines[-1].get_ydata()[0] == 8.0 and "2/η" in ax[0].lines[-1].get_label()
    Y = np.array([[1.0, 2.0, np.nan], [3.0, 4.0, 5.0]])
    m, s = seed_band(ax[1], [0, 1, 2], Y)
    np.testing.assert_allclose(m, [2.0, 3.0, 5.0])
    np.testing.assert_allclose(s, [np.sqrt(2), np.sqrt(2), 0.0])
    np.testing.assert_allclose(mean_sd(Y)[0], m)
    with pytest.raises(ValueError, match="lr"):
        edge_line(ax[0], 0.0)
    with pytest.raises(ValueError, match="Y must be"):
        seed_band(ax[1], [0, 1], Y)
    data = savefig(fig, tmp_path, "t", {"x": np.float64(np.inf), "a": np.arange(3), "t": (1, 2)})
    assert data["x"] is None and data["a"] == [0, 1, 2] and data["t"] == [1, 2]
    assert png_size(tmp_path / "t.png") == (4 * DPI, 2 * DPI)
    assert to_jsonable({"k": np.bool_(True)}) == {"k": True}


def test_registry():
    assert [f.number for f in FIGURES] == list(range(1, 12))
    assert find_figure("7").name == "phase-plane" == find_figure("fig7_phase_plane").name
    with pytest.raises(ValueError, match="valid names"):
        find_figure("nope")
    for f in FIGURES:
        mod = load_figure_module(f.name)
        # what the registry read from the source is what the script holds when it runs
        assert (mod.NAME, mod.NUMBER, mod.DESCRIPTION) == (f.name, f.number, f.description) and callable(mod.main)
        assert tuple(getattr(mod, "NEEDS", ())) == f.needs
        assert mod.__doc__ and len(mod.__doc__) > 200
    assert {f.name for f in FIGURES if "torch" in f.needs} == {"sharpness-net", "eosada", "dcao", "central-flow",
                                                                  "edge-of-stochastic-stability", "self-stabilization"}


# ----------------------------------------------------------------------------- registry on scratch scripts
SCRIPT = """\
\"\"\"A scratch figure.\"\"\"
import sys
NAME = {name!r}
NUMBER = {number!r}
DESCRIPTION = ("a scratch figure, "
               "in two pieces")
{extra}
open({marker!r}, "w").write("ran")  # listing the figures must not run this


def main(argv):
    return {{"argv": argv}}
"""


@pytest.fixture
def scratch_figures(tmp_path, monkeypatch):
    """Write figure scripts into a scratch EOSDYN_FIGURES_DIR; returns write(file, **constants)."""
    monkeypatch.setenv("EOSDYN_FIGURES_DIR", str(tmp_path))
    marker = tmp_path / "ran.txt"

    def write(file, name="scratch", number=1, extra=""):
        path = tmp_path / file
        path.write_text(SCRIPT.format(name=name, number=number, extra=extra, marker=str(marker)))
        return path

    write.marker = marker
    return write


def test_registry_reads_the_scripts_without_running_them(scratch_figures):
    scratch_figures("fig2_second.py", name="second", number=2, extra="NEEDS = ('numpy',)")
    scratch_figures("fig1_first.py", name="first-one", number=1)
    scratch_figures("_helper.py", name="BAD NAME", number=0)  # a helper, not a figure
    infos = registry.figures()
    assert [(f.number, f.name, f.script, f.needs) for f in infos] == [
        (1, "first-one", "fig1_first.py", ()), (2, "second", "fig2_second.py", ("numpy",))]
    assert infos[0].description == "a scratch figure, in two pieces"
    assert registry.FIGURES == infos
    assert find_figure("fig1_first").name == find_figure("1").name == "first-one"
    assert not scratch_figures.marker.exists()
    assert run_figure("second", quick=True, out="o") == {"argv": ["--out", "o", "--quick"]}
    assert scratch_figures.marker.exists()
    # a script edited since the last listing is read again
    scratch_figures("fig2_second.py", name="second-renamed", number=2, extra="NEEDS = ('numpy',)   ")
    assert [f.name for f in registry.figures()] == ["first-one", "second-renamed"]


@pytest.mark.parametrize(
    "name, number, extra, match",
    [
        ("Scratch_Fig", 1, "", "NAME must be a str in lower case with dashes"),
        ("all", 1, "", "NAME must be"),
        ("scratch", 0, "", "NUMBER must be a positive int, got 0"),
        ("scratch", True, "", "NUMBER must be a positive int, got True"),
        ("scratch", "1", "", "NUMBER must be a positive int, got '1'"),
        ("scratch", 1, "DESCRIPTION = ''", "DESCRIPTION must be a non-empty str of one line"),
        ("scratch", 1, "DESCRIPTION = 'two\\nlines'", "DESCRIPTION must be a non-empty str of one line"),
        ("scratch", 1, "NUMBER = len(sys.argv)", r"NUMBER must be a literal .* not computed \(len\(sys.argv\)\)"),
        ("scratch", 1, "NEEDS = 'torch'", "NEEDS must be a tuple of module names"),
        ("scratch", 1, "def broken(:", "cannot be parsed"),
    ],
)
def test_malformed_script_is_named_in_the_error(scratch_figures, name, number, extra, match):
    path = scratch_figures("fig1_bad.py", name=name, number=number, extra=extra)
    with pytest.raises(registry.FigureScriptError, match=match) as err:
        registry.figures()
    assert str(path) in str(err.value)


def test_missing_constant_and_clashing_scripts_are_named(scratch_figures, tmp_path):
    path = tmp_path / "fig3_bare.py"
    path.write_text('"""No constants."""\nNAME = "bare"\n')
    with pytest.raises(registry.FigureScriptError, match=f"figure script {path} does not define NUMBER"):
        registry.figures()
    path.unlink()
    a = scratch_figures("fig1_a.py", name="same", number=1)
    b = scratch_figures("fig2_b.py", name="other", number=1)
    with pytest.raises(registry.FigureScriptError, match="have the same NUMBER 1") as err:
        registry.figures()
    assert str(a) in str(err.value) and str(b) in str(err.value)
    scratch_figures("fig2_b.py", name="same", number=2)
    with pytest.raises(registry.FigureScriptError, match="have the same NAME 'same'"):
        registry.figures()


def test_missing_directory_and_missing_needs(scratch_figures, tmp_path, monkeypatch):
    scratch_figures("fig1_x.py", name="needy", extra="NEEDS = ('no_such_module_eosdyn', 'nor.this')")
    with pytest.raises(ImportError, match="figure needy needs no_such_module_eosdyn, which is not installed"):
        run_figure("needy")
    assert not scratch_figures.marker.exists()
    monkeypatch.setenv("EOSDYN_FIGURES_DIR", str(tmp_path / "absent"))
    assert registry.figures() == ()
    with pytest.raises(ValueError, match="no figure scripts in .*absent.*EOSDYN_FIGURES_DIR"):
        find_figure("phase-plane")


def test_listing_does_not_import_torch():
    code = ("import sys; from eosdyn.plot import registry; infos = registry.figures(); "
            f"assert len(infos) == {len(FIGURES)}; assert 'torch' not in sys.modules, 'listing imported torch'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
