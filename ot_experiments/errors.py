"""Errors that reach the user as one sentence (Hydra prints them without a traceback)."""

from __future__ import annotations

from hydra.errors import CompactHydraException


class ConfigError(CompactHydraException):
    """Bad input found before training: says what is wrong and what would be right."""


class DataFileError(ConfigError, ValueError):
    """A data file (IDX, image) is empty, truncated or not what its name says; names the file."""


class RunFolderError(CompactHydraException):
    """A run folder cannot be reloaded: a file is missing or damaged, or the run is unfinished."""


class TrainingDiverged(CompactHydraException):
    """Training went astray; carries the step at which it was seen.

    Parameters
    ----------
    step : int
        The training step.
    value : float
        The loss at that step (NaN where the problem is not the loss).
    reason : str, optional
        What went astray; default: "the loss is <value>".
    """

    def __init__(self, step: int, value: float, reason: str | None = None) -> None:
        self.step = step
        self.value = value
        self.reason = reason
        super().__init__(
            f"training diverged at step {step}: {reason or f'the loss is {value}'}; "
            "lower the learning rate (optimizer.lr) or the loss weights and run again"
        )

    def __reduce__(self):
        # picklable (launchers send a job's exception back to the sweep)
        return (type(self), (self.step, self.value, self.reason))
