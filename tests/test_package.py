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


def _top_level_imports() -> dict[str, set[str]]:
    """Module → the ot_experiments modules it imports at module level (not inside functions)."""
    import ast

    pkg = ROOT / "ot_experiments"
    graph: dict[str, set[str]] = {}
    for path in pkg.rglob("*.py"):
        rel = path.relative_to(ROOT).with_suffix("")
        name = ".".join(rel.parts).removesuffix(".__init__")
        deps = set()
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module.startswith("ot_experiments"):
                    deps.add(node.module)
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.startswith("ot_experiments")}
        graph[name] = deps
    return graph


def test_no_import_circle_between_modules():
    """The package's module-level imports form no cycle (a package's __init__ re-exporting its
    own submodules is not a cycle)."""
    graph = _top_level_imports()
    state: dict[str, int] = {}

    def visit(mod: str, stack: list[str]) -> None:
        state[mod] = 1
        for dep in graph.get(mod, ()):
            if dep not in graph or dep.startswith(mod + "."):
                continue
            if state.get(dep) == 1:
                raise AssertionError(f"import circle: {' -> '.join([*stack, mod, dep])}")
            if dep not in state:
                visit(dep, [*stack, mod])
        state[mod] = 2

    for mod in graph:
        if mod not in state:
            visit(mod, [])
    assert "ot_experiments.runner" not in graph["ot_experiments.results"]


def test_package_files_stay_small_or_say_why():
    """No module over 400 lines unless its docstring says why ("over 400 lines")."""
    too_long = []
    for path in (ROOT / "ot_experiments").rglob("*.py"):
        text = path.read_text()
        if text.count("\n") > 400 and "over 400 lines" not in text[:3000].lower():
            too_long.append(f"{path.name} ({text.count(chr(10))} lines)")
    assert not too_long, f"files over 400 lines without a stated reason: {too_long}"
