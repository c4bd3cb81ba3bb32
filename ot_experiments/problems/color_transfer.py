"""Colour transfer: two RGB images as two clouds of colours in [0, 1]³ (NCF paper §6.2, T4).

A method that needs only samples learns T: source colours → target colours; applying T to every
pixel recolours the source image, and a backward map S recolours the target the other way.

Images are given as file paths or as ``skimage:<name>`` for photographs shipped with
scikit-image (offline). The CycleGAN pairs of the paper (summer2winter_yosemite, monet2photo,
vangogh2photo) are used by pointing ``problem.source`` / ``problem.target`` at their files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import ot
import torch
from torch import Tensor

from ot_experiments.errors import ConfigError, DataFileError
from ot_experiments.metrics.distances import emd_w2_sq
from ot_experiments.problems.base import Problem

HIST_BINS = 64  # per-channel histograms on [0, 1]
JOINT_BINS = 16  # joint 3-D histogram: 16³ cells
MIN_PIXELS = 64  # fewer pixels are not a colour distribution worth transporting


def load_rgb(spec: str) -> np.ndarray:
    """Read an RGB image as float array (H, W, 3) in [0, 1].

    ``spec`` is a file path or ``skimage:<name>`` (e.g. ``skimage:coffee``). A missing, empty,
    damaged or non-image file, a grey-scale image or one of fewer than ``MIN_PIXELS`` pixels
    raises a one-sentence ConfigError naming it.
    """
    import skimage.data
    import skimage.io
    import skimage.util

    if spec.startswith("skimage:"):
        name = spec.split(":", 1)[1]
        loader = getattr(skimage.data, name, None)
        if loader is None:
            raise ConfigError(f"scikit-image ships no sample image named '{name}'")
        img = loader()
    else:
        path = Path(spec).expanduser()
        if not path.is_file():
            raise ConfigError(f"image file '{spec}' does not exist: give a path to an RGB image")
        size = path.stat().st_size
        if size == 0:
            raise DataFileError(
                f"image file '{spec}' is empty (0 bytes): give a path to an RGB image "
                "(PNG, JPEG, ...)"
            )
        try:
            img = skimage.io.imread(path)
        except Exception:
            with path.open("rb") as fh:
                kind = _image_kind(fh.read(16))
            if kind is None:
                raise DataFileError(
                    f"image file '{spec}' could not be read: it is not an image (it has no "
                    f"{', '.join(IMAGE_SIGNATURES)} header); give a path to an RGB image"
                ) from None
            raise DataFileError(
                f"image file '{spec}' could not be read: it starts like a {kind} image but is "
                f"damaged or truncated ({size} bytes); replace it with an intact copy"
            ) from None
    if img.ndim != 3 or img.shape[-1] not in (3, 4):
        raise ConfigError(
            f"image '{spec}' is grey-scale (shape {img.shape}): colour transfer needs RGB"
        )
    if img.shape[0] * img.shape[1] < MIN_PIXELS:
        raise ConfigError(
            f"image '{spec}' has only {img.shape[0]}×{img.shape[1]} pixels: colour transfer needs "
            f"a cloud of colours; give an image with at least {MIN_PIXELS} pixels (e.g. 8×8)"
        )
    return skimage.util.img_as_float(img[..., :3]).astype(np.float32)


# first bytes of the common image formats: tell "not an image" from "a damaged image" when
# imageio fails (its own message for both is "pip install imageio[pyav]")
IMAGE_SIGNATURES = {
    "PNG": (b"\x89PNG\r\n\x1a\n",),
    "JPEG": (b"\xff\xd8\xff",),
    "GIF": (b"GIF87a", b"GIF89a"),
    "BMP": (b"BM",),
    "TIFF": (b"II*\x00", b"MM\x00*"),
    "WebP": (b"RIFF",),
}


def _image_kind(head: bytes) -> str | None:
    """The image format whose signature ``head`` starts with, or None."""
    for kind, signatures in IMAGE_SIGNATURES.items():
        if any(head.startswith(sig) for sig in signatures):
            return kind
    return None


# -- metrics on colour histograms ---------------------------------------------------------
def channel_histograms(img: np.ndarray, bins: int = HIST_BINS) -> np.ndarray:
    """Normalised per-channel histograms (3, bins) of an image (H, W, 3) in [0, 1]."""
    px = img.reshape(-1, 3)
    return np.stack([np.histogram(px[:, c], bins=bins, range=(0, 1))[0] for c in range(3)]) / len(
        px
    )


def histogram_emd(a: np.ndarray, b: np.ndarray, bins: int = HIST_BINS) -> float:
    """Mean over channels of the 1-D EMD (W1 on bin centres in [0, 1]) between normalised
    per-channel histograms of images a and b."""
    ha, hb = channel_histograms(a, bins), channel_histograms(b, bins)
    centres = (np.arange(bins) + 0.5) / bins
    return float(np.mean([ot.wasserstein_1d(centres, centres, ha[c], hb[c]) for c in range(3)]))


def histogram_intersection(a: np.ndarray, b: np.ndarray, bins: int = HIST_BINS) -> float:
    """Mean over channels of Σ_k min(h_a[k], h_b[k]) of normalised per-channel histograms."""
    ha, hb = channel_histograms(a, bins), channel_histograms(b, bins)
    return float(np.minimum(ha, hb).sum(1).mean())


def joint_histogram_intersection(a: np.ndarray, b: np.ndarray, bins: int = JOINT_BINS) -> float:
    """Σ min(h_a, h_b) over the normalised joint 3-D colour histograms (bins³ cells)."""
    rng = [(0, 1)] * 3
    ha = np.histogramdd(a.reshape(-1, 3), bins=bins, range=rng)[0] / a[..., 0].size
    hb = np.histogramdd(b.reshape(-1, 3), bins=bins, range=rng)[0] / b[..., 0].size
    return float(np.minimum(ha, hb).sum())


def colour_w2_sq(a: np.ndarray, b: np.ndarray, n: int = 2000, seed: int = 0) -> float:
    """Exact W2² (POT ``emd2``) between ``n`` random pixel colours of a and of b."""
    rng = np.random.default_rng(seed)
    pa = a.reshape(-1, 3)[rng.integers(0, a[..., 0].size, n)].astype(np.float64)
    pb = b.reshape(-1, 3)[rng.integers(0, b[..., 0].size, n)].astype(np.float64)
    return emd_w2_sq(pa, pb)


def colour_metrics(result: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """emd, hi, hi_joint and w2_sq_colors of a recoloured image against its reference."""
    return {
        "emd": histogram_emd(result, reference),
        "hi": histogram_intersection(result, reference),
        "hi_joint": joint_histogram_intersection(result, reference),
        "w2_sq_colors": colour_w2_sq(result, reference),
    }


# -- classical baselines (library-based) -------------------------------------------------
def histogram_matching(src: np.ndarray, tgt: np.ndarray) -> np.ndarray:
    """Per-channel histogram matching (``skimage.exposure.match_histograms``)."""
    from skimage.exposure import match_histograms

    return np.clip(match_histograms(src, tgt, channel_axis=-1), 0, 1).astype(np.float32)


def reinhard(src: np.ndarray, tgt: np.ndarray) -> np.ndarray:
    """Reinhard et al. (2001) in CIE-Lab (``skimage.color``): per channel,
    l' = (l − mean_src) · std_tgt / std_src + mean_tgt."""
    from skimage.color import lab2rgb, rgb2lab

    ls, lt = rgb2lab(src), rgb2lab(tgt)
    mu_s, sd_s = ls.reshape(-1, 3).mean(0), ls.reshape(-1, 3).std(0) + 1e-8
    mu_t, sd_t = lt.reshape(-1, 3).mean(0), lt.reshape(-1, 3).std(0)
    out = (ls - mu_s) / sd_s * sd_t + mu_t
    return np.clip(lab2rgb(out), 0, 1).astype(np.float32)


class ColorTransferProblem(Problem):
    """Source and target colour clouds of two RGB images.

    Parameters
    ----------
    dim : int
        Must be 3 (RGB).
    source, target : str
        Image paths or ``skimage:<name>``.
    max_side : int
        Images are downscaled so that their longer side is at most this (keeps full-image
        recolouring and metrics fast); 0 keeps the original size.
    """

    offers = frozenset({"samples"})

    def __init__(
        self,
        dim: int = 3,
        source: str = "skimage:coffee",
        target: str = "skimage:rocket",
        max_side: int = 256,
    ) -> None:
        if dim != 3:
            raise ConfigError(
                f"problem 'color_transfer' lives in RGB space: set d=3 (got d={dim!r})"
            )
        self.dim = 3
        self.source_name, self.target_name = source, target
        self.source_image = _downscale(load_rgb(source), max_side)
        self.target_image = _downscale(load_rgb(target), max_side)
        self._src = torch.from_numpy(self.source_image.reshape(-1, 3).copy())
        self._tgt = torch.from_numpy(self.target_image.reshape(-1, 3).copy())

    @staticmethod
    def _draw(pixels: Tensor, n: int, generator, device) -> Tensor:
        idx = torch.randint(0, len(pixels), (n,), generator=generator)
        return pixels[idx].to(device)

    def sample_source(self, n, *, generator=None, device="cpu", cls=None) -> Tensor:
        return self._draw(self._src, n, generator, device)

    def sample_target(self, n, *, generator=None, device="cpu", cls=None) -> Tensor:
        return self._draw(self._tgt, n, generator, device)

    def bounding_box(self, n: int = 10_000, seed: int = 0) -> tuple[Tensor, Tensor]:
        return torch.zeros(3), torch.ones(3)

    # -- problem-specific evaluation ------------------------------------------------------
    def recolour(self, fn, image: np.ndarray) -> np.ndarray:
        """Apply a colour map ``fn`` ((n, 3) → (n, 3)) to every pixel; clip to [0, 1]."""
        out = fn(torch.from_numpy(image.reshape(-1, 3).copy())).clamp(0, 1)
        return out.reshape(image.shape).numpy()

    def recoloured(self, method) -> dict[str, np.ndarray]:
        """Source recoloured forward, target recoloured backward (where the method has it)."""
        out = {"forward": self.recolour(method.transport, self.source_image)}
        if method.has_inverse:
            out["backward"] = self.recolour(method.inverse_transport, self.target_image)
        return out

    @property
    def label(self) -> str:
        """The image pair, e.g. "skimage:coffee>skimage:rocket" (a T4 cell)."""
        return f"{self.source_name}>{self.target_name}"

    def evaluate_method(self, method, x: Tensor, full: bool = True) -> dict[str, float]:
        if not full:  # images and classifiers: only at the end
            return {}
        imgs = self.recoloured(method)
        metrics = colour_metrics(imgs["forward"], self.target_image)
        if "backward" in imgs:
            back = colour_metrics(imgs["backward"], self.source_image)
            metrics.update({f"{k}_bwd": v for k, v in back.items()})
        return metrics

    def baselines(self) -> dict[str, dict]:
        out = {}
        for name, fn in (("histogram_matching", histogram_matching), ("reinhard", reinhard)):
            fwd = colour_metrics(fn(self.source_image, self.target_image), self.target_image)
            bwd = colour_metrics(fn(self.target_image, self.source_image), self.source_image)
            out[name] = {**fwd, **{f"{k}_bwd": v for k, v in bwd.items()}}
        return out

    def figures(self, method, out: Path) -> list[Path]:
        import matplotlib.pyplot as plt

        imgs = self.recoloured(method)
        rows = [
            ("source", self.source_image, "target", self.target_image),
            (
                f"{type(method).__name__} forward",
                imgs["forward"],
                f"{type(method).__name__} backward",
                imgs.get("backward"),
            ),
            (
                "histogram matching fwd",
                histogram_matching(self.source_image, self.target_image),
                "histogram matching bwd",
                histogram_matching(self.target_image, self.source_image),
            ),
            (
                "Reinhard fwd",
                reinhard(self.source_image, self.target_image),
                "Reinhard bwd",
                reinhard(self.target_image, self.source_image),
            ),
        ]
        fig, axes = plt.subplots(len(rows), 2, figsize=(8, 3.2 * len(rows)))
        for ax_row, (t1, im1, t2, im2) in zip(axes, rows):
            for ax, title, im in ((ax_row[0], t1, im1), (ax_row[1], t2, im2)):
                ax.axis("off")
                if im is not None:
                    ax.imshow(im)
                    ax.set_title(title, fontsize=9)
        fig.tight_layout()
        path = out / "color_transfer.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return [path]


def _downscale(img: np.ndarray, max_side: int) -> np.ndarray:
    if max_side <= 0 or max(img.shape[:2]) <= max_side:
        return img
    from skimage.transform import resize

    scale = max_side / max(img.shape[:2])
    shape = (round(img.shape[0] * scale), round(img.shape[1] * scale), 3)
    return resize(img, shape, anti_aliasing=True).astype(np.float32)
