"""Q-flow's phases: their settings (``method.fm``, ``method.refine``) and the step-by-step plan.

Training is one optimizer step per training step (manual optimisation); ``build_schedule`` maps
flow matching, the alternating refinement and the density-ratio steps onto
``trainer.max_steps`` as a list of ``Action``. ``settings`` turns a config node (or a dict, or
None) into one of the frozen settings classes, with a one-sentence ConfigError for an unknown
key; ``regroup`` reads the flat option names of configs written before the grouping.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, NamedTuple, TypeVar

from ot_experiments.errors import ConfigError

S = TypeVar("S")

# the flat option names of configs written before the grouping: a run folder keeps its config
# and ``load_run`` rebuilds the method from it, so they are still understood
FLAT_OPTIONS: dict[str, tuple[str, str]] = {
    "fm_coupling": ("fm", "coupling"),
    "fm_batch": ("fm", "batch"),
    "fm_sigma": ("fm", "sigma"),
    "fm_lr_final": ("fm", "lr_final"),
    "min_fm_fraction": ("fm", "min_fraction"),
    "refine_lr": ("refine", "lr"),
    **{
        k: ("refine", k)
        for k in (
            *("symmetric", "rounds", "clf_warmup_steps", "flow_updates", "clf_steps_per_update"),
            *("halve", "gamma", "clf_lr", "flow_batch", "clf_batch", "pool_size"),
        )
    },
    **{f"ratio_{k}": ("ratio", k) for k in ("steps", "lr", "lr_final", "batch", "times")},
    "ratio_pool_size": ("ratio", "pool_size"),
    "ratio_ends": ("ratio", "ends"),
    "kde_points": ("ratio", "kde_points"),
    "kde_factor": ("ratio", "kde_factor"),
}


def regroup(groups: dict[str, Any], flat: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The option groups (``fm``, ``refine``, ``ratio``) as dicts, with the flat options of an
    older config (``FLAT_OPTIONS``) moved into them; a group's own value wins.

    ``refine`` may be a bool, the old switch (``refine.enabled``).

    Raises
    ------
    ConfigError
        For a flat name that is not an old option either.
    """
    out: dict[str, dict[str, Any]] = {}
    for name, value in groups.items():
        if isinstance(value, bool):
            value = {"enabled": value}
        elif dataclasses.is_dataclass(value):
            value = dataclasses.asdict(value)
        out[name] = dict(value or {})
    for key, value in flat.items():
        if key not in FLAT_OPTIONS:
            raise ConfigError(
                f"method.{key} is not an option of Q-flow; see conf/method/qflow.yaml"
            )
        group, name = FLAT_OPTIONS[key]
        out[group].setdefault(name, value)
    return out


def settings(cls: type[S], value: Mapping | S | None, key: str) -> S:
    """An instance of the dataclass ``cls`` from ``value`` (a mapping, an instance or None).

    Parameters
    ----------
    cls : type
        A dataclass whose fields all have defaults.
    value : Mapping, cls or None
        The options given (None: all defaults).
    key : str
        The config key of the group, for the error message (e.g. ``method.fm``).

    Raises
    ------
    ConfigError
        When ``value`` names an option that ``cls`` does not have.
    """
    if isinstance(value, cls):
        return value
    given: dict[str, Any] = dict(value or {})
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise ConfigError(
            f"{key}.{unknown[0]} is not an option of {key}; choose from {', '.join(names)}"
        )
    return cls(**given)


@dataclasses.dataclass(frozen=True)
class FlowMatchingSettings:
    """Phase 1, flow matching (``method.fm``).

    Attributes
    ----------
    coupling : {"independent", "ot"}
        Pairing of X and Y (``ot``: exact mini-batch OT with POT).
    batch : int
        Pairs per step.
    sigma : float
        Noise σ added to x_t (0: deterministic straight paths).
    lr_final : float
        The lr decays exponentially from ``method.lr`` to ``lr_final`` × ``method.lr`` over
        the phase (1: constant); a configured scheduler replaces the decay.
    min_fraction : float
        Least share of ``trainer.max_steps`` left to flow matching.
    """

    coupling: str = "independent"
    batch: int = 512
    sigma: float = 0.0
    lr_final: float = 0.1
    min_fraction: float = 0.25

    def __post_init__(self) -> None:
        if self.coupling not in ("independent", "ot"):
            raise ConfigError(
                f"method.fm.coupling={self.coupling!r} is not valid; choose independent or ot"
            )
        if not 0.0 <= float(self.min_fraction) <= 1.0:
            raise ConfigError(f"method.fm.min_fraction={self.min_fraction} must lie in [0, 1]")
        for name, kind in (("batch", int), ("sigma", float), ("lr_final", float)):
            object.__setattr__(self, name, kind(getattr(self, name)))
        object.__setattr__(self, "min_fraction", float(self.min_fraction))


@dataclasses.dataclass(frozen=True)
class RefinementSettings:
    """Phase 2, the alternating refinement (``method.refine``).

    Attributes
    ----------
    enabled : bool
        Run the phase (false: flow matching only).
    symmetric : bool
        Also refine the reverse direction Q → P, with its own classifier.
    rounds, clf_warmup_steps, flow_updates, clf_steps_per_update, halve
        The pattern (``refinement_pattern``); ``halve`` also halves the refinement learning
        rates every round.
    gamma : float
        γ, weight of the transport term.
    lr, clf_lr : float
        Adam learning rates of the flow in this phase and of the classifiers.
    flow_batch, clf_batch : int
        Batch of a flow step and of a classifier step.
    pool_size : int
        Pushed samples the classifier draws from (re-pushed after every flow update).
    """

    enabled: bool = True
    symmetric: bool = True
    rounds: int = 2
    clf_warmup_steps: int = 300
    flow_updates: int = 50
    clf_steps_per_update: int = 4
    halve: bool = True
    gamma: float = 0.5
    lr: float = 5e-5
    clf_lr: float = 1e-3
    flow_batch: int = 2000
    clf_batch: int = 200
    pool_size: int = 2000

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            kind = {"bool": bool, "int": int, "float": float}[str(f.type)]
            object.__setattr__(self, f.name, kind(getattr(self, f.name)))

    @property
    def directions(self) -> tuple[str, ...]:
        """The refined directions: ("fwd", "bwd") or ("fwd",)."""
        return ("fwd", "bwd") if self.symmetric else ("fwd",)


class Action(NamedTuple):
    """One training step: kind ∈ {fm, clf, flow, ratio}, direction ∈ {fwd, bwd, ""}, round."""

    kind: str
    direction: str = ""
    round: int = 0


def refinement_pattern(
    rounds: int,
    directions: tuple[str, ...],
    clf_warmup: int,
    flow_updates: int,
    clf_per_update: int,
    halve: bool,
) -> list[Action]:
    """The alternating refinement schedule.

    For each round r and direction: ⌊warmup·f⌉ classifier steps, then ``flow_updates`` × [one
    flow step + ⌊clf_per_update·f⌉ classifier steps], with f = 0.5^r if ``halve`` else 1.
    """
    out: list[Action] = []
    for r in range(rounds):
        f = 0.5**r if halve else 1.0
        for d in directions:
            out += [Action("clf", d, r)] * round(clf_warmup * f)
            inner = max(1, round(clf_per_update * f)) if clf_per_update > 0 else 0
            for _ in range(flow_updates):
                out += [Action("flow", d, r)] + [Action("clf", d, r)] * inner
    return out


def build_schedule(
    max_steps: int,
    *,
    rounds: int = 2,
    directions: tuple[str, ...] = ("fwd", "bwd"),
    clf_warmup: int = 300,
    flow_updates: int = 50,
    clf_per_update: int = 4,
    halve: bool = True,
    ratio_steps: int = 0,
    min_fm_fraction: float = 0.25,
) -> list[Action]:
    """Map flow matching, refinement and density-ratio training onto ``max_steps`` steps.

    The refinement pattern and the ratio steps come last; if together they exceed
    (1 − ``min_fm_fraction``) · max_steps, the warm-up, the number of flow updates and the
    ratio steps are shrunk by the same factor (at least one flow update per round and
    direction) and, if still too long, the refinement is cut short. Flow matching fills the
    remaining steps at the start. Length == max_steps.
    """
    avail = max_steps - math.ceil(min_fm_fraction * max_steps)

    def pattern(c: float) -> list[Action]:
        if rounds <= 0 or not directions:
            return []
        return refinement_pattern(
            rounds,
            directions,
            round(clf_warmup * c),
            max(1, round(flow_updates * c)) if flow_updates > 0 else 0,
            clf_per_update,
            halve,
        )

    ref = pattern(1.0)
    n_ratio = ratio_steps
    if len(ref) + n_ratio > avail:
        c = avail / max(1, len(ref) + n_ratio)
        ref = pattern(c)
        n_ratio = max(1, round(ratio_steps * c)) if ratio_steps > 0 else 0
    n_ratio = min(n_ratio, avail)
    tail = ref[: avail - n_ratio] + [Action("ratio")] * n_ratio
    return [Action("fm")] * (max_steps - len(tail)) + tail


def schedule_for(
    max_steps: int, fm: FlowMatchingSettings, refine: RefinementSettings, ratio_steps: int
) -> list[Action]:
    """``build_schedule`` from the phase settings (no refinement when ``refine.enabled`` is
    false; ``ratio_steps`` 0 without density-ratio estimation)."""
    return build_schedule(
        max_steps,
        rounds=refine.rounds if refine.enabled else 0,
        directions=refine.directions,
        clf_warmup=refine.clf_warmup_steps,
        flow_updates=refine.flow_updates,
        clf_per_update=refine.clf_steps_per_update,
        halve=refine.halve,
        ratio_steps=ratio_steps,
        min_fm_fraction=fm.min_fraction,
    )


__all__ = [
    "FLAT_OPTIONS",
    "Action",
    "FlowMatchingSettings",
    "RefinementSettings",
    "build_schedule",
    "refinement_pattern",
    "regroup",
    "schedule_for",
    "settings",
]
