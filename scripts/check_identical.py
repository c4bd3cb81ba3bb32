"""Behaviour-preserving changes: do four short fixed-seed runs still give the same metrics?

    python scripts/check_identical.py --write   # before a refactor: store the reference
    python scripts/check_identical.py           # after it: compare (exit 1 on any difference)
    python scripts/check_identical.py --write --repo /tmp/before   # a worktree of an older commit

The runs (one per method, short budgets, one thread): NCF on a d = 2 Gaussian pair, the
Lagrangian method on crowd-motion test4, GradNet on gaussian2d, Q-flow on dre_mixtures. The
reference lives in ``scripts/identical_reference.json`` with the commit it was made at; floats
are compared exactly unless ``--rtol`` is given (float results depend on the CPU and the torch
build, so make the reference on the machine that checks).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "scripts" / "identical_reference.json"
COMMON = ["logger=csv", "threads=1", "eval_points=300", "inference_points=1000"]
RUNS = {
    "ncf_gaussian_d2": ["method=ncf", "d=2", "trainer.max_steps=60", "method.n_mmd=300"],
    "lagrangian_test4": [
        "method=lagrangian",
        "problem=crowd_motion",
        "problem.case=test4",
        "trainer.max_steps=20",
        "method.batch_size=128",
    ],
    "gradnet_gaussian2d": ["method=gradnet", "problem.preset=gaussian2d", "trainer.max_steps=60"],
    "qflow_dre_mixtures": [
        "method=qflow",
        "problem=dre_mixtures",
        "trainer.max_steps=80",
        "method.refine.clf_warmup_steps=5",
        "method.refine.flow_updates=5",
        "method.ratio.steps=10",
        "method.refine.pool_size=256",
    ],
}


def run_all(repo: Path = ROOT) -> dict[str, dict]:
    """Metrics of every reference run (``results.json``'s ``metrics``), run in ``repo``."""
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, overrides in RUNS.items():
            folder = Path(tmp) / name
            cmd = [sys.executable, "train.py", *overrides, *COMMON, f"hydra.run.dir={folder}"]
            proc = subprocess.run(cmd, cwd=repo, capture_output=True, text=True)
            res = json.loads((folder / "results.json").read_text())
            if res["status"] != "ok":
                raise SystemExit(f"{name} failed: {res.get('error')}\n{proc.stderr[-2000:]}")
            out[name] = res["metrics"]
            print(f"{name}: {len(res['metrics'])} metrics", flush=True)
    return out


def differences(ref: dict, new: dict, rtol: float) -> list[str]:
    """Lines naming every reference metric that differs (beyond ``rtol``) or disappeared;
    metrics added since the reference are not differences (``added`` lists them)."""
    lines = []
    for run in sorted(set(ref) | set(new)):
        a, b = ref.get(run, {}), new.get(run, {})
        for key in sorted(a):
            if key not in b:
                lines.append(f"{run}.{key}: missing now")
            elif isinstance(a[key], float) and isinstance(b[key], float):
                if not math.isclose(a[key], b[key], rel_tol=rtol, abs_tol=0.0) and not (
                    math.isnan(a[key]) and math.isnan(b[key])
                ):
                    lines.append(f"{run}.{key}: {a[key]!r} -> {b[key]!r}")
            elif a[key] != b[key]:
                lines.append(f"{run}.{key}: {a[key]!r} -> {b[key]!r}")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--write", action="store_true", help="store the reference")
    parser.add_argument("--rtol", type=float, default=0.0, help="relative tolerance (0: exact)")
    parser.add_argument(
        "--repo", type=Path, default=ROOT, help="checkout to run in (e.g. a git worktree)"
    )
    args = parser.parse_args(argv)
    metrics = run_all(args.repo)
    if args.write:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=args.repo, capture_output=True, text=True
        ).stdout.strip()
        REFERENCE.write_text(json.dumps({"commit": commit, "metrics": metrics}, indent=1) + "\n")
        print(f"reference written to {REFERENCE} (commit {commit})")
        return
    ref = json.loads(REFERENCE.read_text())
    diff = differences(ref["metrics"], metrics, args.rtol)
    added = sorted({k for r, m in metrics.items() for k in m if k not in ref["metrics"].get(r, {})})
    if added:
        print(f"metrics added since the reference (not compared): {', '.join(added)}")
    print("\n".join(diff) if diff else f"identical to the reference of commit {ref['commit']}")
    sys.exit(1 if diff else 0)


if __name__ == "__main__":
    main()
