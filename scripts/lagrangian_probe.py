"""What limits the Lagrangian method on a T1c cell: network capacity, H¹ weight, or Adam's lr?

Two measurements on one Gaussian test (default Test 2 at d = 50, the hardest T1c cell):

1. **Capacity.** Fit the nodal velocity network by regression to the exact velocity of the
   OT displacement interpolation (at z = x + t (T(x) − x) it is T(x) − x) and report E, the
   map cost mean ‖z(1) − x‖² and KL of the fitted flow. If a width cannot get KL near 0 here, no
   training of the loss can.
2. **Where the loss holds it.** From that fit, train the method's own loss E + λ KL + α R with
   plain Adam at a fixed learning rate and watch KL and E drift away from the exact flow: to
   the penalised optimum of that α, plus the noise floor of Adam's steps at that lr.

    .venv/bin/python scripts/lagrangian_probe.py --widths 20 25 33 --alphas 0.1 0.01 --lr 5e-4
    .venv/bin/python scripts/lagrangian_probe.py --preset shift --widths 20 --alphas 0.1

One thread, ~20 s a width for the fit and ~0.4 s a training step at d = 50, H = 33.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ot_experiments.build import build_method, build_problem  # noqa: E402
from ot_experiments.checks import CONF_DIR  # noqa: E402


def build(preset: str, d: int, width: int, alpha: float | None, seed: int):
    """(problem, Lagrangian method) of ``experiment=t1c`` with the given width and α."""
    overrides = ["experiment=t1c", f"problem.preset={preset}", f"d={d}"]
    overrides += [f"network.width={width}", f"seed={seed}"]
    if alpha is not None:
        overrides.append(f"method.h1_weight={alpha}")
    with initialize_config_dir(str(CONF_DIR), version_base=None):
        cfg = compose("config", overrides=overrides)
    torch.manual_seed(seed)
    problem = build_problem(cfg)
    return problem, build_method(cfg, problem)


@torch.no_grad()
def flow_stats(method, problem, n: int = 4000) -> dict[str, float]:
    """E, map cost and KL of the method's flow on n source samples, and its H¹ term R."""
    x = problem.sample_source(n)
    extra = method.extra_metrics(x, problem)
    return {
        "E": method.transport_cost(x),
        "map": extra["map_cost"],
        "kl": extra["kl"],
        "R": float(method.h1_term()),
    }


def fit_exact(method, problem, steps: int, batch: int = 1024, times: int = 16) -> None:
    """Regress v_θ(z, t) on the exact displacement velocity at z = x + t (T(x) − x)."""
    opt = torch.optim.Adam(method.net.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.StepLR(opt, 100, 0.8)
    per = batch // times
    for _ in range(steps):
        x = problem.sample_source(batch)
        v = problem.transport_true(x) - x
        loss = 0.0
        for j, t in enumerate(torch.randint(0, 17, (times,)).tolist()):
            part = slice(j * per, (j + 1) * per)
            z = x[part] + t / 16 * v[part]
            loss = loss + (method.net(z, t / 16) - v[part]).square().sum(1).mean() / times
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()


def train_loss(method, steps: int, lr: float, every: int, problem) -> list[tuple[int, dict]]:
    """Plain Adam at a fixed lr on the method's own loss; stats every ``every`` steps."""
    opt = torch.optim.Adam(method.net.parameters(), lr=lr)
    out = []
    for k in range(1, steps + 1):
        loss, _ = method.training_loss(k)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if k % every == 0:
            out.append((k, flow_stats(method, problem)))
    return out


def fmt(stats: dict[str, float], w2_sq: float) -> str:
    err = 100 * (stats["E"] / w2_sq - 1)
    return (
        f"E {stats['E']:.3f} ({err:+.2f} %), map {stats['map']:.3f}, "
        f"KL {stats['kl']:.4f}, R {stats['R']:.0f}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="scale_shift")
    ap.add_argument("--d", type=int, default=50)
    ap.add_argument("--widths", type=int, nargs="+", default=[20, 25, 33])
    ap.add_argument("--alphas", type=float, nargs="*", default=[0.1, 0.01])
    ap.add_argument("--fit-steps", type=int, default=1000)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--train-steps", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    for width in args.widths:
        problem, method = build(args.preset, args.d, width, None, args.seed)
        w2 = problem.w2_sq_true
        fit_exact(method, problem, args.fit_steps)
        fitted = fmt(flow_stats(method, problem), w2)
        print(f"{args.preset} d={args.d} H={width} exact fit: {fitted}")
        state = {k: v.clone() for k, v in method.net.state_dict().items()}
        for alpha in args.alphas:
            problem, method = build(args.preset, args.d, width, alpha, args.seed)
            method.net.load_state_dict(state)
            for k, stats in train_loss(method, args.train_steps, args.lr, 100, problem):
                print(f"  alpha={alpha} lr={args.lr} step {k}: {fmt(stats, w2)}", flush=True)


if __name__ == "__main__":
    main()
