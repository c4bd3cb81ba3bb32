"""The README's generated summary: which runs count for a table, the latest run per cell, the
sentence per table, the README block, and storing a sweep."""

import json
from pathlib import Path

import pytest

from ot_experiments.overview import (
    END,
    START,
    is_table_run,
    latest_table_runs,
    overview,
    store_sweep,
    summary_line,
    sweep_keys,
    table_metrics,
    write_overview,
)

ROOT = Path(__file__).resolve().parent.parent


def _run(folder: Path, overrides: list[str], uvp: float, started: str, **extra) -> None:
    folder.mkdir(parents=True)
    d = int(next(o for o in overrides if o.startswith("d=")).split("=")[1])
    res = {
        "status": "ok",
        "experiment": "t1a",
        "started_at": started,
        "method": "ncf",
        "problem": "gaussian",
        "label": "ncf_benchmark",
        "d": d,
        "seed": 0,
        "overrides": overrides,
        "metrics": {"uvp_fwd": uvp},
        "reference": {"table": "T1a", "uvp_fwd": 0.1},
        "timing": {"wall_s": 60.0},
        **extra,
    }
    (folder / "results.json").write_text(json.dumps(res))
    (folder / "metrics.csv").write_text("step,val/uvp_fwd\n")
    (folder / "model.png").write_bytes(b"not copied")


@pytest.fixture
def stored(tmp_path):
    """Two stored sweeps of t1a (the newer one runs d = 2 twice, worse than the older sweep), an
    ablation and a run that is no table's command."""
    raw = tmp_path / "raw"
    base = ["experiment=t1a", "seed=0", "threads=1", "logger=csv"]
    _run(raw / "old" / "0", base + ["d=2"], 0.05, "2026-11-23T10:00:00")
    _run(raw / "old" / "1", base + ["d=4"], 0.30, "2026-11-23T10:05:00")
    _run(raw / "new" / "0", base + ["d=2"], 0.20, "2026-12-01T09:00:00")
    _run(raw / "new" / "1", base + ["d=4", "trainer.max_steps=9"], 0.01, "2026-12-01T09:10:00")
    _run(raw / "new" / "2", base + ["d=2", "ckpt_path=auto"], 0.15, "2026-12-01T09:30:00")
    _run(raw / "plain" / "0", ["d=8"], 0.01, "2026-12-01T09:20:00", experiment=None)
    return raw


def test_sweep_keys_and_table_metrics_come_from_the_experiment_configs():
    assert sweep_keys("t1c") == {"problem.preset", "d", "seed"}  # t1c_paper.yaml sweeps seed too
    assert table_metrics("t3") == ["mse_bary", "mse_bary_samples"]
    assert table_metrics("no_such_table") is None and sweep_keys("no_such_table") == set()


def test_a_table_run_has_only_plumbing_and_swept_overrides():
    keys = {"d", "seed"}
    assert is_table_run({"overrides": ["experiment=t1a", "d=2", "hydra/launcher=joblib"]}, keys)
    assert is_table_run({"overrides": ["budget=paper", "hydra.launcher.n_jobs=2"]}, keys)
    assert not is_table_run({"overrides": ["experiment=t1a", "method.lr=1"]}, keys)
    assert not is_table_run({"overrides": ["experiment=t1a", "+trainer.foo=1"]}, keys)
    assert is_table_run({"overrides": ["experiment=t1a", "problem.data_dir=/data"]}, keys)
    assert is_table_run({"overrides": ["experiment=t1a", "ckpt_path=auto"]}, keys)  # resumed
    assert is_table_run({"overrides": ["experiment=t1a", "trainer.val_check_interval=1000"]}, keys)
    assert not is_table_run({"overrides": ["experiment=t1a", "problem.task=x"]}, keys)


def test_latest_run_per_cell_of_the_newest_folder_and_ablations_left_out(stored):
    groups = latest_table_runs(stored)
    assert list(groups) == [("t1a", "small")]
    by_d = {r["d"]: r for r in groups[("t1a", "small")]}
    assert sorted(by_d) == [2]  # the older sweep's d = 4 may be an older recipe: left out
    assert by_d[2]["metrics"]["uvp_fwd"] == 0.15  # the newest run of the cell in that folder
    line = summary_line(groups[("t1a", "small")])
    assert line.startswith("uvp_fwd as good as the paper in 0/1")
    worst = summary_line(groups[("t1a", "small")], ["uvp_fwd", "uvp_fwd@max"])
    assert worst.startswith("uvp_fwd as good as the paper in 0/1; uvp_fwd@max 0.15 (")
    assert "1 cell, 1 run; 2026-12-01; 1 min of runs" in line


def test_overview_rows_and_links(stored):
    table = overview(stored, link_root="raw/")
    t1a = next(row for row in table.splitlines() if row.startswith("| T1a"))
    assert "`python train.py -m experiment=t1a`" in t1a
    assert t1a.endswith(": [new](raw/new/table.md) |") and "raw/old" not in t1a
    t5 = next(row for row in table.splitlines() if row.startswith("| T5"))
    assert "no stored runs yet" in t5


def test_write_overview_replaces_only_the_block(stored, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# head\n{START}\nold table\n{END}\ntail\n")
    write_overview(stored, readme)
    text = readme.read_text()
    assert text.startswith(f"# head\n{START}\n| table |") and text.endswith(f"{END}\ntail\n")
    assert "old table" not in text and "(raw/new/table.md)" in text
    elsewhere = tmp_path / "docs" / "README.md"  # not above the stored folder: ../ links
    elsewhere.parent.mkdir()
    elsewhere.write_text(f"{START}\n{END}\n")
    write_overview(stored, elsewhere)
    assert "(../raw/new/table.md)" in elsewhere.read_text()
    readme.write_text("no markers\n")
    with pytest.raises(SystemExit, match="has no <!-- overview:start -->"):
        write_overview(stored, readme)


def test_store_sweep_keeps_results_and_metrics_only(stored, tmp_path):
    dest = store_sweep(stored / "old", tmp_path / "kept")
    assert sorted(p.name for p in (dest / "0").iterdir()) == ["metrics.csv", "results.json"]
    assert (
        "| `d=2 experiment=t1a logger=csv threads=1` | 1/1 | 0.05 |"
        in (dest / "table.md").read_text()
    )


def test_readme_summary_is_the_collectors_output():
    """The README's table block is what ``ot-tables docs/results/raw --overview README.md``
    writes from the stored results: rerun that command after storing a sweep."""
    text = (ROOT / "README.md").read_text()
    block = text.split(START, 1)[1].split(END, 1)[0].lstrip("\n")
    assert block == overview(ROOT / "docs/results/raw", link_root="docs/results/raw/")
