"""GPU checks (``pytest -m gpu``; skipped without CUDA): every method trains on a problem of its
family with ``hardware=gpu``, a GPU-trained run reloads on the CPU with the same metrics, and CPU
and GPU training agree on a small Gaussian.

Tolerances: a reloaded GPU model evaluated on the CPU reproduces the stored UVP to 1e-3
(relative; float32 arithmetic in another order), and CPU and GPU training of the same seed agree
on the UVP within a factor of 1.5 (CUDA draws other random numbers than the CPU for the same
seed, so the training samples differ; the initial weights are the same).
"""

from __future__ import annotations

import math

import pytest
import torch

import ot_experiments

from .conftest import FAST, read_results, run_folders, run_metric, train
from .test_gradnet import GRADNET_FAST
from .test_lagrangian_runs import FAST_LAGRANGIAN
from .test_qflow import QFAST

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

# one short run per method x problem family
CASES = {
    "ncf-gaussian": [*FAST, "d=4"],
    "ncf-toy2d_classes": [*FAST, "problem=toy2d_classes", "network=mlp"],
    "ncf-color_transfer": [*FAST, "problem=color_transfer", "problem.max_side=32"],
    "gradnet-gaussian": [*GRADNET_FAST, "problem.preset=gaussian2d"],
    "gradnet-mnist_morphing": [*GRADNET_FAST, "problem=mnist_morphing", "eval_points=100"],
    "lagrangian-gaussian": [*FAST_LAGRANGIAN, "problem.preset=scale_shift"],
    "lagrangian-crowd_motion": [*FAST_LAGRANGIAN, "problem=crowd_motion"],
    "qflow-gaussian": [*QFAST, "problem=gaussian", "d=4", "method.refine.enabled=false"],
    "qflow-dre_mixtures": [*QFAST, "problem=dre_mixtures"],
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_short_gpu_run(tmp_path, case):
    train(tmp_path, *CASES[case], "hardware=gpu")
    (folder,) = run_folders(tmp_path)
    res = read_results(folder)
    assert res["status"] == "ok"
    assert res["device"].startswith("cuda"), res["device"]
    values = [v for v in res["metrics"].values() if isinstance(v, float)]
    assert values and all(math.isfinite(v) for v in values), res["metrics"]


@pytest.mark.parametrize("precision", ["bf16-mixed"])
def test_ncf_mixed_precision(tmp_path, precision):
    train(tmp_path, *FAST, "hardware=gpu", f"trainer.precision={precision}")
    (folder,) = run_folders(tmp_path)
    res = read_results(folder)
    assert res["status"] == "ok" and math.isfinite(res["metrics"]["uvp_fwd"])


def test_gpu_run_reloads_on_cpu_with_its_metrics(tmp_path):
    train(tmp_path, *FAST, "hardware=gpu", "trainer.max_steps=50", "eval_points=500")
    (folder,) = run_folders(tmp_path)
    run = ot_experiments.load_run(folder)
    assert next(run.method.parameters()).device.type == "cpu"
    from ot_experiments.metrics import evaluate

    seed, n_mc = run.cfg.seed + 10_000, run.cfg.mc_points
    m = evaluate(run.problem, run.method, n=500, seed=seed, full=False, n_mc=n_mc)
    assert m["uvp_fwd"] == pytest.approx(run.results["metrics"]["uvp_fwd"], rel=1e-3)


def test_cpu_and_gpu_training_agree(tmp_path):
    common = [*FAST, "trainer.max_steps=200", "trainer.val_check_interval=100", "eval_points=2000"]
    u_cpu = run_metric(tmp_path / "cpu", "uvp_fwd", *common, "hardware=cpu")
    u_gpu = run_metric(tmp_path / "gpu", "uvp_fwd", *common, "hardware=gpu")
    assert u_gpu / u_cpu == pytest.approx(1.0, abs=0.5), (u_cpu, u_gpu)
