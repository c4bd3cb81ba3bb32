"""Lagrangian dynamic OT end to end: tiny runs through train.py, the penalised optimum a run
converges to, and the reference budget (-m slow)."""

from __future__ import annotations

import math

import pytest
import torch

from ot_experiments.methods.lagrangian_terms import penalised_shift_energy

from .conftest import read_results, run_folders, train

# tiny budget for end-to-end runs of this method
FAST_LAGRANGIAN = [
    "method=lagrangian",
    "trainer.max_steps=4",
    "trainer.val_check_interval=2",
    "method.batch_size=64",
    "method.h1_points=100",
    "method.n_intervals=2",
    "method.n_substeps=2",
    "method.eval_points=100",
    "eval_points=150",
    "network.width=4",
    "trainer.log_every_n_steps=1",
    "logger=csv",
]


# -- end to end -----------------------------------------------------------------------------
def test_train_gaussian_writes_metrics_and_figures(tmp_path):
    train(tmp_path, *FAST_LAGRANGIAN, "problem.preset=scale_shift")
    (folder,) = run_folders(tmp_path)
    res = read_results(folder)
    assert res["status"] == "ok" and res["method"] == "lagrangian"
    m = res["metrics"]
    for key in ("w2_sq", "w2_sq_true", "w2_sq_rel_err", "kl", "energy_distance", "map_cost"):
        assert math.isfinite(m[key])
    assert m["w2_sq_true"] == pytest.approx(16 + 2 * (1 - math.sqrt(0.3)) ** 2, rel=1e-6)
    assert m["map_cost"] <= m["w2_sq"] * 1.001  # Jensen: E ≥ E‖z(1) − x‖²
    assert res["baselines"]["pot_sinkhorn"]["w2_sq"] > 0
    assert (folder / "density_evolution.png").stat().st_size > 10_000


def test_train_crowd_motion_adjoint_d3(tmp_path):
    train(
        tmp_path,
        *FAST_LAGRANGIAN,
        "problem=crowd_motion",
        "problem.case=test5",
        "d=3",
        "method.gradient=adjoint",
    )
    (folder,) = run_folders(tmp_path)
    res = read_results(folder)
    m = res["metrics"]
    assert m["obstacle_weight"] == 500.0 and m["kl_weight"] == 10.0 and m["h1_weight"] == 0.0
    assert res["hints"] == {
        "kl_weight": 10.0,
        "obstacle_weight": 500.0,
        "h1_weight": 0.0,
        "obstacle_ramp_steps": 0,
    }
    assert m["obstacle_cost"] > 0 and 0 <= m["obstacle_fraction"] <= 1
    assert (folder / "density_evolution.png").stat().st_size > 10_000


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["shift", "scale_shift"])
def test_reference_budget_reaches_one_percent(tmp_path, preset):
    """Tests 1–2, d = 2, the default settings (1000 steps, B = 1024, lr 0.1 × 0.955 every 10
    steps; ~5 min each on one core): |E − W2²| / W2² < 1 % (measured 0.15 %, 0.52 %)."""
    train(tmp_path, "method=lagrangian", f"problem.preset={preset}", "logger=csv", "threads=1")
    (folder,) = run_folders(tmp_path)
    assert read_results(folder)["metrics"]["w2_sq_rel_err"] < 0.01


# -- where the penalised loss converges ------------------------------------------------------
def test_penalised_shift_energy_is_the_minimum_over_shifts():
    """E + λ·KL over x ↦ x + sΔ, minimised on a fine grid of s, against the closed form."""
    w2_sq, lam = 16.0, 10.0
    s = torch.linspace(0.5, 1.0, 200_001, dtype=torch.float64)
    loss = s**2 * w2_sq + lam * (1 - s) ** 2 * w2_sq / 2
    best = s[loss.argmin()]
    assert float(best**2 * w2_sq) == pytest.approx(penalised_shift_energy(w2_sq, lam), rel=1e-5)
    assert penalised_shift_energy(16.0, 1000.0) / 16.0 == pytest.approx(0.996012, abs=1e-6)


def test_a_converged_run_lands_on_the_penalised_optimum(tmp_path):
    """Test 1 at d = 2 with λ = 10 and α = 0: the run's E converges to W2² (λ / (λ + 2))² =
    11.11, 31 % short of W2² = 16 (measured 11.116 after 600 steps, 11.09 after 200); a KL or
    E off by a factor (e.g. ½‖v‖²) would land elsewhere (λ / (λ + 1): 13.2)."""
    train(
        tmp_path,
        "method=lagrangian",
        "problem.preset=shift",
        "method.kl_weight=10",
        "method.kl_weight_end=null",  # a fixed λ (the Gaussian recipe raises it at the end)
        "method.h1_weight=0",
        "trainer.max_steps=200",
        "trainer.val_check_interval=200",
        "method.batch_size=256",
        "eval_points=2000",
        "mc_points=0",
        "inference_points=1000",
        "logger=csv",
        "threads=1",
    )
    (folder,) = run_folders(tmp_path)
    m = read_results(folder)["metrics"]
    assert m["w2_sq"] == pytest.approx(penalised_shift_energy(16.0, 10.0), rel=0.01)
    assert m["kl"] == pytest.approx((1 / 6) ** 2 * 16 / 2, rel=0.2)
