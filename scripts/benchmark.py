"""Performance report for the current device.

For every method × d: median time per training step and peak memory (from a short real run of
train.py, read from its results.json), the log-log slope of step time against d, and the ratio
of the learned map's inference time to POT's exact EMD and Sinkhorn solve on the same points.
Writes a Markdown report (default outputs/benchmark/<time>/report.md) and prints it.

    python scripts/benchmark.py                               # all methods, d = 2 4 8 16 32 64
    python scripts/benchmark.py --methods ncf --dims 2 8 --steps 30 --points 10000
    python scripts/benchmark.py --hardware gpu                # on a CUDA machine
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
# the problem each method is timed on (Gaussians wherever the method can run on them)
PROBLEM = {"ncf": "gaussian", "lagrangian": "gaussian", "gradnet": "gaussian", "qflow": "gaussian"}


def train_once(method: str, d: int, steps: int, hardware: str, out: Path) -> dict:
    """Run train.py for ``steps`` steps and return its results.json."""
    cmd = [
        sys.executable,
        "train.py",
        f"method={method}",
        f"problem={PROBLEM[method]}",
        f"d={d}",
        f"trainer.max_steps={steps}",
        f"trainer.val_check_interval={steps}",
        f"hardware={hardware}",
        "logger=none",
        "eval_points=500",
        "mc_points=0",
        f"paths.output_root={out}",
        f"hydra.run.dir={out}/{method}_d{d}",
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    path = out / f"{method}_d{d}" / "results.json"
    if not path.exists():
        return {"status": "failed", "error": proc.stderr.strip().splitlines()[-1:]}
    return json.loads(path.read_text())


def loglog_slope(ds: list[int], times: list[float]) -> float:
    """Least-squares slope of log(time) against log(d)."""
    if len(ds) < 2:
        return float("nan")
    return float(np.polyfit(np.log(ds), np.log(times), 1)[0])


def inference_vs_pot(folder: Path, n: int) -> dict[str, float]:
    """Seconds to transport n points with the learned map vs POT EMD / Sinkhorn on n points."""
    import ot
    import torch

    import ot_experiments

    run = ot_experiments.load_run(folder)
    g = torch.Generator().manual_seed(0)
    x = run.problem.sample_source(n, generator=g)
    y = run.problem.sample_target(n, generator=g)
    t0 = time.perf_counter()
    run.transport(x.to(run.method.device))
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t_map = time.perf_counter() - t0
    a = np.full(n, 1 / n)
    cost = ot.dist(x.double().numpy(), y.double().numpy())
    t0 = time.perf_counter()
    ot.emd2(a, a, cost, numItermax=100_000_000)
    t_emd = time.perf_counter() - t0
    t0 = time.perf_counter()
    ot.sinkhorn2(a, a, cost / cost.max(), 0.01, numItermax=1000)
    t_sink = time.perf_counter() - t0
    return {"map_s": t_map, "emd_s": t_emd, "sinkhorn_s": t_sink}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", nargs="+", default=list(PROBLEM))
    parser.add_argument("--dims", nargs="+", type=int, default=[2, 4, 8, 16, 32, 64])
    parser.add_argument("--steps", type=int, default=30, help="training steps per timing run")
    parser.add_argument("--points", type=int, default=10_000, help="points for the inference ratio")
    parser.add_argument("--hardware", default="cpu", choices=["cpu", "gpu"])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    out = args.out or ROOT / "outputs" / "benchmark" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    out.mkdir(parents=True, exist_ok=True)

    rows, slopes, ratios, device = [], {}, {}, "?"
    for method in args.methods:
        ds, times = [], []
        for d in args.dims:
            res = train_once(method, d, args.steps, args.hardware, out)
            if res.get("status") != "ok":
                rows.append(f"| {method} | {d} | failed: {res.get('error')} | | |")
                continue
            t = res["timing"]
            rows.append(
                f"| {method} | {d} | {t['step_ms']:.1f} | {t['peak_mem_mb']:.0f} | "
                f"{1000 * t['inference_s'] / t['inference_points'] * 1000:.2f} |"
            )
            ds.append(d)
            times.append(t["step_ms"])
            device = res["device"]
        slopes[method] = loglog_slope(ds, times)
        if ds:
            r = inference_vs_pot(out / f"{method}_d{ds[-1]}", args.points)
            ratios[method] = (ds[-1], r)
    lines = [
        f"# Performance report ({datetime.now():%Y-%m-%d %H:%M}, {device})",
        "",
        f"{args.steps} training steps per cell; step time is the median.",
        "",
        "| method | d | step (ms) | peak memory (MB) | inference (ms / 1k points) |",
        "|---|---|---|---|---|",
        *rows,
        "",
        "| method | log-log slope of step time vs d |",
        "|---|---|",
        *[f"| {m} | {s:.3f} |" for m, s in slopes.items() if not math.isnan(s)],
        "",
        f"| method | d | map on {args.points} pts (s) | POT EMD (s) | POT Sinkhorn (s) | "
        "EMD / map | Sinkhorn / map |",
        "|---|---|---|---|---|---|---|",
        *[
            f"| {m} | {d} | {r['map_s']:.4f} | {r['emd_s']:.2f} | {r['sinkhorn_s']:.2f} | "
            f"{r['emd_s'] / r['map_s']:.0f}× | {r['sinkhorn_s'] / r['map_s']:.0f}× |"
            for m, (d, r) in ratios.items()
        ],
    ]
    report = "\n".join(lines) + "\n"
    (out / "report.md").write_text(report)
    print(report)
    from ot_experiments.table_figures import plot_metric

    for metric in ("uvp_fwd", "w2_sq_rel_err", "timing.step_ms", "timing.peak_mem_mb"):
        try:
            print(f"figure: {plot_metric(out, metric)}")
        except SystemExit as err:  # no finished run has this metric
            print(err)
    print(f"report written to {out / 'report.md'}")


if __name__ == "__main__":
    main()
