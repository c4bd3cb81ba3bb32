"""The ``callbacks`` config group (chosen from the command line) and the weight average."""

import pytest
import torch

from .conftest import FAST, read_results, run_folders, train


def test_lr_monitor_added_from_the_command_line(tmp_path):
    train(tmp_path, *FAST, "callbacks=[default,lr_monitor]", "threads=1")
    (folder,) = run_folders(tmp_path)
    header = (folder / "metrics.csv").read_text().splitlines()[0]
    assert "lr-Adam" in header
    assert (folder / "checkpoints" / "last.ckpt").exists()


def test_no_optional_callbacks_still_gives_a_run(tmp_path):
    train(tmp_path, *FAST, "callbacks=none", "threads=1", "+callbacks.lr_monitor=null")
    (folder,) = run_folders(tmp_path)
    assert read_results(folder)["status"] == "ok"
    assert (folder / "checkpoints" / "last.ckpt").exists()  # the final checkpoint


def test_ema_decay_warms_up_to_the_configured_decay():
    from ot_experiments.callbacks import ema_decay

    assert ema_decay(0.99, 0) == pytest.approx(0.1)  # (1 + 0) / (10 + 0)
    assert ema_decay(0.99, 8) == pytest.approx(0.5)  # 9 / 18
    assert ema_decay(0.99, 890) == pytest.approx(891 / 900)
    assert ema_decay(0.99, 5000) == 0.99
    assert ema_decay(0.0, 5000) == 0.0  # decay 0: the average is the last iterate


def test_warmup_ema_averages_a_parameter_like_the_closed_form():
    """Weights w_t = t after step t: the callback's average equals the recursion
    w̄ ← δ_t w̄ + (1 − δ_t) w_t with δ_t = ema_decay(0.9, t) (the first update copies w_1)."""
    from torch.optim.swa_utils import AveragedModel

    from ot_experiments.callbacks import WarmupEMA, ema_decay

    callback = WarmupEMA(decay=0.9)
    model = torch.nn.Linear(1, 1, bias=False)
    average = AveragedModel(model, **callback._kwargs)
    expected = None
    for step in range(1, 40):
        model.weight.data.fill_(float(step))
        average.update_parameters(model)
        n = step - 1  # updates before this one
        expected = (
            float(step)
            if expected is None
            else (ema_decay(0.9, n) * expected + (1 - ema_decay(0.9, n)) * step)
        )
        assert average.module.weight.item() == pytest.approx(expected, rel=1e-6)
    assert callback.should_update(step_idx=0) and not callback.should_update(epoch_idx=0)
