"""How well do a domain's β-VAE latents separate its classes? (the ceiling of T5's shared map)

NCF's class-conditional latent OT uses one potential for all classes, so its map can only send
class k of the source to class k of the target as far as the source latents separate the
classes. This script trains (or loads from the cache) the β-VAE and classifier that
``problem=latent`` would use and prints the held-out accuracy of a 128-128 MLP classifier on
the normalised latents.

    .venv/bin/python scripts/latent_probe.py [--dataset fashion_mnist] [--dim 32] [--beta 0.01]
        [--per-class N] [--epochs 30] [--cache-dir outputs/cache]
"""

from __future__ import annotations

import argparse

import torch
from sklearn.neural_network import MLPClassifier

from ot_experiments.problems.latent import load_domain


def probe_accuracy(train_z: torch.Tensor, train_y, test_z, test_y, seed: int = 0) -> float:
    """Held-out accuracy of an MLP (128, 128) fitted on (already normalised) latents."""
    clf = MLPClassifier((128, 128), max_iter=500, random_state=seed)
    clf.fit(train_z.numpy(), train_y.numpy())
    return float(clf.score(test_z.numpy(), test_y.numpy()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="fashion_mnist", choices=["fashion_mnist", "mnist"])
    ap.add_argument("--dim", type=int, default=32)
    ap.add_argument("--beta", type=float, default=0.01)
    ap.add_argument(
        "--per-class", type=int, default=None, help="training images per class (default: all)"
    )
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--cache-dir", default="outputs/cache")
    ap.add_argument("--data-dir", default=None, help="folder with <dataset>/ IDX files")
    args = ap.parse_args()

    # the same VAE (and cache entry) as problem=latent with these settings
    dom = load_domain(
        args.dataset,
        dict(
            dim=args.dim, beta=args.beta, vae_epochs=args.epochs, train_per_class=args.per_class,
            test_per_class=None, data_dir=args.data_dir, download=False, classifier_epochs=10,
            cache_dir=args.cache_dir, retrain=False,
        ),
    )  # fmt: skip
    # the probe sees the training latents the OT problem samples from
    acc = probe_accuracy(dom.train_z, dom.train_y, dom.test_z, dom.test_y)
    print(
        f"{args.dataset} ({dom.info['data']}) d={args.dim} beta={args.beta:g} "
        f"per_class={args.per_class} epochs={args.epochs}: latent MLP probe {100 * acc:.1f} % "
        f"on {len(dom.test_y)} held-out images, reconstruction MSE {dom.info['recon_mse']:.4f}"
    )


if __name__ == "__main__":
    main()
