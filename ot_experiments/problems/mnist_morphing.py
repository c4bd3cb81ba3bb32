"""MNIST image morphing (GradNetOT paper, Table I / Fig. 3): OT between two digit images seen
as Gaussian-mixture densities on [0, 1]².

An image with intensities I (28×28) becomes

    p(x) = Σⱼ wⱼ N(x; cⱼ, bw · I₂),   wⱼ = Iⱼ / Σ I,

with cⱼ the pixel centres (column/27, (27 − row)/27) — the y axis flipped so the digit stands
upright — and pixels with wⱼ ≤ ``weight_threshold`` dropped (weights renormalised). ``bw`` is a
VARIANCE. It is decayed geometrically from ``bandwidth_start`` to ``bandwidth_end`` during
training, whatever the method: ``bandwidth_at(progress)`` gives bw for progress ∈ [0, 1], and
the runner's ``ProblemProgress`` callback calls ``set_progress`` before every step (progress =
step / ``bandwidth_steps``, default the training length). Outside training the bandwidth is
``bandwidth_end``.

Baseline: the exact discrete OT plan π (POT ``ot.emd``) between the two weighted pixel grids
and its barycentric projection T_bary(cᵢ) = Σⱼ πᵢⱼ c'ⱼ / Σⱼ πᵢⱼ.
Metrics (``evaluate_method``, of every method): ``mse_bary`` = mean over 1,000 pixel centres
drawn from the source weights and over both coordinates of (T̂(cᵢ) − T_bary(cᵢ))²;
``mse_bary_samples`` = the authors' script: 1,000 source and 1,000 target samples at
bandwidth_end, uniform-weight ``ot.emd`` between them, barycentric projection, MSE at the
source samples.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ot_experiments.errors import ConfigError
from ot_experiments.problems.base import Problem

SIDE = 28


def pixel_centres(side: int = SIDE) -> Tensor:
    """Centres (side², 2) of an image's pixels in [0, 1]², row-major, y axis flipped:
    pixel (row, col) ↦ (col / (side − 1), (side − 1 − row) / (side − 1))."""
    rows, cols = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    xy = torch.stack([cols, side - 1 - rows], dim=-1).reshape(-1, 2).double()
    return xy / (side - 1)


def image_to_mixture(image: Tensor, threshold: float = 1e-3) -> tuple[Tensor, Tensor]:
    """(centres (k, 2), weights (k,)) of an image's Gaussian mixture: weights = intensity /
    total, pixels with weight ≤ ``threshold`` dropped and the rest renormalised to sum 1."""
    w = image.reshape(-1).double()
    w = w / w.sum()
    keep = w > threshold
    return pixel_centres(int(math.isqrt(w.numel())))[keep], w[keep] / w[keep].sum()


def mixture_log_density(x: Tensor, centres: Tensor, weights: Tensor, bandwidth: float) -> Tensor:
    """log Σⱼ wⱼ N(x; cⱼ, bw I) for x (n, 2) → (n,), by logsumexp over the k components.

    log N(x; c, bw I) = −‖x − c‖² / (2 bw) − (d/2) log(2π bw).
    """
    c = centres.to(x.device, x.dtype)
    logw = weights.to(x.device, x.dtype).log()
    sq = torch.cdist(x, c).square()
    d = x.shape[-1]
    return torch.logsumexp(logw - sq / (2 * bandwidth), dim=1) - 0.5 * d * math.log(
        2 * math.pi * bandwidth
    )


def sample_mixture(
    n: int,
    centres: Tensor,
    weights: Tensor,
    bandwidth: float,
    generator: torch.Generator | None = None,
    device="cpu",
) -> tuple[Tensor, Tensor]:
    """n samples (n, 2) float32 of the mixture and their component indices (n,)."""
    idx = torch.multinomial(weights.float(), n, replacement=True, generator=generator)
    noise = torch.randn(n, 2, generator=generator)
    x = centres[idx].float() + math.sqrt(bandwidth) * noise
    return x.to(device), idx


def barycentric_projection(plan: np.ndarray, target: np.ndarray) -> np.ndarray:
    """T_bary(xᵢ) = Σⱼ πᵢⱼ yⱼ / Σⱼ πᵢⱼ for a plan (n, m) and target points (m, d) → (n, d)."""
    mass = plan.sum(1, keepdims=True)
    return plan @ target / np.where(mass > 0, mass, 1.0)


class MnistMorphingProblem(Problem):
    """Source digit image → target digit image as 2-D Gaussian mixtures (module docstring).

    Parameters
    ----------
    dim : int
        Must be 2.
    source_digit, target_digit : int
        Digit classes 0–9.
    source_index, target_index : int
        Which training image of that class (paper: the first (0) for the source and the second
        (1) for the target).
    dataset : {"mnist", "fashion_mnist"}
        Image source (``ot_experiments.data.load_mnist``).
    data_dir : str
        Folder with the IDX files (fallbacks: see ``load_mnist``).
    bandwidth_start, bandwidth_end : float
        Kernel variance at the start and end of training (paper: 1e-2 → 1e-4).
    weight_threshold : float
        Pixels with normalised intensity ≤ this are dropped (paper: 1e-3).
    eval_samples : int
        Points for ``mse_bary`` (paper: 1000).
    seed : int
        Seed of the evaluation samples.
    bandwidth_steps : int, optional
        Steps over which the bandwidth decays; None = the whole training.
    """

    offers = frozenset({"samples", "log_density"})

    def __init__(
        self,
        dim: int = 2,
        source_digit: int = 0,
        target_digit: int = 4,
        source_index: int = 0,
        target_index: int = 1,
        dataset: str = "mnist",
        data_dir: str | None = None,
        bandwidth_start: float = 1e-2,
        bandwidth_end: float = 1e-4,
        weight_threshold: float = 1e-3,
        eval_samples: int = 1000,
        seed: int = 0,
        bandwidth_steps: int | None = None,
    ) -> None:
        if dim != 2:
            raise ConfigError(f"problem 'mnist_morphing' is two-dimensional: set d=2 (got d={dim})")
        for name, digit in (("source_digit", source_digit), ("target_digit", target_digit)):
            if not isinstance(digit, int) or not 0 <= digit <= 9:
                raise ConfigError(f"problem.{name}={digit!r} is not valid; choose a class 0-9")
        if not 0 < bandwidth_end <= bandwidth_start:
            raise ConfigError(
                "problem.bandwidth_start and bandwidth_end must satisfy 0 < end <= start "
                f"(got {bandwidth_start}, {bandwidth_end})"
            )
        from ot_experiments.data import load_mnist

        images, labels, self.data_source = load_mnist(dataset, "train", data_dir)
        self.dim = 2
        self.source_digit, self.target_digit = source_digit, target_digit
        self.source_image = self._pick(images, labels, source_digit, source_index)
        self.target_image = self._pick(images, labels, target_digit, target_index)
        self.src_centres, self.src_weights = image_to_mixture(self.source_image, weight_threshold)
        self.tgt_centres, self.tgt_weights = image_to_mixture(self.target_image, weight_threshold)
        self.bandwidth_start = float(bandwidth_start)
        self.bandwidth_end = float(bandwidth_end)
        self.bandwidth = self.bandwidth_end
        self.bandwidth_steps = None if bandwidth_steps is None else max(int(bandwidth_steps), 1)
        self.eval_samples = int(eval_samples)
        self.seed = int(seed)
        self._pixel_map: Tensor | None = None

    @staticmethod
    def _pick(images, labels, digit: int, index: int) -> Tensor:
        pos = np.flatnonzero(labels == digit)
        if not 0 <= index < len(pos):
            raise ConfigError(
                f"there are {len(pos)} training images of class {digit}; "
                f"choose an index in 0..{len(pos) - 1} (got {index})"
            )
        return torch.from_numpy(images[pos[index]].astype(np.float64))

    @property
    def label(self) -> str:
        """The digit pair, e.g. "0to4" (a T3 cell)."""
        return f"{self.source_digit}to{self.target_digit}"

    # bandwidth schedule ------------------------------------------------------------------
    def bandwidth_at(self, progress: float) -> float:
        """bw(t) = bw_start (bw_end / bw_start)^t for training progress t ∈ [0, 1]."""
        t = min(max(float(progress), 0.0), 1.0)
        return self.bandwidth_start * (self.bandwidth_end / self.bandwidth_start) ** t

    def set_progress(self, step: int | None, steps: int) -> dict[str, float]:
        """bandwidth ← ``bandwidth_at(step / S)``, S = ``bandwidth_steps`` or ``steps``;
        ``step`` None (training over): the final bandwidth."""
        if step is None:
            self.bandwidth = self.bandwidth_at(1.0)
        else:
            total = self.bandwidth_steps or max(int(steps), 1)
            self.bandwidth = self.bandwidth_at(min(step / total, 1.0))
        return {"bandwidth": self.bandwidth}

    # samples and densities -----------------------------------------------------------------
    def sample_source(self, n, *, generator=None, device="cpu", cls=None) -> Tensor:
        return sample_mixture(
            n, self.src_centres, self.src_weights, self.bandwidth, generator, device
        )[0]

    def sample_target(self, n, *, generator=None, device="cpu", cls=None) -> Tensor:
        return sample_mixture(
            n, self.tgt_centres, self.tgt_weights, self.bandwidth, generator, device
        )[0]

    def log_density_source(self, x: Tensor) -> Tensor:
        return mixture_log_density(x, self.src_centres, self.src_weights, self.bandwidth)

    def log_density_target(self, y: Tensor) -> Tensor:
        return mixture_log_density(y, self.tgt_centres, self.tgt_weights, self.bandwidth)

    # the discrete OT baseline --------------------------------------------------------------
    def pixel_barycentric_map(self) -> Tensor:
        """T_bary at every kept source pixel centre (k, 2), from ``ot.emd`` on the pixel grids."""
        if self._pixel_map is None:
            from ot_experiments.metrics.distances import exact_plan

            a = self.src_weights.numpy()
            b = self.tgt_weights.numpy()
            xs, xt = self.src_centres.numpy(), self.tgt_centres.numpy()
            plan = exact_plan(xs, xt, weights=(a / a.sum(), b / b.sum()))
            self._pixel_map = torch.from_numpy(barycentric_projection(plan, xt))
        return self._pixel_map

    def evaluate_method(self, method, x: Tensor | None = None, full: bool = True) -> dict:
        """``mse_bary`` (pixel-grid plan) and ``mse_bary_samples`` (authors' sample protocol)
        of ``method.transport`` (or of a callable map); ``x`` is not used."""
        from ot_experiments.metrics.distances import exact_plan

        transport = getattr(method, "transport", method)

        g = torch.Generator().manual_seed(self.seed + 777)
        n = self.eval_samples
        idx = torch.multinomial(self.src_weights.float(), n, replacement=True, generator=g)
        centres = self.src_centres[idx].float()
        ref = self.pixel_barycentric_map()[idx].float()
        out = {"mse_bary": float((transport(centres) - ref).square().mean())}

        bw = self.bandwidth_end
        xs = sample_mixture(n, self.src_centres, self.src_weights, bw, g)[0]
        xt = sample_mixture(n, self.tgt_centres, self.tgt_weights, bw, g)[0]
        plan = exact_plan(xs, xt, max_iter=100_000)  # POT's default iteration cap
        ref_s = torch.from_numpy(barycentric_projection(plan, xt.double().numpy())).float()
        out["mse_bary_samples"] = float((transport(xs) - ref_s).square().mean())
        return out

    # figures -----------------------------------------------------------------------------
    def figures(self, method, out: Path) -> list[Path]:
        """Paper Fig. 3 for a trained ``method`` (anything with ``transport``, or a callable
        map): images, displacement arrows (learned vs barycentric), interpolation
        (1 − t) x + t T(x) coloured by source position, pushed density vs target image."""
        transport = method.transport if hasattr(method, "transport") else method
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib import colormaps

        c = self.src_centres.float()
        learned = transport(c)
        bary = self.pixel_barycentric_map().float()
        g = torch.Generator().manual_seed(5)
        bw = self.bandwidth_end
        xs = sample_mixture(1000, self.src_centres, self.src_weights, bw, g)[0]
        txs = transport(xs)
        xn = (xs - xs.min(0).values) / (xs.max(0).values - xs.min(0).values + 1e-8)
        colours = colormaps["rainbow"]((0.5 * xn[:, 0] + 0.5 * xn[:, 1]).numpy())
        many = sample_mixture(20_000, self.src_centres, self.src_weights, bw, g)[0]
        edges = np.linspace(-0.5 / (SIDE - 1), 1 + 0.5 / (SIDE - 1), SIDE + 1)
        hist, _, _ = np.histogram2d(*transport(many).numpy().T, bins=[edges, edges])
        pushed = hist.T[::-1]  # rows = flipped y, columns = x, like the image

        fig, axes = plt.subplots(2, 4, figsize=(15, 7.6))
        axes[0, 0].imshow(self.source_image.numpy(), cmap="gray_r")
        axes[0, 0].set_title(f"source digit {self.source_digit}")
        axes[0, 1].imshow(self.target_image.numpy(), cmap="gray_r")
        axes[0, 1].set_title(f"target digit {self.target_digit}")
        for ax, (name, tc) in zip(
            axes[0, 2:], (("learned T(x) − x", learned), ("barycentric", bary))
        ):
            disp = (tc - c).numpy()
            ax.quiver(
                *c.numpy().T,
                *disp.T,
                self.src_weights.numpy(),
                angles="xy",
                scale_units="xy",
                scale=1,
                width=0.004,
                cmap="viridis",
            )
            ax.set_title(f"displacement: {name}")
        for ax, t in zip(axes[1, :3], (0.0, 0.5, 1.0)):
            pts = ((1 - t) * xs + t * txs).numpy()
            ax.scatter(*pts.T, s=5, c=colours)
            ax.set_title(f"(1 − t) x + t T(x), t = {t}")
        for ax in (*axes[0, 2:], *axes[1, :3]):
            ax.set_xlim(-0.1, 1.1)
            ax.set_ylim(-0.1, 1.1)
            ax.set_aspect("equal")
        axes[1, 3].imshow(pushed, cmap="gray_r")
        axes[1, 3].set_title("pushed density T#p (histogram)")
        for ax in (axes[0, 0], axes[0, 1], axes[1, 3]):
            ax.set_xticks([])
            ax.set_yticks([])
        fig.tight_layout()
        path = Path(out) / "morphing.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return [path]


__all__ = [
    "MnistMorphingProblem",
    "barycentric_projection",
    "image_to_mixture",
    "mixture_log_density",
    "pixel_centres",
    "sample_mixture",
]
