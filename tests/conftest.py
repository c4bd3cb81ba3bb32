"""Shared helpers: run train.py as a user would, in a temporary outputs folder."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

if os.environ.get("PYTEST_XDIST_WORKER"):
    # one thread per pytest-xdist worker (and its train.py subprocesses): several multi-threaded
    # workers on a few cores run many times slower than the serial suite
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

# A tiny budget that still exercises training, validation, evaluation, figures and logging.
# (debug=fast: 6 steps, validation every 3, 200 evaluation points; the rest is NCF's sizes)
FAST = ["debug=fast", "method.n_mmd=200", "method.n_collocation=100", "logger=csv"]


def train(tmp_path: Path, *overrides: str, multirun: bool = False, check: bool = True):
    """Run ``python train.py`` with outputs under ``tmp_path``; return the CompletedProcess."""
    cmd = [
        sys.executable,
        "train.py",
        *(["-m"] if multirun else []),
        f"paths.output_root={tmp_path}",
        *overrides,
    ]
    env = {**os.environ, "WANDB_SILENT": "true", "PYTHONHASHSEED": "0"}
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"train.py failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def run_folders(tmp_path: Path) -> list[Path]:
    """Run folders (those holding a results.json) under ``tmp_path``, sorted."""
    return sorted(p.parent for p in tmp_path.rglob("results.json"))


def run_metric(tmp_path: Path, key: str, *overrides: str) -> float:
    """Train once into ``tmp_path`` and return ``metrics[key]`` of its results.json."""
    train(tmp_path, *overrides)
    (folder,) = run_folders(tmp_path)
    return read_results(folder)["metrics"][key]


def read_results(folder: Path) -> dict:
    return json.loads((folder / "results.json").read_text())


@pytest.fixture(scope="session")
def fast_run(tmp_path_factory) -> Path:
    """One tiny default NCF run on a 2-D Gaussian pair, shared by several tests."""
    tmp = tmp_path_factory.mktemp("fast_run")
    train(tmp, *FAST)
    (folder,) = run_folders(tmp)
    return folder


def load_script(name: str):
    """The module of ``scripts/<name>.py`` (scripts are not a package)."""
    path = Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
