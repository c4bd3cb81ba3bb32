"""The Python API: ``otx.fit(x, y)`` on arrays, with the CLI's configs, defaults and checks."""

import numpy as np
import pytest
import torch

import ot_experiments as otx
from ot_experiments.errors import ConfigError
from ot_experiments.metrics import l2_uvp
from ot_experiments.problems import GaussianProblem

from .conftest import read_results, run_folders, train

STEPS = 100


def test_fit_on_a_gaussian_pair_reaches_the_cli_uvp(tmp_path):
    problem = GaussianProblem(8, seed=0)
    g = torch.Generator().manual_seed(1)
    x = problem.sample_source(20_000, generator=g).numpy()
    y = problem.sample_target(20_000, generator=g).numpy()
    model = otx.fit(x, y, steps=STEPS, progress=False, overrides=["threads=1"])
    xt = problem.sample_source(2000, generator=g)
    ours = l2_uvp(model.transport(xt), problem.transport_true(xt), problem.target_variance())

    train(tmp_path, "d=8", f"trainer.max_steps={STEPS}", "logger=csv", "threads=1")
    (folder,) = run_folders(tmp_path)
    cli = read_results(folder)["metrics"]["uvp_fwd"]
    assert ours <= 1.5 * cli, (ours, cli)  # finite samples instead of fresh ones: as good

    out = model.transport(x[:5])
    assert isinstance(out, np.ndarray) and out.shape == (5, 8)
    back = model.inverse_transport(torch.as_tensor(y[:3]))
    assert isinstance(back, torch.Tensor) and back.shape == (3, 8)


def test_fit_with_labels_is_class_conditional_and_checks_its_input():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(-3, 0.3, (200, 2)), rng.normal(3, 0.3, (200, 2))])
    labels = np.repeat([0, 1], 200)
    model = otx.fit(
        x,
        -x,
        labels_x=labels,
        labels_y=labels,
        steps=5,
        progress=False,
        overrides=["threads=1", "method.n_mmd=50", "method.n_collocation=50"],
    )
    assert model.problem.classes == (0, 1) and model.out_dir is None
    with pytest.raises(ConfigError, match="same d"):
        otx.fit(x, np.zeros((10, 3)), steps=2)
    with pytest.raises(ConfigError, match="needs log_density"):
        otx.fit(x, -x, method="gradnet", steps=2)
    with pytest.raises(ConfigError, match="labels for both"):
        otx.fit(x, -x, labels_x=labels, steps=2)
