"""Time the input Jacobian + log det of an mGradNet: closed form (J = Σ Wᵀ D W, Cholesky)
vs ``torch.func`` (vmap(jacrev) + slogdet), at d = 2, 8, 32, 64; print the ratio.

    .venv/bin/python scripts/bench_gradnet_jacobian.py [--network m|c] [--batch 1000]
"""

from __future__ import annotations

import argparse
import time

import torch

from ot_experiments.networks.gradnets import MGradNetC, MGradNetM
from ot_experiments.networks.jacobians import autograd_jacobian, logdet_psd


def closed_form(net, x):
    """(log det J, J's upper triangle) from the network's closed-form Jacobian and a
    per-sample Cholesky (as a training step computes them)."""
    jac = net.forward_and_jacobian(x, upper_only=True)[1]
    return logdet_psd(jac), jac


def autograd(net, x):
    """(log det J, J) from vmap(jacrev) and slogdet."""
    jac = autograd_jacobian(net, x)
    return torch.linalg.slogdet(jac)[1], jac


def best_time(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--network", choices=("m", "c"), default="m")
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--dims", type=int, nargs="+", default=[2, 8, 32, 64])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--mode",
        choices=("forward", "train", "both"),
        default="both",
        help="forward: log det J only; train: forward + backward (what a training step pays)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    modes = ("forward", "train") if args.mode == "both" else (args.mode,)
    print(f"network mGradNet-{args.network.upper()}, batch {args.batch}, {args.threads} thread(s)")
    print(
        f"{'d':>4} {'mode':>8} {'closed (ms)':>12} {'torch.func (ms)':>16} {'ratio':>7} "
        f"{'max |Δlogdet|':>14}"
    )
    for d in args.dims:
        if args.network == "m":
            net = MGradNetM(d, d, modules=4, width=32)
        else:
            net = MGradNetC(d, d, layers=4, width=max(32, d))
        x = torch.randn(args.batch, d)
        with torch.no_grad():
            a, _ = closed_form(net, x)
            b, _ = autograd(net, x)
        diff = float((a - b).abs().max())
        for mode in modes:

            def run(fn, net=net, x=x, mode=mode):
                def go():
                    logdet, _ = fn(net, x)
                    if mode == "train":
                        logdet.sum().backward()
                    return logdet

                return go

            t_closed = best_time(run(closed_form), args.repeats)
            t_auto = best_time(run(autograd), args.repeats)
            print(
                f"{d:>4} {mode:>8} {1e3 * t_closed:>12.2f} {1e3 * t_auto:>16.2f} "
                f"{t_auto / t_closed:>7.1f} {diff:>14.2e}"
            )


if __name__ == "__main__":
    main()
