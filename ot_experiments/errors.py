"""Errors that reach the user as one sentence (Hydra prints them without a traceback)."""

from hydra.errors import CompactHydraException


class ConfigError(CompactHydraException):
    """Bad input found before training: says what is wrong and what would be right."""


class RunFolderError(CompactHydraException):
    """A run folder cannot be reloaded: a file is missing or damaged, or the run is unfinished."""


class TrainingDiverged(CompactHydraException):
    """The loss became NaN or infinite; carries the step at which it happened."""

    def __init__(self, step: int, value: float) -> None:
        self.step = step
        super().__init__(
            f"training diverged at step {step}: the loss is {value}; "
            "lower the learning rate (optimizer.lr) or the loss weights and run again"
        )
