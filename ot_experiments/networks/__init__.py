"""Networks: plain ``torch.nn.Module``s with no OT logic."""

from ot_experiments.networks.mlp import MLP, DenseICNN, ResidualTanh

__all__ = ["MLP", "DenseICNN", "ResidualTanh"]
