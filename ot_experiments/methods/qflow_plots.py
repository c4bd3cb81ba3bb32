"""Q-flow's figures: trajectories after flow matching and after refinement, the refinement
curves, and the density-ratio heatmaps with the flow's intermediate distributions."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ot_experiments.methods.density_ratio import interval_integral, mean_absolute_error

if TYPE_CHECKING:
    from ot_experiments.methods.qflow import QFlow
    from ot_experiments.problems.base import Problem


def qflow_figures(method: QFlow, out: Path) -> list[Path]:
    """Q-flow's figures in the run folder ``out``: trajectories (2-D), the refinement curves
    (after a refinement) and the density-ratio figures (2-D, after density-ratio training)."""
    paths: list[Path] = []
    if method.dim == 2:
        paths.append(plot_trajectories(method, out / "trajectories.png"))
    if method.refine_log:
        paths.append(plot_refinement(method.refine_log, out / "refinement.png"))
    if method.dre is not None and method.dre.trained and method.dim == 2:
        paths += plot_dre(method, method.problem, out)
    return paths


def _draw_paths(ax, traj: Tensor, title: str, n: int = 300) -> None:
    from matplotlib.collections import LineCollection

    segs = traj[:, :n].permute(1, 0, 2).numpy()
    ax.add_collection(LineCollection(segs, colors="0.35", linewidths=0.5, alpha=0.4))
    ax.scatter(*traj[0, :n].T, s=3, c="tab:blue", label="x(0) ~ P")
    ax.scatter(*traj[-1, :n].T, s=3, c="tab:green", label="x(1) = T(x)")
    ax.set_title(title)
    ax.set_aspect("equal", adjustable="datalim")


def plot_trajectories(method: QFlow, path: Path) -> Path:
    """Trajectories after flow matching (if kept) and after refinement, side by side; titles
    give E‖T(x) − x‖² and the path energy Σ_k E‖x_k − x_{k−1}‖²/h_k (equal for straight paths)."""
    import matplotlib.pyplot as plt

    g = torch.Generator().manual_seed(3)
    x = method.problem.sample_source(method.eval_points, generator=g)
    ts = torch.linspace(0.0, 1.0, 21)
    now = method.trajectory(x, ts).cpu()
    panels = []
    if method._fm_snapshot is not None:
        snap = method._fm_snapshot
        title = f"after flow matching\nE‖T(x)−x‖² = {snap['w2_sq']:.3f}"
        panels.append((snap["traj"], f"{title}, path energy {snap['path_energy']:.3f}"))
    cost = float((now[-1] - now[0]).square().sum(1).mean())
    energy = method.discrete_kinetic_energy(x)
    label = "after refinement" if method.refine_log else "final flow"
    panels.append((now, f"{label}\nE‖T(x)−x‖² = {cost:.3f}, path energy {energy:.3f}"))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 5), squeeze=False)
    y = method.problem.sample_target(1000, generator=g)
    for ax, (traj, title) in zip(axes[0], panels):
        ax.scatter(*y.T, s=2, c="tab:orange", alpha=0.3, label="target Q")
        _draw_paths(ax, traj, title)
    axes[0, 0].legend(loc="best", markerscale=3, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_refinement(log: list[dict[str, float]], path: Path) -> Path:
    """Transport cost Σ E‖Δx‖²/h and classifier KL per flow update, per direction."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for d, name in ((0.0, "P→Q"), (1.0, "Q→P")):
        rows = [r for r in log if r["direction"] == d]
        if not rows:
            continue
        steps = [r["step"] for r in rows]
        axes[0].plot(steps, [r["transport"] for r in rows], ".-", label=name)
        axes[1].plot(steps, [r["kl"] for r in rows], ".-", label=name)
    axes[0].set_title("transport cost Σ_k E‖x_k − x_{k−1}‖²/h_k")
    axes[1].set_title("classifier KL estimate −E r(T(x))")
    for ax in axes:
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _grid(low: Tensor, high: Tensor, n: int = 120) -> tuple[Tensor, Tensor, Tensor]:
    xs = torch.linspace(float(low[0]), float(high[0]), n)
    ys = torch.linspace(float(low[1]), float(high[1]), n)
    gx, gy = torch.meshgrid(xs, ys, indexing="xy")
    return gx, gy, torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1)


def plot_dre(method: QFlow, problem: Problem, out: Path) -> list[Path]:
    """True vs estimated log(q/p) heatmaps and the flow's intermediate distributions.

    ``log_ratio_heatmaps.png``: true, Q-flow-ratio, 1 ratio, KDE on a shared colour scale
    (MAE on the test points in the titles). ``flow_intermediate.png``: top, samples pushed
    to the grid times; bottom, the per-interval estimates ℓ_k (paper Fig. 3).
    """
    import matplotlib.pyplot as plt

    out = Path(out)
    low, high = problem.bounding_box()
    pad = 0.1 * (high - low)
    gx, gy, pts = _grid(low - pad, high + pad)
    true = problem.log_ratio_true(pts)
    est = method.log_ratio_estimates(pts)
    test = problem.ratio_test_points()
    test_true = problem.log_ratio_true(test)
    test_est = method.log_ratio_estimates(test)
    vmin, vmax = float(test_true.min()), float(test_true.max())
    panels = [("true log(q/p)", true, None)]
    names = {"flow_ratio": "Q-flow-ratio", "one_ratio": "1 ratio", "kde": "KDE"}
    for key, name in names.items():
        panels.append((name, est[key], mean_absolute_error(test_est[key], test_true)))
    fig, axes = plt.subplots(1, 4, figsize=(18, 4.4))
    for ax, (name, val, mae) in zip(axes, panels):
        im = ax.pcolormesh(
            gx, gy, val.reshape(gx.shape), vmin=vmin, vmax=vmax, cmap="coolwarm", shading="auto"
        )
        ax.set_title(name if mae is None else f"{name}, MAE {mae:.3f}")
        ax.set_aspect("equal")
    fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.85)
    heat = out / "log_ratio_heatmaps.png"
    fig.savefig(heat, dpi=100)
    plt.close(fig)

    ts = method.dre.grid()
    g = torch.Generator().manual_seed(11)
    traj = method.trajectory(problem.sample_source(2000, generator=g), ts).cpu()
    k = len(ts)
    fig, axes = plt.subplots(2, k, figsize=(2.2 * k, 4.6), squeeze=False)
    gx2, gy2, pts2 = _grid(low - pad, high + pad, 80)
    with torch.no_grad():
        z = pts2.to(method.device)
        ells = [
            interval_integral(method.ratio_net, z, float(ts[i - 1]), float(ts[i])).cpu()
            for i in range(1, k)
        ]
    lim = max(float(e.abs().quantile(0.99)) for e in ells) if ells else 1.0
    for i in range(k):
        ax = axes[0, i]
        ax.scatter(*traj[i].T, s=1, alpha=0.4)
        ax.set_title(f"t = {float(ts[i]):.2f}", fontsize=8)
        ax.set_xlim(float(low[0] - pad[0]), float(high[0] + pad[0]))
        ax.set_ylim(float(low[1] - pad[1]), float(high[1] + pad[1]))
        ax = axes[1, i]
        if i == 0:
            ax.axis("off")
            continue
        ax.pcolormesh(
            gx2,
            gy2,
            ells[i - 1].reshape(gx2.shape),
            cmap="coolwarm",
            vmin=-lim,
            vmax=lim,
            shading="auto",
        )
        ax.set_title(f"ℓ_{i} ≈ log p_{i}/p_{i - 1}", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    inter = out / "flow_intermediate.png"
    fig.savefig(inter, dpi=100)
    plt.close(fig)
    return [heat, inter]


__all__ = ["plot_dre", "plot_refinement", "plot_trajectories", "qflow_figures"]
