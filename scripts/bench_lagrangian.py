"""Time per training iteration of the Lagrangian method against d (paper Fig. 3.2).

For d = 2, 10, 20, 30, 40, 50 (``--dims``) it times full iterations (loss E + λ KL + α R with the
reference settings: B = 1024, N = 10 × 4 RK4 steps, M = 5, L = 2, H = 20, 5000 H¹ points;
forward, backward, Adam step) on Test 1 (``shift``), prints the median seconds per iteration,
the log-log slope of time against d, and the time of the closed-form divergence against the
autograd divergence (one backward pass per coordinate) on B points.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench_lagrangian.py [--dims 2 10 50] [--iters 10]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from functools import partial

import torch
from benchmark import loglog_slope  # scripts/benchmark.py (this folder is on sys.path)

from ot_experiments.methods.lagrangian import Lagrangian
from ot_experiments.networks.nodal import NodalVelocity
from ot_experiments.problems.gaussian import GaussianProblem


def time_iterations(d: int, batch: int, iters: int, gradient: str) -> tuple[float, float]:
    """(median, minimum) wall-clock seconds of one optimisation step at dimension d.

    The minimum is the less noisy estimate of the cost itself on a machine shared with other
    processes; the median is the headline number.
    """
    problem = GaussianProblem(d, preset="shift")
    method = Lagrangian(
        problem,
        partial(NodalVelocity),
        partial(torch.optim.Adam, lr=0.1),
        batch_size=batch,
        gradient=gradient,
    )
    opt = torch.optim.Adam(method.parameters(), lr=0.1)
    times = []
    for it in range(iters + 1):
        t0 = time.perf_counter()
        loss, _ = method.training_loss(it)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if it:  # the first iteration warms up
            times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times)


def autograd_divergence(net, x: torch.Tensor, t: float) -> torch.Tensor:
    """∇·v by d autograd passes (what the closed form avoids), (n,)."""
    x = x.detach().requires_grad_(True)
    v = net(x, t)
    div = torch.zeros(x.shape[0])
    for i in range(x.shape[1]):
        (g,) = torch.autograd.grad(v[:, i].sum(), x, retain_graph=True, create_graph=True)
        div = div + g[:, i]
    return div


def divergence_ratio(d: int, batch: int, repeats: int = 5) -> tuple[float, float, float]:
    """(closed-form s, autograd s, autograd/closed-form) for v and ∇·v on B points."""
    torch.manual_seed(0)
    net = NodalVelocity(in_dim=d)
    x = torch.randn(batch, d)

    def bench(fn) -> float:
        fn()
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        return statistics.median(ts)

    closed = bench(lambda: net.velocity_and_divergence(x, 0.37))
    auto = bench(lambda: autograd_divergence(net, x, 0.37))
    err = float(
        (net.velocity_and_divergence(x, 0.37)[1] - autograd_divergence(net, x, 0.37))
        .detach()
        .abs()
        .max()
    )
    assert err < 1e-4, f"closed-form divergence differs from autograd by {err}"
    return closed, auto, auto / closed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", type=int, nargs="+", default=[2, 10, 20, 30, 40, 50])
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--gradient", default="backprop", choices=["backprop", "adjoint"])
    parser.add_argument("--json", default=None, help="also write the numbers to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    rows = []
    header = f"{'d':>4} {'s/iter':>8} {'(min)':>7} {'div closed':>11} {'div autograd':>13}"
    print(header + f" {'ratio':>7}")
    for d in args.dims:
        s_iter, s_min = time_iterations(d, args.batch, args.iters, args.gradient)
        closed, auto, ratio = divergence_ratio(d, args.batch)
        rows.append(
            {
                "d": d,
                "s_per_iter": s_iter,
                "s_per_iter_min": s_min,
                "div_closed_s": closed,
                "div_autograd_s": auto,
            }
        )
        print(
            f"{d:>4} {s_iter:8.3f} {s_min:7.3f} {closed * 1e3:9.2f}ms {auto * 1e3:11.2f}ms "
            f"{ratio:7.1f}",
            flush=True,
        )
    slope = loglog_slope([r["d"] for r in rows], [r["s_per_iter"] for r in rows])
    slope_min = loglog_slope([r["d"] for r in rows], [r["s_per_iter_min"] for r in rows])
    print(
        f"log-log slope of time per iteration against d: {slope:.4f} "
        f"(of the minima: {slope_min:.4f}; paper: 0.0244)"
    )
    if args.json:
        with open(args.json, "w") as f:
            out = {"rows": rows, "slope": slope, "slope_min": slope_min, "batch": args.batch}
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
