"""The newcomer's walk-through in docs/extending.md works as written: its problem class and
YAML run, in process, with every method whose needs the problem meets."""

from __future__ import annotations

import math
import re
import sys
import types

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from ot_experiments.checks import CONF_DIR

from .conftest import ROOT


def _blocks(language: str) -> list[str]:
    text = (ROOT / "docs" / "extending.md").read_text()
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


@pytest.fixture
def scaled_shift(monkeypatch):
    """The walk-through's problem module, importable as the YAML's _target_ says."""
    code = next(b for b in _blocks("python") if "class ScaledShiftProblem" in b)
    module = types.ModuleType("ot_experiments.problems.scaled_shift")
    exec(compile(code, "docs/extending.md", "exec"), module.__dict__)
    monkeypatch.setitem(sys.modules, module.__name__, module)
    conf = next(b for b in _blocks("yaml") if "ScaledShiftProblem" in b)
    return yaml.safe_load(conf)


@pytest.mark.parametrize("method", ["ncf", "gradnet", "qflow", "lagrangian"])
def test_walkthrough_problem_runs_with_every_method(scaled_shift, method, tmp_path):
    from ot_experiments.runner import run

    overrides = [
        f"method={method}",
        "problem=crowd_motion",  # a problem no method has a recipe for, as problem=scaled_shift
        "d=2",
        "debug=fast",
        "logger=none",
        "threads=1",
        f"paths.output_dir={tmp_path}",
        "inference_points=1000",
    ]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    OmegaConf.set_struct(cfg, False)
    cfg.problem = scaled_shift  # the walk-through's YAML in place of conf/problem/<name>.yaml
    results = run(cfg)
    assert results["status"] == "ok" and results["problem"] == "scaled_shift"
    assert math.isfinite(results["metrics"]["uvp_fwd"])  # ground_truth: offered, so scored
    # w2_sq_true of the closed form: shift² + d (1 − scale)² = 4 + 2·0.25
    assert results["metrics"]["w2_sq_true"] == pytest.approx(4.5)
