"""Collect a sweep's ``results.json`` files into a table beside the papers' numbers.

``python -m ot_experiments.tables <sweep folder> [--metrics uvp_fwd,w2_sq]`` (or
``ot-tables ...``) writes ``table.md`` and ``table.csv`` into the folder and
prints the Markdown. Only ``results.json`` files are read: no wandb account is needed.

A *cell* is a job's overrides without ``seed=``; its value is mean ± std over seeds
(``<metric>@max`` / ``<metric>@min`` in the metric list: the worst or best single seed). A cell is
"at least as good as the paper" when its mean is ≤ the paper's value for lower-is-better
metrics, ≥ for higher-is-better ones, and, for ``w2_sq``, when it is as close to
``w2_sq_true`` as the paper's value. Failed, interrupted, running, killed and missing jobs are
counted and shown, never dropped ("2/3 ok, 1 interrupted").
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import socket
from collections import Counter, defaultdict
from pathlib import Path

import yaml

HIGHER_IS_BETTER = ("hi", "hi_joint", "accuracy_fwd", "accuracy_bwd", "accuracy")
DEFAULT_METRICS = (
    "uvp_fwd",
    "uvp_bwd",
    "w2_sq",
    "w2_sq_true",
    "mse",
    "mse_bary",
    "energy_distance",
    "kl",
    "obstacle_fraction",
    "accuracy_fwd",
    "emd",
    "hi",
)
MAX_DEFAULT_METRICS = 5


def load_results(folder: str | Path) -> list[dict]:
    """Every run under ``folder`` (recursively), with its path in ``_path``.

    A run is a results.json, or a job folder of a sweep (``.hydra/`` inside) without one:
    ``status: missing``. A ``running`` run whose process is gone from this machine becomes
    ``killed``; runs that a later run resumed and finished (``resumed``) are left out.
    """
    out = []
    for path in sorted(Path(folder).rglob("results.json")):
        try:
            res = json.loads(path.read_text())
        except (json.JSONDecodeError, OSError):
            res = {"status": "failed", "error": "unreadable results.json"}
        if res.get("status") == "resumed":
            continue
        if res.get("status") == "running" and _process_gone(res):
            res["status"] = "killed"
            res["error"] = "the process ended without recording an outcome (killed?)"
        res["_path"] = str(path.parent)
        out.append(res)
    for hydra_dir in sorted(Path(folder).rglob(".hydra")):
        job = hydra_dir.parent
        if (job / "results.json").exists() or not (hydra_dir / "overrides.yaml").exists():
            continue
        overrides = yaml.safe_load((hydra_dir / "overrides.yaml").read_text()) or []
        overrides = [o for o in overrides if not o.startswith("paths.")]
        out.append({"status": "missing", "overrides": overrides, "_path": str(job)})
    return out


def _process_gone(res: dict) -> bool:
    """Whether a ``running`` results.json's process no longer exists on this machine."""
    if res.get("host") != socket.gethostname() or not isinstance(res.get("pid"), int):
        return False
    try:
        os.kill(res["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def lookup(res: dict, name: str):
    """A metric by name, or a dotted path into results.json (``timing.step_ms``,
    ``baselines.pot_emd.w2_sq``); None when absent."""
    if "." not in name:
        return res.get("metrics", {}).get(name)
    node = res
    for part in name.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _label(res: dict) -> str:
    """The problem's label of a run (``preset`` in results.json files before 2026-12-01)."""
    return res.get("label") or res.get("preset") or ""


def cell_key(res: dict) -> str:
    """The job's identity within a sweep: its overrides without the seed and without
    ``ckpt_path`` (a resumed run is the same job as one that was never interrupted)."""
    overrides = [o for o in res.get("overrides", []) if not o.startswith(("seed=", "ckpt_path="))]
    if overrides:
        return " ".join(sorted(overrides))
    return f"{res.get('method')} {res.get('problem')} {_label(res)} d={res.get('d')}"


def _natural(text: str) -> list:
    """Sort key that orders embedded numbers by value (d=2 < d=16)."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


SEED_EXTREMES = {"max": max, "min": min}  # ``<metric>@max``: the largest single-seed value


def _mean_std(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1) if len(values) > 1 else 0.0
    return mean, math.sqrt(var)


def at_least_as_good(metric: str, ours: float, paper: float, truth: float | None) -> bool:
    """Whether our mean value is at least as good as the paper's for ``metric``."""
    if metric.split(".")[-1] == "w2_sq" and truth is not None:
        return abs(ours - truth) <= abs(paper - truth)
    if metric in HIGHER_IS_BETTER:
        return ours >= paper
    return ours <= paper


def build_rows(results: list[dict], metrics: list[str] | None = None) -> tuple[list[dict], list]:
    """Aggregate results into one row per cell; returns (rows, metric names shown)."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for res in results:
        groups[cell_key(res)].append(res)
    if metrics is None:
        metrics = next((r["table_metrics"] for r in results if r.get("table_metrics")), None)
    if metrics is None:
        present = {k for r in results for k in r.get("metrics", {})}
        refs = [k for r in results for k in r.get("reference", {}) if k != "table"]
        metrics = list(dict.fromkeys(refs + [m for m in DEFAULT_METRICS if m in present]))
        metrics = metrics[:MAX_DEFAULT_METRICS]
    rows = []
    for key, runs in sorted(groups.items(), key=lambda kv: _natural(kv[0])):
        ok = [r for r in runs if r.get("status") == "ok"]
        first = runs[0]
        row = {
            "cell": key,
            "method": first.get("method"),
            "problem": first.get("problem"),
            "label": _label(first),
            "d": first.get("d"),
            "seeds_ok": len(ok),
            "seeds": len(runs),
            "statuses": dict(Counter(r.get("status", "?") for r in runs)),
            "errors": sorted(
                {str(r.get("error", "?"))[:120] for r in runs if r.get("status") == "failed"}
            ),
            "table": next((r["reference"].get("table") for r in runs if r.get("reference")), ""),
        }
        truth = next((r["metrics"]["w2_sq_true"] for r in ok if "w2_sq_true" in r["metrics"]), None)
        for m in metrics:
            base, _, extreme = m.partition("@")
            vals = [lookup(r, base) for r in ok if isinstance(lookup(r, base), (int, float))]
            if extreme:
                row[m] = (SEED_EXTREMES[extreme](vals), 0.0) if vals else None
                continue
            row[m] = _mean_std(vals) if vals else None
            paper = next((r["reference"][m] for r in runs if m in r.get("reference", {})), None)
            row[f"{m}_paper"] = paper
            if paper is not None and vals:
                row[f"{m}_ok"] = at_least_as_good(m, row[m][0], paper, truth)
        rows.append(row)
    return rows, metrics


def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, tuple):
        mean, std = v
        return f"{mean:.4g} ± {std:.2g}" if std else f"{mean:.4g}"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def to_markdown(rows: list[dict], metrics: list[str], title: str = "") -> str:
    """A Markdown table: cell, seeds, each metric with the paper's value and a ✓/✗ verdict."""
    head = ["cell", "seeds ok"]
    for m in metrics:
        head.append(m)
        if any(r.get(f"{m}_paper") is not None for r in rows):
            head += [f"{m} (paper)", "≥ paper"]
    lines = [f"## {title}"] if title else []
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    n_ok = n_cmp = 0
    for r in rows:
        status = f"{r['seeds_ok']}/{r['seeds']}"
        others = {k: v for k, v in r["statuses"].items() if k not in ("ok", "failed")}
        if others:
            status += " ok, " + ", ".join(f"{v} {k}" for k, v in sorted(others.items()))
        if r["statuses"].get("failed"):
            status += " FAILED: " + "; ".join(r["errors"]).replace("|", "/")
        cells = [f"`{r['cell']}`", status]
        for m in metrics:
            cells.append(_fmt(r.get(m)))
            if f"{m} (paper)" in head:
                cells.append(_fmt(r.get(f"{m}_paper")))
                verdict = r.get(f"{m}_ok")
                cells.append("" if verdict is None else ("✓" if verdict else "✗"))
                if verdict is not None:
                    n_cmp += 1
                    n_ok += bool(verdict)
        lines.append("| " + " | ".join(cells) + " |")
    if n_cmp:
        lines.append(f"\n{n_ok} of {n_cmp} compared cells are at least as good as the paper.")
    return "\n".join(lines) + "\n"


def write_csv(rows: list[dict], metrics: list[str], path: Path) -> None:
    """One CSV row per cell: mean and std per metric, the paper's value and the verdict."""
    fields = ["cell", "table", "method", "problem", "label", "d", "seeds_ok", "seeds", "errors"]
    for m in metrics:
        fields += [f"{m}_mean", f"{m}_std", f"{m}_paper", f"{m}_ok"]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for r in rows:
            out = {k: r.get(k) for k in fields[:8]}
            out["errors"] = "; ".join(r["errors"])
            for m in metrics:
                mean_std = r.get(m) or (None, None)
                out[f"{m}_mean"], out[f"{m}_std"] = mean_std
                out[f"{m}_paper"] = r.get(f"{m}_paper")
                out[f"{m}_ok"] = r.get(f"{m}_ok")
            w.writerow(out)


def make_table(folder: str | Path, metrics: list[str] | None = None) -> str:
    """Write table.md and table.csv into ``folder``; return the Markdown."""
    folder = Path(folder)
    results = load_results(folder)
    if not results:
        raise SystemExit(f"no results.json under {folder}: give the folder of a run or a sweep")
    rows, metrics = build_rows(results, metrics)
    md = to_markdown(rows, metrics, title=folder.name)
    (folder / "table.md").write_text(md)
    write_csv(rows, metrics, folder / "table.csv")
    return md


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", help="a sweep folder (outputs/multirun/...) or any run folder")
    parser.add_argument("--metrics", help="comma-separated metric names (default: automatic)")
    parser.add_argument(
        "--wandb", action="store_true", help="also log the table as a wandb.Table (offline run)"
    )
    parser.add_argument("--plot", action="append", default=[], help="metric to draw against d")
    parser.add_argument(
        "--curve",
        action="append",
        default=[],
        help="validation metric (e.g. val/uvp_fwd) to draw against the step, one line per cell",
    )
    parser.add_argument("--x", default="d", help="the swept key on the x axis (default d)")
    parser.add_argument(
        "--store", metavar="DEST", help="copy the sweep's results.json/metrics.csv files to DEST"
    )
    parser.add_argument(
        "--overview",
        metavar="README",
        help="FOLDER holds stored sweeps: write their one-line-per-table summary into README",
    )
    args = parser.parse_args(argv)
    metrics = args.metrics.split(",") if args.metrics else None
    bad = [m for m in metrics or [] if m.partition("@")[2] not in ("", *SEED_EXTREMES)]
    if bad:
        parser.error(f"{', '.join(bad)}: after @ write max or min (e.g. w2_sq_rel_err@max)")
    if args.overview:
        from ot_experiments.overview import write_overview

        print(write_overview(args.folder, args.overview))
        return
    if args.store:
        from ot_experiments.overview import store_sweep

        dest = store_sweep(args.folder, args.store)
        print((dest / "table.md").read_text() + f"stored in {dest}")
        return
    print(make_table(args.folder, metrics))
    if args.plot or args.curve:
        from ot_experiments.table_figures import plot_curve, plot_metric

        for metric in args.plot:
            print(f"figure: {plot_metric(args.folder, metric, args.x)}")
        for metric in args.curve:
            print(f"figure: {plot_curve(args.folder, metric)}")
    if args.wandb:
        from ot_experiments.tracking import log_table

        with open(Path(args.folder) / "table.csv") as f:
            header, *rows = list(csv.reader(f))
        print(f"wandb table logged in {log_table(Path(args.folder), header, rows)}")


if __name__ == "__main__":
    main()
