"""The `Problem` interface: what to transport, and what is known about it.

A problem never imports a method. It declares what it offers in ``offers``:

- ``"samples"``: ``sample_source`` / ``sample_target``
- ``"labels"``: class-conditional sampling (``classes``, ``cls=`` argument)
- ``"log_density"``: ``log_density_source`` / ``log_density_target``
- ``"ground_truth"``: ``transport_true`` / ``inverse_transport_true`` / ``w2_sq_true``
- ``"path_cost"``: ``path_cost``, a running cost Q(x) paid along paths (crowd motion's
  obstacle)
- ``"symmetric_source"``: ``source_centre``, a point c about which the source is symmetric,
  ρ0(2c − x) = ρ0(x) (for antithetic batches)

and talks to methods through a few hooks, all optional: ``label`` (the table cell),
``method_hints`` (settings for a method's ``auto`` options), ``set_progress`` (state that
changes during training, driven by a callback), ``evaluate_method`` / ``baselines`` /
``figures`` (metrics and figures the problem owns, for every method that runs on it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

CAPABILITIES = ("samples", "labels", "log_density", "ground_truth", "path_cost", "symmetric_source")


class Problem:
    """Base class of all problems.

    Subclasses set ``dim``, ``offers`` and implement ``sample_source`` / ``sample_target``
    (and whatever else they offer).
    """

    dim: int
    offers: frozenset[str] = frozenset({"samples"})
    classes: tuple[int, ...] = ()
    #: validation metrics drawn against the step in the run's training_curves.png
    curve_metrics: tuple[str, ...] = (
        "uvp_fwd",
        "uvp_bwd",
        "energy_distance",
        "energy_distance_bwd",
    )

    # -- samples -----------------------------------------------------------------------
    def sample_source(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
        cls: int | None = None,
    ) -> Tensor:
        """Draw ``n`` source points, shape (n, dim); ``cls`` picks one labelled class."""
        raise NotImplementedError

    def sample_target(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
        cls: int | None = None,
    ) -> Tensor:
        """Draw ``n`` target points, shape (n, dim); ``cls`` picks one labelled class."""
        raise NotImplementedError

    # -- optional knowledge --------------------------------------------------------------
    def log_density_source(self, x: Tensor) -> Tensor:
        """ln p(x), shape (n,)."""
        raise NotImplementedError(f"{type(self).__name__} has no source density")

    def log_density_target(self, y: Tensor) -> Tensor:
        """ln q(y), shape (n,)."""
        raise NotImplementedError(f"{type(self).__name__} has no target density")

    def transport_true(self, x: Tensor) -> Tensor:
        """Ground-truth OT map T*(x), shape (n, dim)."""
        raise NotImplementedError(f"{type(self).__name__} has no ground-truth map")

    def inverse_transport_true(self, y: Tensor) -> Tensor:
        """Ground-truth inverse map (T*)⁻¹(y), shape (n, dim)."""
        raise NotImplementedError(f"{type(self).__name__} has no ground-truth map")

    @property
    def w2_sq_true(self) -> float:
        """Exact W2² = min E‖x − T(x)‖²."""
        raise NotImplementedError(f"{type(self).__name__} has no ground-truth cost")

    @property
    def source_centre(self) -> Tensor:
        """Centre of symmetry c of the source, ρ0(2c − x) = ρ0(x), shape (dim,)."""
        raise NotImplementedError(f"{type(self).__name__} has no symmetric source")

    def path_cost(self, x: Tensor, step: int | None = None) -> Tensor:
        """Running cost Q(x) (n,) paid along paths; ``step``: the training step (None after
        training), for costs that are continued during training."""
        raise NotImplementedError(f"{type(self).__name__} has no cost along paths")

    # -- the channel to methods ---------------------------------------------------------
    @property
    def label(self) -> str:
        """The cell of a table this problem instance is (a preset, case or task); "" if none."""
        return ""

    def method_hints(self, method: str) -> dict[str, object]:
        """Settings for method ``method``'s ``auto`` options on this problem, e.g.
        ``{"kl_weight": 10.0}``; the runner fills them in (and prints them) before the method
        is built. Options the method has no ``auto`` value for are left alone."""
        return {}

    def set_progress(self, step: int | None, steps: int) -> dict[str, float]:
        """Update state that changes during training: the ``ProblemProgress`` callback calls
        this before every training step (``step`` of ``steps``) and with ``step=None`` after
        training (the final state); returns values to log, e.g. ``{"bandwidth": 1e-3}``."""
        return {}

    def plot_box(self) -> tuple[float, float, float, float] | None:
        """(x1lo, x1hi, x2lo, x2hi) of the figures, or None: from the data."""
        return None

    # -- problem-owned evaluation -------------------------------------------------------
    def evaluate_method(self, method, x: Tensor, full: bool = True) -> dict[str, float]:
        """Metrics this problem owns, of any ``method`` that runs on it (its ``transport``,
        ``inverse_transport``, ``paths``, ``log_ratio_estimates``), added to ``evaluate``'s
        output; ``x`` (n, dim) are the evaluation's source samples; ``full`` is False at
        validation (skip what is slow)."""
        return {}

    def baselines(self) -> dict[str, dict]:
        """Problem-specific classical baselines: ``{name: {metric: value}}``."""
        return {}

    def figures(self, method, out) -> list:
        """Problem-specific figures of a trained method written into ``out``."""
        return []

    # -- derived helpers ----------------------------------------------------------------
    def source_variance(self) -> float:
        """tr Cov(μ); estimated from 20,000 samples unless a subclass knows it exactly."""
        g = torch.Generator().manual_seed(12345)
        return float(self.sample_source(20_000, generator=g).var(0).sum())

    def target_variance(self) -> float:
        """tr Cov(ν); estimated from 20,000 samples unless a subclass knows it exactly."""
        g = torch.Generator().manual_seed(12345)
        return float(self.sample_target(20_000, generator=g).var(0).sum())

    def bounding_box(self, n: int = 10_000, seed: int = 0) -> tuple[Tensor, Tensor]:
        """Axis-aligned box (low, high), each shape (dim,), around source and target samples."""
        g = torch.Generator().manual_seed(seed)
        pts = torch.cat(
            [self.sample_source(n, generator=g), self.sample_target(n, generator=g)], dim=0
        )
        return pts.min(0).values, pts.max(0).values


def draw_rows(
    bank: Tensor,
    class_rows: Sequence[Tensor] | Mapping[int, Tensor],
    n: int,
    generator: torch.Generator | None,
    device: torch.device | str,
    cls: int | None,
) -> Tensor:
    """``n`` rows of ``bank`` (m, d) drawn with replacement, from ``class_rows[cls]`` (the row
    indices of class ``cls``) when ``cls`` is given; shape (n, d) on ``device``."""
    pool = torch.arange(len(bank)) if cls is None else class_rows[cls]
    pick = pool[torch.randint(0, len(pool), (n,), generator=generator)]
    return bank[pick].to(device)


def require_dim(name: str, dim: object, minimum: int = 1) -> int:
    """Return ``dim`` as an int, or raise a one-sentence ConfigError."""
    from ot_experiments.errors import ConfigError

    if isinstance(dim, bool) or not isinstance(dim, int) or dim < minimum:
        raise ConfigError(
            f"d={dim!r} is not valid for problem '{name}': d must be an integer >= {minimum}"
        )
    return dim
