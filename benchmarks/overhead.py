"""Benchmark: wall time per step of DCAO and EoS-Ada against plain SGD.

Minibatch training of an MLP (64-256-256-10 tanh, ~85k parameters) on digits, batch 128,
cross-entropy. Each optimizer runs the same number of steps on the same batches:

- ``SGD``: torch.optim.SGD (no momentum), the usual zero_grad / backward / step loop;
- ``SGD+mom``: torch.optim.SGD(momentum=0.9), for reference (DCAO is a momentum method);
- ``DCAO``: eosdyn.bridge.DCAO with T_c = 100 (``curvature_every``) and m = 20 Lanczos HVPs
  per probe, taking a closure every step;
- ``DCAO/bw``: DCAO in a standard loop (loss.backward(); step()) with a closure only on
  probe steps (``opt.needs_closure``);
- ``EoSAda``: eosdyn.bridge.EoSAda at its default probe frequency (every step, m = 20);
- ``EoSAda/100``: EoS-Ada probing every 100 steps, for comparison.

Timings are the median over ``--repeats`` interleaved runs; the overhead is
(t_method / t_SGD − 1) · 100 %. The proposal claims < 5 % for DCAO at T_c = 100, m = 20:
the numbers printed here are what we measured, whatever they are.

Usage: python benchmarks/overhead.py [--quick] [--device cpu|cuda] [--steps N] [--repeats R]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import eosdyn.bridge as B


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(kind, batches, steps, device, dtype, hidden):
    torch.manual_seed(0)
    model = B.MLP(64, (hidden, hidden), 10, "tanh").to(device=device, dtype=dtype)
    loss_fn = B.cross_entropy_loss
    if kind == "SGD":
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
    elif kind == "SGD+mom":
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    elif kind.startswith("DCAO"):
        opt = B.DCAO(model.parameters(), lr=0.05, curvature_every=100, lanczos_steps=20, k=2)
    elif kind == "EoSAda":
        opt = B.EoSAda(model.parameters(), alpha=0.5)
    elif kind == "EoSAda/100":
        opt = B.EoSAda(model.parameters(), alpha=0.5, curvature_every=100)
    else:  # pragma: no cover
        raise ValueError(kind)
    ours = isinstance(opt, (B.DCAO, B.EoSAda))
    standard = not ours or kind == "DCAO/bw"
    nb = len(batches)
    sync(device)
    t0 = time.perf_counter()
    for t in range(steps):
        x, y = batches[t % nb]
        if standard and not (ours and opt.needs_closure):
            opt.zero_grad(set_to_none=True)
            loss_fn(model(x), y).backward()
            opt.step()
        else:
            opt.step(lambda: loss_fn(model(x), y))
    sync(device)
    dt = time.perf_counter() - t0
    probe = opt.curvature_time if ours else 0.0
    hvps = opt.n_hvp if ours else 0
    probes = opt.n_probes if ours else 0
    return dt / steps, probe / steps, hvps, probes


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--steps", type=int, default=None, help="steps per run (default 1000, quick 300)")
    ap.add_argument("--eosada-steps", type=int, default=None, help="steps for EoSAda every step (default 200, quick 50)")
    ap.add_argument("--repeats", type=int, default=None, help="interleaved repeats (default 5, quick 2)")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    steps = args.steps or (300 if args.quick else 1000)
    esteps = args.eosada_steps or (50 if args.quick else 200)
    repeats = args.repeats or (2 if args.quick else 5)

    X, y = B.digits(targets="labels", dtype=dtype, device=device)
    batches = B.batches((X, y), args.batch_size, shuffle=True, seed=0)
    n = 64 * args.hidden + args.hidden + args.hidden ** 2 + args.hidden + 10 * args.hidden + 10
    print(f"MLP 64-{args.hidden}-{args.hidden}-10 tanh ({n} params), digits, batch {args.batch_size}, "
          f"cross-entropy, {args.dtype} on {device}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; median of {repeats} interleaved runs")

    kinds = [("SGD", steps), ("SGD+mom", steps), ("DCAO", steps), ("DCAO/bw", steps),
             ("EoSAda/100", steps), ("EoSAda", esteps)]
    for kind, s in kinds:  # warm-up (allocator, numba dispatch of the schedules)
        run(kind, batches, min(s, 5), device, dtype, args.hidden)
    times = {k: [] for k, _ in kinds}
    info = {}
    for _ in range(repeats):
        for kind, s in kinds:
            per, probe, hvps, probes = run(kind, batches, s, device, dtype, args.hidden)
            times[kind].append((per, probe))
            info[kind] = (s, hvps, probes)
    base = statistics.median(p for p, _ in times["SGD"])
    print(f"\n{'optimizer':11s} {'steps':>6s} {'ms/step':>9s} {'overhead':>9s} {'probe ms/step':>14s} "
          f"{'probes':>7s} {'HVPs/probe':>10s}")
    for kind, _ in kinds:
        per = statistics.median(p for p, _ in times[kind])
        probe = statistics.median(q for _, q in times[kind])
        s, hvps, probes = info[kind]
        hp = f"{hvps / probes:.1f}" if probes else "-"
        print(f"{kind:11s} {s:6d} {1e3 * per:9.3f} {100 * (per / base - 1):8.1f}% {1e3 * probe:14.3f} "
              f"{probes:7d} {hp:>10s}")
    dc = statistics.median(p for p, _ in times["DCAO"])
    print(f"\nDCAO (T_c=100, m=20) overhead vs plain SGD: {100 * (dc / base - 1):.1f}% "
          f"(proposal's claim: < 5%)")
    ea = statistics.median(p for p, _ in times["EoSAda"])
    print(f"EoS-Ada (default: probe every step, m=20) overhead vs plain SGD: {100 * (ea / base - 1):.0f}%")


if __name__ == "__main__":
    main()
