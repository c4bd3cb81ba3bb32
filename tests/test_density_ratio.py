"""Density-ratio estimation: quadrature, telescoping loss, KDE, the mixture problem, a run."""

from __future__ import annotations

import math

import pytest
import torch

from ot_experiments.errors import ConfigError
from ot_experiments.methods.density_ratio import (
    flow_log_ratio,
    flow_ratio_loss,
    interval_integral,
    kde_log_density,
    kde_log_ratio,
    logistic_ratio_loss,
    mean_absolute_error,
    median_bandwidth,
)
from ot_experiments.problems import GaussianProblem
from ot_experiments.problems.mixtures import GaussianMixturePairProblem, mixture_log_density

from .conftest import read_results, run_folders, train
from .test_qflow import QFAST


@pytest.fixture
def one_thread(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def test_three_eighths_rule_is_exact_for_cubics_in_time():
    x = torch.randn(7, 2)

    def r(x, t):
        return x[:, 0] * t**3 + x[:, 1] * t

    got = interval_integral(r, x, 0.2, 0.7)
    exact = x[:, 0] * (0.7**4 - 0.2**4) / 4 + x[:, 1] * (0.7**2 - 0.2**2) / 2
    assert torch.allclose(got, exact, atol=1e-6)
    # the telescoped sum over a grid is the integral over [0, 1]
    ts = torch.linspace(0, 1, 6)
    assert torch.allclose(flow_log_ratio(r, x, ts), x[:, 0] / 4 + x[:, 1] / 2, atol=1e-6)


def _moving_gaussian():
    """p_t = N(t m, I): r(x, t) = ∂t log p_t(x) = m·(x − t m), quadratic in t."""
    m = torch.tensor([1.5, -0.5])

    def r(x, t):
        return (x - t * m) @ m

    return m, r


def test_flow_log_ratio_of_the_exact_time_score_is_the_true_log_ratio():
    m, r = _moving_gaussian()
    x = torch.randn(20, 2)
    true = -0.5 * (x - m).square().sum(1) + 0.5 * x.square().sum(1)
    assert torch.allclose(flow_log_ratio(r, x, torch.linspace(0, 1, 10)), true, atol=1e-5)


def test_flow_ratio_loss_is_smallest_at_the_exact_time_score():
    torch.manual_seed(0)
    m, r = _moving_gaussian()
    ts = torch.linspace(0, 1, 5)
    samples = torch.stack([torch.randn(20_000, 2) + t * m for t in ts])
    best = float(flow_ratio_loss(r, samples, ts))
    for scale in (0.7, 1.3):
        assert float(flow_ratio_loss(lambda x, t, s=scale: s * r(x, t), samples, ts)) > best + 1e-3
    # each interval's loss at the optimum is 2 log 2 − (JS-type gain) < 2 log 2
    assert best < 4 * 2 * math.log(2)


def test_logistic_loss_learns_the_log_ratio_of_two_gaussians():
    """1-D N(0,1) vs N(1,1): log q/p = x − ½, recovered by a logistic linear model."""
    torch.manual_seed(0)
    w = torch.zeros(2, requires_grad=True)
    opt = torch.optim.Adam([w], lr=0.05)
    for _ in range(400):
        p, q = torch.randn(2000), torch.randn(2000) + 1
        loss = logistic_ratio_loss(w[0] * p + w[1], w[0] * q + w[1])
        opt.zero_grad()
        loss.backward()
        opt.step()
    w = w.detach()
    assert float(w[0]) == pytest.approx(1.0, abs=0.1)
    assert float(w[1]) == pytest.approx(-0.5, abs=0.1)


def test_kde_of_one_point_is_a_gaussian_density_and_ratio_is_antisymmetric():
    s = torch.tensor([[0.5, -1.0]])
    x = torch.randn(5, 2)
    h = 0.7
    exact = -0.5 * (x - s).square().sum(1) / h**2 - math.log(2 * math.pi * h**2)
    assert torch.allclose(kde_log_density(x, s, h), exact, atol=1e-5)
    p, q = torch.randn(50, 2), torch.randn(60, 2) + 1
    assert torch.allclose(kde_log_ratio(x, p, q, h), -kde_log_ratio(x, q, p, h), atol=1e-5)


def test_median_bandwidth_and_mae():
    pts = torch.tensor([[0.0, 0.0], [3.0, 0.0]])
    other = torch.tensor([[0.0, 4.0]])
    # distances 3, 4, 5 → median 4
    assert median_bandwidth(pts, other, factor=0.1) == pytest.approx(0.4)
    assert mean_absolute_error(torch.tensor([1.0, -1.0]), torch.zeros(2)) == 1.0


# -- the mixture problem ----------------------------------------------------------------
def test_single_component_mixture_is_the_gaussian_density():
    g = GaussianProblem(2, "ncf_benchmark", 3)
    x = torch.randn(30, 2, dtype=torch.float64)
    got = mixture_log_density(x, g.mean0[None], g.chol0[None])
    assert torch.allclose(got, g.log_density_source(x), atol=1e-10)


def test_mixture_pair_densities_normalise_and_match_the_samples():
    prob = GaussianMixturePairProblem()
    assert prob.a.shape == (3, 2) and prob.b.shape == (2, 2)
    xs = torch.linspace(-6, 6, 301)
    gx, gy = torch.meshgrid(xs, xs, indexing="ij")
    pts = torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)
    cell = float((xs[1] - xs[0]) ** 2)
    for logd in (prob.log_density_source, prob.log_density_target):
        assert float(logd(pts).exp().sum()) * cell == pytest.approx(1.0, abs=1e-3)
    g = torch.Generator().manual_seed(0)
    y = prob.sample_target(50_000, generator=g)
    assert torch.allclose(y.mean(0), prob.b.float().mean(0), atol=0.02)
    assert y.var(0).sum() == pytest.approx(prob.target_variance(), rel=0.03)
    x = prob.sample_source(50_000, generator=g)
    assert x.var(0).sum() == pytest.approx(prob.source_variance(), rel=0.03)
    assert torch.allclose(
        prob.log_ratio_true(pts[:10]),
        prob.log_density_target(pts[:10]) - prob.log_density_source(pts[:10]),
    )


def test_bad_mixture_parameters_are_one_sentence_errors():
    with pytest.raises(ConfigError, match="expected K means"):
        GaussianMixturePairProblem(source_means=[[0.0, 0.0, 0.0]])
    with pytest.raises(ConfigError, match="positive definite"):
        GaussianMixturePairProblem(
            target_means=[[0.0, 0.0]], target_covs=[[[1.0, 2.0], [2.0, 1.0]]]
        )


# -- end to end -------------------------------------------------------------------------
def test_dre_run_reports_three_maes_and_figures(tmp_path, one_thread):
    train(tmp_path, *QFAST, "problem=dre_mixtures", "problem.ratio_test_points=500")
    (folder,) = run_folders(tmp_path)
    res = read_results(folder)
    assert res["status"] == "ok" and res["problem"] == "dre_mixtures"
    met = res["metrics"]
    for key in ("mae_flow_ratio", "mae_one_ratio", "mae_kde"):
        assert math.isfinite(met[key]) and met[key] > 0
    for name in ("log_ratio_heatmaps.png", "flow_intermediate.png", "trajectories.png"):
        assert (folder / name).stat().st_size > 10_000
    assert "train/flow_ratio" in (folder / "metrics.csv").read_text().splitlines()[0]


def test_ratio_chain_uses_real_end_points(monkeypatch):
    """ratio.ends=real: the first and last sample sets are fresh P and Q samples."""
    from functools import partial

    import ot_experiments.methods.density_ratio as dr
    from ot_experiments.methods.qflow import QFlow
    from ot_experiments.networks.velocity import ConcatSquashVelocity, TimeConcatMLP

    prob = GaussianMixturePairProblem()
    seen = {}

    def spy(r, samples, ts):
        seen["samples"] = samples
        return samples.sum() * 0.0

    monkeypatch.setattr(dr, "flow_ratio_loss", spy)
    for ends, last_mean in (("real", prob.b.float().mean(0)), ("pushed", None)):
        torch.manual_seed(0)
        m = QFlow(
            prob,
            network=partial(ConcatSquashVelocity, hidden=(8,)),
            optimizer=partial(torch.optim.Adam, lr=1e-3),
            ratio_network=partial(TimeConcatMLP, hidden=(8,)),
            density_ratio=True,
            ratio={"times": 4, "batch": 4000, "pool_size": 300, "ends": ends},
        )
        m.dre.step_loss(m._draw, m._push)
        s = seen["samples"]
        assert s.shape == (4, 4000, 2)
        # real ends: fresh samples; pushed: rows of the pushed pool at t = 1
        d = torch.cdist(s[-1], m._ratio_pool[-1], compute_mode="donot_use_mm_for_euclid_dist")
        in_pool = d.min(1).values < 1e-6
        if last_mean is not None:
            assert not in_pool.any()
            assert torch.allclose(s[-1].mean(0), last_mean, atol=0.05)
            assert torch.allclose(s[0].mean(0), prob.a.float().mean(0), atol=0.07)
        else:
            assert in_pool.all()
