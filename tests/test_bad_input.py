"""Bad input and failures end in one sentence: unfinished or damaged run folders, nonsense sizes
and weights, diverging training, damaged data files, the output folder and the wandb login.

New names are imported inside the tests, so that against older code every test fails on its own.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from .conftest import FAST, ROOT


def fast(*overrides: str) -> list[str]:
    """FAST followed by ``overrides``, less the FAST entries they replace (a group chosen twice
    is an error) and less NCF's options when another method or an experiment is chosen."""
    keys = {o.split("=")[0] for o in overrides}
    other_method = any(
        o.startswith(("method=", "experiment=")) and o != "method=ncf" for o in overrides
    )
    kept = [
        o
        for o in FAST
        if o.split("=")[0] not in keys and not (other_method and o.startswith("method.n_"))
    ]
    return [*kept, *overrides]


def composed(*overrides: str):
    """The composed config of ``train.py <FAST> <overrides>`` (no Hydra run, nothing trained)."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=fast(*overrides))


def assert_one_sentence(proc, message: str) -> None:
    """train.py failed and said ``message`` on stderr, without a traceback or Hydra's wrapper."""
    assert proc.returncode != 0
    err = proc.stderr.strip()
    assert message in err, err
    assert "Traceback" not in err and "Error in call to target" not in err, err


# -- 2. load_run --------
@pytest.fixture
def run_folder(tmp_path) -> Path:
    """A run folder as train.py leaves it (config, results.json, checkpoint), built directly."""
    from ot_experiments.runner import build_method, build_problem

    folder = tmp_path / "run"
    cfg = composed("network=mlp", "network.hidden=[8,8]")
    (folder / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, folder / ".hydra" / "config.yaml")
    method = build_method(cfg, build_problem(cfg))
    (folder / "checkpoints").mkdir()
    torch.save(
        {"state_dict": method.state_dict(), "global_step": 6},
        folder / "checkpoints" / "last.ckpt",
    )
    (folder / "results.json").write_text(json.dumps({"status": "ok", "metrics": {}}))
    return folder


def set_results(folder: Path, **results) -> None:
    (folder / "results.json").write_text(json.dumps(results))


def test_load_run_loads_a_finished_run(run_folder):
    import ot_experiments

    run = ot_experiments.load_run(run_folder)
    assert run.transport(torch.zeros(3, 2)).shape == (3, 2)


@pytest.mark.parametrize(
    ("results", "said"),
    [
        ({"status": "interrupted", "step": 3}, "status 'interrupted' at step 3"),
        ({"status": "running"}, "status 'running'"),
    ],
)
def test_load_run_refuses_an_unfinished_run_unless_allowed(run_folder, results, said):
    import ot_experiments
    from ot_experiments.errors import RunFolderError

    set_results(run_folder, **results)
    with pytest.raises(RunFolderError, match=re.escape(said)) as err:
        ot_experiments.load_run(run_folder)
    assert "allow_unfinished=True" in str(err.value) and "\n" not in str(err.value)
    with pytest.warns(UserWarning, match=re.escape(said)):
        run = ot_experiments.load_run(run_folder, allow_unfinished=True)
    assert run.transport(torch.zeros(3, 2)).shape == (3, 2)


def test_load_run_on_a_failed_run_names_status_step_and_error(run_folder):
    import ot_experiments
    from ot_experiments.errors import RunFolderError

    error = "training diverged at step 0: the loss is nan; lower the learning rate"
    set_results(run_folder, status="failed", failed_step=0, error=error)
    (run_folder / "checkpoints" / "last.ckpt").unlink()
    with pytest.raises(RunFolderError, match=re.escape(f"status 'failed' at step 0: {error}")):
        ot_experiments.load_run(run_folder)
    # allowed, the missing checkpoint is named (not a raw FileNotFoundError)
    with pytest.raises(RunFolderError, match=r"last\.ckpt does not exist"):
        ot_experiments.load_run(run_folder, allow_unfinished=True)


def test_load_run_on_a_failed_config_is_one_sentence(run_folder):
    import ot_experiments
    from ot_experiments.errors import RunFolderError

    set_results(run_folder, status="failed", error="d=0 is not valid")
    cfg = OmegaConf.load(run_folder / ".hydra" / "config.yaml")
    cfg.problem.preset = "no_such_preset"
    OmegaConf.save(cfg, run_folder / ".hydra" / "config.yaml")
    with pytest.raises(RunFolderError, match="status 'failed': d=0 is not valid"):
        ot_experiments.load_run(run_folder)
    with pytest.raises(RunFolderError, match=r"config\.yaml cannot be rebuilt") as err:
        ot_experiments.load_run(run_folder, allow_unfinished=True)
    assert "Error in call to target" not in str(err.value)


def test_load_run_names_a_missing_or_damaged_file(run_folder, tmp_path):
    import ot_experiments
    from ot_experiments.errors import RunFolderError

    results = run_folder / "results.json"
    results.write_text('{"status": "ok", "metr')
    with pytest.raises(RunFolderError, match=r"results\.json is damaged"):
        ot_experiments.load_run(run_folder)
    results.unlink()
    with pytest.raises(RunFolderError, match=r"results\.json does not exist"):
        ot_experiments.load_run(run_folder)
    with pytest.warns(UserWarning, match="no results.json"):
        ot_experiments.load_run(run_folder, allow_unfinished=True)
    set_results(run_folder, status="ok")
    ckpt = run_folder / "checkpoints" / "last.ckpt"
    ckpt.write_bytes(ckpt.read_bytes()[:100])
    with pytest.raises(RunFolderError, match=r"last\.ckpt is damaged"):
        ot_experiments.load_run(run_folder)
    (run_folder / ".hydra" / "config.yaml").write_text("d: [unclosed\n")
    with pytest.raises(RunFolderError, match=r"config\.yaml is damaged"):
        ot_experiments.load_run(run_folder)
    with pytest.raises(RunFolderError, match="does not exist"):
        ot_experiments.load_run(tmp_path / "nowhere")
