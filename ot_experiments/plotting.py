"""Figures of a run: maps in 2-D, projections and training curves otherwise, and the density
evolution of a dynamic method."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402


def _segments(ax, a, b, color) -> None:
    segs = torch.stack([a, b], dim=1).numpy()
    ax.add_collection(LineCollection(segs, colors=color, linewidths=0.6, alpha=0.6, zorder=3))


def plot_maps_2d(x, y, tx, sy, path: Path, title: str = "") -> None:
    """Source, target and pushed samples with the maps as segments (forward | backward)."""
    has_bwd = sy is not None
    fig, axes = plt.subplots(
        1, 2 if has_bwd else 1, figsize=(11 if has_bwd else 5.5, 5), squeeze=False
    )
    ax = axes[0, 0]
    k = min(200, len(x))
    _segments(ax, x[:k], tx[:k], "0.4")
    ax.scatter(*y.T, s=3, c="tab:orange", alpha=0.3, label="target ν")
    ax.scatter(*x.T, s=3, c="tab:blue", alpha=0.3, label="source μ")
    ax.scatter(*tx.T, s=3, c="tab:green", alpha=0.6, label="T#μ (pushed)")
    ax.set_title("forward map T")
    ax.legend(loc="best", markerscale=3, fontsize=8)
    if has_bwd:
        ax = axes[0, 1]
        _segments(ax, y[:k], sy[:k], "0.4")
        ax.scatter(*x.T, s=3, c="tab:blue", alpha=0.3, label="source μ")
        ax.scatter(*y.T, s=3, c="tab:orange", alpha=0.3, label="target ν")
        ax.scatter(*sy.T, s=3, c="tab:red", alpha=0.6, label="S#ν (pulled back)")
        ax.set_title("backward map S")
        ax.legend(loc="best", markerscale=3, fontsize=8)
    for a in axes.flat:
        a.set_aspect("equal", adjustable="datalim")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_projection(y, tx, path: Path, title: str = "") -> None:
    """Pushed vs target samples projected on the two leading principal axes of both clouds.

    Both clouds fix the axes: axes fitted to the target sample alone are the directions where
    that sample happens to spread most, so in high d (e.g. 1000 points, d = 64) the target
    looks ~15 % wider along them than any other sample of ν, the pushed one included.
    """
    mean = y.mean(0)
    _, _, v = torch.linalg.svd(torch.cat([y, tx]) - mean, full_matrices=False)
    proj = v[:2].T
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.scatter(*((y - mean) @ proj).T, s=3, alpha=0.3, c="tab:orange", label="target ν")
    ax.scatter(*((tx - mean) @ proj).T, s=3, alpha=0.3, c="tab:green", label="T#μ (pushed)")
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.legend(markerscale=3)
    ax.set_title(title or "pushed vs target, 2-D projection")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def curve_scale(values: list[float]) -> str:
    """``"log"`` when every value is positive and they span a factor 10 or more (errors such as
    UVP, falling by decades), "linear" otherwise (e.g. accuracies in %)."""
    return "log" if min(values) > 0 and max(values) >= 10 * min(values) else "linear"


def plot_history(history: list[dict], keys: tuple[str, ...], path: Path) -> bool:
    """Validation metrics over training steps (y axis by ``curve_scale``); False when nothing
    to draw."""
    keys = [k for k in keys if any(k in h for h in history)]
    if not history or not keys:
        return False
    fig, ax = plt.subplots(figsize=(6, 4))
    values = []
    for k in keys:
        pts = [(h["step"], h[k]) for h in history if k in h]
        values += [v for _, v in pts]
        ax.plot(*zip(*pts), marker="o", label=k)
    ax.set_yscale(curve_scale(values))
    ax.set_xlabel("step")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def save_figures(
    problem, method, out: Path, history: list[dict] | None = None, n: int = 800
) -> list[Path]:
    """Write the run's figures into ``out`` and return their paths."""
    g = torch.Generator().manual_seed(1)
    x = problem.sample_source(n, generator=g)
    y = problem.sample_target(n, generator=g)
    tx = method.transport(x)
    sy = method.inverse_transport(y) if method.has_inverse else None
    title = f"{type(method).__name__} on {type(problem).__name__} (d={problem.dim})"
    paths = []
    if problem.dim == 2:
        paths.append(out / "maps.png")
        plot_maps_2d(x, y, tx, sy, paths[-1], title)
    else:
        paths.append(out / "projection.png")
        plot_projection(y, tx, paths[-1], title)
    curve = out / "training_curves.png"
    if history and plot_history(history, problem.curve_metrics, curve):
        paths.append(curve)
    return paths


SNAPSHOT_TIMES = (0.0, 0.2, 0.5, 0.8, 1.0)


def plot_density_evolution(
    method, problem, path: Path, n: int = 20_000, n_lines: int = 40, bins: int = 120
) -> None:
    """Densities of z(t) at t = 0, 1/5, 1/2, 4/5, 1 and of ρ1, first two coordinates, for a
    dynamic method (``method.trajectory``).

    Each panel is a 2-D histogram of n pushed samples (the marginal of (z₁, z₂) for d > 2)
    with ``n_lines`` paths in red; a cost along paths (``problem.path_cost``, e.g. an obstacle)
    is shaded in grey on the (x1, x2) plane (other coordinates 0). The axes are
    ``problem.plot_box()`` or the data's 0.2–99.8 % quantiles.
    """
    g = torch.Generator().manual_seed(2)
    x = problem.sample_source(n, generator=g)
    y = problem.sample_target(n, generator=g)
    fine = torch.linspace(0, 1, 41)
    ts = torch.unique(torch.cat([fine, torch.tensor(SNAPSHOT_TIMES)]))
    path_z = method.trajectory(x, ts)[..., :2]
    lines = path_z[:, :n_lines].permute(1, 0, 2).numpy()
    snaps = [path_z[int(torch.argmin((ts - t).abs()))] for t in SNAPSHOT_TIMES]
    box = problem.plot_box()
    if box is None:
        pts = torch.cat([x[:, :2], y[:, :2], *snaps])
        lo, hi = pts.quantile(0.002, 0), pts.quantile(0.998, 0)
        pad = 0.1 * (hi - lo)
        box = (
            float(lo[0] - pad[0]),
            float(hi[0] + pad[0]),
            float(lo[1] - pad[1]),
            float(hi[1] + pad[1]),
        )
    shade = None
    if "path_cost" in problem.offers:
        g1 = torch.linspace(box[0], box[1], 300)
        g2 = torch.linspace(box[2], box[3], 300)
        grid = torch.stack(torch.meshgrid(g1, g2, indexing="xy"), -1).reshape(-1, 2)
        grid = torch.cat([grid, torch.zeros(len(grid), problem.dim - 2)], 1)
        shade = problem.path_cost(grid).reshape(300, 300).numpy()
    panels = [*zip([f"t = {t:g}" for t in SNAPSHOT_TIMES], snaps), ("target ρ1", y[:, :2])]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.4))
    for ax, (title, pts) in zip(axes, panels):
        hist = torch.histogramdd(pts.double(), bins=[bins, bins], range=[*box], density=True).hist
        ax.imshow(hist.T.numpy(), origin="lower", extent=box, cmap="viridis", aspect="equal")
        if shade is not None:
            ax.contourf(
                torch.linspace(box[0], box[1], 300).numpy(),
                torch.linspace(box[2], box[3], 300).numpy(),
                shade,
                levels=[0.05 * shade.max(), 0.5 * shade.max(), shade.max() * 1.0001],
                colors=["0.75", "0.45"],
                alpha=0.6,
            )
        if title != "target ρ1":
            for line in lines:
                ax.plot(line[:, 0], line[:, 1], color="red", lw=0.5, alpha=0.7)
        ax.set_xlim(box[0], box[1])
        ax.set_ylim(box[2], box[3])
        ax.set_title(title, fontsize=9)
    fig.suptitle(
        f"{type(problem).__name__} {problem.label} d={problem.dim}: density of z(t) (x1, x2)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
