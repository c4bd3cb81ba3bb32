"""The run folder: results.json (atomic), environment facts, and reloading a finished run."""

from __future__ import annotations

import json
import os
import platform
import tempfile
import warnings
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


def load_run(
    folder: str | Path, checkpoint: str = "last.ckpt", allow_unfinished: bool = False
) -> Run:
    """Reload a finished run: its config, results, problem and trained method (CPU, eval mode).

    Parameters
    ----------
    folder : str or Path
        The run folder (holding ``.hydra/config.yaml``, ``results.json``, ``checkpoints/``).
    checkpoint : str
        File name in ``checkpoints/``.
    allow_unfinished : bool
        Load a run whose ``results.json`` status is not ``ok`` (running, interrupted, failed, or
        no results.json) from its last checkpoint, with a warning; by default such a run raises.

    Raises
    ------
    RunFolderError
        One sentence naming the file that is missing or damaged, or the unfinished status.

    Example
    -------
    >>> run = load_run("outputs/runs/<run>")          # doctest: +SKIP
    >>> y = run.transport(run.problem.sample_source(10))  # doctest: +SKIP
    """
    from hydra.errors import InstantiationException
    from omegaconf import OmegaConf

    from ot_experiments.build import build_method, build_problem
    from ot_experiments.errors import ConfigError, RunFolderError

    folder = Path(folder)
    if not folder.is_dir():
        raise RunFolderError(f"run folder {folder} does not exist: give the folder of a run")
    cfg_path = folder / ".hydra" / "config.yaml"
    if not cfg_path.is_file():
        raise RunFolderError(f"{folder} is not a run folder: it has no .hydra/config.yaml")
    try:
        cfg = OmegaConf.load(cfg_path)
    except Exception as err:
        raise RunFolderError(
            f"{cfg_path} is damaged ({_first_line(err)}): the run cannot be rebuilt without it"
        ) from None
    results = _read_results(folder / "results.json", allow_unfinished)
    status = results.get("status", "unknown")
    unfinished = _unfinished_description(results) if status != "ok" else None
    if unfinished and not allow_unfinished:
        raise RunFolderError(
            f"run {folder} did not finish ({unfinished}): its checkpoint is not a trained "
            "model; pass allow_unfinished=True to load it anyway"
        )
    try:
        problem = build_problem(cfg)
        method = build_method(cfg, problem)
    except (ConfigError, InstantiationException) as err:
        cause = err  # the constructor's own error, not Hydra's "Error in call to target"
        while isinstance(cause, InstantiationException) and cause.__cause__ is not None:
            cause = cause.__cause__
        raise RunFolderError(
            f"the config {cfg_path} cannot be rebuilt with this code: {_first_line(cause)}"
        ) from err
    ckpt_path = folder / "checkpoints" / checkpoint
    if not ckpt_path.is_file():
        raise RunFolderError(
            f"{ckpt_path} does not exist: the run (status {status!r}) saved no such checkpoint"
        )
    try:
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        state = ckpt["state_dict"]
    except Exception as err:
        raise RunFolderError(
            f"{ckpt_path} is damaged ({type(err).__name__}): it is not a readable checkpoint; "
            "rerun the job to make a new one"
        ) from None
    try:
        method.load_state_dict(state)
    except RuntimeError as err:
        raise RunFolderError(
            f"{ckpt_path} does not fit the model of {cfg_path} ({_first_line(err)})"
        ) from None
    method.eval()
    if unfinished:
        step = ckpt.get("global_step")
        at = f", checkpoint of step {step}" if step is not None else ""
        warnings.warn(
            f"loading the unfinished run {folder} ({unfinished}{at}): its maps are not those "
            "of a finished training",
            stacklevel=2,
        )
    return Run(folder, cfg, results, problem, method)


def _read_results(path: Path, allow_unfinished: bool) -> dict:
    """results.json as a dict; ``{}`` when it is missing and unfinished runs are allowed."""
    from ot_experiments.errors import RunFolderError

    if not path.is_file():
        if allow_unfinished:
            return {}
        raise RunFolderError(
            f"{path} does not exist, so whether the run finished is unknown (it may have been "
            "killed); pass allow_unfinished=True to load its last checkpoint anyway"
        )
    try:
        results = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RunFolderError(
            f"{path} is damaged ({_first_line(err)}): restore it or rerun the job"
        ) from None
    if not isinstance(results, dict):
        raise RunFolderError(
            f"{path} is damaged (a JSON {type(results).__name__}, not an object): restore it "
            "or rerun the job"
        )
    return results


def _unfinished_description(results: dict) -> str:
    """E.g. "status 'failed' at step 12: training diverged ..." from results.json."""
    if not results:
        return "no results.json"
    text = f"status {results.get('status', 'unknown')!r}"
    step = results.get("failed_step", results.get("step"))
    if step is not None:
        text += f" at step {step}"
    if results.get("error"):
        text += f": {_first_line(results['error'])}"
    return text


def _first_line(err: object) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__
