"""The ``eosdyn`` command line.

::

    eosdyn figure NAME [--quick] [--out DIR]      reproduce a figure (PNG + PDF + JSON)
    eosdyn figure --list                          the figures, one line each
    eosdyn claims [--quick] [--out DIR]           test EoS-Ada's and DCAO's claims (tuned, seeded, ablated)
    eosdyn simulate --loss SPEC --rule SPEC --steps N [--theta0 ...] [--out run.nc]
    eosdyn check threshold --loss SPEC --rule SPEC   theory vs measured stability edge
    eosdyn bench [NAME ...] [--full]              run benchmarks/*.py (short mode by default)
    eosdyn sweep CONFIG.toml | --status STORE     parameter sweeps (eosdyn.sweep)

Loss and rule specs (``quadratic:eigs=10,1``, ``heavyball:lr=0.1,momentum=0.9``) are parsed
by :mod:`eosdyn.specs`; ``eosdyn simulate --help`` lists them all.

Exit codes: 0 success; 2 usage error (bad option, bad spec — the message lists the valid
names and parameters); 1 a run that failed, with the reason (a simulation that diverged,
a figure or benchmark that raised, a threshold that could not be measured).

Progress bars (tqdm) are drawn on stderr only when it is a terminal, and never with ``--quiet``.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad input detected after argparse (bad spec, wrong θ length): exit code 2."""


class RunFailed(Exception):
    """The command ran but failed (divergence, a figure that raised, …): exit code 1."""


def _tty() -> bool:
    return hasattr(sys.stderr, "isatty") and sys.stderr.isatty()


def _bar(quiet, **kw):
    from tqdm.auto import tqdm

    return tqdm(disable=quiet or not _tty(), leave=False, **kw)


def _floats(tokens, name):
    """['1', '2'] or ['1,2'] or ['[1, 2]'] -> array."""
    if tokens is None:
        return None
    text = " ".join(tokens).replace("[", " ").replace("]", " ").replace(",", " ")
    try:
        vals = [float(t) for t in text.split()]
    except ValueError:
        raise UsageError(f"{name} must be numbers, e.g. {name} 1 0.5 or {name} 1,0.5; got {' '.join(tokens)!r}") \
            from None
    if not vals:
        raise UsageError(f"{name} needs at least one number")
    return np.array(vals)


# ----------------------------------------------------------------------------- specs
def _loss_spec(text):
    from .specs import SpecError, resolve_loss

    try:
        return resolve_loss(text)
    except SpecError as exc:
        raise UsageError(f"--loss: {exc}") from None


def _rule(text):
    from .specs import SpecError, rule_from_spec

    try:
        return rule_from_spec(text)
    except SpecError as exc:
        raise UsageError(f"--rule: {exc}") from None


def _spec_help() -> str:
    from .specs import describe_losses, describe_rules

    return ("spec grammar: NAME:key=value,key=value; a list continues until the next key= "
            "(eigs=10,1 or eigs=[10,1] or 'eigs=10 1'); ';' may also separate parameters. "
            "A text value (sympy's expr) is kept verbatim, spaces included, up to the next ,KEY=: "
            "quote the whole spec for the shell, e.g. --loss \"sympy:expr=x**2 + 3*y**2,vars=x y\" "
            "(quote the expression itself, expr='...', only if it has a comma outside brackets). "
            "Expressions are parsed by sympy's whitelisted parser, never evaluated.\n\n"
            "losses:\n" + describe_losses() + "\n\nrules:\n" + describe_rules())


# ----------------------------------------------------------------------------- simulate
def _edge_of(rule, lr_used):
    """(name, value) of the rule's own linear edge for λ (or λ_max(P⁻¹H)) at step ``lr_used``,
    read from the rule (:meth:`eosdyn.rules.Rule.edge_constant`); None where it is GD's 2/η,
    which the summary prints anyway, or where the rule has none."""
    c = rule.edge_constant()
    if c is None or c == 2.0:
        return None
    on = " for λ_max(P⁻¹H)" if rule.preconditioned else ""
    return f"{c:.6g}/η{on}", c / lr_used


def _loss_rule_start(args):
    """(loss, rule, θ₀) from --loss, --rule and --theta0 (d numbers, or one for all; default the
    loss's standard start)."""
    ls = _loss_spec(args.loss)
    rule = _rule(args.rule)
    loss = ls.loss
    theta0 = _floats(args.theta0, "--theta0") if args.theta0 else ls.theta0
    if theta0.shape[0] == 1 and loss.dim > 1 and args.theta0:
        theta0 = np.full(loss.dim, theta0[0])
    if theta0.shape[0] != loss.dim:
        raise UsageError(f"--theta0 must have {loss.dim} numbers (the loss's dimension), got {theta0.shape[0]}")
    return loss, rule, theta0


def cmd_flow(args) -> int:
    import eosdyn
    from eosdyn import flows

    loss, rule, theta0 = _loss_rule_start(args)
    if args.steps < 1:
        raise UsageError("--steps must be >= 1")
    if args.substeps < 1:
        raise UsageError("--substeps must be >= 1")
    t0 = time.perf_counter()
    try:
        cf = flows.central_flow(loss, rule, theta0, args.steps, substeps=args.substeps, project=args.project)
        sf = flows.stable_flow(loss, rule, theta0, args.steps, substeps=args.substeps)
        run = eosdyn.simulate(loss, rule, theta0, args.steps, record_theta=True)
    except (ValueError, TypeError) as exc:
        raise RunFailed(f"flow failed: {exc}") from None
    wall = time.perf_counter() - t0
    unstable = np.flatnonzero(cf.extra["n_unstable"] > 0)
    onset = int(unstable[0]) if unstable.size else None
    window = (onset if onset is not None else 0, args.steps - 1)
    cmp = flows.compare(run, cf, sf, names=["central", "stable"], sigma=args.sigma, window=window)
    print(f"loss      {args.loss}   (dim {loss.dim})")
    print(f"rule      {rule!r}   ({args.steps} steps, {args.substeps} substeps; {wall:.2f} s)")
    print(f"status    central flow: {cf.status}; stable flow: {sf.status}; run: {run.status}")
    if onset is None:
        print("onset     the central flow never reached the edge (it equals the stable flow)")
    else:
        e = cf.extra["effective_sharpness"][onset:, 0]
        print(f"onset     step {onset}; after it the flow's top effective sharpness stays in "
              f"[{np.nanmin(e):.4f}, {np.nanmax(e):.4f}] (edge 2), up to {int(cf.extra['n_unstable'].max())} "
              f"unstable directions, max SDCP residual {np.nanmax(cf.extra['sdcp_residual']):.1e}")
    for name in ("central", "stable"):
        sm = cmp.summary[name]
        print(f"{name:8s}  predicted loss vs smoothed run loss (steps {window[0]}–{window[1]}): mean rel. error "
              f"{sm['loss_rel_error_mean']:.3g}, max {sm['loss_rel_error_max']:.3g}; "
              f"distance to the run's midpoint at the end {sm['distance_final']:.4g}")
    if args.out:
        try:
            cf.save(args.out)
        except Exception as exc:  # noqa: BLE001 - report any writer failure as a failed run
            raise RunFailed(f"could not write {args.out}: {exc}") from None
        print(f"wrote     {args.out}")
    return 0


def cmd_simulate(args) -> int:
    import eosdyn

    loss, rule, theta0 = _loss_rule_start(args)
    if args.steps < 0:
        raise UsageError("--steps must be >= 0")
    if args.record_every < 1:
        raise UsageError("--record-every must be >= 1")
    blowup = args.blowup if args.blowup is not None else 1e12 * max(1.0, float(np.max(np.abs(theta0))))
    if not blowup > 0:
        raise UsageError("--blowup must be > 0")
    t0 = time.perf_counter()
    try:
        with _bar(args.quiet, total=args.steps + 1, desc="simulate", unit="step") as bar:
            def progress(done, total):
                bar.update(done - bar.n)

            tr = eosdyn.simulate(loss, rule, theta0, args.steps, record_every=args.record_every, seed=args.seed,
                                 blowup=blowup, progress=progress)
    except (ValueError, TypeError) as exc:
        raise RunFailed(f"simulation failed: {exc}") from None
    except KeyboardInterrupt as exc:
        part = getattr(exc, "partial", None)
        if part is not None and args.out:
            part.save(args.out)
            print(f"interrupted: the records so far are in {args.out}", file=sys.stderr)
        raise
    wall = time.perf_counter() - t0
    tr.params.update(loss_spec=args.loss, rule_spec=args.rule)

    ok = np.isfinite(tr.loss)
    if tr.sharpness is not None and (ok & np.isfinite(tr.sharpness)).any():
        ok &= np.isfinite(tr.sharpness)
    last = int(np.flatnonzero(ok)[-1]) if ok.any() else 0
    lossv = tr.loss[last]
    Lstar = loss.min_value
    sharp = tr.sharpness[last] if tr.sharpness is not None else float("nan")
    lr_used = tr.lr[last] if tr.lr is not None else float("nan")
    print(f"loss      {args.loss}   (dim {loss.dim}, L* = {Lstar:g})")
    print(f"rule      {rule!r}")
    print(f"steps     {args.steps}  (recorded every {args.record_every}; {wall:.2f} s)")
    if tr.diverged:
        print(f"result    DIVERGED at step {tr.diverged_at} (|θᵢ| ≥ {blowup:.3g} or a non-finite value)")
    else:
        print("result    did not diverge")
    gap = f"  (L − L* = {lossv - Lstar:.6g})" if np.isfinite(Lstar) else ""
    print(f"{'last finite' if tr.diverged else 'final'} loss   {lossv:.6g}{gap}   at step {int(tr.step[last])}")
    if np.isfinite(sharp) and np.isfinite(lr_used) and lr_used > 0:
        edge = 2.0 / lr_used
        print(f"sharpness λ₁ = {sharp:.6g}   vs 2/η = {edge:.6g}   (ηλ₁/2 = {sharp / edge:.4f}; "
              f"η = {lr_used:.6g} is the step in force)")
        own = _edge_of(rule, lr_used)
        if own is not None:
            name, val = own
            ps = tr.preconditioned_sharpness
            lam = ps[last] if ps is not None else sharp
            print(f"this rule's edge {name} = {val:.6g}   (λ/edge = {lam / val:.4f})")
    if args.out:
        try:
            tr.save(args.out)
        except Exception as exc:  # noqa: BLE001 - report any writer failure as a failed run
            raise RunFailed(f"could not write {args.out}: {exc}") from None
        print(f"wrote     {args.out}")
    if tr.diverged and not args.allow_divergence:
        reason = f"the run diverged at step {tr.diverged_at}"
        if np.isfinite(sharp) and np.isfinite(lr_used) and lr_used > 0:
            reason += f" (last recorded ηλ₁ = {sharp * lr_used:.4g}; GD is unstable above 2)"
        raise RunFailed(reason + "; pass --allow-divergence to exit 0 on divergence")
    return EXIT_OK


# ----------------------------------------------------------------------------- check threshold
def cmd_check_threshold(args) -> int:
    from .analysis.stability import simulated_threshold, threshold
    from .specs import SpecError, rule_family

    ls = _loss_spec(args.loss)
    try:
        cls, step, kwargs, given = rule_family(args.rule)
    except SpecError as exc:
        raise UsageError(f"--rule: {exc}") from None
    loss = ls.loss
    if args.at:
        theta = _floats(args.at, "--at")
        if theta.shape[0] != loss.dim:
            raise UsageError(f"--at must have {loss.dim} numbers, got {theta.shape[0]}")
    elif ls.minimizer is not None:
        theta = ls.minimizer
    else:
        raise UsageError(f"loss {ls.name!r} has no known minimiser: pass --at THETA")
    if given is not None:
        print(f"note: the rule's {step}={given:g} is ignored: the threshold on {step} is what is measured")
    fam = cls.name
    H = loss.hess(theta)
    if not np.all(np.isfinite(H)):
        raise RunFailed(f"the Hessian of {args.loss} is not finite at θ* = {theta.tolist()} "
                        "(e.g. √(L − L*) at its minimum, where no linear threshold exists; use eps > 0)")
    try:
        res = threshold(loss, cls, theta, **kwargs)
    except (ValueError, TypeError) as exc:
        raise RunFailed(f"threshold analysis failed: {exc}") from None

    sim_val, sim_note = None, ""
    if fam == "adam":
        sim_note = ("not simulated: Adam's preconditioner adapts during a run, while the closed form "
                    "holds for a frozen P (Cohen et al. 2022)")
    elif not np.isfinite(res.numeric):
        sim_note = "not simulated: no finite linear threshold"
    else:
        guess = res.analytic if (res.analytic is not None and np.isfinite(res.analytic)) else res.numeric
        try:
            with _bar(args.quiet, desc="bisection") as bar:
                sim = simulated_threshold(loss, cls, theta, guess=guess, steps=args.steps,
                                          progress=lambda k, total: bar.update(1), **kwargs)
            sim_val = sim.value
            sim_note = (f"{sim.runs} runs of {args.steps} steps from θ* + δ·v₁; stable iff L − L* shrinks; "
                        f"bracket [{sim.bracket[0]:.8g}, {sim.bracket[1]:.8g}]")
        except (ValueError, TypeError) as exc:
            raise RunFailed(f"simulated threshold failed: {exc}") from None

    ref = res.analytic if res.analytic is not None else None
    kw = ", ".join(f"{k}={v}" for k, v in kwargs.items()) or "defaults"
    print(f"loss      {args.loss}   at θ* = {np.array2string(theta, precision=6)}")
    curv_name = "λ_max(P⁻¹H), P = 1" if fam == "adam" else "λ_max(∇²L(θ*))"
    print(f"curvature {curv_name} = {res.curvature:.8g}")
    print(f"rule      {fam} ({kw}); threshold on {step}")
    print()
    print(f"  {'':28s} {step + '*':>16s} {'ratio to theory':>16s}")

    def row(label, v):
        if v is None:
            print(f"  {label:28s} {'n/a':>16s}")
            return
        r = "" if ref in (None, 0) or not np.isfinite(ref) else f"{v / ref:16.8f}"
        print(f"  {label:28s} {v:16.10g} {r}")

    row("theory (closed form)", ref)
    row("linearized (Jacobian ρ=1)", res.numeric)
    row("simulated (bisection)", sim_val)
    if ref is None:
        print(f"\n  no closed form for {fam}; ratio column omitted")
    if sim_note:
        print(f"\n  simulated: {sim_note}")
    return EXIT_OK


# ----------------------------------------------------------------------------- figure
def _print_claims(data):
    for c in data.get("claims", []):
        mark = "ok " if c.get("holds") else "NO "
        meas = c.get("measured")
        if isinstance(meas, float):
            meas = f"{meas:.6g}"
        elif isinstance(meas, list) and len(meas) > 6:
            meas = f"[{len(meas)} values]"
        claimed = c.get("claimed")
        if isinstance(claimed, list) and len(claimed) > 6:
            claimed = f"[{len(claimed)} values]"
        print(f"  [{mark}] {c.get('claim')}: claimed {claimed}, measured {meas}")


def cmd_figure(args) -> int:
    from .plot.registry import FIGURES, find_figure, run_figure

    if args.list or args.name is None:
        if args.name is None and not args.list:
            raise UsageError("give a figure NAME (or --list); e.g. eosdyn figure phase-plane --quick")
        width = max(len(f.name) for f in FIGURES)
        for f in FIGURES:
            print(f"{f.number:>2}  {f.name:{width}s}  {f.description}")
        return EXIT_OK
    names = [f.name for f in FIGURES] if args.name == "all" else [args.name]
    infos = []
    for n in names:
        try:
            infos.append(find_figure(n))
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    failed = []
    for info in infos:
        t0 = time.perf_counter()
        try:
            data = run_figure(info.name, quick=args.quick, out=args.out, quiet=args.quiet)
        except FileNotFoundError as exc:
            raise RunFailed(str(exc)) from None
        except ImportError as exc:
            failed.append(info.name)
            print(f"figure {info.name}: FAILED — a module it needs is missing: {exc}", file=sys.stderr)
            continue
        except Exception as exc:  # noqa: BLE001 - any failure of a figure is a failed run
            failed.append(info.name)
            print(f"figure {info.name}: FAILED — {type(exc).__name__}: {exc}", file=sys.stderr)
            continue
        dt = time.perf_counter() - t0
        out = Path(args.out)
        print(f"figure {info.number} ({info.name}) in {dt:.1f} s: "
              f"{out / data['files']['png']}, {out / data['files']['pdf']}, {out / data['files']['json']}")
        _print_claims(data)
    if failed:
        raise RunFailed(f"figure(s) failed: {', '.join(failed)}")
    return EXIT_OK


# ----------------------------------------------------------------------------- bench
def _claims_config(args):
    import json

    from .claims import ClaimsConfig

    fields = {}
    if args.config:
        path = Path(args.config)
        text = path.read_text()
        if path.suffix == ".toml":
            import tomllib

            fields.update(tomllib.loads(text))
        else:
            fields.update(json.loads(text))
    for item in args.set:
        name, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"--set takes FIELD=VALUE, got {item!r}")
        try:
            fields[name.strip()] = json.loads(value)
        except json.JSONDecodeError:
            fields[name.strip()] = value  # a bare word: a string (e.g. --set model=cnn)
    base = ClaimsConfig.quick().to_dict() if args.quick else ClaimsConfig().to_dict()
    base.update(fields)
    try:
        return ClaimsConfig.from_dict(base)
    except (TypeError, ValueError) as exc:
        raise UsageError(str(exc)) from exc


def cmd_claims(args) -> int:
    from .claims import run_study, write_report

    out = Path(args.out)
    if args.report_only:
        summary = write_report(out)
    else:
        config = _claims_config(args)
        try:
            summary = run_study(config, out, progress=None if not args.quiet else False)
        except ValueError as exc:
            if "another configuration" in str(exc):
                raise UsageError(str(exc)) from exc
            raise
    for c in summary["claims"]:
        print(f"[{c['verdict']}] {c['claim']} — {c['mode']} tuning, vs {c['against']}: {c['metric']} = "
              f"{c['measured']:.3g} (claimed {c['claimed']})")
    print(f"report: {out / 'claims.md'}  numbers: {out / 'claims.json'}  figure: {out / 'claims.png'}")
    return 0


def _benchmarks_dir() -> Path:
    env = os.environ.get("EOSDYN_BENCHMARKS_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[1] / "benchmarks"


def cmd_bench(args) -> int:
    d = _benchmarks_dir()
    scripts = sorted(p for p in d.glob("*.py") if not p.name.startswith("_")) if d.is_dir() else []
    if not scripts:
        raise RunFailed(f"no benchmarks found in {d} (they live in the source tree's benchmarks/)")
    if args.list:
        for p in scripts:
            doc = ""
            for line in p.read_text(errors="replace").splitlines():
                s = line.strip().strip('"').strip("'").strip()
                if s and not s.startswith("#") and not s.startswith("from") and not s.startswith("import"):
                    doc = s
                    break
            print(f"{p.stem:20s} {doc}")
        return EXIT_OK
    if args.names:
        by = {p.stem: p for p in scripts}
        bad = [n for n in args.names if n not in by]
        if bad:
            raise UsageError(f"unknown benchmark(s) {', '.join(bad)}; valid: {', '.join(by)}")
        scripts = [by[n] for n in args.names]
    failed = []
    for p in _bar(args.quiet, iterable=scripts, desc="bench"):
        cmd = [sys.executable, str(p)] + ([] if args.full else ["--quick"])
        print(f"== {p.stem}: {' '.join(cmd[1:])}", flush=True)
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
        except subprocess.TimeoutExpired:
            failed.append(f"{p.stem} (timed out after {args.timeout} s)")
            continue
        sys.stdout.write(proc.stdout)
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr[-4000:])
            failed.append(f"{p.stem} (exit {proc.returncode})")
        print(f"== {p.stem}: {time.perf_counter() - t0:.1f} s, exit {proc.returncode}", flush=True)
    if failed:
        raise RunFailed("benchmark(s) failed: " + ", ".join(failed))
    return EXIT_OK


# ----------------------------------------------------------------------------- parser
class _Parser(argparse.ArgumentParser):
    pass


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    fmt = argparse.RawDescriptionHelpFormatter
    p = _Parser(prog="eosdyn", formatter_class=fmt,
                description="eosdyn: the Edge of Stability of gradient descent — figures, simulations, "
                            "stability checks, benchmarks and sweeps.",
                epilog="Run 'eosdyn COMMAND --help' for a command's options. Exit codes: 0 ok, "
                       "2 usage error, 1 a run that failed.")
    p.add_argument("--version", action="version", version=f"eosdyn {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    f = sub.add_parser("figure", formatter_class=fmt, help="reproduce a figure (PNG, PDF and JSON of its numbers)",
                       description="Reproduce one of the paper figures. Writes NAME.png, NAME.pdf and NAME.json "
                                   "(the numbers it shows, claimed vs measured) into --out.",
                       epilog=_figure_epilog())
    f.add_argument("name", nargs="?", metavar="NAME", help="figure name or number (see --list), or 'all'")
    f.add_argument("--list", action="store_true", help="list the figures with one line each")
    f.add_argument("--quick", action="store_true", help="CI-sized run (under a minute on 2 cores)")
    f.add_argument("--out", default="eosdyn_figures", metavar="DIR", help="output directory (default ./eosdyn_figures)")
    f.add_argument("--quiet", action="store_true", help="no progress bars")
    f.set_defaults(func=cmd_figure)

    s = sub.add_parser("simulate", formatter_class=fmt, help="run a rule on a toy loss, print a summary, save NetCDF",
                       description="Run an update rule on a toy loss from θ₀ and print whether it diverged, the "
                                   "final loss and the final sharpness against 2/η. Exit code 1 if the run "
                                   "diverged (unless --allow-divergence).",
                       epilog="example: eosdyn simulate --loss quadratic:eigs=10,1 --rule gd:lr=0.19 --steps 1000\n\n"
                              + _spec_help())
    s.add_argument("--loss", required=True, metavar="SPEC", help="loss spec, e.g. quadratic:eigs=10,1")
    s.add_argument("--rule", required=True, metavar="SPEC", help="rule spec, e.g. gd:lr=0.19")
    s.add_argument("--steps", required=True, type=int, metavar="N", help="number of updates")
    s.add_argument("--theta0", nargs="+", metavar="X", help="start θ₀ (d numbers, or one for all); default: "
                                                              "the loss's standard start")
    s.add_argument("--record-every", type=int, default=1, metavar="K", help="record every K steps (default 1)")
    s.add_argument("--seed", type=int, default=0, help="random seed (stochastic rules)")
    s.add_argument("--out", metavar="run.nc", help="write the trajectory as NetCDF (.nc) or Zarr (.zarr)")
    s.add_argument("--blowup", type=float, metavar="X",
                   help="|θᵢ| ≥ X counts as divergence (default 1e12·max(1, max|θ₀ᵢ|))")
    s.add_argument("--allow-divergence", action="store_true", help="exit 0 even if the run diverged")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_simulate)

    fl = sub.add_parser("flow", formatter_class=fmt,
                        help="central flow vs the discrete run and its stable flow: onset and prediction errors",
                        description="Integrate the central flow (Cohen et al., ICLR 2025) and the stable flow "
                                    "(gradient flow for GD) of a rule on a toy loss, run the rule itself, and "
                                    "print the onset of the edge and how well each flow predicts the run: the "
                                    "distance to the run's midpoint (w₋+2w+w₊)/4 and the error of the "
                                    "predicted loss against the Gaussian-smoothed loss. Covered rules: GD and "
                                    "RMSProp (adam with beta1=0).",
                        epilog="example: eosdyn flow --loss \"sympy:expr='y*x**2/2 - y/2',vars=x y\" "
                               "--rule gd:lr=0.01 --theta0 0.5 199 --steps 300\n\n" + _spec_help())
    fl.add_argument("--loss", required=True, metavar="SPEC", help="loss spec (needs exact third derivatives)")
    fl.add_argument("--rule", required=True, metavar="SPEC", help="rule spec: gd:lr=…, or adam:lr=…,betas=0;0.99")
    fl.add_argument("--steps", required=True, type=int, metavar="N", help="number of steps")
    fl.add_argument("--theta0", nargs="+", metavar="X", help="start θ₀ (d numbers, or one for all)")
    fl.add_argument("--substeps", type=int, default=4, metavar="K", help="Euler substeps per step (default 4)")
    fl.add_argument("--sigma", type=float, default=5.0, help="Gaussian smoothing of the run's loss, in steps")
    fl.add_argument("--project", action="store_true", help="start past the edge from θ₀'s projection (GD)")
    fl.add_argument("--out", metavar="flow.nc", help="write the central flow's record as NetCDF")
    fl.set_defaults(func=cmd_flow)

    c = sub.add_parser("check", formatter_class=fmt, help="check a stability condition numerically",
                       description="Checks of the theory against numerics.")
    csub = c.add_subparsers(dest="check", metavar="CHECK")
    t = csub.add_parser("threshold", formatter_class=fmt,
                        help="the theoretical stability threshold of a rule at a minimum vs the measured one",
                        description="Largest stable step size at a minimum θ*: the closed form (2/λ for GD, "
                                    "2(1+β)/λ for heavy-ball, …), the linearized value (bisection on the "
                                    "spectral radius of the map's Jacobian), the value measured by simulation "
                                    "(bisection over runs kicked off θ*), and their ratios.",
                        epilog="example: eosdyn check threshold --loss quadratic:eigs=10,1 "
                               "--rule heavyball:momentum=0.9\n\n" + _spec_help())
    t.add_argument("--loss", required=True, metavar="SPEC", help="loss spec")
    t.add_argument("--rule", required=True, metavar="SPEC",
                   help="rule spec; its step size (lr, or alpha for eosada) may be left out")
    t.add_argument("--at", nargs="+", metavar="X", help="the minimum θ* (default: the loss's known minimiser)")
    t.add_argument("--steps", type=int, default=4000, help="steps per simulated probe (default 4000)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=cmd_check_threshold)
    c.set_defaults(func=lambda a: _usage(c, "choose a check, e.g. 'eosdyn check threshold --help'"))

    b = sub.add_parser("bench", formatter_class=fmt, help="run the benchmarks (short mode)",
                       description="Run benchmarks/*.py, each in a fresh interpreter with --quick "
                                   "(--full for the full run), and print their output.")
    b.add_argument("names", nargs="*", metavar="NAME", help="benchmarks to run (default: all)")
    b.add_argument("--full", action="store_true", help="full runs instead of --quick")
    b.add_argument("--list", action="store_true", help="list the benchmarks")
    b.add_argument("--timeout", type=float, default=1800, help="seconds per benchmark (default 1800)")
    b.add_argument("--quiet", action="store_true", help="no progress bar")
    b.set_defaults(func=cmd_bench)

    cl = sub.add_parser("claims", formatter_class=fmt,
                        help="test EoS-Ada's and DCAO's claims: tuned baselines, seeds, ablations, a report",
                        description="Tune every optimizer with the same trial budget, rerun each one's best point "
                                    "with fresh seeds, run the proposals' ablations, and write claims.md (each claim "
                                    "beside the measurement, with a 95%% interval and a verdict), claims.json and "
                                    "claims.png under --out. Resumable: rerun the same command after an interruption.")
    cl.add_argument("--quick", action="store_true",
                    help="a small study for CI (2 trials, 2 seeds, 4 epochs): checks the machinery, gives no verdicts")
    cl.add_argument("--out", default="eosdyn_claims", metavar="DIR", help="study directory (default ./eosdyn_claims)")
    cl.add_argument("--config", metavar="FILE", help="a JSON or TOML file of ClaimsConfig fields (over the preset)")
    cl.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="override one field, e.g. --set model=cnn --set seeds=3 (repeatable; VALUE is JSON)")
    cl.add_argument("--report-only", action="store_true", help="rewrite the report from the stores; run nothing")
    cl.add_argument("--quiet", action="store_true", help="no progress bars")
    cl.set_defaults(func=cmd_claims)

    wu = sub.add_parser("warmup", add_help=False, help="precompile the common kernels (in the background)",
                        description="eosdyn warmup [--all] [--foreground] [--list] (see eosdyn warmup --help)")
    wu.set_defaults(func=None)

    w = sub.add_parser("sweep", add_help=False, help="run a parameter sweep from a TOML config, or --status STORE",
                       description="eosdyn sweep CONFIG.toml | eosdyn sweep --status STORE (see eosdyn sweep --help)")
    w.set_defaults(func=None)
    return p


def _figure_epilog() -> str:
    from .plot.registry import FigureScriptError, figures

    try:
        listed = figures()
    except (FigureScriptError, FileNotFoundError) as exc:  # one bad script must not break every command
        return f"figures: cannot be listed ({exc})"
    width = max((len(f.name) for f in listed), default=0)
    return "figures:\n" + "\n".join(f"  {f.number:>2}  {f.name:{width}s}  {f.description}" for f in listed)


def _usage(parser, msg):
    parser.print_usage(sys.stderr)
    print(f"{parser.prog}: error: {msg}", file=sys.stderr)
    return EXIT_USAGE


def main(argv=None) -> int:
    """Entry point of the ``eosdyn`` command; returns the exit code (0 ok, 1 failed run, 2 usage)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "warmup":
        from .warmup import main as warmup_main

        return int(warmup_main(argv[1:]) or 0)
    if argv and argv[0] == "sweep":
        from .sweep import sweep_cli_main

        return int(sweep_cli_main(argv[1:]) or 0)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help/--version exit 0, errors exit 2
        return int(exc.code or 0)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.func(args) or 0)
    except UsageError as exc:
        print(f"eosdyn {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except RunFailed as exc:
        print(f"eosdyn {args.command}: failed: {exc}", file=sys.stderr)
        return EXIT_FAIL
    except KeyboardInterrupt:
        print("eosdyn: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
