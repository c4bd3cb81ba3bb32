"""Auxiliary image models trained once with Lightning and cached on disk.

The latent-space problem needs, per image domain, a β-VAE (the latent space) and a classifier
(accuracy and FID features). ``load_or_train`` trains such a model the first time it is asked
for and saves its weights under ``cache_dir``; later runs with the same settings load them.
The file name encodes every setting that changes the model, so changing one trains a new model.
A file lock lets parallel sweep jobs wait for one training instead of repeating it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import pytorch_lightning as pl
import torch
from filelock import FileLock
from torch import Tensor, nn
from torch.nn import functional as F

from ot_experiments.networks.images import ConvVAE, SmallCNN, beta_vae_loss

log = logging.getLogger(__name__)


class VAETraining(pl.LightningModule):
    """Minimises ``beta_vae_loss`` over image batches."""

    def __init__(self, model: ConvVAE, beta: float, lr: float) -> None:
        super().__init__()
        self.model, self.beta, self.lr = model, beta, lr

    def training_step(self, batch, batch_idx):  # noqa: D102
        x = batch[0]
        logits, mu, logvar = self.model(x)
        loss = beta_vae_loss(x, logits, mu, logvar, self.beta)
        self.log("vae_loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self):  # noqa: D102
        return torch.optim.Adam(self.model.parameters(), lr=self.lr)


class ClassifierTraining(pl.LightningModule):
    """Minimises the cross-entropy of a classifier over labelled image batches."""

    def __init__(self, model: SmallCNN, lr: float) -> None:
        super().__init__()
        self.model, self.lr = model, lr

    def training_step(self, batch, batch_idx):  # noqa: D102
        x, y = batch
        loss = F.cross_entropy(self.model(x), y)
        self.log("ce_loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self):  # noqa: D102
        return torch.optim.Adam(self.model.parameters(), lr=self.lr)


def fit(module: pl.LightningModule, images: Tensor, labels: Tensor, epochs: int, seed: int):
    """Train ``module`` for ``epochs`` passes over (images, labels), batch 128, one device."""
    from ot_experiments.build import quiet_lightning  # here: build imports the problems

    quiet_lightning()
    g = torch.Generator().manual_seed(seed)
    data = torch.utils.data.TensorDataset(images, labels)
    loader = torch.utils.data.DataLoader(data, batch_size=128, shuffle=True, generator=g)
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator="auto",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=True,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        trainer.fit(module, train_dataloaders=loader)


@contextmanager
def _locked(path: Path):
    """An exclusive lock on ``path.lock`` (filelock: Linux, macOS and Windows alike)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path.with_suffix(".lock"))):
        yield


def load_or_train(
    path: Path, make: Callable[[], nn.Module], train: Callable[[nn.Module], dict], retrain: bool
) -> tuple[nn.Module, dict]:
    """The model cached at ``path``, or a new one from ``make()`` trained by ``train(model)``.

    ``train`` returns a dict of facts (e.g. test accuracy) saved beside the weights and
    returned with the model. ``retrain=True`` ignores an existing file.
    """
    with _locked(path):
        model = make()
        if path.is_file() and not retrain:
            saved = torch.load(path, map_location="cpu", weights_only=True)
            model.load_state_dict(saved["state_dict"])
            log.info("loaded cached %s", path)
            return model.eval(), saved["info"]
        log.info("training %s (cached for later runs)", path.name)
        info = train(model)
        tmp = path.with_suffix(".part")
        torch.save({"state_dict": model.state_dict(), "info": info}, tmp)
        os.replace(tmp, path)
        return model.eval(), info


@torch.no_grad()
def predict(model: nn.Module, fn: str, x: Tensor, chunk: int = 1000) -> Tensor:
    """``getattr(model, fn)`` applied to x in chunks on the model's device, result on x's device."""
    dev = next(model.parameters()).device
    return torch.cat([getattr(model, fn)(c.to(dev)).to(x.device) for c in x.split(chunk)])


def vae(
    cache_dir: Path,
    tag: str,
    images: Tensor,
    latent_dim: int,
    beta: float,
    epochs: int,
    seed: int = 0,
    retrain: bool = False,
) -> tuple[ConvVAE, dict]:
    """A β-VAE on ``images`` (n, 1, 28, 28), cached as ``vae_<tag>_z…_b…_e…_n…_s….pt``."""
    name = f"vae_{tag}_z{latent_dim}_b{beta:g}_e{epochs}_n{len(images)}_s{seed}.pt"

    def train(model: ConvVAE) -> dict:
        fit(VAETraining(model, beta, 1e-3), images, torch.zeros(len(images)), epochs, seed)
        model.eval()
        recon = predict(model, "decode", predict(model, "encode_mean", images[:2000]))
        return {"recon_mse": float((recon - images[:2000]).square().mean())}

    return load_or_train(Path(cache_dir) / name, lambda: ConvVAE(latent_dim), train, retrain)


def classifier(
    cache_dir: Path,
    tag: str,
    train_set: tuple[Tensor, Tensor],
    test_set: tuple[Tensor, Tensor],
    epochs: int,
    seed: int = 0,
    retrain: bool = False,
) -> tuple[SmallCNN, dict]:
    """A ``SmallCNN`` trained on ``train_set``; its accuracy on ``test_set`` is in the info."""
    name = f"classifier_{tag}_e{epochs}_n{len(train_set[0])}_s{seed}.pt"

    def train(model: SmallCNN) -> dict:
        fit(ClassifierTraining(model, 1e-3), *train_set, epochs, seed)
        model.eval()
        pred = predict(model, "forward", test_set[0]).argmax(1)
        return {"test_accuracy": float((pred == test_set[1]).float().mean())}

    return load_or_train(Path(cache_dir) / name, SmallCNN, train, retrain)
