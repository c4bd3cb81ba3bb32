"""Colour transfer: image loading, histogram metrics, library baselines, a tiny NCF run."""

import numpy as np
import pytest
from skimage.color import rgb2lab

from ot_experiments.errors import ConfigError
from ot_experiments.problems.color_transfer import (
    ColorTransferProblem,
    colour_metrics,
    histogram_emd,
    histogram_intersection,
    histogram_matching,
    joint_histogram_intersection,
    load_rgb,
    reinhard,
)

from .conftest import FAST, read_results, run_folders, train


@pytest.fixture(scope="module")
def images():
    p = ColorTransferProblem(source="skimage:coffee", target="skimage:astronaut", max_side=96)
    return p.source_image, p.target_image


def test_load_errors_are_one_sentence(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_rgb(str(tmp_path / "missing.png"))
    with pytest.raises(ConfigError, match="grey-scale"):
        load_rgb("skimage:camera")
    with pytest.raises(ConfigError, match="no sample image"):
        load_rgb("skimage:nothing_here")
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    with pytest.raises(ConfigError, match="could not be read"):
        load_rgb(str(bad))
    with pytest.raises(ConfigError, match="set d=3"):
        ColorTransferProblem(dim=2)


def test_metrics_on_identical_and_shifted_images(images):
    src, _ = images
    same = colour_metrics(src, src)
    assert same["emd"] == pytest.approx(0, abs=1e-12)
    assert same["hi"] == pytest.approx(1) and same["hi_joint"] == pytest.approx(1)
    assert same["w2_sq_colors"] < 0.01
    flat = np.full_like(src, 0.25)
    shifted = flat + 0.5
    # W1 between two point masses in every channel is their distance (up to the bin grid)
    assert histogram_emd(flat, shifted) == pytest.approx(0.5, abs=1 / 64)
    assert histogram_intersection(flat, shifted) == 0
    assert joint_histogram_intersection(flat, shifted) == 0


def test_baselines_move_colours_towards_the_target(images):
    src, tgt = images
    before = colour_metrics(src, tgt)
    hm = colour_metrics(histogram_matching(src, tgt), tgt)
    assert hm["hi"] > 0.9 and hm["hi"] > before["hi"] and hm["emd"] < before["emd"]
    rh = reinhard(src, tgt)
    lab, lab_t = rgb2lab(rh).reshape(-1, 3), rgb2lab(tgt).reshape(-1, 3)
    np.testing.assert_allclose(lab.mean(0), lab_t.mean(0), atol=3.0)  # up to RGB clipping
    assert colour_metrics(rh, tgt)["w2_sq_colors"] < before["w2_sq_colors"]


def test_problem_samples_colours():
    p = ColorTransferProblem(max_side=64)
    x = p.sample_source(500)
    assert x.shape == (500, 3) and 0 <= float(x.min()) and float(x.max()) <= 1


def test_ncf_colour_transfer_run(tmp_path):
    train(tmp_path, *FAST, "problem=color_transfer", "problem.max_side=48")
    (folder,) = run_folders(tmp_path)
    res = read_results(folder)
    assert res["d"] == 3 and res["status"] == "ok"
    for key in ("emd", "hi", "hi_joint", "w2_sq_colors", "emd_bwd", "hi_joint_bwd"):
        assert key in res["metrics"]
    for name in ("histogram_matching", "reinhard"):
        assert 0 < res["baselines"][name]["hi_joint"] <= 1
    assert (folder / "color_transfer.png").exists()
