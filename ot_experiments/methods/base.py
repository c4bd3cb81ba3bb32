"""The interface every OT method implements, as a LightningModule.

A method receives the problem and *partial* constructors for its network(s), optimizer and
learning-rate schedule (Hydra ``_partial_: true``), so network sizes follow ``d``.
It declares in ``needs`` what it requires from the problem; the runner checks this first.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch import Tensor

from ot_experiments.errors import TrainingDiverged


class OTMethod(pl.LightningModule):
    """Base class: training via Lightning, maps via ``transport`` / ``inverse_transport``.

    Subclasses implement ``training_loss(step) -> (loss, logs)`` and ``transport``; they set
    ``has_inverse`` / ``is_dynamic`` and override ``inverse_transport`` / ``trajectory``.
    """

    needs: frozenset[str] = frozenset({"samples"})
    has_inverse: bool = False
    is_dynamic: bool = False

    def __init__(
        self,
        problem,
        optimizer: Callable,
        scheduler: Callable | None = None,
        eval_points: int = 2000,
    ) -> None:
        super().__init__()
        self.problem = problem
        self._make_optimizer = optimizer
        self._make_scheduler = scheduler
        self.eval_points = eval_points
        self.history: list[dict[str, float]] = []

    # -- to implement ---------------------------------------------------------------------
    def training_loss(self, step: int) -> tuple[Tensor, dict[str, Tensor]]:
        """Loss to minimise at this step, and named parts to log."""
        raise NotImplementedError

    def transport(self, x: Tensor) -> Tensor:
        """Forward map T(x), (n, d) → (n, d), detached, on x's device."""
        raise NotImplementedError

    def inverse_transport(self, y: Tensor) -> Tensor:
        """Backward map S(y), (n, d) → (n, d)."""
        raise NotImplementedError(f"{type(self).__name__} has no inverse map")

    def trajectory(self, x: Tensor, ts: Tensor) -> Tensor:
        """Positions at times ``ts`` (k,), shape (k, n, d)."""
        raise NotImplementedError(f"{type(self).__name__} is not a dynamic method")

    def transport_cost(self, x: Tensor) -> float:
        """Estimated W2² = E‖T(x) − x‖² on the given source samples."""
        return float((self.transport(x) - x).square().sum(1).mean())

    def extra_metrics(self, x: Tensor, problem) -> dict[str, float]:
        """Method-specific metrics added to ``evaluate``'s output."""
        return {}

    def extra_figures(self, out: Path) -> list[Path]:
        """Method-specific figures written into the run folder ``out``; returns their paths."""
        return []

    # -- Lightning plumbing ---------------------------------------------------------------
    def training_step(self, batch, batch_idx):  # noqa: D102
        loss, logs = self.training_loss(self.global_step)
        if not torch.isfinite(loss):
            raise TrainingDiverged(self.global_step, float(loss))
        self.log("train/loss", loss, prog_bar=True, batch_size=1)
        for k, v in logs.items():
            self.log(f"train/{k}", v, batch_size=1)
        return loss

    def validation_step(self, batch, batch_idx):  # noqa: D102
        from ot_experiments.metrics import evaluate

        metrics = evaluate(self.problem, self, n=self.eval_points, full=False)
        metrics = {k: float(v) for k, v in metrics.items()}
        self.history.append({"step": int(self.global_step), **metrics})
        self.log_dict({f"val/{k}": v for k, v in metrics.items()}, batch_size=1)

    def configure_optimizers(self):  # noqa: D102
        opt = self._make_optimizer(params=self.parameters())
        if self._make_scheduler is None:
            return opt
        return {
            "optimizer": opt,
            "lr_scheduler": {"scheduler": self._make_scheduler(optimizer=opt), "interval": "step"},
        }
