"""Bad input and failures end in one sentence: unfinished or damaged run folders, nonsense sizes
and weights, diverging training, the output folder and the wandb login (damaged data files:
test_bad_data_files.py).

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

from ot_experiments.errors import ConfigError, TrainingDiverged
from ot_experiments.methods.base import OTMethod
from ot_experiments.problems import GaussianProblem

from .conftest import FAST, ROOT, read_results, run_folders, train


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
    from ot_experiments.checks import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
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
    from ot_experiments.build import build_method, build_problem

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


# -- 3. sizes, counts and weights --------
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            "eval_points=1",
            "eval_points=1 is too small: UVP and the energy distance need at least 100 samples; "
            "use eval_points >= 100",
        ),
        ("eval_points=0", "eval_points=0 is too small"),
        ("method.eval_points=10", "method.eval_points=10 is too small"),
        ("inference_points=0", "inference_points=0 is not valid: it is a count"),
        ("mc_points=-1", "mc_points=-1 is not valid"),
        ("method.n_mmd=0", "method.n_mmd=0 is not valid: it is a count; use an integer >= 1"),
        ("method.n_collocation=2.5", "method.n_collocation=2.5 is not valid"),
        ("threads=-1", "threads=-1 is not valid: use threads=null"),
        ("threads=0", "threads=0 is not valid"),
        ("network.hidden=[]", "network.hidden=[] is not valid: a network needs at least one"),
        ("network=mlp network.hidden=[64,0]", "network.hidden=[64,0] is not valid"),
        ("method.mmd_weight=-1", "method.mmd_weight=-1 is not valid: it is a loss weight"),
        ("network=resnet_tanh network.depth=0", "network.depth=0 is not valid"),
        ("method=gradnet method.batch_size=0", "method.batch_size=0 is not valid"),
        ("method=lagrangian method.h1_weight=-0.5", "method.h1_weight=-0.5 is not valid"),
        ("method=lagrangian method.n_substeps=0", "method.n_substeps=0 is not valid"),
        ("method=lagrangian method.obstacle_ramp_steps=-1", "number of steps"),
        ("method=lagrangian network.width=0", "network.width=0 is not valid"),
        ("method=qflow method.fm.batch=0", "method.fm.batch=0 is not valid"),
        ("method=qflow method.ratio.times=0", "method.ratio.times=0 is not valid"),
        ("method=qflow method.ratio.steps=-1", "method.ratio.steps=-1 is not valid"),
        ("method=qflow method.classifier.hidden=[0]", "method.classifier.hidden=[0]"),
        ("method=qflow method.refine.rounds=-1", "method.refine.rounds=-1 is not valid"),
        ("problem=crowd_motion method=lagrangian problem.lambda_kl=-1", "problem.lambda_kl=-1"),
        ("problem=mnist_morphing method=gradnet problem.eval_samples=0", "eval_samples=0"),
        # the T3 recipe's mGradNet-M sizes reach a network without them
        (
            "problem=mnist_morphing method=gradnet network=mlp",
            "network.modules is not an option of MLP (it takes hidden, activation, beta)",
        ),
        ("network=mlp +network.rank=2", "drop it with ~network.rank"),
    ],
)
def test_sizes_counts_and_weights_are_checked_before_training(overrides, message):
    from ot_experiments.checks import validate_config

    with pytest.raises(ConfigError) as err:
        validate_config(composed(*overrides.split()))
    assert message in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "overrides",
    [
        "",
        "method=lagrangian method.obstacle_ramp_steps=0",  # 0: no ramp (documented)
        "method=qflow method.ratio.steps=0 method.refine.enabled=false method.refine.rounds=0",
        "method=gradnet problem=mnist_morphing problem.bandwidth_steps=null",
        "method=lagrangian method.kl_weight=auto",
        "threads=1",
        "method.mmd_weight=0",
        "experiment=t1a budget=paper",
        "experiment=t6",
        "method=ncf problem=gaussian network=mlp",  # the recipe's term is the method's
        "problem=mnist_morphing method=gradnet",
        "problem=mnist_morphing method=gradnet network=mgradnet_c ~network.modules",
    ],
)
def test_sensible_values_pass_the_checks(overrides):
    from ot_experiments.checks import validate_config

    validate_config(composed(*overrides.split()))


def test_eval_points_too_small_stops_before_training(tmp_path):
    proc = train(tmp_path, *fast("eval_points=1", "threads=1"), check=False)
    assert_one_sentence(proc, "eval_points=1 is too small")
    (folder,) = run_folders(tmp_path)
    res = read_results(folder)
    assert res["status"] == "failed" and not res["timing"].get("step_ms")


def test_zero_mmd_samples_is_one_sentence(tmp_path):
    proc = train(tmp_path, *fast("method.n_mmd=0", "threads=1"), check=False)
    assert_one_sentence(proc, "method.n_mmd=0 is not valid")


# -- 3. divergence --------
class _Fake(OTMethod):
    """A method whose loss and maps the test sets."""

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__(GaussianProblem(dim=2), optimizer=None)
        self.scale = scale

    def transport(self, x):
        return x * self.scale

    def training_loss(self, step):
        raise NotImplementedError


def test_loss_explosion_stops_training_with_the_step():
    method = _Fake()
    for value in [3.0, 2.0, 1.0, 0.5, 1e-3, 1e2, 5e3]:  # healthy ups and downs pass
        method.check_loss(torch.tensor(value))
    for value in [4e8, 2e8, 1.0]:  # a spike that recovers (T3 at lr 1) passes
        method.check_loss(torch.tensor(value))
    method.check_loss(torch.tensor(4e8))
    method.check_loss(torch.tensor(4e8))
    with pytest.raises(TrainingDiverged, match="over 1e\\+06 times its early size") as err:
        method.check_loss(torch.tensor(4e8))  # the third exploded step in a row
    assert err.value.step == 0 and "lower the learning rate" in str(err.value)
    with pytest.raises(TrainingDiverged, match="the loss is nan"):
        _Fake().check_loss(torch.tensor(float("nan")))
    small = _Fake()
    small.check_loss(torch.tensor(1e-4))
    small.check_loss(torch.tensor(9e5))  # under the absolute floor of 1e6: still fine


def test_maps_far_outside_the_data_stop_training():
    _Fake(scale=1.0).check_maps()
    _Fake(scale=50.0).check_maps()  # wrong, but not absurd
    with pytest.raises(TrainingDiverged, match="transported points lie .* over 1000 times"):
        _Fake(scale=1e7).check_maps()
    with pytest.raises(TrainingDiverged, match="not finite"):
        _Fake(scale=float("nan")).check_maps()


@pytest.mark.parametrize(
    "overrides",
    [
        # the loss stays finite (8e15 at step 1), so only the explosion guard sees it
        [
            "method=lagrangian",
            "trainer.max_steps=20",
            "method.batch_size=128",
            "method.h1_points=200",
            "method.eval_points=100",
            "eval_points=150",
        ],
        # flow-matching loss 0.46 -> 6e11 at step 1 (qflow has its own training_step)
        [
            "method=qflow",
            "trainer.max_steps=20",
            "method.eval_points=200",
            "method.refine.clf_warmup_steps=2",
            "method.refine.flow_updates=2",
        ],
    ],
    ids=["lagrangian", "qflow"],
)
def test_huge_learning_rate_fails_instead_of_ok(tmp_path, overrides):
    proc = train(tmp_path, *fast(*overrides, "optimizer.lr=1e6", "threads=1"), check=False)
    assert_one_sentence(proc, "training diverged at step")
    assert "lower the learning rate" in proc.stderr
    (folder,) = run_folders(tmp_path)
    res = read_results(folder)
    # exploded from step 1: stopped at step 3 (three in a row) or earlier on a NaN
    assert res["status"] == "failed" and 1 <= res["failed_step"] <= 3


# -- 4. output, logging, constructors, compatibility --------
def test_unwritable_output_folder_is_one_sentence(tmp_path):
    from ot_experiments.checks import check_output_dir

    check_output_dir(tmp_path / "new" / "run")  # creatable: fine, and nothing is made
    assert list(tmp_path.iterdir()) == []
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="is a file"):
        check_output_dir(blocker / "run")
    with pytest.raises(ConfigError, match="/proc is not writable"):
        check_output_dir("/proc/forbidden")
    # the check is a Hydra callback registered in conf/hydra/default.yaml
    overrides = ["hydra.run.dir=/proc/forbidden", "logger=csv", "threads=1"]
    proc = train(tmp_path, *overrides, check=False)
    assert_one_sentence(proc, "hydra.run.dir=/proc/forbidden cannot be created")
    assert len(proc.stderr.strip().splitlines()) == 1


def test_online_wandb_without_a_key_is_refused(tmp_path):
    from ot_experiments.checks import check_wandb_login

    cfg = composed("logger=wandb", "logger.wandb.offline=false")
    home = {"HOME": str(tmp_path)}
    with pytest.raises(ConfigError) as err:
        check_wandb_login(cfg, environ=home)
    msg = str(err.value)
    assert "wandb login" in msg and "WANDB_API_KEY" in msg and "logger.wandb.offline=true" in msg
    check_wandb_login(cfg, environ={**home, "WANDB_API_KEY": "x" * 40})
    check_wandb_login(cfg, environ={**home, "WANDB_MODE": "offline"})
    check_wandb_login(composed("logger=wandb"), environ=home)  # offline by default
    (tmp_path / ".netrc").write_text("machine api.wandb.ai\n  login user\n  password abc\n")
    (tmp_path / ".netrc").chmod(0o600)
    check_wandb_login(cfg, environ=home)


def test_online_wandb_without_a_key_stops_before_training(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    for var in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "NETRC", "WANDB_MODE"):
        monkeypatch.delenv(var, raising=False)
    overrides = fast("logger=wandb", "logger.wandb.offline=false", "threads=1")
    proc = train(tmp_path, *overrides, check=False)
    assert_one_sentence(proc, "logger.wandb.offline=false needs a wandb API key")
    assert "Enter your choice" not in proc.stdout + proc.stderr


def test_constructor_errors_are_shown_alone(tmp_path):
    from ot_experiments.build import build_method, build_problem

    with pytest.raises(ConfigError, match="two-dimensional"):
        build_problem(composed("problem=toy2d", "d=3"))
    cfg = composed("method=gradnet", "method.loss=l3")
    with pytest.raises(ConfigError, match="method.loss='l3' is not valid"):
        build_method(cfg, build_problem(cfg))
    proc = train(tmp_path, *fast("problem=toy2d", "d=3", "threads=1"), check=False)
    assert_one_sentence(proc, "two-dimensional")


def test_gradnet_problems_agree_in_docs_check_and_message():
    from ot_experiments.checks import check_compatible, problems_offering
    from ot_experiments.methods.gradnet import GradNetOT
    from ot_experiments.problems import Toy2DProblem

    fits = problems_offering(GradNetOT.needs)
    assert {"gaussian", "mnist_morphing", "toy2d_classes", "dre_mixtures", "crowd_motion"} <= set(
        fits
    )
    # the method's page names exactly these (generated from the problems' `offers`)
    page = " ".join((ROOT / "docs" / "methods" / "gradnet.md").read_text().split())
    sentence = re.search(r"both log-densities, so it runs on ([^;]*);", page)
    assert sentence, "docs/methods/gradnet.md names the problems with both log-densities"
    assert re.findall(r"`(\w+)`", sentence.group(1)) == fits
    # ... and so does the refusal
    with pytest.raises(ConfigError) as err:
        check_compatible("gradnet", GradNetOT, "toy2d", Toy2DProblem(2))
    assert str(err.value).endswith("problems that fit: " + ", ".join(fits))
    # problem configs in the global package (color_transfer, latent) are found too
    assert {"color_transfer", "latent"} <= set(problems_offering(frozenset({"samples"})))
