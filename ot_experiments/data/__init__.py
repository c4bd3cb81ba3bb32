"""Datasets shared by the image problems (MNIST, Fashion-MNIST)."""

from ot_experiments.data.mnist import load_mnist, read_idx

__all__ = ["load_mnist", "read_idx"]
