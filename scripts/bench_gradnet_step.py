"""Time one GradNetOT training step of mGradNet-M (WSoftmax, d = 2): before (the per-module
einsum implementation of b4e2c6f, frozen as ``tests.test_gradnet_fast.
reference_forward_and_jacobian``) and after (``MGradNetM.forward_and_jacobian``), and the ratio.

A step = sample a batch, f and J's upper triangle, Cholesky log det, L1 Monge–Ampère loss,
backward, gradient-norm clipping (2), Adam step — as ``GradNetOT.training_loss`` and the trainer
do. Settings: the paper's T3 network (32 modules × 128, batch 1000) and the CPU budget's
(16 × 64, batch 500). ``--problem gaussian`` (default, no data): p = N(0, I), q = N(μ, Σ) fixed;
``--problem mnist``: the real MNIST morphing densities (0 → 4, bandwidth 1e-2; needs the
digits, see ``ot_experiments.data.load_mnist``). Before and after steps alternate, so that load
from other processes hits both alike; the median over ``--steps`` after ``--warmup``.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench_gradnet_step.py [--steps 20] [--problem mnist]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
from torch import Tensor

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's package and tests/, ahead of an installed copy

from ot_experiments.methods.gradnet import monge_ampere_loss  # noqa: E402
from ot_experiments.networks.gradnets import MGradNetM  # noqa: E402
from ot_experiments.networks.jacobians import log_abs_det  # noqa: E402
from tests.test_gradnet_fast import reference_forward_and_jacobian  # noqa: E402

SETTINGS = {"paper T3": (32, 128, 1000), "CPU budget": (16, 64, 500)}  # K, m, batch


class GaussianDensities:
    """p = N(0, I₂) (source), q = N(μ, Σ) with μ = (1, −0.5), Σ = [[2, 0.6], [0.6, 0.5]]."""

    def __init__(self) -> None:
        self.mu = torch.tensor([1.0, -0.5])
        self.q = torch.distributions.MultivariateNormal(
            self.mu, torch.tensor([[2.0, 0.6], [0.6, 0.5]])
        )

    def sample_source(self, n: int, generator: torch.Generator) -> Tensor:
        return torch.randn(n, 2, generator=generator)

    def log_density_source(self, x: Tensor) -> Tensor:
        return -0.5 * x.square().sum(1) - math.log(2 * math.pi)

    def log_density_target(self, y: Tensor) -> Tensor:
        return self.q.log_prob(y)


class MnistDensities:
    """The T3 problem (digit 0 → 4) at the start of its bandwidth schedule."""

    def __init__(self) -> None:
        from ot_experiments.problems.mnist_morphing import MnistMorphingProblem

        data = ROOT / "data" / "mnist"
        self.problem = MnistMorphingProblem(data_dir=str(data) if data.is_dir() else None)
        self.problem.bandwidth = self.problem.bandwidth_start
        self.log_density_source = self.problem.log_density_source
        self.log_density_target = self.problem.log_density_target

    def sample_source(self, n: int, generator: torch.Generator) -> Tensor:
        return self.problem.sample_source(n, generator=generator)


def make_step(
    net: MGradNetM, densities, batch: int, forward_and_jacobian: Callable, seed: int = 0
) -> Callable[[], None]:
    """One training step (module docstring) as a closure."""
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(seed)

    def step() -> None:
        x = densities.sample_source(batch, gen)
        tx, jac = forward_and_jacobian(x, upper_only=True)
        logdet = log_abs_det(jac, psd=True)
        loss = monge_ampere_loss(
            logdet, densities.log_density_source(x), densities.log_density_target(tx)
        )
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 2.0)
        opt.step()

    return step


def bench(modules: int, width: int, batch: int, densities, steps: int, warmup: int):
    """(median ms before, median ms after, max |Δ log det J| on a first batch) for one
    setting; both networks start from the same parameters."""
    torch.manual_seed(0)
    after = MGradNetM(2, 2, modules=modules, width=width, activation="wsoftmax")
    before = MGradNetM(2, 2, modules=modules, width=width, activation="wsoftmax")
    before.load_state_dict(after.state_dict())
    ref = partial(reference_forward_and_jacobian, before)
    with torch.no_grad():
        x = densities.sample_source(batch, torch.Generator().manual_seed(1))
        logdets = [
            log_abs_det(fj(x, upper_only=True)[1], psd=True)
            for fj in (after.forward_and_jacobian, ref)
        ]
    runs = {
        "before": make_step(before, densities, batch, ref),
        "after": make_step(after, densities, batch, after.forward_and_jacobian),
    }
    times: dict[str, list[float]] = {name: [] for name in runs}
    for i in range(warmup + steps):
        for name, run in runs.items():
            t0 = time.perf_counter()
            run()
            if i >= warmup:
                times[name].append(1e3 * (time.perf_counter() - t0))
    med = {name: statistics.median(t) for name, t in times.items()}
    return med["before"], med["after"], float((logdets[0] - logdets[1]).abs().max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--problem", choices=("gaussian", "mnist"), default="gaussian")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    densities = GaussianDensities() if args.problem == "gaussian" else MnistDensities()
    print(
        f"mGradNet-M (wsoftmax), d=2, {args.threads} thread(s), problem {args.problem}, "
        f"median of {args.steps} steps after {args.warmup} warm-up"
    )
    print(
        f"{'setting':<11} {'K×m':>7} {'batch':>6} {'before (ms)':>12} {'after (ms)':>11} "
        f"{'ratio':>6} {'max |Δlogdet|':>14}"
    )
    for name, (modules, width, batch) in SETTINGS.items():
        t_before, t_after, dlogdet = bench(
            modules, width, batch, densities, args.steps, args.warmup
        )
        print(
            f"{name:<11} {f'{modules}×{width}':>7} {batch:>6} {t_before:>12.1f} "
            f"{t_after:>11.1f} {t_before / t_after:>5.1f}x {dlogdet:>14.1e}"
        )


if __name__ == "__main__":
    main()
