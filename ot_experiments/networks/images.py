"""Image models for the latent-space problem: a convolutional β-VAE and a small CNN classifier.

Both work on 28×28 grey images with values in [0, 1], shape (n, 1, 28, 28).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F


def gaussian_kl_to_standard(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(μ, diag σ²) ‖ N(0, I)) = ½ Σⱼ (μⱼ² + σⱼ² − 1 − ln σⱼ²); (n, k) → (n,)."""
    return 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar).sum(-1)


def beta_vae_loss(x: Tensor, logits: Tensor, mu: Tensor, logvar: Tensor, beta: float) -> Tensor:
    """Negative β-ELBO per image, averaged over the batch.

    L = E_n [ Σ_pixels BCE(x, sigmoid(logits)) + β · KL(q(z|x) ‖ N(0, I)) ];
    x, logits (n, 1, 28, 28), mu, logvar (n, k) → scalar.
    """
    recon = F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)
    return (recon + beta * gaussian_kl_to_standard(mu, logvar)).mean()


class ConvVAE(nn.Module):
    """β-VAE: conv encoder 28² → (μ, ln σ²) ∈ R^k × R^k, deconv decoder R^k → logits 28².

    Encoder: Conv(1→32, 4, s2) → Conv(32→64, 4, s2) → Dense(3136→256) → two heads of size k.
    Decoder: Dense(k→256→3136) → ConvT(64→32, 4, s2) → ConvT(32→1, 4, s2). ReLU in between.
    """

    def __init__(self, latent_dim: int = 16, width: int = 32) -> None:
        super().__init__()
        w = width
        self.latent_dim = latent_dim
        self.encoder = nn.Sequential(
            nn.Conv2d(1, w, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(w, 2 * w, 4, 2, 1), nn.ReLU(),
            nn.Flatten(), nn.Linear(2 * w * 49, 256), nn.ReLU(),
        )  # fmt: skip
        self.mu = nn.Linear(256, latent_dim)
        self.logvar = nn.Linear(256, latent_dim)
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, 256), nn.ReLU(),
            nn.Linear(256, 2 * w * 49), nn.ReLU(),
            nn.Unflatten(1, (2 * w, 7, 7)),
            nn.ConvTranspose2d(2 * w, w, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(w, 1, 4, 2, 1),
        )  # fmt: skip

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(μ, ln σ²), each (n, k), of images x (n, 1, 28, 28)."""
        h = self.encoder(x)
        return self.mu(h), self.logvar(h)

    def encode_mean(self, x: Tensor) -> Tensor:
        """Posterior means μ (n, k): the deterministic encoding used as the latent point."""
        return self.encode(x)[0]

    def decode_logits(self, z: Tensor) -> Tensor:
        """Pixel logits (n, 1, 28, 28) of latents z (n, k)."""
        return self.decoder(z)

    def decode(self, z: Tensor) -> Tensor:
        """Images in [0, 1], (n, 1, 28, 28), of latents z (n, k)."""
        return torch.sigmoid(self.decoder(z))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Reparameterised pass: (logits, μ, ln σ²)."""
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        return self.decode_logits(z), mu, logvar


class SmallCNN(nn.Module):
    """Classifier: Conv(1→32, 3) → pool → Conv(32→64, 3) → pool → Dense(3136→128) → 10 logits.

    ``features(x)`` returns the 128-d penultimate activations (the FID feature space).
    """

    def __init__(self, n_classes: int = 10, feature_dim: int = 128) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(64 * 49, feature_dim), nn.ReLU(),
        )  # fmt: skip
        self.head = nn.Linear(feature_dim, n_classes)

    def features(self, x: Tensor) -> Tensor:
        """Penultimate features (n, feature_dim) of images (n, 1, 28, 28)."""
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))
