"""Mixed precision (trainer.precision=bf16-mixed) on the CPU's autocast: every method trains
and evaluates; GradNet keeps its Jacobian and log det in float32 (they failed under bf16)."""

import math

import pytest

from .conftest import FAST, read_results, run_folders, train

CASES = {
    "ncf": FAST,
    "gradnet": ["debug=fast", "method=gradnet", "problem.preset=gaussian2d", "logger=csv"],
    "lagrangian": ["debug=fast", "method=lagrangian", "problem.preset=shift", "logger=csv"],
    "qflow": ["debug=fast", "method=qflow", "problem=gaussian", "method.refine.enabled=false"],
}


@pytest.mark.parametrize("method", sorted(CASES))
def test_bf16_mixed_runs(tmp_path, method):
    train(tmp_path, *CASES[method], "trainer.precision=bf16-mixed", "threads=1", "mc_points=200")
    (folder,) = run_folders(tmp_path)
    res = read_results(folder)
    assert res["status"] == "ok"
    assert all(math.isfinite(v) for v in res["metrics"].values() if isinstance(v, float))
