"""Plain multilayer perceptron."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

ACTIVATIONS = {
    "softplus": nn.Softplus,
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "celu": nn.CELU,
    "silu": nn.SiLU,
    "elu": nn.ELU,
}


def make_activation(name: str, beta: float | None = None) -> nn.Module:
    """Activation module by name; ``beta`` sets Softplus's sharpness."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation '{name}'; choose one of {', '.join(ACTIVATIONS)}")
    if name == "softplus" and beta is not None:
        return nn.Softplus(beta=beta)
    return ACTIVATIONS[name]()


class MLP(nn.Module):
    """x ↦ W_L σ(… σ(W_1 x + b_1) …) + b_L, shapes (n, in_dim) → (n, out_dim)."""

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        hidden: Sequence[int] = (64, 64, 64, 64),
        activation: str = "softplus",
        beta: float | None = None,
    ) -> None:
        super().__init__()
        sizes = [in_dim, *hidden]
        layers: list[nn.Module] = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(a, b), make_activation(activation, beta)]
        layers.append(nn.Linear(sizes[-1], out_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class DenseICNN(nn.Module):
    """DenseICNN of Korotin et al. (2021), here WITHOUT positivity constraints.

    Every hidden layer k receives a rank-r quadratic function of the input:
    Quad_k(x)_j = Σ_r (A_{k,j,r}·x)² + B_{k,j}·x + c_{k,j}, and
    h_1 = σ(Quad_1(x)), h_{k+1} = σ(W_k h_k + Quad_{k+1}(x)), f(x) = w·h_K.
    Shapes (n, in_dim) → (n, 1).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int = 1,
        hidden: Sequence[int] = (64, 64, 32),
        rank: int = 1,
        activation: str = "celu",
    ) -> None:
        super().__init__()
        hidden = [int(h) for h in hidden]
        self.rank = rank
        self.quad = nn.ParameterList(
            [nn.Parameter(torch.randn(in_dim, h * rank) / in_dim**0.5) for h in hidden]
        )
        self.lin_in = nn.ModuleList([nn.Linear(in_dim, h) for h in hidden])
        self.lin_hidden = nn.ModuleList(
            [nn.Linear(a, b, bias=False) for a, b in zip(hidden[:-1], hidden[1:])]
        )
        self.out = nn.Linear(hidden[-1], out_dim, bias=False)
        self.act = make_activation(activation)

    def _quadratic(self, k: int, x: Tensor) -> Tensor:
        q = (x @ self.quad[k]).square()
        q = q.view(x.shape[0], -1, self.rank).sum(-1)
        return q + self.lin_in[k](x)

    def forward(self, x: Tensor) -> Tensor:
        h = self.act(self._quadratic(0, x))
        for k, layer in enumerate(self.lin_hidden, start=1):
            h = self.act(layer(h) + self._quadratic(k, x))
        return self.out(h)


class ResidualTanh(nn.Module):
    """Residual tanh network (NCF's latent-space potential).

    h_0 = W_in x,  h_{l+1} = h_l + τ tanh(W_l h_l + b_l)  (l < depth),  f(x) = W_out h_L + b;
    shapes (n, in_dim) → (n, out_dim).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int = 1,
        width: int = 128,
        depth: int = 4,
        residual_scale: float = 1.0,
    ) -> None:
        super().__init__()
        self.inp = nn.Linear(in_dim, width)
        self.blocks = nn.ModuleList([nn.Linear(width, width) for _ in range(depth)])
        self.out = nn.Linear(width, out_dim)
        self.residual_scale = float(residual_scale)

    def forward(self, x: Tensor) -> Tensor:
        h = self.inp(x)
        for block in self.blocks:
            h = h + self.residual_scale * torch.tanh(block(h))
        return self.out(h)
