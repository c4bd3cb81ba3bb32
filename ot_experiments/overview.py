"""The README's one-line-per-table summary, generated from stored result folders.

``ot-tables docs/results/raw --overview README.md`` reads every ``results.json`` under the
folder, keeps the runs that are a table's own command (``experiment=<table>``, optionally
``budget=...``, the experiment's sweep keys and plumbing such as ``threads=1``: a run with any
other override is an ablation or a curve, not the table), takes for every (table, budget) the
stored folder with the newest such run and the latest run of each cell in it, and writes one row
per (table, budget) between the README's ``<!-- overview:start -->`` and
``<!-- overview:end -->`` markers. Older folders are left out of the row: their cells may come
from an older recipe of the same command. ``store_sweep`` copies a finished sweep's results into
that folder (``results.json`` and ``metrics.csv`` per job, plus the collector's table).
"""

from __future__ import annotations

import os
import shutil
from collections import defaultdict
from pathlib import Path

import yaml

from ot_experiments.checks import CONF_DIR
from ot_experiments.tables import build_rows, cell_key, load_results, make_table

#: The tables in README order, with a short title.
TABLES = {
    "t1a": "T1a: NCF, Gaussians d = 2…64",
    "t1b": "T1b: Lagrangian, backprop vs adjoint",
    "t1c": "T1c: Lagrangian, Tests 1–3, d = 2, 10, 50",
    "t2": "T2: crowd motion",
    "t1d": "T1d: GradNetOT, Wishart d = 2…64",
    "t3": "T3: GradNetOT, MNIST morphing",
    "t4": "T4: colour transfer",
    "t5": "T5: NCF, latent class-conditional OT",
    "t6": "T6: Q-flow density ratios",
    "benchmark_gaussian": "cross-method benchmark",
}
#: Override keys of a table's own command: the table and budget, the seed, where and how it
#: runs or logs, and the checkpoint a resumed run started from (the rest, besides the swept
#: keys, make a run an ablation).
PLUMBING = (
    "experiment",
    "budget",
    "seed",
    "threads",
    "logger",
    "hardware",
    "hydra",
    "paths",
    "ckpt_path",
)
#: Single keys that only say where a problem's files are (the data found is in its metrics), or
#: how often a run validates (validation leaves the training's random stream alone).
PLUMBING_KEYS = ("problem.data_dir", "problem.cache_dir", "trainer.val_check_interval")
START, END = "<!-- overview:start -->", "<!-- overview:end -->"
CONF = Path(CONF_DIR)


def _experiment_configs(experiment: str, conf: Path) -> list[dict]:
    """The experiment's config and its budget patches, as plain YAML."""
    paths = [conf / "experiment" / f"{experiment}.yaml"]
    paths += sorted((conf / "experiment_budget").glob(f"{experiment}_*.yaml"))
    return [yaml.safe_load(p.read_text()) or {} for p in paths if p.exists()]


def sweep_keys(experiment: str, conf: Path = CONF) -> set[str]:
    """The keys an experiment sweeps (``hydra.sweeper.params`` of its config and of its
    budget patches); an unknown experiment sweeps nothing."""
    keys: set[str] = set()
    for node in _experiment_configs(experiment, conf):
        keys |= set(((node.get("hydra") or {}).get("sweeper") or {}).get("params") or {})
    return keys


def table_metrics(experiment: str, conf: Path = CONF) -> list[str] | None:
    """The experiment's ``table_metrics`` as configured now (None: the collector's choice)."""
    found = [
        n["table_metrics"] for n in _experiment_configs(experiment, conf) if "table_metrics" in n
    ]
    return list(found[0]) if found else None


def is_table_run(res: dict, keys: set[str]) -> bool:
    """Whether a run is its table's own command: every override is plumbing or a swept key."""
    for override in res.get("overrides", []):
        key = override.split("=", 1)[0].lstrip("+~")
        first = key.split(".")[0].split("/")[0]
        if first not in PLUMBING and key not in PLUMBING_KEYS and key not in keys:
            return False
    return True


def budget_of(res: dict) -> str:
    """The run's budget (results.json ``budget``, else its ``budget=`` override, else small)."""
    if res.get("budget"):
        return res["budget"]
    found = [o.split("=", 1)[1] for o in res.get("overrides", []) if o.startswith("budget=")]
    return found[-1] if found else "small"


def latest_table_runs(folder: str | Path, conf: Path = CONF) -> dict[tuple[str, str], list]:
    """The table runs under ``folder`` by (experiment, budget): those of the top-level stored
    folder holding the newest run of the pair, the latest run of each (cell, seed) there."""
    folder = Path(folder)
    latest: dict[tuple, dict] = {}
    keys = {experiment: sweep_keys(experiment, conf) for experiment in TABLES}
    for res in load_results(folder):
        experiment = res.get("experiment")
        if experiment not in TABLES or not is_table_run(res, keys[experiment]):
            continue
        plain = [o for o in res.get("overrides", []) if not o.startswith("budget=")]
        stored = Path(res["_path"]).relative_to(folder).parts[0]
        cell = cell_key({**res, "overrides": plain})
        key = (experiment, budget_of(res), stored, cell, res.get("seed"))
        if key not in latest or res.get("started_at", "") >= latest[key].get("started_at", ""):
            latest[key] = res
    newest: dict[tuple[str, str], tuple[str, str]] = {}  # (experiment, budget) → (time, folder)
    for (experiment, budget, stored, _, _), res in latest.items():
        when = (res.get("started_at", ""), stored)
        newest[(experiment, budget)] = max(newest.get((experiment, budget), when), when)
    groups: dict[tuple[str, str], list] = defaultdict(list)
    for (experiment, budget, stored, _, _), res in latest.items():
        if newest[(experiment, budget)][1] == stored:
            groups[(experiment, budget)].append(res)
    return groups


def summary_line(runs: list[dict], metrics: list[str] | None = None) -> str:
    """One sentence on a table's runs: cells at least as good as the paper per metric (or the
    metrics' range over cells where the paper has no number), then dates and compute time."""
    rows, metrics = build_rows(runs, metrics)
    parts, ranges, extremes = [], [], []
    for m in metrics:
        verdicts = [r[f"{m}_ok"] for r in rows if f"{m}_ok" in r]
        values = [r[m][0] for r in rows if r.get(m) is not None]
        if verdicts:
            parts.append(f"{m} as good as the paper in {sum(verdicts)}/{len(verdicts)}")
        elif values and not m.endswith("_true"):
            low, high = min(values), max(values)
            text = f"{m} {low:.3g}" + (f"–{high:.3g}" if high != low else "")
            (extremes if "@" in m else ranges).append(text)
    # the paper's verdicts when it has numbers, else the values; single-seed extremes always
    parts = (parts or ranges) + extremes
    bad = sum(r.get("status") != "ok" for r in runs)
    cells = len(rows)
    dates = sorted(str(r.get("started_at", ""))[:10] for r in runs if r.get("started_at"))
    when = dates[0] if dates and dates[0] == dates[-1] else f"{dates[0]} … {dates[-1]}"
    minutes = sum((r.get("timing") or {}).get("wall_s", 0) for r in runs) / 60
    tail = f"{cells} cell{'s' * (cells != 1)}, {len(runs)} run{'s' * (len(runs) != 1)}"
    tail += f" ({bad} not ok)" if bad else ""
    return f"{'; '.join(parts) or 'no metrics'} ({tail}; {when}; {minutes:.0f} min of runs)"


def overview(folder: str | Path, link_root: str = "", conf: Path = CONF) -> str:
    """The README's Markdown table: one row per table and budget measured under ``folder``, a
    row saying "not stored" for a table without stored runs."""
    groups = latest_table_runs(folder, conf)
    lines = ["| table | command | latest stored result |", "|---|---|---|"]
    for experiment, title in TABLES.items():
        command = f"python train.py -m experiment={experiment}"
        budgets = sorted(b for e, b in groups if e == experiment)
        if not budgets:
            missing = "no stored runs yet (older numbers: tables.md, below)"
            lines.append(f"| {title} | `{command}` | {missing} |")
        for budget in budgets:
            runs = groups[(experiment, budget)]
            stored = Path(runs[0]["_path"]).relative_to(folder).parts[0]
            full = command + ("" if budget == "small" else f" budget={budget}")
            line = summary_line(runs, table_metrics(experiment, conf))
            lines.append(
                f"| {title} | `{full}` | {line}: [{stored}]({link_root}{stored}/table.md) |"
            )
    return "\n".join(lines) + "\n"


def write_overview(folder: str | Path, readme: str | Path) -> str:
    """Replace the block between the markers in ``readme`` by ``overview(folder)``; links are
    relative to the README. Returns the table."""
    readme = Path(readme)
    text = readme.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"{readme} has no {START} … {END} block: add the two markers first")
    # relpath, not relative_to: a README outside the folder's tree gets ../ links instead of a crash
    root = Path(os.path.relpath(Path(folder).resolve(), readme.resolve().parent)).as_posix() + "/"
    table = overview(folder, link_root=root)
    head, rest = text.split(START, 1)
    readme.write_text(head + START + "\n" + table + END + rest.split(END, 1)[1])
    return table


def store_sweep(sweep: str | Path, dest: str | Path) -> Path:
    """Copy a finished sweep's ``results.json`` and ``metrics.csv`` per job to ``dest`` (the
    figures, checkpoints and logs stay behind) and write the collector's table there."""
    sweep, dest = Path(sweep), Path(dest)
    for res in sorted(sweep.rglob("results.json")):
        job = dest / res.parent.relative_to(sweep)
        job.mkdir(parents=True, exist_ok=True)
        for name in ("results.json", "metrics.csv"):
            if (res.parent / name).exists():
                shutil.copy2(res.parent / name, job / name)
    make_table(dest)
    return dest
