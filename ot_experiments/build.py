"""Building a run's objects from its config: problem, method (with the problem's hints for
its ``auto`` options), loggers and callbacks; and this job's command-line overrides."""

from __future__ import annotations

import logging
import sys
import warnings

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from ot_experiments.checks import config_errors_alone
from ot_experiments.tracking import flat_config

META_KEYS = ("name", "lr")  # method/problem keys that are not constructor arguments


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
            tags = [*(c.get("tags") or []), *job_overrides()]
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


def job_overrides() -> list[str]:
    """The command-line overrides of this job (what distinguishes it within a sweep)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return []
    return [o for o in HydraConfig.get().overrides.task if not o.startswith("paths.")]


class _Steps(torch.utils.data.Dataset):
    """One item per training step: methods draw their own samples from the problem."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


# Lightning messages that are wrong for this framework's run folders, silenced so that a log
# shows only what a reader should act on:
LIGHTNING_NOISE = (
    # every run folder already holds results.json; a resumed run keeps its earlier metrics.csv
    # rows (run_folder.restore_metrics_history), so nothing of value is deleted
    r"Experiment logs directory .* exists and is not empty",
    # the step loader is a range of indices; ResumeState restores the random states, so a
    # resumed run continues the uninterrupted run's stream (tests/test_resume.py)
    r"You're resuming from a checkpoint that ended before the epoch ended",
    # raised inside Lightning by its own use of torch's pytree API
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
)


class _DropTip(logging.Filter):
    """Drops Lightning's advertisement for its cloud logger (printed at every run)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage()


def quiet_lightning() -> None:
    """Silence the messages of ``LIGHTNING_NOISE`` and Lightning's cloud-logger tip."""
    for pattern in LIGHTNING_NOISE:
        warnings.filterwarnings("ignore", message=pattern)
    for name in ("pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero"):
        target = logging.getLogger(name)
        if not any(isinstance(f, _DropTip) for f in target.filters):
            target.addFilter(_DropTip())


def build_trainer(
    cfg: DictConfig,
    problem,
    method_cls: type,
    first: list[pl.Callback],
    last: list[pl.Callback],
) -> tuple[pl.Trainer, tuple]:
    """The Lightning trainer of ``cfg.trainer`` with loggers and callbacks, and its
    (train, validation) loaders of step indices.

    Callback order: the problem's progress, ``first`` (the step timer), the ``callbacks``
    group, the resume state, the weight average, then ``last`` (the clean stop saves after
    the average has taken the step, as Lightning runs checkpoint callbacks last). A DDP run of
    a method that trains one part per step (``trains_parts``) looks for unused parameters.
    """
    from ot_experiments.callbacks import ProblemProgress, ResumeState

    quiet_lightning()

    trainer_cfg = OmegaConf.to_container(cfg.trainer, resolve=True)
    steps = trainer_cfg["max_steps"]
    trainer_cfg["val_check_interval"] = min(trainer_cfg.get("val_check_interval", steps), steps)
    if trainer_cfg.get("strategy") == "ddp" and getattr(method_cls, "trains_parts", False):
        trainer_cfg["strategy"] = "ddp_find_unused_parameters_true"
    averaging = [instantiate(cfg.averaging)] if cfg.get("averaging") else []
    callbacks = [
        ProblemProgress(problem),
        *first,
        *build_callbacks(cfg, steps),
        ResumeState(cfg.seed),
        *averaging,
        *last,
    ]
    trainer = instantiate(trainer_cfg, logger=build_loggers(cfg) or False, callbacks=callbacks)
    # Each pass over a DataLoader draws its workers' base seed from the given generator, by
    # default the global one that training samples from. The validation loader gets its own,
    # so that how often a run validates does not shift the training's random stream.
    loaders = (
        torch.utils.data.DataLoader(_Steps(steps), batch_size=None),
        torch.utils.data.DataLoader(_Steps(1), batch_size=None, generator=torch.Generator()),
    )
    return trainer, loaders
