"""A Python API for one's own data, without the command line:

>>> import ot_experiments as otx                                  # doctest: +SKIP
>>> model = otx.fit(x, y, method="ncf", steps=2000)               # doctest: +SKIP
>>> y_hat = model.transport(x); x_hat = model.inverse_transport(y)  # doctest: +SKIP

``fit`` composes the same Hydra configs as ``train.py`` (the method's default network,
optimizer, budget and checks), trains with Lightning on samples drawn from the given arrays,
and writes a run folder only when ``out_dir`` is given.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from ot_experiments.checks import CONF_DIR, check_compatible, validate_config
from ot_experiments.errors import ConfigError
from ot_experiments.problems.base import Problem, draw_rows


class ArrayProblem(Problem):
    """Transport between two point clouds given as arrays: samples are drawn from them with
    replacement (and per class when labels are given for both sides).

    Parameters
    ----------
    source, target : Tensor
        Shapes (n, d) and (m, d).
    source_labels, target_labels : Tensor or None
        Integer class of every point, shapes (n,) and (m,); both or neither.
    """

    def __init__(
        self,
        source: Tensor,
        target: Tensor,
        source_labels: Tensor | None = None,
        target_labels: Tensor | None = None,
    ) -> None:
        if source.ndim != 2 or target.ndim != 2 or source.shape[1] != target.shape[1]:
            raise ConfigError(
                f"x and y must be arrays of shape (n, d) and (m, d) with the same d; got "
                f"{tuple(source.shape)} and {tuple(target.shape)}"
            )
        if len(source) < 2 or len(target) < 2:
            raise ConfigError("x and y need at least 2 points each")
        if (source_labels is None) != (target_labels is None):
            raise ConfigError("give labels for both x and y, or for neither")
        self.dim = int(source.shape[1])
        self.source, self.target = source.float(), target.float()
        self.rows: tuple[dict, dict] = ({}, {})  # class -> row indices, per side
        self.offers = frozenset({"samples"})
        if source_labels is not None:
            classes = sorted(set(source_labels.tolist()) & set(target_labels.tolist()))
            if not classes:
                raise ConfigError("x and y share no class label")
            self.classes = tuple(classes)
            self.rows = tuple(
                {k: torch.nonzero(labels == k)[:, 0] for k in classes}
                for labels in (source_labels, target_labels)
            )
            self.offers = frozenset({"samples", "labels"})

    def sample_source(self, n, *, generator=None, device="cpu", cls=None) -> Tensor:
        return draw_rows(self.source, self.rows[0], n, generator, device, cls)

    def sample_target(self, n, *, generator=None, device="cpu", cls=None) -> Tensor:
        return draw_rows(self.target, self.rows[1], n, generator, device, cls)


@dataclass
class FittedMap:
    """A trained OT map: ``transport`` / ``inverse_transport`` take and return the caller's
    array type (numpy in, numpy out)."""

    method: pl.LightningModule
    cfg: DictConfig
    problem: ArrayProblem
    out_dir: Path | None = None
    history: list = field(default_factory=list)

    def _apply(self, fn, pts):
        as_numpy = isinstance(pts, np.ndarray)
        t = torch.as_tensor(np.asarray(pts) if as_numpy else pts, dtype=torch.float32)
        with torch.enable_grad():  # maps that read a potential's gradient need autograd
            out = fn(t.to(self.method.device)).detach().cpu()
        return out.numpy() if as_numpy else out

    def transport(self, x):
        """Forward map T(x), shape (n, d)."""
        return self._apply(self.method.transport, x)

    def inverse_transport(self, y):
        """Backward map S(y), shape (n, d) (methods with an inverse: ncf, qflow)."""
        return self._apply(self.method.inverse_transport, y)


def fit(
    x,
    y,
    *,
    method: str = "ncf",
    steps: int | None = None,
    labels_x=None,
    labels_y=None,
    overrides: Sequence[str] = (),
    seed: int = 0,
    out_dir: str | Path | None = None,
    progress: bool = True,
) -> FittedMap:
    """Fit an OT map from the points ``x`` (n, d) to the points ``y`` (m, d).

    Parameters
    ----------
    x, y : array-like or Tensor
        Source and target samples.
    method : str
        ``ncf`` (both maps), ``qflow`` (both maps) or ``lagrangian``; ``gradnet`` needs the
        log-densities, which point clouds do not give, and is refused with a sentence.
    steps : int or None
        Training steps (None: the method's default budget).
    labels_x, labels_y : array-like or None
        Class labels for class-conditional OT (NCF).
    overrides : sequence of str
        Any other config overrides, as on the command line (``"method.mmd_weight=10"``).
    seed : int
        Seeds the initial weights and the sampling.
    out_dir : str, Path or None
        Write checkpoints and the CSV log there; None keeps nothing on disk.
    progress : bool
        Show Lightning's progress bar.
    """
    x_t, y_t = (torch.as_tensor(np.asarray(a), dtype=torch.float32) for a in (x, y))
    lx = None if labels_x is None else torch.as_tensor(np.asarray(labels_x))
    ly = None if labels_y is None else torch.as_tensor(np.asarray(labels_y))
    problem = ArrayProblem(x_t, y_t, lx, ly)
    keep = Path(out_dir) if out_dir is not None else None
    tmp = tempfile.TemporaryDirectory() if keep is None else None
    folder = keep or Path(tmp.name)
    try:
        cfg = compose_config(method, problem.dim, steps, seed, folder, overrides)
        validate_config(cfg)
        if cfg.get("threads"):
            torch.set_num_threads(int(cfg.threads))
        pl.seed_everything(seed, workers=True, verbose=False)
        method_cls = get_class(cfg.method._target_)
        check_compatible(method, method_cls, "arrays", problem)
        from ot_experiments.build import build_method, quiet_lightning

        model = build_method(cfg, problem)
        quiet_lightning()
        trainer_cfg = OmegaConf.to_container(cfg.trainer, resolve=True)
        trainer_cfg.update(
            val_check_interval=None,
            limit_val_batches=0,
            enable_progress_bar=progress,
            enable_checkpointing=keep is not None,
            default_root_dir=str(folder),
        )
        callbacks = [instantiate(cfg.averaging)] if cfg.get("averaging") else []
        loggers = pl.loggers.CSVLogger(str(folder)) if keep is not None else False
        trainer = instantiate(trainer_cfg, logger=loggers, callbacks=callbacks)
        loader = torch.utils.data.DataLoader(range(trainer_cfg["max_steps"]), batch_size=None)
        trainer.fit(model, train_dataloaders=loader)
        if keep is not None:
            trainer.save_checkpoint(keep / "last.ckpt")
        model.eval()
        return FittedMap(model, cfg, problem, keep, list(model.history))
    finally:
        if tmp is not None:
            tmp.cleanup()


def compose_config(
    method: str, d: int, steps: int | None, seed: int, folder: Path, overrides: Sequence[str]
) -> DictConfig:
    """The CLI's config for ``method`` at dimension ``d`` (no Hydra run, no logger)."""
    args = [
        f"method={method}",
        f"d={d}",
        f"seed={seed}",
        "logger=none",
        f"paths.output_dir={folder}",
        *([f"trainer.max_steps={steps}"] if steps is not None else []),
        *overrides,
    ]
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(config_name="config", overrides=args)
    except Exception as err:  # unknown method or key: Hydra's own sentence
        raise ConfigError(f"cannot compose the config {args}: {err}") from None
