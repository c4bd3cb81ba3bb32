"""Console entry points: ``ot-train`` (= ``python train.py`` = ``python -m ot_experiments``) and
``ot-tables`` (the collector). The configs ship inside the package (``ot_experiments/conf``), so
an installed wheel runs outside the checkout."""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from ot_experiments.checks import CONF_DIR  # a folder, not a Python package: an absolute path


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def train(cfg: DictConfig) -> float | None:
    """Run one job; returns the value an Optuna sweeper would minimise, when configured.

    A job stopped by SIGTERM / SIGINT ends the process (exit status 128 + the signal's number,
    its one-sentence message on stderr) instead of failing just this job: Hydra would go on to
    the next job of a sweep, and a stopped sweep must stop.
    """
    from ot_experiments.callbacks import RunInterrupted
    from ot_experiments.runner import run

    try:
        results = run(cfg)
    except RunInterrupted as err:
        print(f"Error: {err}", file=sys.stderr)
        raise SystemExit(128 + err.signum) from None
    key = cfg.get("optimized_metric")
    return results["metrics"].get(key) if key else None


if __name__ == "__main__":
    train()
