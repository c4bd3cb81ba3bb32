"""Interrupted runs: SIGTERM / SIGINT leave a checkpoint and an honest results.json, a resumed
run ends where the uninterrupted one ends, a run folder is never overwritten, and the collector
shows running / interrupted / killed / missing runs."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ot_experiments.tables import build_rows, load_results, to_markdown

from .conftest import ROOT, read_results, train

# 300 NCF steps: ~5 s on one core, long enough to be stopped mid-way (the first periodic
# checkpoint comes at step 15)
LONG = [
    "trainer.max_steps=300",
    "trainer.val_check_interval=50",
    "eval_points=200",
    "mc_points=0",
    "inference_points=1000",
    "method.n_mmd=200",
    "method.n_collocation=100",
    "method.eval_points=200",
    "logger=csv",
    "threads=1",
]


def start(folder: Path, *overrides: str) -> subprocess.Popen:
    cmd = [sys.executable, "train.py", *LONG, f"hydra.run.dir={folder}", *overrides]
    env = {**os.environ, "WANDB_SILENT": "true"}
    return subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    t0 = time.time()
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.time() - t0 < timeout, f"{path} never appeared"
        time.sleep(0.05)


def stop(folder: Path, sig: int) -> subprocess.CompletedProcess:
    """Start a run, send ``sig`` once its first periodic checkpoint exists, wait for the end."""
    proc = start(folder)
    wait_for(folder / "checkpoints" / "last.ckpt", proc)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.fixture(scope="module")
def full_metrics(tmp_path_factory) -> dict:
    """Final metrics of an uninterrupted LONG run (shared by the resume tests)."""
    folder = tmp_path_factory.mktemp("full") / "run"
    train(folder.parent, *LONG, f"hydra.run.dir={folder}")
    return read_results(folder)["metrics"]


def test_sigterm_checkpoint_then_resume_matches_the_uninterrupted_run(tmp_path, full_metrics):
    proc = stop(tmp_path / "cut", signal.SIGTERM)
    assert proc.returncode != 0
    assert "interrupted by SIGTERM" in proc.stderr
    cut = read_results(tmp_path / "cut")
    assert cut["status"] == "interrupted" and 0 < cut["step"] < 300
    assert Path(cut["checkpoint"]).name == "last.ckpt" and Path(cut["checkpoint"]).exists()
    assert cut["started_at"] and cut["pid"] > 0

    proc = train(tmp_path, *LONG, f"hydra.run.dir={tmp_path / 'cut'}", "ckpt_path=auto")
    for wrong in ("will be deleted", "dataloader is not resumable", "litlogger", "LeafSpec"):
        assert wrong not in proc.stdout + proc.stderr  # Lightning's messages that do not apply
    resumed = read_results(tmp_path / "cut")
    assert resumed["status"] == "ok" and resumed["step"] == 300
    assert resumed["timing"]["steps"] == 300  # the whole run's steps, not the resumed segment's
    assert resumed["metrics"].keys() == full_metrics.keys()
    for key, value in full_metrics.items():
        assert resumed["metrics"][key] == pytest.approx(value, rel=1e-5), key


def test_a_finished_run_trains_on_with_a_larger_budget(tmp_path, full_metrics):
    """A finished 150-step run resumed with trainer.max_steps=300 trains steps 150-300 (not 0:
    the step budget is one "epoch", which the finished run had ended) and ends close to a
    300-step run (not bit-identical, unlike a resume from an interrupted run; measured
    2026-12-06: the 300-step run's forward UVP 0.466, the 150-step run's 0.689). Resumed again
    at 300 it trains nothing and says so."""
    train(tmp_path, *LONG, "trainer.max_steps=150", f"hydra.run.dir={tmp_path / 'half'}")
    first = read_results(tmp_path / "half")
    half = first["metrics"]

    ckpt = tmp_path / "half" / "checkpoints" / "last.ckpt"
    train(tmp_path, *LONG, f"hydra.run.dir={tmp_path / 'half'}", f"ckpt_path={ckpt}")
    more = read_results(tmp_path / "half")
    assert more["status"] == "ok" and more["step"] == 300 and more["timing"]["steps"] == 300
    assert more["timing"]["train_s"] > first["timing"]["train_s"]  # both segments counted
    for key in ("uvp_fwd", "uvp_bwd"):
        assert more["metrics"][key] == pytest.approx(full_metrics[key], rel=0.1), key
        assert half[key] > 1.3 * full_metrics[key], key  # so the check above sees the extra steps
    # metrics.csv holds the whole run: the first 150 steps' rows survive the resume, once each
    with (tmp_path / "half" / "metrics.csv").open() as file:
        rows = list(csv.DictReader(file))
    val_steps = [int(r["step"]) for r in rows if r.get("val/uvp_fwd")]
    assert val_steps[:3] == [49, 99, 149] and len(val_steps) == 6  # (then 200, 250, 300: the
    train_steps = [int(r["step"]) for r in rows if r.get("train/loss")]  # extended epoch's shift)
    assert (
        train_steps[0] < 50 and train_steps == sorted(set(train_steps)) and len(train_steps) == 12
    )

    again = train(tmp_path, *LONG, f"hydra.run.dir={tmp_path / 'again'}", f"ckpt_path={ckpt}")
    assert "nothing was trained" in again.stdout + again.stderr
    assert "no training steps" in again.stdout


def test_sigint_is_recorded_and_a_checkpoint_elsewhere_resumes_into_a_new_folder(tmp_path):
    proc = stop(tmp_path / "a", signal.SIGINT)
    assert proc.returncode != 0 and "interrupted by SIGINT" in proc.stderr
    assert read_results(tmp_path / "a")["status"] == "interrupted"
    rows, _ = build_rows(load_results(tmp_path))
    assert "1 interrupted" in to_markdown(rows, ["uvp_fwd"])

    ckpt = tmp_path / "a" / "checkpoints" / "last.ckpt"
    train(tmp_path, *LONG, f"hydra.run.dir={tmp_path / 'b'}", f"ckpt_path={ckpt}")
    assert read_results(tmp_path / "b")["status"] == "ok"
    old = read_results(tmp_path / "a")
    assert old["status"] == "resumed" and old["resumed_in"] == str(tmp_path / "b")
    # the collector counts the finished run once and leaves the superseded one out
    rows, _ = build_rows(load_results(tmp_path))
    assert [(r["seeds_ok"], r["seeds"]) for r in rows] == [(1, 1)]


# Q-flow on dre_mixtures without refinement: 50 flow-matching steps, then 150 density-ratio
# steps; the first checkpoint comes at step 60, inside the ratio phase, so it carries the
# pushed ratio pool and the ratio step counter (QFlow.resume_attributes)
QFLOW = [
    "method=qflow",
    "problem=dre_mixtures",
    "problem.ratio_test_points=500",
    "trainer.max_steps=200",
    "checkpoint_every=60",
    "method.refine.enabled=false",
    "method.fm.batch=128",
    "method.ratio.steps=150",
    "method.ratio.batch=64",
    "method.ratio.pool_size=256",
    "method.ratio.kde_points=300",
    "method.eval_points=200",
    "eval_points=200",
    "mc_points=0",
    "inference_points=1000",
    "logger=csv",
    "threads=1",
]


def test_qflow_resumed_in_the_ratio_phase_matches_the_uninterrupted_run(tmp_path):
    import torch

    train(tmp_path, *QFLOW, f"hydra.run.dir={tmp_path / 'full'}")
    full = read_results(tmp_path / "full")

    folder = tmp_path / "cut"
    cmd = [sys.executable, "train.py", *QFLOW, f"hydra.run.dir={folder}"]
    env = {**os.environ, "WANDB_SILENT": "true"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for(folder / "checkpoints" / "last.ckpt", proc)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=120)
    cut = read_results(folder)
    assert cut["status"] == "interrupted" and 60 <= cut["step"] < 200
    state = torch.load(Path(cut["checkpoint"]), weights_only=True)["method_state"]
    assert state["_ratio_pool"].shape == (10, 256, 2) and state["_ratio_step_count"] >= 10

    train(tmp_path, *QFLOW, f"hydra.run.dir={folder}", "ckpt_path=auto")
    resumed = read_results(folder)
    assert resumed["status"] == "ok" and resumed["step"] == 200
    assert resumed["metrics"].keys() == full["metrics"].keys()
    for key, value in full["metrics"].items():
        assert resumed["metrics"][key] == pytest.approx(value, rel=1e-5), key


def test_a_run_folder_is_never_overwritten(tmp_path):
    folder = tmp_path / "run"
    train(tmp_path, *LONG, "trainer.max_steps=5", f"hydra.run.dir={folder}")
    before = (folder / "results.json").read_text()
    ckpt_before = (folder / "checkpoints" / "last.ckpt").stat().st_mtime
    proc = train(tmp_path, *LONG, "trainer.max_steps=5", f"hydra.run.dir={folder}", check=False)
    assert proc.returncode != 0
    assert "already holds a run (status ok); pass ckpt_path=auto to leave it" in proc.stderr
    assert (folder / "results.json").read_text() == before
    assert (folder / "checkpoints" / "last.ckpt").stat().st_mtime == ckpt_before
    # ckpt_path=auto on a finished run (a stopped sweep run again) leaves it as it is
    proc = train(
        tmp_path, *LONG, "trainer.max_steps=5", f"hydra.run.dir={folder}", "ckpt_path=auto"
    )
    assert proc.returncode == 0 and "holds a finished run (status ok): nothing to do" in (
        proc.stdout + proc.stderr
    )
    assert (folder / "results.json").read_text() == before
    assert (folder / "checkpoints" / "last.ckpt").stat().st_mtime == ckpt_before


def test_a_missing_checkpoint_is_one_sentence(tmp_path):
    proc = train(tmp_path, *LONG, "ckpt_path=/nonexistent/last.ckpt", check=False)
    assert proc.returncode != 0
    assert "ckpt_path='/nonexistent/last.ckpt' is not a checkpoint file" in proc.stderr


def test_sigkill_leaves_a_running_record_the_collector_calls_killed(tmp_path):
    folder = tmp_path / "sweep" / "0_d2"
    proc = start(folder)
    wait_for(folder / "results.json", proc)
    assert read_results(folder)["status"] == "running"  # written before training starts
    proc.kill()
    proc.wait()
    assert not (folder / "checkpoints").exists()
    # a sweep job that never started: a job folder without results.json
    missing = tmp_path / "sweep" / "1_d4" / ".hydra"
    missing.mkdir(parents=True)
    (missing / "overrides.yaml").write_text("- d=4\n")
    runs = load_results(tmp_path / "sweep")
    assert sorted(r["status"] for r in runs) == ["killed", "missing"]
    md = to_markdown(*build_rows(runs, ["uvp_fwd"]))
    assert "0/1 ok, 1 killed" in md and "0/1 ok, 1 missing" in md
    # the killed run left no checkpoint: ckpt_path=auto starts it afresh
    train(tmp_path, *LONG, "trainer.max_steps=5", f"hydra.run.dir={folder}", "ckpt_path=auto")
    assert read_results(folder)["status"] == "ok"


def test_results_json_records_the_start(fast_run):
    res = json.loads((fast_run / "results.json").read_text())
    assert res["status"] == "ok" and res["step"] == 6
    assert res["started_at"].startswith("20") and isinstance(res["pid"], int)


def test_a_signal_stops_the_whole_sweep_not_just_its_job(tmp_path):
    """SIGTERM during the first job of a two-job sweep (basic launcher): that job is recorded as
    interrupted and the second never starts; the exit status says which signal."""
    cmd = [sys.executable, "train.py", "-m", *LONG, "seed=0,1", f"hydra.sweep.dir={tmp_path}"]
    env = {**os.environ, "WANDB_SILENT": "true"}
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    first = None
    t0 = time.time()
    while first is None:
        found = sorted(tmp_path.glob("0_*/checkpoints/last.ckpt"))
        first = found[0] if found else None
        assert proc.poll() is None and time.time() - t0 < 120, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM
    assert "interrupted by SIGTERM" in err
    assert read_results(first.parent.parent)["status"] == "interrupted"
    assert not list(tmp_path.glob("1_*")), "the second job started after the signal"
    # the same command with ckpt_path=auto resumes the first job and runs the second
    subprocess.run([*cmd, "ckpt_path=auto"], cwd=ROOT, env=env, check=True, capture_output=True)
    jobs = sorted(tmp_path.glob("[01]_*"))
    assert [read_results(job)["status"] for job in jobs] == ["ok", "ok"]
    assert read_results(jobs[0])["resumed_from"] == str(first)


@pytest.mark.parametrize("method", ["ncf", "lagrangian"])
def test_how_often_a_run_validates_does_not_change_what_it_trains(tmp_path, method):
    """The same run validated every 10 steps and only at its end ends with the same metrics:
    validation draws nothing from the training's random stream (both methods keep a weight
    average, which validation swaps in and out)."""
    common = ["debug=fast", "logger=csv", f"method={method}", "trainer.max_steps=40", "threads=1"]
    ends = []
    for every in (10, 40):
        folder = tmp_path / str(every) / "run"
        train(
            folder.parent, *common, f"trainer.val_check_interval={every}", f"hydra.run.dir={folder}"
        )
        ends.append(read_results(folder)["metrics"])
    assert ends[0] == ends[1] and ends[0]["uvp_fwd"] > 0


def test_auto_starts_afresh_a_run_cut_before_its_first_checkpoint(tmp_path):
    from ot_experiments.errors import ConfigError
    from ot_experiments.run_folder import refuse_existing_run

    (tmp_path / "results.json").write_text(json.dumps({"status": "running"}))
    with pytest.raises(ConfigError, match=r"status running\); pass ckpt_path=auto to resume it"):
        refuse_existing_run(tmp_path, None)
    assert refuse_existing_run(tmp_path, None, auto=True) is None  # nothing to resume: start
    (tmp_path / "results.json").write_text(json.dumps({"status": "ok"}))
    with pytest.raises(ConfigError, match=r"status ok\); pass ckpt_path=auto to leave it"):
        refuse_existing_run(tmp_path, None, auto=True)
