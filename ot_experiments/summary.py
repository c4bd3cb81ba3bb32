"""What a finished run reports: final metrics with the POT baselines and timed inference, the
timing block of results.json, and the summary printed at the end."""

from __future__ import annotations

import os
import resource
import socket
import time
from datetime import datetime
from pathlib import Path

import torch
from omegaconf import DictConfig

from ot_experiments.build import job_overrides
from ot_experiments.callbacks import StepTimer
from ot_experiments.results import device_description, library_versions


def new_results(cfg: DictConfig, resume: Path | None) -> dict:
    """results.json of a run that is starting: what runs where (``status: running``); the
    run fills in its label, reference, hints, metrics, baselines and timing as it goes."""
    results: dict = {
        "status": "running",
        "started_at": datetime.now().isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "experiment": cfg.get("experiment_name"),
        "budget": cfg.get("budget"),
        "table_metrics": list(cfg.get("table_metrics") or []),
        "method": cfg.method.get("name", "?"),
        "problem": cfg.problem.get("name", "?"),
        "label": None,
        "d": cfg.get("d"),
        "seed": cfg.get("seed"),
        "overrides": job_overrides(),
        "metrics": {},
        "baselines": {},
        "reference": {},
        "timing": {},
        "device": device_description(cfg.trainer.get("accelerator")),
        "versions": library_versions(),
    }
    if resume is not None:
        results["resumed_from"] = str(resume)
    return results


def peak_memory_mb(device: torch.device) -> float:
    """Peak CUDA memory allocated, or the process's peak resident memory on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def evaluate_and_baselines(cfg, problem, method, results: dict) -> dict:
    """Final metrics (``metrics.evaluate``) on fresh samples, the POT and problem baselines and
    the timed inference of ``inference_points`` source points; fills ``results``' baselines and
    timing, returns the metrics."""
    from ot_experiments.baselines import pot_baselines
    from ot_experiments.metrics import evaluate

    n = int(cfg.get("eval_points", 2000))
    t0 = time.perf_counter()
    n_mc = int(cfg.get("mc_points", 0))
    metrics = evaluate(problem, method, n=n, seed=cfg.seed + 10_000, n_mc=n_mc)
    g = torch.Generator().manual_seed(cfg.seed + 10_000)
    x = problem.sample_source(n, generator=g)
    y = problem.sample_target(n, generator=g)
    results["baselines"] = {**pot_baselines(x, y), **problem.baselines()}
    results["timing"]["eval_s"] = time.perf_counter() - t0
    m = int(cfg.get("inference_points", 100_000))
    big = problem.sample_source(m, generator=g, device=method.device)
    _sync(method.device)
    t1 = time.perf_counter()
    method.transport(big)
    _sync(method.device)
    results["timing"]["inference_s"] = time.perf_counter() - t1
    results["timing"]["inference_points"] = m
    return metrics


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timing(timer: StepTimer, train_s: float, device) -> dict:
    """The timing block of a finished training: ``train_s`` and the steps of the whole run (a
    resumed run's include its earlier segments, ``StepTimer.run_s``), this segment's median
    step, peak memory."""
    return {
        "train_s": train_s,
        "steps": timer.run_steps(),
        "step_ms": timer.median_ms(),
        "peak_mem_mb": peak_memory_mb(torch.device(device)),
    }


def print_summary(results: dict, out: Path) -> None:
    """Print the run folder, metrics, baselines, paper reference and step time."""
    lines = [f"run folder: {out.resolve()}", "metrics:"]
    lines += [
        f"  {k:>24s} = {v:.6g}"
        for k, v in results["metrics"].items()
        if isinstance(v, (int, float))
    ]
    for name, b in results["baselines"].items():
        shown = ", ".join(f"{k} {v:.4g}" for k, v in b.items() if isinstance(v, float))
        lines.append(f"  {name:>24s}: {shown}")
    if results["reference"]:
        lines.append(f"  paper reference: {results['reference']}")
    step_ms = results["timing"].get("step_ms")
    shown = "no training steps" if step_ms is None else f"step time {step_ms:.2f} ms"
    lines.append(f"  {shown}, wall {results['timing']['wall_s']:.1f} s")
    print("\n".join(lines), flush=True)
