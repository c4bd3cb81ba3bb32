"""The distributed paths on the CPU: DDP with two gloo ranks for every method, a submitit-local
sweep read by the collector, per-rank random streams, and the SLURM config's resume default."""

from __future__ import annotations

import types

import pytest
import torch
from hydra import compose, initialize_config_dir

from ot_experiments.callbacks import ResumeState
from ot_experiments.checks import CONF_DIR
from ot_experiments.tables import build_rows, load_results

from .conftest import read_results, run_folders, train

SHORT = [
    "trainer.max_steps=4",
    "trainer.val_check_interval=2",
    "eval_points=200",
    "inference_points=1000",
    "mc_points=200",
    "method.eval_points=200",
    "logger=csv",
    "threads=1",
]
METHODS = {
    "ncf": ["method=ncf", "method.n_mmd=100", "method.n_collocation=100"],
    "gradnet": ["method=gradnet", "problem.preset=gaussian2d", "method.batch_size=64"],
    "lagrangian": [
        "method=lagrangian",
        "problem.preset=shift",
        "method.batch_size=64",
        "method.h1_points=50",
        "method.n_intervals=2",
        "network.width=4",
    ],
    "qflow": [
        "method=qflow",
        "problem=gaussian",
        "method.refine.enabled=false",
        "method.fm.batch=64",
        "method.refine.pool_size=64",
    ],
}


@pytest.mark.parametrize("method", sorted(METHODS))
def test_ddp_two_cpu_ranks_write_one_results_json(tmp_path, method):
    ddp = ["hardware=ddp", "trainer.accelerator=cpu", "trainer.devices=2"]
    train(tmp_path, *SHORT, *METHODS[method], *ddp)
    (folder,) = run_folders(tmp_path)  # rank 1 writes no results.json of its own
    res = read_results(folder)
    assert res["status"] == "ok" and res["method"] == method and res["step"] == 4
    assert res["metrics"]["w2_sq"] > 0  # rank 0 evaluated on the whole evaluation set
    assert (folder / "checkpoints" / "last.ckpt").exists()


def test_ranks_draw_different_samples_and_a_single_process_is_untouched():
    cb = ResumeState(seed=5)
    draws = []
    for rank in (0, 1):
        torch.manual_seed(123)
        cb.on_train_start(types.SimpleNamespace(world_size=2, global_rank=rank), None)
        draws.append(torch.rand(3))
    assert not torch.equal(draws[0], draws[1])
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    cb.on_train_start(types.SimpleNamespace(world_size=1, global_rank=0), None)
    assert torch.equal(torch.rand(3), expected)


def test_submitit_local_sweep_completes_and_the_collector_reads_both(tmp_path):
    train(
        tmp_path,
        *SHORT,
        *METHODS["ncf"],
        "hydra/launcher=submitit_local",
        "d=2,3",
        multirun=True,
    )
    runs = load_results(tmp_path)
    assert sorted(r["d"] for r in runs) == [2, 3]
    rows, _ = build_rows(runs, ["uvp_fwd"])
    assert [(r["seeds_ok"], r["seeds"]) for r in rows] == [(1, 1), (1, 1)]


def test_slurm_jobs_resume_from_their_own_checkpoint():
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["hardware=slurm"], return_hydra_config=True)
    assert cfg.ckpt_path == "auto"  # a requeued job (SIGUSR1) picks up its last checkpoint
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher")
    assert cfg.hydra.launcher.tasks_per_node == cfg.trainer.devices
