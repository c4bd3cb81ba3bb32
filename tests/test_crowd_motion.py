"""Crowd-motion problem: densities, obstacles, blur, continuation, λ_P = 0 ⇒ plain OT."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch

from ot_experiments.errors import ConfigError
from ot_experiments.methods.lagrangian import Lagrangian
from ot_experiments.problems.base import Problem
from ot_experiments.problems.crowd_motion import (
    CASES,
    CrowdMotionProblem,
    continuation_factor,
    interval_window,
)


def test_cases_have_the_papers_weights():
    got = {k: (c.lambda_fp, c.lambda_kl) for k, c in CASES.items()}
    assert got == {
        "test4": (500, 10),
        "test5": (500, 10),
        "maze1": (5e4, 100),
        "maze2": (5000, 100),
        "maze3": (5000, 100),
        "maze4": (5, 100),
    }
    p = CrowdMotionProblem(2, "maze2", lambda_fp=7.0)
    assert (p.lambda_fp, p.lambda_kl) == (7.0, 100.0)


def test_densities_are_gaussians_with_variance():
    p = CrowdMotionProblem(3, "test4")
    x = p.sample_source(40_000, generator=torch.Generator().manual_seed(0))
    assert x.mean(0).tolist() == pytest.approx([-3, 0, 0], abs=0.02)
    assert x.var(0).tolist() == pytest.approx([0.3] * 3, rel=0.03)
    y = torch.tensor([[3.0, 0.0, 0.0]])
    assert float(p.log_density_target(y)) == pytest.approx(-1.5 * math.log(2 * math.pi * 0.3))
    assert CrowdMotionProblem(2, "maze3").source_variance() == pytest.approx(2.0)


def test_gaussian_obstacles_and_their_core():
    p4 = CrowdMotionProblem(2, "test4")
    origin = torch.zeros(1, 2)
    assert float(p4.path_cost(origin)) == pytest.approx(1 / (2 * math.pi * math.sqrt(0.5)))
    p5 = CrowdMotionProblem(5, "test5")
    pts = torch.zeros(2, 5)
    pts[0, 1] = 2.0
    pts[1, 1] = 2.0
    pts[1, 2:] = 7.0  # coordinates beyond the first two are ignored
    q = p5.path_cost(pts)
    expected = 0.5 / (2 * math.pi * math.sqrt(0.1)) + 0.5 * math.exp(-8) / (
        2 * math.pi * math.sqrt(0.1)
    )
    assert q.tolist() == pytest.approx([expected, expected], rel=1e-5)
    core = p4.in_obstacle_core(torch.tensor([[0.0, 0.0], [0.0, 1.0], [0.0, 1.3], [3.0, 0.0]]))
    assert core.tolist() == [True, True, False, False]  # half maximum at x2 = √(2 ln 2) ≈ 1.18


def test_maze_rectangles_weights_and_blur():
    p = CrowdMotionProblem(2, "maze1")
    pts = torch.tensor([[0.0, 0.0], [-3.5, 0.0], [5.0, 0.99], [5.0, 1.0]])
    assert p.path_cost(pts).tolist() == pytest.approx([0.4, 0.0, 0.9, 0.0])
    assert p.in_obstacle_core(pts).tolist() == [True, False, True, False]
    blurred = CrowdMotionProblem(2, "maze1", blur=0.2)
    qb = blurred.path_cost(pts)
    assert float(qb[0]) == pytest.approx(0.4, rel=1e-3)  # deep inside: unchanged
    assert 0 < float(qb[1]) < 0.05 and float(qb[3]) == pytest.approx(0.45, rel=0.02)
    u = torch.tensor([-2.0, -0.99, -0.5, 0.3, 0.99, 1.5])
    assert interval_window(u, -1, 1, 1e-4).tolist() == interval_window(u, -1, 1, 0).tolist()
    m3 = CrowdMotionProblem(2, "maze3")
    assert m3.path_cost(torch.tensor([[0.0, 0.0], [-2.0, 0.0], [4.0, -0.5]])).tolist() == (
        pytest.approx([0.0, 0.2, 0.4])
    )


def test_maze4_continuation():
    assert [continuation_factor(s) for s in (0, 99, 100, 250, 600, 5000)] == [
        1,
        1,
        10,
        100,
        1e6,
        1e6,
    ]
    p = CrowdMotionProblem(2, "maze4")
    x = torch.tensor([[-2.0, 0.0]])
    assert float(p.path_cost(x, step=0)) == pytest.approx(0.2)
    assert float(p.path_cost(x, step=320)) == pytest.approx(200.0)
    assert float(p.path_cost(x)) == pytest.approx(0.2e6)


@pytest.mark.parametrize(
    ("kw", "message"),
    [({"case": "maze9"}, "unknown crowd-motion case"), ({"blur": -1.0}, "blur width")],
)
def test_bad_input(kw, message):
    with pytest.raises(ConfigError, match=message):
        CrowdMotionProblem(2, **kw)
    with pytest.raises(ConfigError, match="integer >= 2"):
        CrowdMotionProblem(1)


class _PlainPair(Problem):
    """The test4 densities without an obstacle."""

    offers = frozenset({"samples", "log_density"})

    def __init__(self, crowd: CrowdMotionProblem) -> None:
        self.dim, self.crowd = crowd.dim, crowd

    def sample_source(self, n, *, generator=None, device="cpu", cls=None):
        return self.crowd.sample_source(n, generator=generator, device=device)

    def log_density_source(self, x):
        return self.crowd.log_density_source(x)

    def log_density_target(self, y):
        return self.crowd.log_density_target(y)


def _loss(problem, **kw):
    torch.manual_seed(0)
    kw = {**problem.method_hints("lagrangian"), **kw}  # λ_FP (auto), as the runner fills it
    m = Lagrangian(
        problem,
        partial(__import__("ot_experiments.networks.nodal", fromlist=["x"]).NodalVelocity, width=5),
        partial(torch.optim.Adam, lr=0.1),
        **{**kw, "batch_size": 128, "kl_weight": 10.0, "h1_weight": 0.0},
    )
    torch.manual_seed(1)
    loss, logs = m.training_loss(0)
    return float(loss), logs


def test_zero_obstacle_weight_is_plain_ot():
    crowd = CrowdMotionProblem(3, "test4", lambda_fp=0.0)
    plain, _ = _loss(_PlainPair(crowd))
    with_zero, logs = _loss(crowd)
    assert with_zero == pytest.approx(plain, rel=1e-6)
    assert "obstacle" not in logs
    with_obstacle, logs = _loss(CrowdMotionProblem(3, "test4"))
    assert float(logs["obstacle"]) > 0
    assert with_obstacle == pytest.approx(plain + 500 * float(logs["obstacle"]), rel=1e-5)
