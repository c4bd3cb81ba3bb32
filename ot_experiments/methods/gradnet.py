"""GradNetOT: a monotone gradient network trained with a Monge–Ampère loss
(docs/methods/gradnet.md).

By Brenier, the quadratic-cost OT map T = ∇φ (φ convex) satisfies q(T(x)) det J_T(x) = p(x).
With T an mGradNet (J_T symmetric PSD by construction) the method minimises, over x ~ p,

    L = E_x ℓ( log det J_T(x),  log p(x) − log q(T(x)) ),   ℓ = |·| (L1, default) or (·)².

J_T comes in closed form from the network (J = Σ Wᵀ D W, log det by Cholesky); any other
network (the unconstrained MLP baseline) falls back to ``torch.func`` and ``slogdet``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from ot_experiments.errors import ConfigError
from ot_experiments.methods.base import OTMethod
from ot_experiments.networks.jacobians import (
    autograd_jacobian,
    is_monotone,
    log_abs_det,
    map_and_jacobian,
)


def monge_ampere_residual(logdet: Tensor, log_p: Tensor, log_q_tx: Tensor) -> Tensor:
    """r(x) = log det J_T(x) − (log p(x) − log q(T(x))), all shapes (n,) → (n,).

    Zero for every x exactly when T pushes p to q (Monge–Ampère / change of variables).
    """
    return logdet - (log_p - log_q_tx)


def monge_ampere_loss(
    logdet: Tensor, log_p: Tensor, log_q_tx: Tensor, loss: str = "l1", detach_label: bool = False
) -> Tensor:
    """ℓ-mean of the Monge–Ampère residual: mean |r| (``l1``) or mean r² (``l2``).

    ``detach_label`` treats the label log p(x) − log q(T(x)) as a constant (no gradient
    through T in log q(T(x))).
    """
    label = log_p - log_q_tx
    if detach_label:
        label = label.detach()
    r = logdet - label
    if loss == "l1":
        return r.abs().mean()
    if loss == "l2":
        return r.square().mean()
    raise ConfigError(f"method.loss={loss!r} is not valid; choose l1 or l2")


def map_mse(tx: Tensor, ref: Tensor) -> float:
    """Mean squared error over samples AND coordinates, mean((T̂(x) − T_ref(x))²) — the
    convention of sklearn's ``mean_squared_error`` used by the authors; (n, d), (n, d)."""
    return float((tx - ref).square().mean())


def fraction_not_monotone(jac: Tensor, tol: float = 1e-6) -> float:
    """Share of Jacobians (n, d, d) that are not symmetric PSD: asymmetric beyond ``tol``
    (relative) or with a negative eigenvalue of the symmetric part below −tol·‖J‖."""
    scale = jac.flatten(1).abs().amax(1).clamp_min(1e-12)
    asym = (jac - jac.transpose(1, 2)).flatten(1).abs().amax(1) / scale > tol
    eig_min = torch.linalg.eigvalsh(0.5 * (jac + jac.transpose(1, 2)))[:, 0]
    return float((asym | (eig_min < -tol * scale)).float().mean())


class GradNetOT(OTMethod):
    """GradNetOT (Monge–Ampère training of a gradient network).

    Parameters
    ----------
    problem : Problem
        Must offer samples and both log-densities.
    network : callable
        Partial network constructor, called as ``network(in_dim=d, out_dim=d)``:
        ``MGradNetC`` / ``MGradNetM`` (closed-form Jacobian) or any R^d → R^d module
        (autograd Jacobian).
    optimizer, scheduler : callable
        Partial constructors (see ``OTMethod``).
    loss : {"l1", "l2"}
        ℓ in the Monge–Ampère loss (paper code: L1).
    batch_size : int
        Source samples per step (paper: 1000).
    detach_label : bool
        Stop gradients through log q(T(x)) in the label (default False: they flow).
    jacobian : {"auto", "closed_form", "autograd"}
        How J_T is computed; ``auto`` = closed form where the network has one.
    eval_points : int
        Samples for the validation metrics.
    """

    needs = frozenset({"samples", "log_density"})

    def __init__(
        self,
        problem,
        network: Callable,
        optimizer: Callable,
        scheduler: Callable | None = None,
        loss: str = "l1",
        batch_size: int = 1000,
        detach_label: bool = False,
        jacobian: str = "auto",
        eval_points: int = 2000,
    ) -> None:
        super().__init__(problem, optimizer, scheduler, eval_points=eval_points)
        if loss not in ("l1", "l2"):
            raise ConfigError(f"method.loss={loss!r} is not valid; choose l1 or l2")
        if jacobian not in ("auto", "closed_form", "autograd"):
            raise ConfigError(
                f"method.jacobian={jacobian!r} is not valid; choose auto, closed_form or autograd"
            )
        self.dim = problem.dim
        self.net = network(in_dim=self.dim, out_dim=self.dim)
        if jacobian == "closed_form" and not hasattr(self.net, "forward_and_jacobian"):
            raise ConfigError(
                f"method.jacobian=closed_form needs a gradient network; {type(self.net).__name__} "
                "has no closed-form Jacobian (use jacobian=auto or autograd)"
            )
        self.loss_name = loss
        self.batch_size = int(batch_size)
        self.detach_label = bool(detach_label)
        self.jacobian_mode = jacobian
        self.psd = is_monotone(self.net)

    # maps -------------------------------------------------------------------------------
    def map_and_jacobian(self, x: Tensor, upper_only: bool = False) -> tuple[Tensor, Tensor]:
        """T(x) (n, d) and J_T(x) (n, d, d) (closed form: only the upper triangle with
        ``upper_only``, all that the Cholesky log det reads)."""
        if self.jacobian_mode == "autograd":
            return self.net(x), autograd_jacobian(self.net, x)
        return map_and_jacobian(self.net, x, upper_only)

    def transport(self, x: Tensor, chunk: int = 8192) -> Tensor:
        return self.map_in_chunks(self.net, x, chunk).to(x.device, x.dtype)

    def jacobian(self, x: Tensor) -> Tensor:
        """J_T(x), (n, d) → (n, d, d), detached."""
        with torch.no_grad():
            if hasattr(self.net, "forward_and_jacobian") and self.jacobian_mode != "autograd":
                return self.net.forward_and_jacobian(x.to(self.device))[1].to(x.device)
        return autograd_jacobian(self.net, x.to(self.device)).detach().to(x.device)

    def jacobian_float64(self, x: Tensor) -> Tensor:
        """J_T(x) (n, d, d) from a float64 copy of the network (for the monotonicity check,
        where float32 rounding of a near-singular PSD J can look like a negative eigenvalue)."""
        net = copy.deepcopy(self.net).double().cpu()
        x = x.detach().double().cpu()
        if hasattr(net, "forward_and_jacobian") and self.jacobian_mode != "autograd":
            with torch.no_grad():
                return net.forward_and_jacobian(x)[1]
        return autograd_jacobian(net, x).detach()

    # loss -------------------------------------------------------------------------------
    def training_loss(self, step: int):
        x = self.problem.sample_source(self.batch_size, device=self.device)
        # the closed-form Jacobian and its Cholesky log det stay in float32 under a
        # mixed-precision autocast (trainer.precision=bf16-mixed / 16-mixed)
        with torch.autocast(self.device.type, enabled=False):
            tx, jac = self.map_and_jacobian(x.float(), upper_only=self.psd)
            logdet = log_abs_det(jac, psd=self.psd)
        log_p = self.problem.log_density_source(x)
        log_q = self.problem.log_density_target(tx)
        loss = monge_ampere_loss(logdet, log_p, log_q, self.loss_name, self.detach_label)
        logs = {
            "abs_residual": monge_ampere_residual(logdet, log_p, log_q).abs().mean().detach(),
        }
        return loss, logs

    # metrics and figures ------------------------------------------------------------------
    def extra_metrics(self, x: Tensor, problem) -> dict[str, float]:
        out: dict[str, float] = {}
        if "ground_truth" in problem.offers:
            out["mse"] = map_mse(self.transport(x), problem.transport_true(x))
        out["frac_not_monotone"] = fraction_not_monotone(self.jacobian_float64(x[:500]))
        return out

    def extra_figures(self, out: Path) -> list[Path]:
        paths: list[Path] = []
        problem = self.problem
        if problem.dim == 2 and "ground_truth" in problem.offers:
            path = Path(out) / "gradnet_maps.png"
            plot_fig1(problem, self.transport, path, title=type(self.net).__name__)
            paths.append(path)
        return paths  # problem figures (e.g. morphing.png) come from problem.figures(method, out)


def position_colours(x: Tensor):
    """RGBA colours (n, 4) from a point's normalised position: rainbow(½ x̂₁ + ½ x̂₂)."""
    from matplotlib import colormaps

    lo, hi = x.min(0).values, x.max(0).values
    xn = (x - lo) / (hi - lo + 1e-8)
    return colormaps["rainbow"]((0.5 * xn[:, 0] + 0.5 * xn[:, 1]).numpy())


def angle_colours(x: Tensor):
    """RGBA colours (n, 4): hue = angle of the whitened point around the sample mean, so that
    rotations and reflections of a map show as permuted colours (not only along one axis)."""
    from matplotlib import colormaps

    xc = x - x.mean(0)
    white = torch.linalg.solve_triangular(
        torch.linalg.cholesky(torch.cov(xc.T).reshape(2, 2)), xc.T, upper=False
    ).T
    angle = (torch.atan2(white[:, 1], white[:, 0]) / (2 * torch.pi)) % 1.0
    return colormaps["hsv"](angle.numpy())


def plot_fig1(problem, transport, path: Path, n: int = 1000, title: str = "") -> None:
    """Paper Fig. 1: source points coloured by position | their images under the learned map
    | under the true map, in two colourings — the paper's rainbow(½x̂₁ + ½x̂₂) (top) and the
    angle around the mean (bottom). A monotone map keeps both colour orders."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    g = torch.Generator().manual_seed(3)
    x = problem.sample_source(n, generator=g)
    panels = [
        ("source x ~ p", x),
        (f"learned T(x) ({title})", transport(x)),
        ("true T*(x)", problem.transport_true(x)),
    ]
    fig, axes = plt.subplots(2, 3, figsize=(13, 8.6), sharex=True, sharey=True)
    for row, colours in zip(axes, (position_colours(x), angle_colours(x))):
        for ax, (name, pts) in zip(row, panels):
            ax.scatter(*pts.T.numpy(), s=4, c=colours)
            ax.set_title(name)
            ax.set_aspect("equal")
            ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


__all__ = [
    "GradNetOT",
    "fraction_not_monotone",
    "map_mse",
    "monge_ampere_loss",
    "monge_ampere_residual",
    "angle_colours",
    "plot_fig1",
    "position_colours",
]
