"""Time-conditioned velocity networks f(x, t) for neural-ODE flows.

``ConcatSquashLinear`` is the layer of FFJORD (Grathwohl et al., 2019) that the Q-flow
authors' demo uses: the time gates and shifts every hidden unit,

    CSL(x, t) = (W x + b) ⊙ σ(a t + c) + e t.

``ConcatSquashVelocity`` stacks them with Softplus(β) activations (reference: widths
256-256, β = 20). Classifier and ratio networks are plain ``networks.mlp.MLP``s.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ot_experiments.networks.mlp import make_activation


def as_time_column(t: Tensor | float, n: int, like: Tensor) -> Tensor:
    """Broadcast a time (scalar, (), (1,), (n,) or (n, 1)) to a column of shape (n, 1)."""
    t = torch.as_tensor(t, dtype=like.dtype, device=like.device)
    if t.dim() == 0 or t.numel() == 1:
        return t.reshape(1, 1).expand(n, 1)
    return t.reshape(n, 1)


class ConcatSquashLinear(nn.Module):
    """(W x + b) ⊙ sigmoid(a t + c) + e t; x (n, in_dim), t (n, 1) → (n, out_dim)."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.layer = nn.Linear(in_dim, out_dim)
        self.gate = nn.Linear(1, out_dim)
        self.shift = nn.Linear(1, out_dim, bias=False)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.layer(x) * torch.sigmoid(self.gate(t)) + self.shift(t)


class ConcatSquashVelocity(nn.Module):
    """Velocity f(x, t): ConcatSquash layers with a time gate in every layer.

    Parameters
    ----------
    in_dim : int
        Dimension d of x.
    out_dim : int, optional
        Output dimension (defaults to ``in_dim``).
    hidden : sequence of int
        Hidden widths (reference: 256, 256).
    activation : str
        Activation name from ``networks.mlp.ACTIVATIONS`` (reference: softplus).
    beta : float or None
        Softplus sharpness β (reference: 20).

    ``forward(t, x)`` follows torchdiffeq's ``func(t, y)`` order: t scalar or (n,) / (n, 1),
    x (n, d) → (n, out_dim).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int | None = None,
        hidden: Sequence[int] = (256, 256),
        activation: str = "softplus",
        beta: float | None = 20.0,
    ) -> None:
        super().__init__()
        out_dim = in_dim if out_dim is None else out_dim
        sizes = [in_dim, *[int(h) for h in hidden], out_dim]
        self.layers = nn.ModuleList(
            [ConcatSquashLinear(a, b) for a, b in zip(sizes[:-1], sizes[1:])]
        )
        self.acts = nn.ModuleList([make_activation(activation, beta) for _ in sizes[1:-1]])

    def forward(self, t: Tensor | float, x: Tensor) -> Tensor:
        tc = as_time_column(t, x.shape[0], x)
        h = x
        for k, layer in enumerate(self.layers):
            h = layer(h, tc)
            if k < len(self.acts):
                h = self.acts[k](h)
        return h


class TimeConcatMLP(nn.Module):
    """r(x, t) = MLP([t, x]); x (n, d), t scalar / (n,) / (n, 1) → (n,).

    The Q-flow-ratio net of the paper (input [t, x], 312-312-312, Softplus).
    """

    def __init__(
        self,
        in_dim: int,
        hidden: Sequence[int] = (312, 312, 312),
        activation: str = "softplus",
        beta: float | None = 20.0,
    ) -> None:
        super().__init__()
        from ot_experiments.networks.mlp import MLP

        self.net = MLP(in_dim + 1, 1, hidden=hidden, activation=activation, beta=beta)

    def forward(self, x: Tensor, t: Tensor | float) -> Tensor:
        tc = as_time_column(t, x.shape[0], x)
        return self.net(torch.cat([tc, x], dim=1))[:, 0]


__all__ = ["ConcatSquashLinear", "ConcatSquashVelocity", "TimeConcatMLP", "as_time_column"]
