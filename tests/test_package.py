"""The installable package: a wheel installed outside the checkout runs ``ot-train`` (the
configs ship inside it) and ``python -m ot_experiments``."""

from __future__ import annotations

import importlib.util
import json
import os
import site
import subprocess
import sys
import venv

from .conftest import ROOT


def test_wheel_runs_outside_the_checkout(tmp_path):
    dist = tmp_path / "dist"
    # build with this environment's setuptools when it has one (no download)
    offline_build = ["--no-build-isolation"] if importlib.util.find_spec("setuptools") else []
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", *offline_build]
        + ["-w", str(dist), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = dist.glob("ot_experiments-*.whl")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    bin_dir = env_dir / "bin"
    # the fresh venv sees this environment's dependencies, but not its editable ot_experiments
    (purelib,) = env_dir.glob("lib/python*/site-packages")
    (purelib / "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(env_dir / "bin" / "python"), "install"]
        + ["-q", "--no-deps", str(wheel)],
        check=True,
        capture_output=True,
    )
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {**os.environ, "WANDB_SILENT": "true", "PYTHONPATH": ""}
    args = ["method=ncf", "problem=gaussian", "d=2", "trainer.max_steps=50", "logger=csv"]
    args += ["threads=1", "eval_points=200", "inference_points=1000", "hydra.run.dir=run"]
    proc = subprocess.run(
        [str(bin_dir / "ot-train"), *args], cwd=work, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads((work / "run" / "results.json").read_text())
    assert res["status"] == "ok" and res["step"] == 50
    where = subprocess.run(
        [str(bin_dir / "python"), "-c", "import ot_experiments; print(ot_experiments.__file__)"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
    )
    assert str(purelib) in where.stdout  # the wheel, not the checkout
    table = subprocess.run(
        [str(bin_dir / "ot-tables"), "run"], cwd=work, env=env, capture_output=True, text=True
    )
    assert table.returncode == 0 and "uvp_fwd" in table.stdout
