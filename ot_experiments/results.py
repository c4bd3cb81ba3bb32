"""The run folder: results.json (atomic), environment facts, and reloading a finished run."""

from __future__ import annotations

import json
import os
import platform
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch


def write_json_atomic(path: str | Path, data: dict) -> None:
    """Write ``data`` as JSON to ``path`` via a temporary file and a rename (never half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp_", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2, default=_jsonable)
        f.write("\n")
    os.replace(tmp, path)


def _jsonable(obj: Any):
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    return str(obj)


def library_versions() -> dict[str, str]:
    """Versions of Python and the main libraries."""
    import hydra
    import numpy
    import ot
    import pytorch_lightning

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "pytorch_lightning": pytorch_lightning.__version__,
        "hydra": hydra.__version__,
        "pot": ot.__version__,
        "numpy": numpy.__version__,
    }


def device_description(accelerator: str | None = None) -> str:
    """A short text naming the device the run used."""
    if accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available():
        return f"cuda: {torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}"
    return f"cpu: {platform.processor() or platform.machine()} ({os.cpu_count()} cores)"


@dataclass
class Run:
    """A finished run reloaded from its folder."""

    folder: Path
    cfg: Any
    results: dict
    problem: Any
    method: Any

    def transport(self, x: torch.Tensor) -> torch.Tensor:
        return self.method.transport(x)

    def inverse_transport(self, y: torch.Tensor) -> torch.Tensor:
        return self.method.inverse_transport(y)


def load_run(folder: str | Path, checkpoint: str = "last.ckpt") -> Run:
    """Reload a finished run: its config, results, problem and trained method (CPU, eval mode).

    Example
    -------
    >>> run = load_run("outputs/runs/<run>")          # doctest: +SKIP
    >>> y = run.transport(run.problem.sample_source(10))  # doctest: +SKIP
    """
    from omegaconf import OmegaConf

    from ot_experiments.runner import build_method, build_problem

    folder = Path(folder)
    cfg_path = folder / ".hydra" / "config.yaml"
    if not cfg_path.exists():
        raise FileNotFoundError(f"{folder} is not a run folder: it has no .hydra/config.yaml")
    cfg = OmegaConf.load(cfg_path)
    results_path = folder / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    problem = build_problem(cfg)
    method = build_method(cfg, problem)
    ckpt = torch.load(folder / "checkpoints" / checkpoint, map_location="cpu", weights_only=False)
    method.load_state_dict(ckpt["state_dict"])
    method.eval()
    return Run(folder, cfg, results, problem, method)
