"""Console entry points: ``ot-train`` (= ``python train.py`` = ``python -m ot_experiments``) and
``ot-tables`` (the collector). The configs ship inside the package (``ot_experiments/conf``), so
an installed wheel runs outside the checkout."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from ot_experiments.checks import CONF_DIR  # a folder, not a Python package: an absolute path


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def train(cfg: DictConfig) -> float | None:
    """Run one job; returns the value an Optuna sweeper would minimise, when configured."""
    from ot_experiments.runner import run

    results = run(cfg)
    key = cfg.get("optimized_metric")
    return results["metrics"].get(key) if key else None


if __name__ == "__main__":
    train()
