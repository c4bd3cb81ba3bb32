"""Compose the real configs (no training)."""

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

import ot_experiments  # noqa: F401  (resolvers)
from ot_experiments.build import build_method, build_problem
from ot_experiments.checks import CONF_DIR, problems_offering

from .conftest import ROOT, train


def cfg_with(*overrides):
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def group_options(group):
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


@pytest.mark.parametrize("hardware", ["cpu", "gpu", "ddp"])
def test_hardware_options_compose(hardware):
    cfg = cfg_with(f"hardware={hardware}")
    assert cfg.trainer.accelerator == ("cpu" if hardware == "cpu" else "gpu")
    if hardware == "ddp":
        assert cfg.trainer.strategy == "ddp" and cfg.trainer.devices >= 2
    assert "precision" in cfg.trainer


def test_every_group_option_composes():
    for group in (
        "method",
        "problem",
        "network",
        "optimizer",
        "scheduler",
        "hardware",
        "logger",
        "averaging",
    ):
        for option in group_options(group):
            cfg = cfg_with(f"{group}={option}")
            assert cfg is not None


def test_network_sizes_follow_d_and_network_override():
    cfg = cfg_with("d=50")
    assert OmegaConf.to_container(cfg.network, resolve=True)["hidden"] == [100, 100, 50]
    cfg = cfg_with("d=4")
    assert OmegaConf.to_container(cfg.network, resolve=True)["hidden"] == [64, 64, 32]
    cfg = cfg_with("network=mlp")
    assert cfg.network._target_.endswith("MLP")


def test_method_builds_with_its_network_and_optimizer():
    cfg = cfg_with("d=3", "optimizer=adamw", "scheduler=exponential")
    problem = build_problem(cfg)
    method = build_method(cfg, problem)
    assert problem.dim == 3
    assert method.net.lin_in[0].in_features == 4  # (x, t)
    opt = method.configure_optimizers()
    assert type(opt["optimizer"]).__name__ == "AdamW"
    assert opt["optimizer"].param_groups[0]["lr"] == pytest.approx(1e-3)
    assert type(opt["lr_scheduler"]["scheduler"]).__name__ == "ExponentialLR"


def test_cpu_trainer_instantiates():
    cfg = cfg_with("hardware=cpu", "trainer.default_root_dir=/tmp")
    trainer = instantiate(cfg.trainer, logger=False)
    assert trainer.max_steps == cfg.trainer.max_steps


def test_logger_defaults_csv_and_offline_wandb():
    cfg = cfg_with()
    assert set(cfg.logger) == {"csv", "wandb"}
    assert cfg.logger.wandb.offline is True
    assert set(cfg_with("logger=csv").logger) == {"csv"}
    assert not cfg_with("logger=none").logger


def test_problems_offering():
    assert "toy2d_classes" in problems_offering(frozenset({"labels"}))
    assert "toy2d" not in problems_offering(frozenset({"log_density"}))
    assert "gaussian" in problems_offering(frozenset({"ground_truth", "log_density"}))


def test_cli_help_and_cfg(tmp_path):
    out = train(tmp_path, "--help").stdout
    groups = dict(
        line.split(": ", 1) for line in out.splitlines() if line[:1].isalpha() and ": " in line
    )
    assert "ncf" in groups["method"].split(", ")
    assert {"cpu", "gpu", "ddp", "slurm"} <= set(groups["hardware"].split(", "))
    out = train(tmp_path, "method=ncf", "problem=gaussian", "d=64", "--cfg", "job").stdout
    assert "d: 64" in out and "DenseICNN" in out
    bad = train(tmp_path, "network=nope", check=False)
    assert bad.returncode != 0 and "Available options in 'network'" in bad.stderr
    assert (ROOT / "conf" / "experiment" / "t1a.yaml").exists()


def test_slurm_composes_with_submitit_launcher():
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "config",
            overrides=["hardware=slurm", "hydra.launcher.partition=gpu"],
            return_hydra_config=True,
        )
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher")
    assert cfg.hydra.launcher.partition == "gpu"
    assert cfg.trainer.accelerator == "gpu"


def test_joblib_launcher_composes():
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["hydra/launcher=joblib"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith("JoblibLauncher")


def test_optuna_search_config_composes():
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="optional extra [optuna]")
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["experiment=ncf_optuna"], return_hydra_config=True)
    assert cfg.optimized_metric == "uvp_fwd"
    assert set(cfg.hydra.sweeper.params) == {"method.mmd_weight", "method.lr"}


def test_wandb_logger_grouped_by_experiment_and_tagged(tmp_path):
    from ot_experiments.build import build_loggers

    cfg = cfg_with("experiment=t1a", "logger=wandb", f"paths.output_dir={tmp_path}")
    (logger,) = build_loggers(cfg)
    assert logger._wandb_init["group"] == "t1a"
    assert logger._wandb_init["tags"] == ["t1a"]
    assert logger._offline is True
    assert logger.experiment.config["method.mmd_weight"] == 100  # the whole config, flat
    logger.experiment.finish()


def test_lagrangian_and_ncf_report_the_weight_average_by_default():
    for method in ("lagrangian", "ncf"):
        assert cfg_with(f"method={method}").averaging._target_.endswith("WarmupEMA")
        assert not cfg_with(f"method={method}", "averaging=none").averaging
    assert not cfg_with("method=gradnet").averaging


@pytest.mark.parametrize(
    ("overrides", "size"),
    [
        (["problem.task=mnist_task1"], 8),
        (["problem.task=mnist_task2"], 8),
        (["problem.task=fmnist_to_mnist"], 16),
        (["problem.task=mnist_task2", "d=16"], 16),
    ],
)
def test_latent_size_follows_the_task_unless_d_is_given(overrides, size):
    cfg = cfg_with("experiment=t5", *overrides)
    assert cfg.d == size and cfg.problem.dim == size


@pytest.mark.parametrize(
    ("overrides", "matching"),
    [
        (["experiment=t5", "problem.task=mnist_task2"], "sinkhorn"),
        (["method=ncf", "problem=latent", "problem.task=mnist_task1"], "sinkhorn"),  # plain run
        (["experiment=t5"], "sinkhorn"),  # fmnist_to_mnist
        (["method=ncf", "problem=toy2d_classes"], "energy"),
        (["experiment=t5", "problem.task=mnist_task1", "method.matching=energy"], "energy"),
    ],
)
def test_latent_tasks_match_classes_by_sinkhorn_divergence(overrides, matching):
    assert cfg_with(*overrides).method.matching == matching


@pytest.mark.parametrize(
    ("task", "budget", "steps", "lr_step", "gamma"),
    [
        ("mnist_task2", "small", 4000, 1000, 1.0),  # a fixed rate
        ("fmnist_to_mnist", "small", 4000, 1000, 0.5),
        ("mnist_task2", "paper", 8000, 2000, 0.5),
        ("fmnist_to_mnist", "paper", 8000, 2000, 0.5),
    ],
)
def test_t5_budgets_set_the_learning_rate_halvings(task, budget, steps, lr_step, gamma):
    cfg = cfg_with("experiment=t5", f"budget={budget}", f"problem.task={task}")
    assert cfg.trainer.max_steps == steps
    assert cfg.scheduler._target_ == "torch.optim.lr_scheduler.StepLR"
    assert (cfg.scheduler.step_size, cfg.scheduler.gamma) == (lr_step, gamma)


@pytest.mark.parametrize(
    ("d", "budget", "steps", "lr_step", "polish"),
    [
        (2, "small", 1500, 5000, 150),
        (4, "small", 1500, 5000, 100),
        (8, "small", 1500, 5000, 0),
        (16, "small", 4000, 1500, 0),
        (2, "paper", 20000, 5000, 1000),
        (16, "paper", 20000, 5000, 0),
    ],
)
def test_t1a_budget_settings_follow_d(d, budget, steps, lr_step, polish):
    cfg = cfg_with("experiment=t1a", f"d={d}", f"budget={budget}")
    assert cfg.trainer.max_steps == steps and cfg.scheduler.step_size == lr_step
    assert cfg.method.polish_steps == polish and cfg.method.sinkhorn_eps == 0.1


# the loss settings of the Gaussian recipe: (κ, λ at the end, α, antithetic batches)
LOW_D_LOSS = (64, 10000, 0.01, True)  # d <= 25
HIGH_D_LOSS = (64, 3000, 0.003, False)  # d > 25
PAPER_LOSS = (0.0, None, "auto", False)  # other problems: the paper's loss


@pytest.mark.parametrize(
    ("overrides", "width", "steps", "lr_step", "loss"),
    [
        (["experiment=t1c", "d=2"], 20, 1000, 10, LOW_D_LOSS),  # the reference schedule
        (["experiment=t1c", "d=10", "budget=paper"], 20, 1000, 10, LOW_D_LOSS),
        (["experiment=t1c", "d=25"], 20, 1000, 10, LOW_D_LOSS),
        (["experiment=t1c", "d=50", "budget=paper"], 25, 4000, 40, HIGH_D_LOSS),  # L·H >= d
        (["method=lagrangian", "problem=gaussian", "d=51"], 26, 4080, 40, HIGH_D_LOSS),
        (["experiment=t1b"], 20, 1000, 10, LOW_D_LOSS),
        (["method=lagrangian", "problem=crowd_motion"], 20, 1000, 10, PAPER_LOSS),  # no recipe
    ],
)
def test_lagrangian_gaussian_recipe_follows_d(overrides, width, steps, lr_step, loss):
    """The recipe's loss converges at every d; above d = 25 it widens the net and runs 80·d
    steps with the decay stretched."""
    cfg = cfg_with(*overrides)
    assert cfg.network.width == width and cfg.trainer.max_steps == steps
    assert cfg.scheduler.step_size == lr_step
    m = cfg.method
    assert (m.straightness_weight, m.kl_weight_end, m.h1_weight, m.antithetic) == loss
