"""wandb beyond Lightning's scalar curves: the whole config of a run, its final numbers and
figures, and a sweep's table. Offline by default; nothing here runs without a wandb run."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


def flat_config(cfg: DictConfig) -> dict:
    """The resolved config as ``{"method.mmd_weight": 100, "d": 2, ...}`` (no ``hydra`` keys),
    so a wandb sweep can be filtered by any key."""
    tree = OmegaConf.to_container(cfg, resolve=True)
    tree.pop("hydra", None)
    flat: dict = {}

    def walk(node, prefix: str) -> None:
        if isinstance(node, dict) and node:
            for key, value in node.items():
                walk(value, f"{prefix}{key}.")
        else:
            flat[prefix[:-1]] = (
                node if isinstance(node, (int, float, str, bool, type(None))) else str(node)
            )

    walk(tree, "")
    return flat


def summary_of(results: dict) -> dict:
    """results.json's numbers as wandb summary keys: ``final/<metric>``,
    ``baseline/<name>/<key>``, ``timing/<key>``, plus ``status`` and ``step``."""
    out = {"status": results.get("status"), "step": results.get("step")}
    out.update({f"final/{k}": v for k, v in results.get("metrics", {}).items()})
    for name, values in results.get("baselines", {}).items():
        out.update({f"baseline/{name}/{k}": v for k, v in values.items()})
    out.update({f"timing/{k}": v for k, v in results.get("timing", {}).items()})
    out.update({f"paper/{k}": v for k, v in results.get("reference", {}).items()})
    return {k: v for k, v in out.items() if isinstance(v, (int, float, str)) or v is None}


def log_outcome(results: dict, out: Path) -> None:
    """Put the run's final numbers in the wandb summary, and its figures and a copy of
    results.json (``ot_results.json``) in the wandb run, when one is active."""
    wandb = sys.modules.get("wandb")
    if wandb is None or getattr(wandb, "run", None) is None:
        return
    try:
        wandb.run.summary.update(summary_of(results))
        images = {f"figures/{p.stem}": wandb.Image(str(p)) for p in sorted(out.glob("*.png"))}
        if images:
            wandb.log(images)
        if (out / "results.json").exists():  # not named results.json: the collector reads those
            (Path(wandb.run.dir) / "ot_results.json").write_text((out / "results.json").read_text())
    except Exception as err:  # never let the logger hide the run's own outcome
        log.warning("could not log the outcome to wandb: %s", err)


def finish(ok: bool) -> None:
    """End the active wandb run (exit code 0 when the run is ok)."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        try:
            wandb.finish(exit_code=0 if ok else 1)
        except Exception as err:
            log.warning("could not finish the wandb run: %s", err)


def log_table(folder: Path, header: list[str], rows: list[list]) -> str:
    """Log a sweep's table as a ``wandb.Table`` in an offline run grouped by the sweep's name;
    returns the run's folder."""
    import wandb

    run = wandb.init(
        project="ot-experiments",
        group=folder.name,
        job_type="table",
        name=f"table_{folder.name}",
        dir=str(folder),
        mode="offline",
        reinit=True,  # a run of its own even when the calling process has one open
    )
    run.log({"table": wandb.Table(columns=header, data=[[str(c) for c in r] for r in rows])})
    path = run.dir
    run.finish()
    return path
