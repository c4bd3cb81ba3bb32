"""The interface every OT method implements, as a LightningModule.

A method receives the problem and *partial* constructors for its network(s), optimizer and
learning-rate schedule (Hydra ``_partial_: true``), so network sizes follow ``d``.
It declares in ``needs`` what it requires from the problem; the runner checks this first.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch import Tensor

from ot_experiments.errors import TrainingDiverged

# Divergence guard (every method): a loss is "exploded" when it exceeds both EXPLOSION_FACTOR
# times the median |loss| of the first EARLY_LOSSES steps seen and EXPLOSION_FLOOR in absolute
# value; training stops when EXPLOSION_PATIENCE steps in a row exploded (a lone spike passes:
# T3 at the paper's lr 1 goes 0.59 → 1.5e6 → 1.2e5 → 6.7e3 → 82 over its first steps) or at
# once on a non-finite loss; at validation, the maps have "left the data" when the median
# distance of the mapped points from the data's centre exceeds BOX_FACTOR times the data's radius.
EARLY_LOSSES = 20
EXPLOSION_FACTOR = 1e6
EXPLOSION_FLOOR = 1e6
EXPLOSION_PATIENCE = 3
BOX_FACTOR = 1e3
BOX_POINTS = 512


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
        self._early_losses: list[float] = []
        self._exploded_steps = 0

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

    def paths(self, x: Tensor, steps: int = 40) -> Tensor:
        """Positions on an equally spaced time grid of [0, 1], (k, n, d) with k odd: the
        method's own path for a dynamic method, else the straight line (1 − t) x + t T(x)."""
        ts = torch.linspace(0.0, 1.0, steps + 1, device=x.device)
        if self.is_dynamic:
            return self.trajectory(x, ts)
        tx = self.transport(x)
        return x[None] + ts.to(x.dtype)[:, None, None] * (tx - x)[None]

    def log_ratio_estimates(self, x: Tensor) -> dict[str, Tensor]:
        """Estimates of log(q/p)(x), (n,) each, by name (density-ratio methods); {} if none."""
        return {}

    def transport_cost(self, x: Tensor, tx: Tensor | None = None) -> float:
        """Estimated W2² = E‖T(x) − x‖² on the source samples x (n, d); ``tx`` = T(x) when
        already computed (``evaluate`` passes it, saving a second pass of the map)."""
        tx = self.transport(x) if tx is None else tx
        return float((tx - x).square().sum(1).mean())

    def extra_metrics(self, x: Tensor, problem) -> dict[str, float]:
        """Method-specific metrics added to ``evaluate``'s output."""
        return {}

    def extra_figures(self, out: Path) -> list[Path]:
        """Method-specific figures written into the run folder ``out``; returns their paths."""
        return []

    # -- shared helpers -------------------------------------------------------------------
    @torch.no_grad()
    def map_in_chunks(
        self,
        fn: Callable[[Tensor], Tensor | tuple[Tensor, ...]],
        z: Tensor,
        chunk: int = 8192,
        dim: int = 0,
    ) -> Tensor | tuple[Tensor, ...]:
        """``fn`` on float32 chunks of z (n, d) on this method's device, without gradients.

        Parameters
        ----------
        fn : callable
            Maps a chunk (k, d) to a tensor, or a tuple of tensors, with the points along
            ``dim``; it may switch gradients back on inside (``torch.enable_grad``), e.g. for
            a map that is the gradient of a potential.
        z : Tensor
            The points (n, d), on any device and in any float dtype.
        chunk : int
            Points per call (bounds the memory of an evaluation).
        dim : int
            The points' dimension of ``fn``'s outputs, along which the chunks are joined.

        Returns
        -------
        Tensor or tuple of Tensor
            The joined, detached outputs, on this method's device.
        """
        parts = [fn(c) for c in z.to(self.device, torch.float32).split(chunk)]
        if isinstance(parts[0], tuple):
            return tuple(torch.cat(p, dim=dim).detach() for p in zip(*parts))
        return torch.cat(parts, dim=dim).detach()

    # -- divergence guard -----------------------------------------------------------------
    def check_loss(self, loss: Tensor) -> None:
        """Raise TrainingDiverged for a non-finite loss or one that exploded (EXPLOSION_FACTOR).

        Called on every training step (by ``report_step``).
        """
        value = float(loss.detach())
        step = int(self.global_step)
        if not math.isfinite(value):
            raise TrainingDiverged(step, value)
        early = self._early_losses
        ref = statistics.median(early) if early else math.inf
        if abs(value) > EXPLOSION_FLOOR and abs(value) > EXPLOSION_FACTOR * ref:
            self._exploded_steps += 1
            if self._exploded_steps >= EXPLOSION_PATIENCE:
                raise TrainingDiverged(
                    step,
                    value,
                    f"the loss is {value:.3g}, over {EXPLOSION_FACTOR:.0e} times its early size "
                    f"{ref:.3g} for {EXPLOSION_PATIENCE} steps in a row",
                )
            return  # a spike is not an early size
        self._exploded_steps = 0
        if len(early) < EARLY_LOSSES:
            early.append(abs(value))

    @torch.no_grad()
    def check_maps(self, n: int = BOX_POINTS) -> None:
        """Raise TrainingDiverged when the maps send points far outside the data (or to NaN).

        ``n`` fresh source (and target) points are mapped; the median distance of the images from
        the centre of the data must stay within BOX_FACTOR times the data's radius.
        """
        g = torch.Generator().manual_seed(20_251_130)
        x = self.problem.sample_source(n, generator=g).float().cpu()
        y = self.problem.sample_target(n, generator=g).float().cpu()
        data = torch.cat([x, y])
        centre = data.mean(0)
        radius = max(float((data - centre).norm(dim=1).max()), 1e-6)
        maps = [("transported", self.transport, x)]
        if self.has_inverse:
            maps.append(("inversely transported", self.inverse_transport, y))
        for what, fn, points in maps:
            mapped = fn(points).detach().float().cpu()
            if not torch.isfinite(mapped).all():
                raise TrainingDiverged(
                    int(self.global_step), math.nan, f"the {what} points are not finite"
                )
            far = float((mapped - centre).norm(dim=1).median())
            if far > BOX_FACTOR * radius:
                raise TrainingDiverged(
                    int(self.global_step),
                    math.nan,
                    f"the {what} points lie {far:.3g} from the data's centre (median), over "
                    f"{BOX_FACTOR:.0f} times the data's radius {radius:.3g}",
                )

    def report_step(self, loss: Tensor, logs: dict[str, Tensor]) -> None:
        """The divergence guard (``check_loss``) on a step's loss, then ``train/loss`` and
        ``train/<name>`` for its parts in the logs; before the backward pass.

        ``training_step`` calls it; a method with its own (manual-optimisation) training step
        calls it too.
        """
        self.check_loss(loss)
        self.log("train/loss", loss, prog_bar=True, batch_size=1)
        for k, v in logs.items():
            self.log(f"train/{k}", v, batch_size=1)

    # -- Lightning plumbing ---------------------------------------------------------------
    def training_step(self, batch, batch_idx):  # noqa: D102
        loss, logs = self.training_loss(self.global_step)
        self.report_step(loss, logs)
        return loss

    def validation_step(self, batch, batch_idx):  # noqa: D102
        from ot_experiments.metrics import evaluate

        # Validation leaves the training's random stream where it was, so how often it runs
        # (trainer.val_check_interval) changes the curve, never the trained map.
        cuda = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            self.check_maps()
            metrics = evaluate(self.problem, self, n=self.eval_points, full=False)
        metrics = {k: float(v) for k, v in metrics.items()}
        self.history.append({"step": int(self.global_step), **metrics})
        self.log_dict({f"val/{k}": v for k, v in metrics.items()}, batch_size=1)

    def parameter_groups(self):
        """What the optimizer gets: all parameters (a method may split them into groups)."""
        return self.parameters()

    def configure_optimizers(self):  # noqa: D102
        opt = self._make_optimizer(params=self.parameter_groups())
        if self._make_scheduler is None:
            return opt
        return {
            "optimizer": opt,
            "lr_scheduler": {"scheduler": self._make_scheduler(optimizer=opt), "interval": "step"},
        }
