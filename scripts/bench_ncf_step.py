"""Time one NCF training step: before (the per-class MMD loop, frozen as
``tests.test_ncf_math.reference_mmd_term``) and after (``NCF.mmd_term``, one stacked pass over
all classes), and the ratio.

A step = the MMD term (both maps, energy distances), the implicit HJ residual on the
collocation points, backward, Adam step — as ``NCF.training_loss`` and the trainer do.
Settings: T1a's (DenseICNN, 1000 MMD and 1000 collocation points) at d = 2, 16, 64 on the
``ncf_benchmark`` Gaussians (one class: the two implementations do the same work), and T5's
shapes (d = 32, ResidualTanh 6 × 256, 2000 MMD points over 10 classes, class-conditional) on
random labelled clouds: the step's cost does not depend on the data, so no VAE is needed.
Before and after steps alternate, so that load from other processes hits both alike; the
median over ``--steps`` after ``--warmup``.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench_ncf_step.py [--steps 10]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's package and tests/, ahead of an installed copy

from ot_experiments.api import ArrayProblem  # noqa: E402
from ot_experiments.methods.ncf import NCF  # noqa: E402
from ot_experiments.networks import DenseICNN, ResidualTanh  # noqa: E402
from ot_experiments.problems import GaussianProblem  # noqa: E402
from tests.test_ncf_math import reference_mmd_term  # noqa: E402


def t1a_method(d: int) -> NCF:
    """NCF with T1a's network and point counts on the ncf_benchmark pair at dimension d."""
    h = max(2 * d, 64)
    net = partial(DenseICNN, hidden=[h, h, max(d, 32)], rank=1, activation="celu")
    problem = GaussianProblem(dim=d, preset="ncf_benchmark", seed=0)
    return NCF(problem, net, partial(torch.optim.Adam), mmd_weight=100.0, n_mmd=1000)


def t5_method() -> NCF:
    """NCF with T5's network and point counts on random labelled clouds (d = 32, 10 classes)."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(6000, 32, generator=g), torch.randn(6000, 32, generator=g) + 1
    labels = torch.arange(6000) % 10
    problem = ArrayProblem(x, y, labels, labels)
    net = partial(ResidualTanh, width=256, depth=6, residual_scale=1.0)
    return NCF(problem, net, partial(torch.optim.Adam), mmd_weight=100.0, n_mmd=2000)


def step_time(method: NCF, mmd, optimizer) -> float:
    """Seconds for one step with ``mmd(method)`` as the MMD term."""
    start = time.perf_counter()
    optimizer.zero_grad()
    loss = method.mmd_weight * mmd(method) + method.hj_term()
    loss.backward()
    optimizer.step()
    return time.perf_counter() - start


def compare(name: str, method: NCF, steps: int, warmup: int) -> None:
    optimizer = torch.optim.Adam(method.parameters(), lr=1e-3)
    times: dict[str, list[float]] = {"before": [], "after": []}
    fns = {"before": reference_mmd_term, "after": NCF.mmd_term}
    for i in range(warmup + steps):
        for key, fn in fns.items():
            t = step_time(method, fn, optimizer)
            if i >= warmup:
                times[key].append(t)
    before, after = (statistics.median(times[k]) * 1e3 for k in ("before", "after"))
    print(f"| {name} | {before:.1f} | {after:.1f} | {before / after:.2f} |", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"NCF step, median of {args.steps} ({args.threads} thread(s))\n")
    print("| setting | before (ms) | after (ms) | speed-up |\n|---|---|---|---|")
    for d in (2, 16, 64):
        compare(f"T1a d = {d}", t1a_method(d), args.steps, args.warmup)
    compare("T5 (d = 32, 10 classes)", t5_method(), args.steps, args.warmup)


if __name__ == "__main__":
    main()
