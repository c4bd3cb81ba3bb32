"""Lightning callbacks of a run: step timing, a clean stop on SIGTERM / SIGINT, the random state
in checkpoints (so that a resumed run continues the same random stream), per-rank seeds, and the
weight average."""

from __future__ import annotations

import random
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import WeightAveraging

SIGNALS = (signal.SIGTERM, signal.SIGINT)


def ema_decay(decay: float, updates: int) -> float:
    """The decay of the weight average's next update: min(decay, (1 + t) / (10 + t)) after t
    updates, so that the first steps do not leave the initial weights in the average (with a
    fixed 0.99 they would keep 0.99^t of it: 55 % after 60 steps)."""
    return min(decay, (1 + updates) / (10 + updates))


class WarmupEMA(WeightAveraging):
    """Exponential moving average of the weights with a warm-up of its decay (``ema_decay``):
    w̄ ← δₜ w̄ + (1 − δₜ) w after every optimizer step from ``update_starting_at_step`` on.
    Validation, the final metrics and the checkpoint use w̄ (Lightning's ``WeightAveraging``)."""

    def __init__(self, decay: float = 0.99, update_starting_at_step: int = 0, **kwargs) -> None:
        def average(avg: torch.Tensor, current: torch.Tensor, updates: torch.Tensor):
            rate = ema_decay(decay, int(updates))
            return rate * avg + (1 - rate) * current

        super().__init__(avg_fn=average, **kwargs)
        self.update_starting_at_step = update_starting_at_step

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        return step_idx is not None and step_idx >= self.update_starting_at_step


class RunInterrupted(Exception):
    """A run stopped by a signal; ``step`` is the last finished step, ``checkpoint`` its file."""

    def __init__(self, signum: int, step: int | None, checkpoint: Path | None) -> None:
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        name = signal.Signals(signum).name
        where = f"after step {step}" if step is not None else "outside training"
        saved = (
            f"checkpoint {checkpoint}; resume with ckpt_path={checkpoint} (or ckpt_path=auto "
            "with the same hydra.run.dir)"
            if checkpoint
            else "no checkpoint was saved"
        )
        super().__init__(f"interrupted by {name} {where}: {saved}")


class ProblemProgress(pl.Callback):
    """Drives a problem's training-time state (``Problem.set_progress``, e.g. the morphing
    bandwidth) from the training step, so no method writes into a problem; logs what the
    problem returns as ``train/<name>``."""

    def __init__(self, problem) -> None:
        self.problem = problem

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        logs = self.problem.set_progress(int(trainer.global_step), int(trainer.max_steps))
        for name, value in logs.items():
            pl_module.log(f"train/{name}", float(value), batch_size=1)

    def on_train_end(self, trainer, pl_module) -> None:
        self.problem.set_progress(None, int(trainer.max_steps))


class StepTimer(pl.Callback):
    """Wall-clock time of every training step (device-synchronised), and what the run's earlier
    segments took: a checkpoint carries the time and steps up to it, so a resumed run reports
    the whole run's ``earlier_s + this segment`` and ``earlier_steps + len(times)``."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._t = 0.0
        self.started = time.perf_counter()
        self.earlier_s, self.earlier_steps = 0.0, 0

    def run_s(self) -> float:
        """Seconds of the whole run so far: the earlier segments' and this one's."""
        return self.earlier_s + time.perf_counter() - self.started

    def run_steps(self) -> int:
        """Training steps of the whole run so far."""
        return self.earlier_steps + len(self.times)

    def state_dict(self) -> dict:
        return {"train_s": self.run_s(), "steps": self.run_steps()}

    def load_state_dict(self, state_dict: dict) -> None:
        self.earlier_s = float(state_dict.get("train_s", 0.0))
        self.earlier_steps = int(state_dict.get("steps", 0))

    def _sync(self, pl_module) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._sync(pl_module)
        self._t = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._sync(pl_module)
        self.times.append(time.perf_counter() - self._t)

    def median_ms(self) -> float | None:
        """Median step time in ms, leaving out the first (warm-up) step when there are more."""
        times = sorted(self.times[1:] or self.times)
        return 1000 * times[len(times) // 2] if times else None


class GracefulStop(pl.Callback):
    """SIGTERM / SIGINT: finish the current step, save ``path``, stop; a second signal, or one
    outside the training loop, raises :class:`RunInterrupted` at once.

    ``install()`` sets the handlers (main thread only); Lightning chains its own SIGTERM handler
    (SLURM requeue) with this one during ``fit``. ``uninstall()`` restores the previous ones.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.signum: int | None = None
        self.saved_step: int | None = None
        self.in_training = False
        self._previous: dict = {}

    def install(self) -> None:
        """Route SIGTERM and SIGINT to this callback."""
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)

    def uninstall(self) -> None:
        """Put the previous handlers back."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def _handle(self, signum, frame) -> None:
        again = self.signum is not None
        self.signum = signum
        if again or not self.in_training:
            raise RunInterrupted(signum, self.saved_step, self.path if self.saved_step else None)

    def on_train_start(self, trainer, pl_module) -> None:
        self.in_training = True

    def on_train_end(self, trainer, pl_module) -> None:
        self.in_training = False

    def on_exception(self, trainer, pl_module, exception) -> None:
        # a SIGTERM that lands after this callback's batch end but before Lightning's own check
        # (e.g. during a periodic checkpoint) ends the step with SIGTERMException: save here
        if self.signum is not None and self.saved_step is None and self.in_training:
            trainer.save_checkpoint(self.path)
            self.saved_step = int(trainer.global_step)
        self.in_training = False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.signum is not None and self.saved_step is None:
            trainer.save_checkpoint(self.path)
            self.saved_step = int(trainer.global_step)
            trainer.should_stop = True
            self.in_training = False  # a signal from here on raises at once


class ResumeState(pl.Callback):
    """What a checkpoint needs beyond Lightning's own (weights, optimizer, schedule, step
    counters, the weight average) for a resumed run to continue the uninterrupted one:

    - the torch / numpy / Python random states, put back before the first step after a resume,
      so the resumed run draws what the uninterrupted run drew;
    - the method's validation ``history`` (figures) and the attributes it names in
      ``resume_attributes`` (its own training state, e.g. Q-flow's sample pools).

    Under DDP each rank instead reseeds with ``seed + 1000 * rank`` at the start of training (so
    ranks draw different samples; the single-process random stream is left untouched).
    """

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)
        self._pending: dict | None = None

    def state_dict(self) -> dict:
        state = {
            "torch": torch.get_rng_state(),
            # plain lists and tensors: Lightning loads checkpoints with weights_only=True
            "numpy": _numpy_state_to_plain(np.random.get_state()),  # noqa: NPY002
            "python": list(random.getstate()),
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        self._pending = state_dict

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        names = getattr(pl_module, "resume_attributes", ())
        checkpoint["method_state"] = {
            "history": list(getattr(pl_module, "history", [])),
            "_early_losses": list(getattr(pl_module, "_early_losses", [])),  # divergence guard
            **{name: getattr(pl_module, name) for name in names if hasattr(pl_module, name)},
        }

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        for name, value in checkpoint.get("method_state", {}).items():
            setattr(pl_module, name, value)

    def on_train_start(self, trainer, pl_module) -> None:
        if trainer.world_size > 1:
            self._pending = None
            pl.seed_everything(self.seed + 1000 * trainer.global_rank, verbose=False)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._pending is None:
            return
        state, self._pending = self._pending, None
        torch.set_rng_state(state["torch"])
        np.random.set_state(_plain_to_numpy_state(state["numpy"]))  # noqa: NPY002
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])


def _numpy_state_to_plain(state: tuple) -> list:
    """numpy's legacy RNG state with its key array as a torch tensor (loadable weights-only)."""
    name, keys, pos, has_gauss, cached = state
    return [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)]


def _plain_to_numpy_state(state: list) -> tuple:
    name, keys, pos, has_gauss, cached = state
    return name, keys.numpy().astype(np.uint32), pos, has_gauss, cached
