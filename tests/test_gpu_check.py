"""scripts/gpu_check.sh --dry-run: the GPU check's stages on the CPU with tiny budgets."""

import os
import subprocess
import tarfile

from .conftest import ROOT


def test_gpu_check_dry_run(tmp_path):
    env = {
        **os.environ,
        "OUT": str(tmp_path / "out"),
        "GPU_CHECK_WORK": str(tmp_path / "work"),
        "BENCH_METHODS": "ncf",
        "PAPER": "t3",  # the T1a and T5 sweeps take the same path (launch())
    }
    proc = subprocess.run(
        ["bash", "scripts/gpu_check.sh", "--dry-run", "--limit", "300"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = (tmp_path / "out" / "report.md").read_text()
    assert "dry run, CPU" in report
    assert "| ncf | 2 |" in report  # the benchmark row
    assert "### t3" in report and "finished runs: 1" in report  # its one tiny job
    with tarfile.open(tmp_path / "out" / "runs.tar.gz") as tar:
        names = tar.getnames()
    assert sum(n.endswith("results.json") for n in names) == 2  # benchmark, t3
    assert not any(n.endswith(".ckpt") for n in names)


def test_gpu_check_refuses_unknown_arguments():
    proc = subprocess.run(
        ["bash", "scripts/gpu_check.sh", "--fast"], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 2 and "unknown argument '--fast'" in proc.stderr
