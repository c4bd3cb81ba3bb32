"""Sample metrics for high d against closed forms: the debiased Sinkhorn divergence and the
sliced 2-Wasserstein distance (POT)."""

import pytest
import torch

from ot_experiments.baselines import pot_baselines
from ot_experiments.metrics import sinkhorn_divergence, sliced_w2


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
