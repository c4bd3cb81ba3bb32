"""One run: check the config, build problem and method, train with Lightning, evaluate, and
leave a self-describing folder (results.json, metrics.csv, checkpoint, figures).

``run`` is the task wrapper: whatever happens, results.json is written and a wandb run is
finished, so one failed job never spoils a sweep.

Over 400 lines on purpose: ``run`` keeps a job's whole life (checks, build, train, evaluate,
record) in one reading order, with its small builders and recorders beside it.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import socket
import sys
import time
import traceback
from datetime import datetime
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from ot_experiments.callbacks import (
    GracefulStop,
    ProblemProgress,
    ResumeState,
    RunInterrupted,
    StepTimer,
)
from ot_experiments.checks import (  # the checks live there; importable from here too
    CONF_DIR,  # noqa: F401  (tests and scripts read it from the runner)
    check_compatible,
    config_errors_alone,
    problems_offering,  # noqa: F401
    validate_config,
)
from ot_experiments.errors import ConfigError, TrainingDiverged
from ot_experiments.results import device_description, library_versions, write_json_atomic
from ot_experiments.tracking import finish as finish_wandb
from ot_experiments.tracking import flat_config, log_outcome

log = logging.getLogger(__name__)

META_KEYS = ("name", "lr")  # method/problem keys that are not constructor arguments


# -- building ---------------------------------------------------------------------------
def _strip(node: DictConfig) -> DictConfig:
    cfg = OmegaConf.to_container(node, resolve=True)
    for key in META_KEYS:
        cfg.pop(key, None)
    return OmegaConf.create(cfg)


def build_problem(cfg: DictConfig):
    """Instantiate ``cfg.problem`` (its ``dim`` follows ``d``).

    A ConfigError of the constructor comes out alone, not wrapped by Hydra.
    """
    with config_errors_alone():
        return instantiate(_strip(cfg.problem))


def problem_hints(cfg: DictConfig, problem) -> dict:
    """The problem's settings for this method's ``auto`` options (``Problem.method_hints``):
    only the options that are ``auto`` in ``cfg.method``."""
    hints = problem.method_hints(str(cfg.method.get("name", "")))
    return {k: v for k, v in hints.items() if cfg.method.get(k) == "auto"}


def build_method(cfg: DictConfig, problem):
    """Instantiate ``cfg.method`` with the problem and partial network/optimizer/scheduler,
    its ``auto`` options filled by ``problem_hints``.

    A ConfigError of a constructor (method, network, ...) comes out alone, not wrapped by Hydra.
    """
    with config_errors_alone():
        sched = cfg.get("scheduler")
        scheduler = instantiate(sched) if sched and sched.get("_target_") else None
        method_cfg = _strip(cfg.method)
        for key, value in problem_hints(cfg, problem).items():
            method_cfg[key] = value
        return instantiate(
            method_cfg,
            problem=problem,
            network=instantiate(cfg.network),
            optimizer=instantiate(cfg.optimizer),
            scheduler=scheduler,
            _recursive_=True,
        )


def build_loggers(cfg: DictConfig) -> list:
    """Loggers from ``cfg.logger`` (a dict of logger configs; empty for none).

    A wandb run is grouped by ``experiment_name`` (in its config) and tagged with ``tags`` plus
    this job's overrides, so the runs of a sweep can be told apart and filtered.
    """
    loggers = []
    for c in (cfg.get("logger") or {}).values():
        if not c:
            continue
        if str(c.get("_target_", "")).endswith("WandbLogger"):
            tags = [*(c.get("tags") or []), *_job_overrides()]
            wandb_logger = instantiate(c, tags=[t[:64] for t in tags])
            if rank_zero_only.rank == 0:  # the whole config, filterable key by key
                wandb_logger.experiment.config.update(flat_config(cfg), allow_val_change=True)
            loggers.append(wandb_logger)
        else:
            loggers.append(instantiate(c))
    return loggers


def build_callbacks(cfg: DictConfig, steps: int) -> list[pl.Callback]:
    """The ``callbacks`` group's callbacks; a null ``every_n_train_steps`` of a checkpoint
    becomes 1/20 of the budget, a null progress-bar ``refresh_rate`` every step on a terminal
    and ~20 lines per run in a log file."""
    out = []
    for c in (cfg.get("callbacks") or {}).values():
        if not c:
            continue
        c = OmegaConf.to_container(c, resolve=True)
        if "every_n_train_steps" in c and c["every_n_train_steps"] is None:
            c["every_n_train_steps"] = max(1, -(-steps // 20))  # lose at most ~5 %
        if "refresh_rate" in c and c["refresh_rate"] is None:
            c["refresh_rate"] = 1 if sys.stdout.isatty() else max(1, steps // 20)
        out.append(instantiate(c))
    return out


class _Steps(torch.utils.data.Dataset):
    """One item per training step: methods draw their own samples from the problem."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


def peak_memory_mb(device: torch.device) -> float:
    """Peak CUDA memory allocated, or the process's peak resident memory on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def resolve_checkpoint(ckpt_path: str | None, out: Path) -> Path | None:
    """The checkpoint to resume from: ``None``, ``"auto"`` (the newest of ``out``'s
    ``checkpoints/last.ckpt`` and Lightning's SLURM ``hpc_ckpt_*.ckpt``, or none: a fresh start)
    or a file; a missing file is a one-sentence ConfigError."""
    if ckpt_path in (None, "", "null"):
        return None
    if ckpt_path == "auto":
        found = [out / "checkpoints" / "last.ckpt", *out.glob("hpc_ckpt_*.ckpt")]
        found = [p for p in found if p.is_file()]
        return max(found, key=lambda p: p.stat().st_mtime) if found else None
    path = Path(ckpt_path)
    if path.is_dir():
        path = path / "checkpoints" / "last.ckpt"
    if not path.is_file():
        raise ConfigError(
            f"ckpt_path={ckpt_path!r} is not a checkpoint file: give a run folder's "
            "checkpoints/last.ckpt, or ckpt_path=auto to resume the run in hydra.run.dir"
        )
    return path


def refuse_existing_run(out: Path, resume: Path | None) -> None:
    """Never overwrite a finished or interrupted run folder unless resuming it."""
    old = out / "results.json"
    if old.exists() and resume is None:
        try:
            status = json.loads(old.read_text()).get("status", "?")
        except (json.JSONDecodeError, OSError):
            status = "unreadable"
        raise ConfigError(
            f"the run folder {out} already holds a run (status {status}); pass ckpt_path=auto "
            "to resume it, or choose another hydra.run.dir"
        )


def _mark_resumed(ckpt: Path, out: Path) -> None:
    """Point the run folder that ``ckpt`` came from at the folder that finished it."""
    old_folder = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
    path = old_folder / "results.json"
    if old_folder.resolve() == out.resolve() or not path.exists():
        return
    try:
        old = json.loads(path.read_text())
    except (json.JSONDecodeError, OSError):
        return
    if old.get("status") != "ok":
        old["status"], old["resumed_in"] = "resumed", str(out)
        write_json_atomic(path, old)


# -- the task ---------------------------------------------------------------------------
def run(cfg: DictConfig) -> dict:
    """Train and evaluate one configuration; return the results dict (also in results.json).

    ``results.json`` exists from the start (``status: running``, start time, host, pid) and ends
    ``ok``, ``failed`` or ``interrupted`` (SIGTERM / SIGINT: checkpoint saved, step recorded;
    resume with ``ckpt_path=``). Only rank 0 writes it. Raises ConfigError / TrainingDiverged /
    RunInterrupted (one-sentence messages) or the original error after results.json has recorded
    the outcome.
    """
    from ot_experiments.plotting import save_figures
    from ot_experiments.references import reference_for

    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    writer = rank_zero_only.rank == 0
    resume = resolve_checkpoint(cfg.get("ckpt_path"), out)
    if writer:
        refuse_existing_run(out, resume)
    method_name = cfg.method.get("name", "?")
    problem_name = cfg.problem.get("name", "?")
    results: dict = {
        "status": "running",
        "started_at": datetime.now().isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "experiment": cfg.get("experiment_name"),
        "table_metrics": list(cfg.get("table_metrics") or []),
        "method": method_name,
        "problem": problem_name,
        "label": None,
        "d": cfg.get("d"),
        "seed": cfg.get("seed"),
        "overrides": _job_overrides(),
        "metrics": {},
        "baselines": {},
        "reference": {},
        "timing": {},
        "device": device_description(cfg.trainer.get("accelerator")),
        "versions": library_versions(),
    }
    if resume is not None:
        results["resumed_from"] = str(resume)
    if writer:
        write_json_atomic(out / "results.json", results)
    t_start = time.perf_counter()
    timer = StepTimer()
    stopper = GracefulStop(out / "checkpoints" / "last.ckpt")
    stopper.install()
    try:
        validate_config(cfg)
        if cfg.get("threads"):
            torch.set_num_threads(int(cfg.threads))
        pl.seed_everything(cfg.seed, workers=True, verbose=False)
        problem = build_problem(cfg)
        results["label"] = problem.label
        settings = OmegaConf.to_container(cfg.method, resolve=True)
        results["reference"] = reference_for(
            method_name, problem_name, problem.label, cfg.d, settings
        )
        method_cls = get_class(cfg.method._target_)
        check_compatible(method_name, method_cls, problem_name, problem)
        results["hints"] = problem_hints(cfg, problem)
        if results["hints"] and writer:
            shown = " ".join(f"method.{k}={v}" for k, v in results["hints"].items())
            log.info("settings from problem %s (for auto): %s", problem_name, shown)
        method = build_method(cfg, problem)

        trainer_cfg = OmegaConf.to_container(cfg.trainer, resolve=True)
        steps = trainer_cfg["max_steps"]
        trainer_cfg["val_check_interval"] = min(trainer_cfg.get("val_check_interval", steps), steps)
        if trainer_cfg.get("strategy") == "ddp" and getattr(method_cls, "trains_parts", False):
            trainer_cfg["strategy"] = "ddp_find_unused_parameters_true"
        optional = build_callbacks(cfg, steps)
        averaging = [instantiate(cfg.averaging)] if cfg.get("averaging") else []
        trainer = instantiate(
            trainer_cfg,
            logger=build_loggers(cfg) or False,
            # the clean stop saves after the weight average has taken this step (as Lightning
            # runs checkpoint callbacks last)
            callbacks=[
                ProblemProgress(problem),
                timer,
                *optional,
                ResumeState(cfg.seed),
                *averaging,
                stopper,
            ],
        )
        loader = torch.utils.data.DataLoader(_Steps(steps), batch_size=None)
        val_loader = torch.utils.data.DataLoader(_Steps(1), batch_size=None)
        try:
            trainer.fit(
                method, train_dataloaders=loader, val_dataloaders=val_loader, ckpt_path=resume
            )
        except BaseException:  # Lightning ends a SIGTERM with SIGTERMException (a SystemExit)
            if stopper.signum is None:
                raise
        if stopper.signum is not None:
            raise RunInterrupted(stopper.signum, stopper.saved_step, stopper.path)
        trainer.save_checkpoint(stopper.path)
        stopper.saved_step = int(trainer.global_step)  # a signal from here on points at it
        train_s = time.perf_counter() - t_start
        results["step"] = int(trainer.global_step)

        if trainer.is_global_zero:
            method.eval()
            method.to(method.device)
            metrics = _evaluate_and_baselines(cfg, problem, method, results)
            results["metrics"] = metrics
            save_figures(problem, method, out, history=method.history)
            method.extra_figures(out)
            problem.figures(method, out)
            results["timing"].update(_timing(timer, train_s, method.device))
        results["status"] = "ok"
        if resume is not None and writer:
            _mark_resumed(resume, out)
        return results
    except RunInterrupted as err:
        results["status"] = "interrupted"
        results["error"] = str(err)
        results["step"] = err.step
        results["checkpoint"] = str(err.checkpoint) if err.checkpoint else None
        log.error("run interrupted: %s", err)
        raise
    except Exception as err:
        results["status"] = "failed"
        results["error"] = str(err)
        if isinstance(err, TrainingDiverged):
            results["failed_step"] = err.step
        if not isinstance(err, (ConfigError, TrainingDiverged)):
            results["traceback"] = traceback.format_exc()
        log.error("run failed: %s", err)
        raise
    finally:
        stopper.uninstall()
        if results["status"] == "running":  # SystemExit, KeyboardInterrupt, ...
            results["status"] = "interrupted"
            results.setdefault("error", "interrupted before the run could record why")
        results["timing"]["wall_s"] = time.perf_counter() - t_start
        if timer.times and "step_ms" not in results["timing"]:
            results["timing"]["step_ms"] = timer.median_ms()
        if writer:
            write_json_atomic(out / "results.json", results)
        if writer:
            log_outcome(results, out)
        finish_wandb(results["status"] == "ok")
        if results["status"] == "ok" and writer:
            _print_summary(results, out)


def _job_overrides() -> list[str]:
    """The command-line overrides of this job (what distinguishes it within a sweep)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return []
    return [o for o in HydraConfig.get().overrides.task if not o.startswith("paths.")]


def _evaluate_and_baselines(cfg, problem, method, results) -> dict:
    from ot_experiments.baselines import pot_baselines
    from ot_experiments.metrics import evaluate

    n = int(cfg.get("eval_points", 2000))
    t0 = time.perf_counter()
    n_cost = int(cfg.get("cost_points", 0))
    metrics = evaluate(problem, method, n=n, seed=cfg.seed + 10_000, n_cost=n_cost)
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


def _timing(timer: StepTimer, train_s: float, device) -> dict:
    return {
        "train_s": train_s,
        "steps": len(timer.times),
        "step_ms": timer.median_ms(),
        "peak_mem_mb": peak_memory_mb(torch.device(device)),
    }


def _print_summary(results: dict, out: Path) -> None:
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
    lines.append(
        f"  step time {results['timing'].get('step_ms', float('nan')):.2f} ms, "
        f"wall {results['timing']['wall_s']:.1f} s"
    )
    print("\n".join(lines), flush=True)
