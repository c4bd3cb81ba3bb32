"""The table collector on synthetic sweep folders."""

import csv
import json

import pytest

from ot_experiments.tables import at_least_as_good, build_rows, main, make_table


def write(folder, job, **res):
    path = folder / job
    path.mkdir(parents=True)
    (path / "results.json").write_text(json.dumps(res))


@pytest.fixture
def sweep(tmp_path):
    ref = {"table": "T1a", "uvp_fwd": 0.010}
    for seed, uvp in ((0, 0.004), (1, 0.008)):
        write(
            tmp_path,
            f"{seed}_d2",
            status="ok",
            method="ncf",
            problem="gaussian",
            d=2,
            overrides=["d=2", f"seed={seed}"],
            reference=ref,
            metrics={"uvp_fwd": uvp, "w2_sq": 1.0, "w2_sq_true": 1.0},
        )
    write(
        tmp_path,
        "2_d4",
        status="ok",
        method="ncf",
        problem="gaussian",
        d=4,
        overrides=["d=4", "seed=0"],
        reference={"table": "T1a", "uvp_fwd": 0.021},
        metrics={"uvp_fwd": 0.5, "w2_sq": 2.0, "w2_sq_true": 2.1},
    )
    write(
        tmp_path,
        "3_d4",
        status="failed",
        method="ncf",
        problem="gaussian",
        d=4,
        overrides=["d=4", "seed=1"],
        reference={"table": "T1a", "uvp_fwd": 0.021},
        error="training diverged at step 7",
        metrics={},
    )
    write(
        tmp_path,
        "4_d8",
        status="failed",
        method="ncf",
        problem="gaussian",
        d=8,
        overrides=["d=8", "seed=0"],
        error="d=8 something",
        metrics={},
    )
    return tmp_path


def test_rows_mean_std_paper_and_verdict(sweep):
    from ot_experiments.tables import load_results

    rows, metrics = build_rows(load_results(sweep))
    assert metrics[0] == "uvp_fwd"
    by = {r["cell"]: r for r in rows}
    d2 = by["d=2"]
    assert d2["uvp_fwd"][0] == pytest.approx(0.006)
    assert d2["uvp_fwd"][1] == pytest.approx(0.0028284, rel=1e-4)
    assert d2["uvp_fwd_paper"] == 0.010 and d2["uvp_fwd_ok"] is True
    d4 = by["d=4"]
    assert (d4["seeds_ok"], d4["seeds"]) == (1, 2) and d4["uvp_fwd_ok"] is False
    assert d4["errors"] == ["training diverged at step 7"]
    d8 = by["d=8"]
    assert d8["seeds_ok"] == 0 and d8["uvp_fwd"] is None


def test_worst_and_best_single_seed(sweep):
    from ot_experiments.tables import load_results

    rows, _ = build_rows(load_results(sweep), ["uvp_fwd@max", "uvp_fwd@min", "uvp_fwd"])
    d2 = next(r for r in rows if r["cell"] == "d=2")
    assert d2["uvp_fwd@max"] == (0.008, 0.0) and d2["uvp_fwd@min"] == (0.004, 0.0)
    assert "uvp_fwd@max_ok" not in d2  # no paper value for a single seed
    assert "| 0.008 | 0.004 | 0.006 ± 0.0028 | 0.01 | ✓ |" in make_table(
        sweep, ["uvp_fwd@max", "uvp_fwd@min", "uvp_fwd"]
    )


def test_a_resumed_run_joins_its_cell(sweep):
    write(
        sweep,
        "5_d2",
        status="ok",
        method="ncf",
        problem="gaussian",
        d=2,
        overrides=["d=2", "seed=2", "ckpt_path=auto"],
        reference={"table": "T1a", "uvp_fwd": 0.010},
        metrics={"uvp_fwd": 0.012, "w2_sq": 1.0, "w2_sq_true": 1.0},
    )
    from ot_experiments.tables import load_results

    rows, _ = build_rows(load_results(sweep))
    (d2,) = [r for r in rows if r["cell"] == "d=2"]
    assert d2["seeds_ok"] == 3 and d2["uvp_fwd"][0] == pytest.approx(0.008)


def test_unknown_seed_aggregate_is_one_sentence(sweep, capsys):
    with pytest.raises(SystemExit):
        main([str(sweep), "--metrics", "uvp_fwd@worst"])
    assert "uvp_fwd@worst: after @ write max or min" in capsys.readouterr().err


def test_markdown_and_csv_show_failed_cells(sweep):
    md = make_table(sweep)
    assert "1/2 FAILED: training diverged at step 7" in md
    assert "0/1 FAILED" in md
    assert "1 of 2 compared cells are at least as good as the paper." in md
    rows = list(csv.DictReader(open(sweep / "table.csv")))
    assert len(rows) == 3 and rows[0]["uvp_fwd_paper"] == "0.01"
    assert (sweep / "table.md").read_text() == md


def test_w2_verdict_uses_distance_to_truth():
    assert at_least_as_good("w2_sq", 16.05, 15.88, 16.0)
    assert not at_least_as_good("w2_sq", 16.5, 15.88, 16.0)
    assert at_least_as_good("hi", 0.9, 0.89, None)
    assert not at_least_as_good("uvp_fwd", 0.9, 0.5, None)


def test_cli_on_empty_folder_says_so(tmp_path, capsys):
    with pytest.raises(SystemExit, match="no results.json"):
        main([str(tmp_path)])


def test_dotted_metrics_and_table_metrics_from_results(tmp_path):
    write(
        tmp_path,
        "0",
        status="ok",
        method="ncf",
        problem="gaussian",
        d=2,
        overrides=["method=ncf"],
        table_metrics=["uvp_fwd", "timing.step_ms", "baselines.pot_emd.seconds"],
        metrics={"uvp_fwd": 0.5},
        timing={"step_ms": 12.0},
        baselines={"pot_emd": {"seconds": 0.25}},
    )
    md = make_table(tmp_path)
    assert "timing.step_ms" in md and "| 12 |" in md and "| 0.25 |" in md


def test_plot_draws_a_metric_against_d_per_method(tmp_path):
    from ot_experiments.table_figures import plot_metric

    for i, (method, d, seed, uvp) in enumerate(
        [("ncf", 2, 0, 0.1), ("ncf", 2, 1, 0.2), ("ncf", 8, 0, 0.5), ("gradnet", 2, 0, 3.0)]
    ):
        write(
            tmp_path,
            f"{i}_{method}_d{d}",
            status="ok",
            method=method,
            d=d,
            seed=seed,
            metrics={"uvp_fwd": uvp},
            timing={"step_ms": 10.0 * d},
        )
    path = plot_metric(tmp_path, "uvp_fwd")
    assert path.name == "uvp_fwd_vs_d.png" and path.stat().st_size > 10_000
    main([str(tmp_path), "--plot", "timing.step_ms"])
    assert (tmp_path / "timing_step_ms_vs_d.png").exists()
    with pytest.raises(SystemExit, match="has both nothing and d"):
        plot_metric(tmp_path, "nothing")


def test_curve_draws_the_validation_metric_against_the_step(tmp_path):
    from ot_experiments.table_figures import plot_curve, read_curve

    for i, d in enumerate([2, 8]):
        write(
            tmp_path,
            f"{i}_d={d}",
            status="ok",
            d=d,
            overrides=["experiment=t1a", f"d={d}", "seed=0"],
            metrics={"uvp_fwd": 0.1 * d},
            reference={"table": "T1a", "uvp_fwd": 0.01 * d},
        )
        rows = ["step,train/loss,val/uvp_fwd", "24,3.0,"]
        rows += [f"499,2.0,{0.4 * d}", f"999,1.0,{0.1 * d}"]
        (tmp_path / f"{i}_d={d}" / "metrics.csv").write_text("\n".join(rows) + "\n")
    assert read_curve(tmp_path / "1_d=8", "uvp_fwd") == ([499, 999], [3.2, 0.8])
    assert read_curve(tmp_path / "1_d=8", "val/uvp_fwd") == ([499, 999], [3.2, 0.8])
    assert read_curve(tmp_path / "1_d=8", "nothing") == ([], [])
    main([str(tmp_path), "--curve", "val/uvp_fwd"])
    path = tmp_path / "curve_val_uvp_fwd.png"
    assert path.stat().st_size > 10_000
    with pytest.raises(SystemExit, match="logged nothing in its metrics.csv"):
        plot_curve(tmp_path, "nothing")
