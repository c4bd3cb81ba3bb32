"""One run: check the config, build problem and method, train with Lightning, evaluate, and
leave a self-describing folder (results.json, metrics.csv, checkpoint, figures).

``run`` is the task wrapper: whatever happens, results.json is written and a wandb run is
finished, so one failed job never spoils a sweep. The parts live in their own modules:
``checks`` (config and compatibility), ``build`` (objects from the config), ``run_folder``
(resume, overwrite protection) and ``summary`` (results dict, final evaluation, printout).
"""

from __future__ import annotations

import logging
import time
import traceback
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from ot_experiments.build import build_method, build_problem, build_trainer, problem_hints
from ot_experiments.callbacks import GracefulStop, RunInterrupted, StepTimer
from ot_experiments.checks import check_compatible, validate_config
from ot_experiments.errors import ConfigError, TrainingDiverged
from ot_experiments.references import reference_for
from ot_experiments.results import write_json_atomic
from ot_experiments.run_folder import (
    finished_run,
    mark_resumed,
    metrics_history,
    refuse_existing_run,
    resolve_checkpoint,
    restore_metrics_history,
)
from ot_experiments.summary import evaluate_and_baselines, new_results, print_summary, timing
from ot_experiments.tracking import finish as finish_wandb
from ot_experiments.tracking import log_outcome

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict:
    """Train and evaluate one configuration; return the results dict (also in results.json).

    ``results.json`` exists from the start (``status: running``, start time, host, pid) and ends
    ``ok``, ``failed`` or ``interrupted`` (SIGTERM / SIGINT: checkpoint saved, step recorded;
    resume with ``ckpt_path=``). Only rank 0 writes it. Raises ConfigError / TrainingDiverged /
    RunInterrupted (one-sentence messages) or the original error after results.json has recorded
    the outcome.
    """
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    writer = rank_zero_only.rank == 0
    auto = cfg.get("ckpt_path") == "auto"
    if auto and (done := finished_run(out)) is not None:
        log.info("%s holds a finished run (status ok): nothing to do", out)
        return done  # so that rerunning a stopped sweep with ckpt_path=auto finishes only the rest
    resume = resolve_checkpoint(cfg.get("ckpt_path"), out)
    if writer:
        refuse_existing_run(out, resume, auto=auto)
    results = new_results(cfg, resume)
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
        method_cls = get_class(cfg.method._target_)
        check_compatible(results["method"], method_cls, results["problem"], problem)
        results["label"] = problem.label
        settings = OmegaConf.to_container(cfg.method, resolve=True)
        results["reference"] = reference_for(
            results["method"], results["problem"], problem.label, cfg.d, settings
        )
        results["hints"] = problem_hints(cfg, problem)
        if results["hints"] and writer:
            shown = " ".join(f"method.{k}={v}" for k, v in results["hints"].items())
            log.info("settings from problem %s (for auto): %s", results["problem"], shown)
        method = build_method(cfg, problem)
        history = metrics_history(out, resume) if writer else None
        trainer, loaders = build_trainer(cfg, problem, method_cls, first=[timer], last=[stopper])
        if writer:
            restore_metrics_history(trainer.loggers, out, history)
        try:
            trainer.fit(method, *loaders, ckpt_path=resume)
        except BaseException:  # Lightning ends a SIGTERM with SIGTERMException (a SystemExit)
            if stopper.signum is None:
                raise
        if stopper.signum is not None:
            raise RunInterrupted(stopper.signum, stopper.saved_step, stopper.path)
        if resume is not None and not timer.times:
            log.warning(
                "the checkpoint %s is already at step %d, trainer.max_steps: nothing was "
                "trained; pass a larger trainer.max_steps to train on",
                resume,
                trainer.global_step,
            )
        trainer.save_checkpoint(stopper.path)
        stopper.saved_step = int(trainer.global_step)  # a signal from here on points at it
        train_s = timer.run_s()
        results["step"] = int(trainer.global_step)
        if trainer.is_global_zero:
            _finish(cfg, problem, method, results, out)
            results["timing"].update(timing(timer, train_s, method.device))
        results["status"] = "ok"
        if resume is not None and writer:
            mark_resumed(resume, out)
        return results
    except RunInterrupted as err:
        results.update(status="interrupted", error=str(err), step=err.step)
        results["checkpoint"] = str(err.checkpoint) if err.checkpoint else None
        log.error("run interrupted: %s", err)
        raise
    except Exception as err:
        results.update(status="failed", error=str(err))
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
            log_outcome(results, out)
        finish_wandb(results["status"] == "ok")
        if results["status"] == "ok" and writer:
            print_summary(results, out)


def _finish(cfg: DictConfig, problem, method, results: dict, out: Path) -> None:
    """Final metrics and baselines into ``results``; the run's figures into ``out``."""
    from ot_experiments.plotting import save_figures

    method.eval()
    method.to(method.device)
    results["metrics"] = evaluate_and_baselines(cfg, problem, method, results)
    save_figures(problem, method, out, history=method.history)
    method.extra_figures(out)
    problem.figures(method, out)
