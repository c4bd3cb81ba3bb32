"""Sample metrics for high d against closed forms: the debiased Sinkhorn divergence and the
sliced 2-Wasserstein distance (POT)."""

import pytest
import torch

from ot_experiments.baselines import pot_baselines
from ot_experiments.metrics import sinkhorn_divergence, sliced_w2
from ot_experiments.metrics.distances import sinkhorn_loss


@pytest.fixture
def cloud():
    return torch.randn(800, 2, generator=torch.Generator().manual_seed(0)).double()


def test_sinkhorn_divergence_is_zero_on_equal_sets_and_w2_sq_for_a_shift(cloud):
    shift = torch.tensor([3.0, 0.0], dtype=torch.float64)
    assert abs(sinkhorn_divergence(cloud, cloud)[0]) < 1e-6
    # the optimal plan of a translated copy is the translation: W2² = ‖s‖² = 9
    assert sinkhorn_divergence(cloud, cloud + shift)[0] == pytest.approx(9.0, rel=1e-3)


def test_sliced_w2_of_a_shift_is_its_length_over_root_d(cloud):
    shift = torch.tensor([3.0, 0.0], dtype=torch.float64)
    assert sliced_w2(cloud, cloud) == pytest.approx(0.0, abs=1e-9)
    # SW₂² = E_θ ⟨s, θ⟩² = ‖s‖² / d over uniform directions θ (500 of them: ~3 %)
    assert sliced_w2(cloud, cloud + shift) ** 2 == pytest.approx(9.0 / 2, rel=0.06)


def test_the_sinkhorn_baseline_reports_the_debiased_divergence(cloud):
    shift = torch.tensor([1.0, 1.0], dtype=torch.float64)
    base = pot_baselines(cloud, cloud + shift)
    assert base["pot_emd"]["w2_sq"] == pytest.approx(2.0, rel=1e-6)
    assert base["pot_sinkhorn"]["divergence"] == pytest.approx(2.0, rel=1e-2)
    assert base["pot_sinkhorn"]["w2_sq"] > base["pot_sinkhorn"]["divergence"]  # the biased one


@pytest.mark.parametrize("eps", [0.1, 1.0, 10.0])
def test_sinkhorn_loss_is_the_squared_shift_for_any_eps_and_zero_on_equal_sets(eps):
    x = torch.randn(150, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    s = torch.tensor([1.0, -2.0, 0.5, 0.0, 0.3], dtype=torch.float64)
    assert float(sinkhorn_loss(x, x + s, eps)) == pytest.approx(float(s.square().sum()), rel=1e-3)
    assert abs(float(sinkhorn_loss(x, x.clone(), eps))) < 1e-9
    batched = sinkhorn_loss(torch.stack([x, x]), torch.stack([x + s, x]), eps)
    assert batched.shape == (2,) and float(batched[1]) == pytest.approx(0.0, abs=1e-9)


def test_sinkhorn_loss_gradient_moves_the_points_along_the_plan():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(120, 4, generator=g, dtype=torch.float64)
    s = torch.tensor([1.0, -1.0, 2.0, 0.0], dtype=torch.float64)
    moved = x.clone().requires_grad_(True)
    sinkhorn_loss(moved, x + s, 0.5, iters=200).backward()
    # moving every point by δ changes S by ‖s − δ‖² − ‖s‖²: the gradients sum to −2s
    assert torch.allclose(moved.grad.sum(0), -2 * s, atol=1e-2)
    y = 1.3 * torch.randn(100, 4, generator=g, dtype=torch.float64) + 0.2
    moved = torch.randn(80, 4, generator=g, dtype=torch.float64).requires_grad_(True)
    sinkhorn_loss(moved, y, 0.5, iters=300).backward()
    v, h = torch.randn(80, 4, generator=g, dtype=torch.float64), 1e-5
    with torch.no_grad():
        plus = sinkhorn_loss(moved + h * v, y, 0.5, iters=300)
        minus = sinkhorn_loss(moved - h * v, y, 0.5, iters=300)
    assert float((moved.grad * v).sum()) == pytest.approx(float(plus - minus) / (2 * h), rel=2e-2)
