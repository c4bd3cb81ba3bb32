"""NCF trained end to end: fast smoke runs on every problem kind, slow acceptance runs."""

import pytest

from .conftest import FAST, read_results, run_folders, run_metric, train


@pytest.mark.parametrize(
    "problem",
    [
        ["problem=toy2d", "problem.source=moons", "problem.target=8gaussians", "network=mlp"],
        ["problem=toy2d_classes", "network=mlp", "method.hj_loss=implicit_both"],
        ["problem=gaussian", "problem.preset=two_axis_shift", "d=3", "method.hj_loss=pinn"],
        ["problem=gaussian", "method.hj_loss=none", "scheduler=step"],
        ["problem=gaussian", "method.polish_steps=2", "method.polish_points=64"],
    ],
    ids=["toy2d", "classes", "pinn-d3", "mmd-only", "polish"],
)
def test_ncf_runs_on_each_problem_kind(tmp_path, problem):
    train(tmp_path, *FAST, *problem)
    (folder,) = run_folders(tmp_path)
    res = read_results(folder)
    assert res["status"] == "ok"
    if "problem=toy2d_classes" in problem:
        assert res["metrics"]["energy_distance_classes"] > 0
    if "d=3" in problem:
        assert (folder / "projection.png").exists() and res["metrics"]["uvp_fwd"] > 0
    else:
        assert (folder / "maps.png").exists()


@pytest.mark.slow
def test_ncf_d2_default_budget_reaches_uvp_below_one_percent(tmp_path):
    train(tmp_path, "logger=csv", "d=2")
    (folder,) = run_folders(tmp_path)
    m = read_results(folder)["metrics"]
    assert m["uvp_fwd"] < 1.0 and m["uvp_bwd"] < 1.0


@pytest.mark.slow
def test_class_conditional_beats_unconditional_on_class_fit(tmp_path):
    common = [
        "logger=csv",
        "problem=toy2d_classes",
        "network=mlp",
        "trainer.max_steps=600",
        "method.n_mmd=600",
    ]
    key = "energy_distance_classes"
    ed_cond = run_metric(tmp_path / "cond", key, *common, "method.conditional=true")
    ed_uncond = run_metric(tmp_path / "uncond", key, *common, "method.conditional=false")
    assert ed_cond < 0.5 * ed_uncond


@pytest.mark.slow
def test_plain_d64_command_beats_the_paper(tmp_path):
    """`python train.py method=ncf problem=gaussian d=64` (the ncf_gaussian recipe: mixed
    collocation, the quadratic term with P's lr x10, network decay 1, 2000 steps; ~4 min on one
    core): forward UVP below the paper's 0.858 % (measured 0.568 % on 2026-12-06 and 0.617 % on
    2026-12-07, 162 s; 0.431 % without the decay and the lr scale, 0.972 % without the quadratic
    term either)."""
    uvp = run_metric(tmp_path, "uvp_fwd", "method=ncf", "problem=gaussian", "d=64", "threads=1")
    assert uvp < 0.858


@pytest.mark.slow
def test_t1a_d2_paper_budget_reaches_the_paper(tmp_path):
    """Acceptance: T1a d = 2 at budget=paper (20,000 steps, 2000 MMD points, the last
    1,000 steps polished with the Sinkhorn divergence), the paper's protocol of problem seeds
    0-2: the seed mean of the forward UVP reaches the NCF paper's 0.010 % and the backward map's
    mean is within 2x of it. ~50 min a seed on one CPU core (a few minutes on a GPU). Measured
    (200,000-point draws, 2026-12-06/07): seeds 0 / 1 / 2 0.0089 / 0.0037 / 0.0084 % forward
    with the polish (mean 0.0070, backward 0.0119 / 0.0021 / 0.0197); without it
    seeds 0 / 1 / 2 0.0156 / 0.0012 / 0.0397 % forward (mean 0.0188, failing on seed 2's
    tails), and seed 2's final checkpoint polished for 1,000 steps 0.0072 / 0.0174 %."""
    fwd, bwd = [], []
    for seed in (0, 1, 2):
        train(
            tmp_path / str(seed),
            "experiment=t1a",
            "budget=paper",
            "d=2",
            f"seed={seed}",
            "logger=csv",
        )
        (folder,) = run_folders(tmp_path / str(seed))
        m = read_results(folder)["metrics"]
        fwd.append(m["uvp_fwd"])
        bwd.append(m["uvp_bwd"])
    assert sum(fwd) / 3 <= 0.010 and sum(bwd) / 3 <= 0.020
