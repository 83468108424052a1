"""The claims study (issue 14): the quick study end to end, its report recomputed from the
stores, equal trial budgets, resuming, bad input, and the metrics against closed forms."""
from __future__ import annotations

import json
import pickle
import shutil

import numpy as np
import pytest
from scipy import stats

torch = pytest.importorskip("torch")

from eosdyn.claims import OPTIMIZERS, ClaimsConfig, run_study, run_trial, summarize, trials  # noqa: E402
from eosdyn.claims import metrics as M  # noqa: E402
from eosdyn.claims.study import _verdict, markdown  # noqa: E402
from eosdyn.sweep import load, status  # noqa: E402


@pytest.fixture(scope="module")
def quick_study(tmp_path_factory):
    out = tmp_path_factory.mktemp("claims") / "study"
    config = ClaimsConfig.quick()
    summary = run_study(config, out, progress=False)
    return config, out, summary


# ----------------------------------------------------------------------------- end to end
def test_quick_study_writes_its_report(quick_study):
    config, out, summary = quick_study
    for name in ("claims.md", "claims.json", "claims.png", "config.json"):
        assert (out / name).stat().st_size > 0
    for phase in ("tune", "seeds", "ablations"):
        st = status(out / phase)
        assert st["pending"] == 0 and st["failed"] == 0, st["failures"]
    text = (out / "claims.md").read_text()
    for claim in ("2–3× faster", "10–20% fewer epochs", "overhead"):
        assert claim in text
    # two seeds are too few for a verdict, and the report says so instead of giving one
    assert {c["verdict"] for c in summary["claims"]} == {"no verdict (2 seeds < 3)"}


def test_every_optimizer_gets_the_same_trial_count(quick_study):
    config, out, summary = quick_study
    tune = load(out / "tune")
    for mode in ("step", "joint"):
        counts = {name: int(np.sum((tune.optimizer.values == name) & (tune.tag.values == f"tune/{mode}")))
                  for name in OPTIMIZERS}
        assert counts == dict.fromkeys(OPTIMIZERS, config.n_trials)
        assert summary["trial_counts"][mode] == counts
    # and the full preset names every optimizer the issue lists
    assert set(ClaimsConfig().optimizers) == {"gd", "sgdm", "sgdm_cosine", "adam", "adamw", "eosada", "dcao",
                                               "dcao_v1"}


def test_report_numbers_are_recomputed_from_the_stored_runs(quick_study):
    config, out, summary = quick_study
    seeds = load(out / "seeds")
    stored = json.loads((out / "claims.json").read_text())
    for mode in ("step", "joint"):
        m = seeds.tag.values == f"seed/{mode}"
        best = float(np.nanmax(seeds.val_acc.values[m]))
        target = config.target_fraction * best
        assert stored["modes"][mode]["target_val_acc"] == pytest.approx(target, rel=1e-12)
        for name in config.optimizers:
            mask = m & (seeds.optimizer.values == name)
            assert mask.sum() == config.seeds
            # independent recomputation from the raw arrays: test accuracy at the last epoch, epochs to target
            acc = seeds.test_acc.values[mask][:, -1]
            got = stored["modes"][mode]["optimizers"][name]["ci"]["final_test_acc"][0]
            assert got == pytest.approx(float(np.mean(acc)), rel=1e-12)
            e = []
            for row, x in zip(seeds.val_acc.values[mask], seeds.epoch.values[mask]):
                hit = np.flatnonzero(row >= target)
                e.append(x[hit[0]] if hit.size else np.nan)
            want = stored["modes"][mode]["optimizers"][name]["values"]["epochs_to_target"]
            np.testing.assert_array_equal(np.asarray(want, float), np.asarray(e, float))
        # cost per step: the optimizer's own HVPs over the steps it took
        mask = m & (seeds.optimizer.values == "dcao")
        want = seeds.hvp_total.values[mask] / seeds.eval_step.values[mask][:, -1]
        np.testing.assert_allclose(stored["modes"][mode]["optimizers"]["dcao"]["values"]["hvp_per_step"], want)
    # the same stores give the same report, and the Markdown shows the JSON's numbers
    from eosdyn.plot import to_jsonable

    again = summarize(out)
    assert json.loads(json.dumps(to_jsonable(again))) == stored
    assert markdown(again) == (out / "claims.md").read_text()


def test_overhead_rows_recompute_the_model_from_the_stored_runs(quick_study):
    """The overhead table's model m·r·b/T_c is HVPs per step × the run's measured r, averaged
    over the seeds; the measured side is the ratio of mean times per step to SGD+momentum's."""
    config, out, summary = quick_study
    seeds = load(out / "seeds")
    ov = json.loads((out / "claims.json").read_text())["overhead"]
    rows = {r["setting"] + "/" + r["optimizer"]: r for r in ov["rows"]}
    # every probing optimizer in both modes, and each DCAO ablation setting (T_c and m varied)
    for mode in ("step", "joint"):
        for name in ("eosada", "dcao", "dcao_v1"):
            assert f"{mode}-tuned/{name}" in rows
    assert sum(r["setting"].startswith("ablation dcao: T_c=") for r in ov["rows"]) >= 1
    assert sum(r["setting"].startswith("ablation dcao: m=") for r in ov["rows"]) >= 1
    assert ov["n_settings"] >= 3
    for mode in ("step", "joint"):
        m = seeds.tag.values == f"seed/{mode}"
        d = m & (seeds.optimizer.values == "dcao")
        steps = seeds.eval_step.values[d][:, -1]
        r = seeds.hvp_over_grad.values[d]
        assert np.all((r > 0.2) & (r < 20))  # an HVP costs about one to a few gradients
        model = np.mean(seeds.hvp_total.values[d] * r / steps)
        row = rows[f"{mode}-tuned/dcao"]
        assert row["model"] == pytest.approx(model, rel=1e-12)
        assert row["hvp_per_probe"] == pytest.approx(np.mean(seeds.hvp_total.values[d] / seeds.n_probes.values[d]))
        s = m & (seeds.optimizer.values == "sgdm")

        def per_step(mask):
            done = seeds.eval_step.values[mask][:, -1]
            return np.mean(seeds.time.values[mask][:, -1] / done)

        assert row["measured"] == pytest.approx(per_step(d) / per_step(s) - 1, rel=1e-9)
        assert row["measured_over_model"] == pytest.approx(row["measured"] / row["model"], rel=1e-12)
    text = (out / "claims.md").read_text()
    assert "measured against the model m·r·b/T_c" in text
    # non-probing optimizers record no unit costs
    g = seeds.optimizer.values == "sgdm"
    assert np.all(np.isnan(seeds.hvp_over_grad.values[g])) and np.all(seeds.n_probes.values[g] == 0)


def test_probe_costs_leave_the_model_alone_and_refuse_bad_input():
    from eosdyn.bridge import MLP, probe_costs

    torch.manual_seed(0)
    model = MLP(4, (8,), 3, "tanh")
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    loss_fn = torch.nn.functional.cross_entropy
    loss_fn(model(x), y).backward()
    grads = [p.grad.clone() for p in model.parameters()]
    before = [p.detach().clone() for p in model.parameters()]
    c = probe_costs(model, loss_fn, (x, y), repeats=2, inner=2)
    assert set(c) == {"t_grad", "t_graph", "t_hvp", "r", "c0"}
    assert c["r"] == pytest.approx(c["t_hvp"] / c["t_grad"]) and c["r"] > 0
    for p, g, w in zip(model.parameters(), grads, before):
        assert torch.equal(p.grad, g) and torch.equal(p.detach(), w)
    with pytest.raises(ValueError, match="repeats must be an integer >= 1"):
        probe_costs(model, loss_fn, (x, y), repeats=0)
    # BatchNorm running statistics, which the timed forwards move, are restored too
    from eosdyn.bridge import SmallCNN

    cnn = SmallCNN(num_classes=3, in_channels=1, image_size=8, batchnorm=True)
    cnn.train()
    xi = torch.randn(6, 1, 8, 8)
    stats = [b.clone() for b in cnn.buffers()]
    assert stats
    probe_costs(cnn, loss_fn, (xi, torch.randint(0, 3, (6,))), repeats=1, inner=1)
    for b, w in zip(cnn.buffers(), stats):
        assert torch.equal(b, w)
    with pytest.raises(TypeError, match="pair"):
        probe_costs(model, loss_fn, x)


def test_resume_runs_only_what_is_missing(quick_study, tmp_path):
    config, out, summary = quick_study
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    rec = sorted((copy / "seeds" / "points").glob("*.json"))[0]
    rec.unlink()
    assert status(copy / "seeds")["pending"] == 1
    again = run_study(config, copy, progress=False)
    assert status(copy / "seeds")["pending"] == 0
    assert again["trial_counts"] == summary["trial_counts"]


def test_a_resumed_study_with_another_configuration_is_refused(quick_study):
    config, out, _ = quick_study
    before = sorted(p.name for p in (out / "tune" / "points").iterdir())
    changed = ClaimsConfig.quick(epochs=config.epochs + 1, n_trials=3)
    with pytest.raises(ValueError, match=r"changed: epochs: 4 -> 5; n_trials: 2 -> 3"):
        run_study(changed, out, progress=False)
    assert sorted(p.name for p in (out / "tune" / "points").iterdir()) == before


def test_cli_rewrites_the_report_and_refuses_bad_configs(quick_study, capsys):
    from eosdyn.cli import main

    _, out, _ = quick_study
    assert main(["claims", "--report-only", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "no verdict (2 seeds < 3)" in printed and "claims.md" in printed
    assert main(["claims", "--quick", "--out", str(out), "--set", 'optimizers=["sgdm", "lion"]']) == 2
    assert "unknown name(s) ['lion']" in capsys.readouterr().err
    assert main(["claims", "--quick", "--out", str(out), "--set", "epochs=9"]) == 2
    assert "epochs: 4 -> 9" in capsys.readouterr().err


# ----------------------------------------------------------------------------- configuration
@pytest.mark.parametrize("kw, match", [
    (dict(optimizers=("sgdm", "sgd_nesterov")), r"unknown name\(s\) \['sgd_nesterov'\]"),
    (dict(optimizers=("sgdm", "sgdm")), "twice"),
    (dict(curvature_every=0), "T_c"),
    (dict(target_fraction=1.5), "target_fraction"),
    (dict(model="vit"), "model"),
    (dict(data="cifar10"), "data_root"),
    (dict(n_trials=0), "n_trials"),
])
def test_bad_configurations_are_refused(kw, match):
    with pytest.raises((ValueError, TypeError), match=match):
        ClaimsConfig.quick(**kw)


def test_unknown_fields_are_refused_by_name():
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['epoch'\]"):
        ClaimsConfig.from_dict({"epoch": 3})
    assert ClaimsConfig.from_dict(ClaimsConfig.quick().to_dict()) == ClaimsConfig.quick()


def test_trials_follow_one_grid_protocol():
    for name, spec in OPTIMIZERS.items():
        step = trials(name, "step", 6)
        v = np.array([t[spec.step.name] for t in step])
        assert len(step) == 6 and np.all((v >= spec.step.lo) & (v <= spec.step.hi))
        # log-spaced cell midpoints over a range of the same width (a factor of 100) for everyone
        assert spec.step.hi / spec.step.lo == pytest.approx(100.0)
        np.testing.assert_allclose(np.diff(np.log(v)), np.log(100.0) / 6, rtol=2e-3)
        joint = trials(name, "joint", 6)
        assert len(joint) == 6 and joint == trials(name, "joint", 6)  # reproducible
        for dim in (spec.step, *spec.own):
            vals = [t[dim.name] for t in joint]
            assert all(dim.lo <= x <= dim.hi for x in vals)
    with pytest.raises(ValueError, match="unknown optimizer"):
        trials("lion", "step", 2)


# ----------------------------------------------------------------------------- models and data
def _fake_cifar(root, n_train=40, n_test=20):
    d = root / "cifar-10-batches-py"
    d.mkdir()
    rng = np.random.default_rng(0)
    for name, n in (("data_batch_1", n_train), ("test_batch", n_test)):
        with open(d / name, "wb") as fh:
            pickle.dump({b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                         b"labels": rng.integers(0, 10, n).tolist()}, fh)
    return root


@pytest.mark.parametrize("model", ["cnn", "resnet18"])
def test_a_run_on_cifar_files_the_test_writes(tmp_path, model):
    root = _fake_cifar(tmp_path)
    c = ClaimsConfig.quick(model=model, data="cifar10", data_root=str(root), width=2, n_train=30, n_val=10,
                           n_test=20, epochs=1, batch_size=10, track_subset=10)
    r = run_trial("dcao", 0, json.dumps({"lr": 0.01}), json.dumps(c.to_dict()))
    assert r["diverged_at"] == -1 and np.all(np.isfinite(r["val_acc"][1]))
    assert np.isfinite(r["lambda1"][1][-1]) and r["hvp_total"] > 0


def test_a_diverging_run_is_flagged_not_raised():
    # cross-entropy is linear in the logits, so only a step that overflows float32 makes the loss non-finite
    c = ClaimsConfig.quick(epochs=2)
    with pytest.warns(RuntimeWarning, match="non-finite|diverged"):
        r = run_trial("sgdm", 0, json.dumps({"lr": 1e38}), json.dumps(c.to_dict()))
    assert r["diverged_at"] >= 0
    assert np.isnan(r["val_acc"][1][-1]) and np.isnan(r["ece"])


# ----------------------------------------------------------------------------- metrics
def test_ece_against_a_hand_computed_case():
    # two bins used: conf 0.9 (2 examples, 1 right) and conf 0.6 (2 examples, both right)
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.4, 0.6], [0.6, 0.4]])
    labels = np.array([0, 1, 1, 0])
    assert M.expected_calibration_error(probs, labels, n_bins=10) == pytest.approx(
        0.5 * abs(0.5 - 0.9) + 0.5 * abs(1.0 - 0.6))
    perfect = np.tile([[1.0, 0.0]], (5, 1))
    assert M.expected_calibration_error(perfect, np.zeros(5, int)) == 0.0


def test_oscillation_metrics_see_a_period_two_loss():
    t = np.arange(400)
    smooth = np.exp(-t / 100) + 0.1  # log L curved, no oscillation
    osc = smooth * np.exp(0.2 * (-1.0) ** t)
    assert M.high_frequency_fraction(osc) > 0.99
    assert M.high_frequency_fraction(smooth) < 0.01
    assert M.high_frequency_fraction(np.exp(-t / 100)) == 0.0  # log-linear: nothing left after detrending
    # the 17-step moving mean keeps 1/17 of the alternation: the residual's amplitude is 0.2·16/17
    assert M.loss_fluctuation(osc) == pytest.approx(0.2 * 16 / 17, rel=1e-2)
    assert M.loss_fluctuation(smooth) < 1e-3


def test_intervals_against_scipy():
    v = np.array([1.0, 2.0, 4.0, 3.5, 2.5])
    m, lo, hi = M.mean_ci(v)
    lo2, hi2 = stats.t.interval(0.95, 4, loc=v.mean(), scale=stats.sem(v))
    assert (m, lo, hi) == pytest.approx((v.mean(), lo2, hi2))
    r, lo, hi = M.ratio_ci(v, v / 2)
    assert r == pytest.approx(2.0) and lo <= 2.0 <= hi
    assert np.isnan(M.ratio_ci(v, np.array([1.0, np.nan]))[0])
    assert M.epochs_to_target([0, 1, 2], [0.1, 0.5, 0.9], 0.5) == 1
    assert np.isnan(M.epochs_to_target([0, 1], [0.1, np.nan], 0.5))


@pytest.mark.parametrize("lo, hi, above, want", [
    (2.1, 3.0, True, "holds"), (1.0, 1.9, True, "fails"), (1.5, 2.5, True, "inconclusive"),
    (0.01, 0.05, False, "holds"), (0.3, 0.4, False, "fails"), (0.05, 0.1, False, "inconclusive"),
    (np.nan, 1.0, True, "not measurable"),
])
def test_verdicts(lo, hi, above, want):
    assert _verdict(lo, hi, 2.0 if above else 0.07, above) == want


def test_median_ratio_skips_denominators_that_are_zero_to_rounding():
    from eosdyn.claims.study import _median_ratio

    assert _median_ratio([1.0, 2.0, 3.0], [1.0, 1.0, 1.0]) == 2.0
    assert np.isnan(_median_ratio([3e-4, 1e-4], [1e-31, 0.0]))   # a collapsed λ₁: no ratio, not 3e27
    assert _median_ratio([2.0, 6.0, np.nan], [1.0, 2.0, 1.0]) == 2.5
