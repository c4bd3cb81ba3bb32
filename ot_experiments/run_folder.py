"""The run folder's life cycle: which checkpoint a run resumes from, refusing to overwrite a
run, and marking a run that was finished elsewhere."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import torch

from ot_experiments.errors import ConfigError
from ot_experiments.results import write_json_atomic

log = logging.getLogger(__name__)


def resolve_checkpoint(ckpt_path: str | None, out: Path) -> Path | None:
    """The checkpoint to resume from: ``None``, ``"auto"`` (the newest of ``out``'s
    ``checkpoints/last.ckpt`` and Lightning's SLURM ``hpc_ckpt_*.ckpt``, or none: a fresh start)
    or a file; a missing file is a one-sentence ConfigError."""
    if ckpt_path in (None, "", "null"):
        return None
    if ckpt_path == "auto":
        found = [out / "checkpoints" / "last.ckpt", *out.glob("hpc_ckpt_*.ckpt")]
        found = [p for p in found if p.is_file()]
        return max(found, key=lambda p: p.stat().st_mtime) if found else None
    path = Path(ckpt_path)
    if path.is_dir():
        path = path / "checkpoints" / "last.ckpt"
    if not path.is_file():
        raise ConfigError(
            f"ckpt_path={ckpt_path!r} is not a checkpoint file: give a run folder's "
            "checkpoints/last.ckpt, or ckpt_path=auto to resume the run in hydra.run.dir"
        )
    return path


def recorded_run(folder: Path) -> dict | None:
    """The run recorded in ``folder``'s results.json; None when it is missing or unreadable."""
    try:
        return json.loads((folder / "results.json").read_text())
    except (json.JSONDecodeError, OSError):
        return None


def finished_run(out: Path) -> dict | None:
    """The results of the finished (``status: ok``) run in ``out``, else None."""
    old = recorded_run(out)
    return old if old is not None and old.get("status") == "ok" else None


def refuse_existing_run(out: Path, resume: Path | None, auto: bool = False) -> None:
    """Never overwrite a finished or interrupted run folder unless resuming it.

    With ``auto`` (``ckpt_path=auto``), a run cut before its first checkpoint starts afresh:
    it left nothing to resume.
    """
    if (out / "results.json").exists() and resume is None:
        old = recorded_run(out)
        status = "unreadable" if old is None else old.get("status", "?")
        if auto and status != "ok":
            log.info("%s holds a run cut before its first checkpoint: starting afresh", out)
            return
        action = "leave it as it is" if status == "ok" else "resume it"
        raise ConfigError(
            f"the run folder {out} already holds a run (status {status}); pass ckpt_path=auto "
            f"to {action}, or choose another hydra.run.dir"
        )


def mark_resumed(ckpt: Path, out: Path) -> None:
    """Point the run folder that ``ckpt`` came from at the folder that finished it."""
    old_folder = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
    if old_folder.resolve() == out.resolve():
        return
    old = recorded_run(old_folder)
    if old is not None and old.get("status") != "ok":
        old["status"], old["resumed_in"] = "resumed", str(out)
        write_json_atomic(old_folder / "results.json", old)


def metrics_history(out: Path, ckpt: Path | None) -> tuple[list[str], list[dict]] | None:
    """The header and rows of ``out/metrics.csv`` logged before ``ckpt``'s step, when ``out``
    is the folder of the run being resumed; None otherwise. (Rows after that step are dropped:
    the resumed run logs them again.)"""
    path = out / "metrics.csv"
    if ckpt is None or not path.is_file():
        return None
    step = torch.load(ckpt, map_location="cpu", weights_only=False, mmap=True)["global_step"]
    with path.open(newline="") as file:
        reader = csv.DictReader(file)
        rows = [row for row in reader if row.get("step") and int(float(row["step"])) < step]
        return list(reader.fieldnames or []), rows


def restore_metrics_history(loggers: list, out: Path, history) -> None:
    """Write a resumed run's earlier rows back into ``out/metrics.csv``.

    Lightning's CSVLogger deletes an existing metrics.csv when it starts, so without this a
    resumed run's file would begin at the checkpoint's step. ``history`` comes from
    ``metrics_history`` (read before the logger started); rank 0 only.
    """
    from pytorch_lightning.loggers import CSVLogger

    if history is None:
        return
    header, rows = history
    for logger in loggers:
        if isinstance(logger, CSVLogger) and Path(logger.log_dir).resolve() == out.resolve():
            writer = logger.experiment  # starting the writer removes the old file
            with open(writer.metrics_file_path, "w", newline="") as file:
                table = csv.DictWriter(file, fieldnames=header)
                table.writeheader()
                table.writerows(rows)
            writer.metrics_keys = list(header)  # later rows append under the same header
