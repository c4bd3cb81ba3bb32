"""Entry point: `python train.py method=ncf problem=gaussian d=64` (see README)."""

import hydra
from omegaconf import DictConfig

import ot_experiments  # noqa: F401  (registers the config resolvers)
from ot_experiments.runner import run


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    """Run one job; returns the value an Optuna sweeper would minimise, when configured."""
    results = run(cfg)
    key = cfg.get("optimized_metric")
    return results["metrics"].get(key) if key else None


if __name__ == "__main__":
    main()
