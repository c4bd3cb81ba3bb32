"""The collector's figures: a metric's seed mean against a swept key (``--plot``) and a
validation metric against the training step from each job's ``metrics.csv`` (``--curve``)."""

from __future__ import annotations

import csv
import textwrap
from collections import defaultdict
from pathlib import Path

from ot_experiments.tables import _mean_std, _natural, cell_key, load_results, lookup


def _finish(plt, fig, ax, values, path: Path, xlabel: str, ylabel: str, title: str) -> Path:
    """Labels, a log y scale when ``values`` span more than a decade, legend, grid; saved to
    ``path`` and closed."""
    if min(values) > 0 and max(values) / min(values) > 10:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(textwrap.fill(title, 60), fontsize=10)  # a long sweep name would be clipped
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_metric(folder: str | Path, metric: str, x: str = "d") -> Path:
    """``<metric>_vs_<x>.png`` in ``folder``: the metric's seed mean against ``x`` (a
    results.json field such as ``d`` or ``seed``, or an override key such as ``method.lr``),
    one line per method, with the seeds' standard deviation as error bars; log scales when the
    values span more than a decade."""
    plt = _pyplot()
    folder = Path(folder)
    series: dict[str, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    for res in load_results(folder):
        value = lookup(res, metric)
        xv = res.get(x) if x in res else _override(res, x)
        if res.get("status") == "ok" and isinstance(value, (int, float)) and xv is not None:
            series[str(res.get("method"))][float(xv)].append(float(value))
    if not series:
        raise SystemExit(f"no finished run under {folder} has both {metric} and {x}")
    fig, ax = plt.subplots(figsize=(5.5, 4))
    values = []
    for method, points in sorted(series.items()):
        xs = sorted(points)
        stats = [_mean_std(points[v]) for v in xs]
        values += [m for m, _ in stats]
        ax.errorbar(
            xs,
            [m for m, _ in stats],
            yerr=[s for _, s in stats],
            marker="o",
            capsize=3,
            label=method,
        )
    if x == "d":
        ax.set_xscale("log", base=2)
    path = folder / f"{metric.replace('.', '_')}_vs_{x.replace('.', '_')}.png"
    return _finish(plt, fig, ax, values, path, x, metric, f"{folder.name}: {metric}")


def _override(res: dict, key: str):
    """The value of ``key=value`` among a run's overrides, as a number when it is one."""
    for o in res.get("overrides", []):
        if o.startswith(f"{key}="):
            try:
                return float(o.split("=", 1)[1])
            except ValueError:
                return None
    return None


def read_curve(run_folder: str | Path, metric: str) -> tuple[list[int], list[float]]:
    """(steps, values) of one column of a run's ``metrics.csv`` (``metric`` or ``val/<metric>``),
    skipping the rows that do not log it; empty lists without the file or the column."""
    path = Path(run_folder) / "metrics.csv"
    if not path.exists():
        return [], []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    column = metric if rows and metric in rows[0] else f"val/{metric}"
    points = [(int(r["step"]), float(r[column])) for r in rows if r.get(column) not in (None, "")]
    return [s for s, _ in points], [v for _, v in points]


def plot_curve(folder: str | Path, metric: str) -> Path:
    """``curve_<metric>.png`` in ``folder``: a validation metric against the training step, one
    colour per cell (a sweep's overrides that differ between cells name it), one line per seed,
    and the paper's value for the cell as a dashed line, so a reader sees whether a cell has
    converged and how far it is from the paper."""
    plt = _pyplot()
    folder = Path(folder)
    runs = [r for r in load_results(folder) if read_curve(r["_path"], metric)[0]]
    if not runs:
        raise SystemExit(f"no run under {folder} logged {metric} in its metrics.csv")
    shared = set.intersection(*(set(r.get("overrides", [])) for r in runs))
    cells = sorted({cell_key(r) for r in runs}, key=_natural)
    fig, ax = plt.subplots(figsize=(6, 4))
    values = []
    for i, cell in enumerate(cells):
        color = f"C{i % 10}"
        members = [r for r in runs if cell_key(r) == cell]
        name = " ".join(o for o in cell.split() if o not in shared) or cell
        for j, res in enumerate(members):
            steps, ys = read_curve(res["_path"], metric)
            values += ys
            ax.plot(steps, ys, color=color, marker=".", label=name if j == 0 else None)
        paper = (members[0].get("reference") or {}).get(metric.split("/")[-1])
        if isinstance(paper, (int, float)):
            ax.axhline(paper, color=color, linestyle="--", linewidth=0.8)
            values.append(paper)
    path = folder / f"curve_{metric.replace('/', '_').replace('.', '_')}.png"
    title = f"{folder.name}: {metric} (dashed: the paper)"
    return _finish(plt, fig, ax, values, path, "training step", metric, title)
