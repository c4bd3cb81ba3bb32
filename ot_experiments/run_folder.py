"""The run folder's life cycle: which checkpoint a run resumes from, refusing to overwrite a
run, and marking a run that was finished elsewhere."""

from __future__ import annotations

import json
from pathlib import Path

from ot_experiments.errors import ConfigError
from ot_experiments.results import write_json_atomic


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


def refuse_existing_run(out: Path, resume: Path | None) -> None:
    """Never overwrite a finished or interrupted run folder unless resuming it."""
    if (out / "results.json").exists() and resume is None:
        old = recorded_run(out)
        status = "unreadable" if old is None else old.get("status", "?")
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
