"""Networks: plain ``torch.nn.Module``s with no OT logic."""

from ot_experiments.networks.mlp import MLP, DenseICNN

__all__ = ["MLP", "DenseICNN"]
