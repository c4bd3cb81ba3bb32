"""End-to-end runs of train.py with tiny budgets: the run folder, reloading, bad input."""

import pytest
import torch

import ot_experiments
from ot_experiments.checks import check_compatible
from ot_experiments.errors import ConfigError
from ot_experiments.methods.base import OTMethod
from ot_experiments.problems import Toy2DProblem

from .conftest import FAST, load_script, read_results, run_folders, train


def test_run_folder_contents(fast_run):
    res = read_results(fast_run)
    assert res["status"] == "ok"
    assert (res["method"], res["problem"], res["d"], res["seed"]) == ("ncf", "gaussian", 2, 0)
    for key in (
        "uvp_fwd",
        "uvp_bwd",
        "w2_sq",
        "w2_sq_true",
        "energy_distance",
        "w2_sq_pushed_target",
    ):
        assert isinstance(res["metrics"][key], float)
    assert res["metrics"]["uvp_fwd"] >= 0 and res["metrics"]["energy_distance"] > -1e-6
    assert res["reference"] == {"table": "T1a", "uvp_fwd": 0.010}
    assert res["baselines"]["pot_emd"]["w2_sq"] > 0
    assert res["timing"]["step_ms"] > 0 and res["timing"]["peak_mem_mb"] > 0
    assert "torch" in res["versions"] and res["device"].startswith("cpu")
    assert (fast_run / ".hydra" / "config.yaml").exists()
    assert (fast_run / "checkpoints" / "last.ckpt").exists()
    assert (fast_run / "maps.png").stat().st_size > 10_000
    lines = (fast_run / "metrics.csv").read_text().splitlines()
    assert "train/loss" in lines[0] and len(lines) > 2


def test_load_run_gives_the_trained_maps(fast_run):
    run = ot_experiments.load_run(fast_run)
    g = torch.Generator().manual_seed(0)
    x = run.problem.sample_source(300, generator=g)
    tx = run.transport(x)
    assert tx.shape == x.shape and torch.isfinite(tx).all()
    # the reloaded method reproduces the stored metric on the same evaluation samples
    from ot_experiments.metrics import evaluate

    seed, n_mc = run.cfg.seed + 10_000, run.cfg.mc_points
    metrics = evaluate(run.problem, run.method, n=200, seed=seed, full=False, n_mc=n_mc)
    assert metrics["uvp_fwd"] == pytest.approx(run.results["metrics"]["uvp_fwd"], rel=1e-4)
    sy = run.inverse_transport(tx)
    assert sy.shape == x.shape


def test_cost_and_uvp_use_mc_points_samples(fast_run):
    from ot_experiments.metrics import evaluate, l2_uvp

    run = ot_experiments.load_run(fast_run)
    few = evaluate(run.problem, run.method, n=200, seed=3, full=False)
    many = evaluate(run.problem, run.method, n=200, seed=3, full=False, n_mc=20_000)
    g = torch.Generator().manual_seed(3)
    x = run.problem.sample_source(200, generator=g)
    y = run.problem.sample_target(200, generator=g)
    x = torch.cat([x, run.problem.sample_source(19_800, generator=g)])
    y = torch.cat([y, run.problem.sample_target(19_800, generator=g)])
    assert many["w2_sq"] == pytest.approx(run.method.transport_cost(x), rel=1e-6)
    truth = run.problem.transport_true(x)
    assert many["uvp_fwd"] == pytest.approx(
        l2_uvp(run.method.transport(x), truth, run.problem.target_variance()), rel=1e-6
    )
    back = run.problem.inverse_transport_true(y)
    assert many["uvp_bwd"] == pytest.approx(
        l2_uvp(run.method.inverse_transport(y), back, run.problem.source_variance()), rel=1e-6
    )
    assert many["w2_sq"] != few["w2_sq"] and many["uvp_fwd"] != few["uvp_fwd"]
    # the sample metrics keep the first n points
    assert many["energy_distance"] == few["energy_distance"]
    assert many["energy_distance_bwd"] == few["energy_distance_bwd"]


def test_uvp_noise_script_draws_what_evaluate_draws(fast_run):
    from ot_experiments.metrics import evaluate

    noise = load_script("uvp_sample_noise")
    run = ot_experiments.load_run(fast_run)
    fwd, bwd = noise.uvp_draws(run, n=300, draws=2, seed=7)
    first = evaluate(run.problem, run.method, n=300, seed=7, full=False)
    assert fwd[0] == pytest.approx(first["uvp_fwd"], rel=1e-6)
    assert bwd[0] == pytest.approx(first["uvp_bwd"], rel=1e-6)
    assert fwd[1] != fwd[0] and len(bwd) == 2
    assert noise.spread([1.0, 3.0]).startswith("2.00000 ± 1.41421 (1.00000 … 3.00000)")
    shells = noise.uvp_by_radius(run, n=300, seed=7)
    assert len(shells) == 5 and shells[0][0] == 0.0 and shells[-1][1] == float("inf")
    assert sum(part for _, _, part, _ in shells) == pytest.approx(fwd[0], rel=1e-5)


def test_radial_error_by_shell_of_a_map_that_overshoots():
    """T̂ = m + 1.1 (T* − m), m the mean of T*(x): every point is carried 10 % too far out, so
    each shell's radial error is 0.1 × its mean distance ‖T*(x) − m‖ (and > 0)."""
    from types import SimpleNamespace

    from ot_experiments.problems import GaussianProblem

    problem = GaussianProblem(2, "ncf_benchmark", seed=0)
    noise = load_script("uvp_sample_noise")
    x, _, true_x = noise.first_draw(
        SimpleNamespace(problem=problem, transport=problem.transport_true), 4000, 3
    )
    m = true_x.mean(0)
    run = SimpleNamespace(
        problem=problem, transport=lambda z: m + 1.1 * (problem.transport_true(z) - m)
    )
    shells = noise.uvp_by_radius(run, n=4000, seed=3, quantiles=(0.5,))
    r = (x - x.mean(0)).norm(dim=1)
    inner = r < shells[0][1]
    for mask, (_, _, _, radial) in zip((inner, ~inner), shells):
        expected = 0.1 * float((true_x[mask] - m).norm(dim=1).mean())
        assert radial == pytest.approx(expected, rel=1e-4) and radial > 0


def test_linear_split_of_a_map_with_a_known_affine_error_and_wiggle():
    """T̂(x) = T*(x) + 0.1 x (affine error) + 0.2 cos(3x) (even: on a centred Gaussian cloud its
    only affine part is its mean): the parts are the UVPs of 0.1 x and of the centred wiggle,
    and they sum to the map's UVP."""
    from ot_experiments.metrics import l2_uvp
    from ot_experiments.problems import GaussianProblem

    noise = load_script("uvp_sample_noise")
    problem = GaussianProblem(3, "ncf_benchmark", seed=0)
    x = problem.sample_source(200_000, generator=torch.Generator().manual_seed(0)).double()
    true_x, var = problem.transport_true(x).double(), problem.target_variance()
    wiggle = 0.2 * torch.cos(3 * x)
    mapped = true_x + 0.1 * x + wiggle
    linear, rest = noise.uvp_linear_split(mapped, x, true_x, var)
    assert linear == pytest.approx(l2_uvp(0.1 * x, 0 * x, var), rel=0.02)
    assert rest == pytest.approx(l2_uvp(wiggle, wiggle.mean(0), var), rel=0.02)
    assert linear + rest == pytest.approx(l2_uvp(mapped, true_x, var), rel=1e-6)


def test_same_seed_gives_identical_metrics(tmp_path, fast_run):
    train(tmp_path, *FAST)
    (again,) = run_folders(tmp_path)
    assert read_results(again)["metrics"] == read_results(fast_run)["metrics"]


def test_multirun_six_jobs_one_folder_each(tmp_path):
    train(tmp_path, *FAST, "trainer.max_steps=2", "d=2,4,8", "seed=0,1", multirun=True)
    folders = run_folders(tmp_path)
    assert len(folders) == 6
    got = sorted((read_results(f)["d"], read_results(f)["seed"]) for f in folders)
    assert got == [(d, s) for d in (2, 4, 8) for s in (0, 1)]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("d=0", "d=0 is not valid"),
        ("d=2.5", "must be an integer"),
        ("d=abc", "must be an integer"),
        ("optimizer.lr=-0.1", "learning rate must be > 0"),
        ("averaging=ema averaging.decay=1.5", "EMA decay must be in [0, 1)"),
        ("trainer.max_steps=-5", "step budget must be an integer >= 1"),
        ("problem.preset=two_axis_shift d=1", "needs d >= 2"),
        ("problem=toy2d d=3", "two-dimensional"),
        ("method.conditional=true", "needs a labelled problem"),
    ],
)
def test_bad_input_is_one_sentence(tmp_path, override, message):
    proc = train(tmp_path, *FAST, *override.split(), check=False)
    assert proc.returncode != 0
    err = proc.stderr.strip()
    assert message in err
    assert "Traceback" not in err
    (folder,) = run_folders(tmp_path)
    assert read_results(folder)["status"] == "failed"


def test_unknown_budget_names_the_choices(tmp_path):
    """budget is a config group (small | paper): a typo stops before any run folder exists."""
    proc = train(tmp_path, *FAST, "experiment=t1a", "budget=huge", check=False)
    assert proc.returncode != 0
    assert "budget/huge" in proc.stderr and "paper" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not run_folders(tmp_path)


def test_incompatible_method_and_problem_names_fitting_problems():
    class NeedsDensities(OTMethod):
        needs = frozenset({"samples", "log_density"})

    with pytest.raises(ConfigError) as err:
        check_compatible("densitymethod", NeedsDensities, "toy2d", Toy2DProblem())
    msg = str(err.value)
    assert "needs log_density" in msg and "gaussian" in msg and "toy2d," not in msg


def test_nan_loss_fails_the_job_but_not_the_sweep(tmp_path):
    proc = train(tmp_path, *FAST, "method.mmd_weight=nan,1.0", multirun=True, check=False)
    assert proc.returncode != 0
    assert "training diverged at step 0" in proc.stderr and "Traceback" not in proc.stderr
    results = [read_results(f) for f in run_folders(tmp_path)]
    statuses = sorted((r["status"], r.get("failed_step")) for r in results)
    assert statuses == [("failed", 0), ("ok", None)]


def test_wandb_offline_run_is_finished_even_on_failure(tmp_path):
    fast = [o for o in FAST if not o.startswith("logger=")]
    train(
        tmp_path,
        *fast,
        "trainer.max_steps=2",
        "logger=default",
        "method.mmd_weight=nan,1.0",
        multirun=True,
        check=False,
    )
    folders = run_folders(tmp_path)
    assert len(folders) == 2
    for folder in folders:
        runs = list((folder / "wandb").glob("offline-run-*"))
        assert len(runs) == 1, "each job has its own offline wandb run"
        assert list(runs[0].glob("*.wandb"))
        if read_results(folder)["status"] == "ok":
            assert (folder / "metrics.csv").exists()
    # the two jobs did not merge into one wandb run
    ids = {next((f / "wandb").glob("offline-run-*")).name for f in folders}
    assert len(ids) == 2


@pytest.mark.slow
def test_submitit_local_launcher_runs_a_sweep(tmp_path):
    train(
        tmp_path,
        *FAST,
        "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=10",
        "d=2,3",
        multirun=True,
    )
    folders = run_folders(tmp_path)
    assert sorted(read_results(f)["d"] for f in folders) == [2, 3]
    assert all(read_results(f)["status"] == "ok" for f in folders)


def test_ema_averaging_reports_and_saves_the_averaged_weights(tmp_path):
    from ot_experiments.metrics import evaluate

    # decay 0: the average is the last iterate, so the run equals the one without averaging
    train(tmp_path / "none", *FAST, "averaging=none")
    train(tmp_path / "d0", *FAST, "averaging=ema", "averaging.decay=0.0")
    train(tmp_path / "d9", *FAST, "averaging=ema", "averaging.decay=0.9")
    (none,) = run_folders(tmp_path / "none")
    (last,) = run_folders(tmp_path / "d0")
    (averaged,) = run_folders(tmp_path / "d9")
    plain = read_results(none)["metrics"]
    assert read_results(last)["metrics"] == plain
    ema = read_results(averaged)["metrics"]
    assert ema["uvp_fwd"] != plain["uvp_fwd"]
    # the checkpoint holds the averaged weights that the metrics came from
    run = ot_experiments.load_run(averaged)
    seed, n_mc = run.cfg.seed + 10_000, run.cfg.mc_points
    again = evaluate(run.problem, run.method, n=200, seed=seed, full=False, n_mc=n_mc)
    assert again["uvp_fwd"] == pytest.approx(ema["uvp_fwd"], rel=1e-4)
