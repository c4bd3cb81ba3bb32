"""Checks of the composed config that run before anything is built or trained.

Every check raises a one-sentence :class:`~ot_experiments.errors.ConfigError` that says what is
wrong and what would be right. ``validate_config`` runs them all (it is the first thing
``runner.run`` does); ``check_compatible`` runs once the problem is built.

Sizes, counts and weights are checked by the *name* of their key, in ``method``, ``network``,
``problem`` (nested nodes too) and at the top level, so a new method option is checked as soon
as it follows the naming convention:

- counts (``n_*``, ``*_points``, ``batch``/``*_batch``, ``*_size``, ``*_samples``,
  ``*_epochs``, ``times``/``*_times``, ``*_per_class``, ``width``, ``depth``, ``modules``,
  ``layers``, and every item of ``hidden``) must be integers >= 1;
- phase lengths (``steps``/``*_steps``, ``*_updates``, ``*_per_update``, ``rounds``) must be
  integers >= 0 (0 switches a phase off, e.g. ``method.obstacle_ramp_steps=0``);
- weights (``*_weight``, ``lambda_*``) must be numbers >= 0;

``null`` and ``auto`` pass (the constructors resolve them).
"""

from __future__ import annotations

import inspect
import netrc
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from hydra.errors import InstantiationException
from hydra.experimental.callback import Callback
from hydra.utils import get_class
from omegaconf import DictConfig, ListConfig, OmegaConf

from ot_experiments.errors import ConfigError

CONF_DIR = Path(__file__).resolve().parent / "conf"  # shipped inside the package

MIN_EVAL_POINTS = 100  # UVP and the energy distance on fewer samples are noise
COUNT = re.compile(
    r"^(n_.+|.+_points|(.+_)?batch|.+_size|batch_size|.+_samples|.+_epochs|(.+_)?times"
    r"|.+_per_class|width|depth|modules|layers)$"
)
PHASE = re.compile(r"^((.+_)?steps|.+_updates|.+_per_update|rounds)$")
WEIGHT = re.compile(r"^(.+_weight|lambda_.+)$")
GROUPS = ("method", "network", "problem")


# -- the whole config -------------------------------------------------------------------------
def validate_config(cfg: DictConfig) -> None:
    """Raise a one-sentence ConfigError for any bad value, before anything is built.

    Parameters
    ----------
    cfg : DictConfig
        The composed config of one job.
    """
    d = cfg.get("d")
    if isinstance(d, bool) or not isinstance(d, int) or d < 1:
        raise ConfigError(f"d={d!r} is not valid: the dimension d must be an integer >= 1")
    seed = cfg.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed={seed!r} is not valid: the seed must be an integer >= 0")
    steps = cfg.trainer.get("max_steps")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ConfigError(
            f"trainer.max_steps={steps!r} is not valid: the step budget must be an integer >= 1"
        )
    lr = cfg.optimizer.get("lr")
    if not _is_number(lr) or lr <= 0:
        raise ConfigError(f"optimizer.lr={lr!r} is not valid: the learning rate must be > 0")
    decay = (cfg.get("averaging") or {}).get("decay")
    if decay is not None and not (_is_number(decay) and 0 <= decay < 1):
        raise ConfigError(
            f"averaging.decay={decay!r} is not valid: the EMA decay must be in [0, 1)"
        )
    check_threads(cfg.get("threads"))
    check_network_keys(cfg.get("network"))
    check_sizes(cfg)
    check_wandb_login(cfg)


def check_threads(threads: Any) -> None:
    """``threads`` is null (torch's default) or an integer >= 1."""
    if threads is None:
        return
    if not _is_int(threads) or threads < 1:
        raise ConfigError(
            f"threads={threads!r} is not valid: use threads=null (torch's default) or an "
            "integer >= 1"
        )


def check_network_keys(network: DictConfig | None) -> None:
    """Every key of ``network`` is a constructor argument of the chosen network class.

    A recipe or experiment written for one network (e.g. ``network.modules`` for mGradNet-M)
    would otherwise reach another (``network=mlp``) as an unexpected keyword.

    Parameters
    ----------
    network : DictConfig or None
        The composed ``network`` node (``_target_`` names the class).
    """
    target = network.get("_target_") if isinstance(network, DictConfig) else None
    if not target:
        return
    try:
        params = inspect.signature(get_class(target).__init__).parameters
    except Exception:  # an unimportable target is reported by instantiate itself
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    extra = [str(k) for k in network if not str(k).startswith("_") and str(k) not in params]
    if extra:
        takes = ", ".join(k for k in params if k not in ("self", "in_dim", "out_dim"))
        key = f"network.{extra[0]}"
        raise ConfigError(
            f"{key} is not an option of {target.rsplit('.', 1)[-1]} (it takes {takes}); a "
            f"recipe or experiment written for another network sets it: drop it with "
            f"~{key} or choose a network that takes it"
        )


def check_sizes(cfg: DictConfig) -> None:
    """Sample sizes, counts and weights of the top level and of ``method``/``network``/``problem``.

    Parameters
    ----------
    cfg : DictConfig
        The composed config of one job.
    """
    for key in ("eval_points", "method.eval_points"):
        n = OmegaConf.select(cfg, key, default=None)
        if n is not None and (not _is_int(n) or n < MIN_EVAL_POINTS):
            raise ConfigError(
                f"{key}={n!r} is too small: UVP and the energy distance need at least "
                f"{MIN_EVAL_POINTS} samples; use {key} >= {MIN_EVAL_POINTS}"
            )
    n_mc = cfg.get("mc_points")
    if n_mc is not None and (not _is_int(n_mc) or n_mc < 0):
        raise ConfigError(
            f"mc_points={n_mc!r} is not valid: use an integer >= 0 (0: eval_points samples)"
        )
    # top level: scalars only
    for key in cfg:
        if key in GROUPS or key in ("mc_points", "seed", "d", "threads"):
            continue
        value = _get(cfg, key)
        if not isinstance(value, (DictConfig, ListConfig)):
            _check_value(str(key), str(key), value)
    for group in GROUPS:
        node = cfg.get(group)
        if isinstance(node, DictConfig):
            _walk(node, group)


def _walk(node: DictConfig, prefix: str) -> None:
    for key in node:
        name = str(key)
        if name.startswith("_"):
            continue
        value = _get(node, key)
        path = f"{prefix}.{name}"
        if name == "hidden":
            _check_hidden(path, value)
        elif isinstance(value, DictConfig):
            _walk(value, path)
        elif not isinstance(value, ListConfig):
            _check_value(name, path, value)


def _check_hidden(path: str, value: Any) -> None:
    if value is None:
        return
    widths = list(value) if isinstance(value, (ListConfig, list, tuple)) else [value]
    if not widths:
        raise ConfigError(
            f"{path}=[] is not valid: a network needs at least one hidden layer; give the "
            f"layer widths, e.g. {path}=[64,64]"
        )
    if not all(_is_int(w) and w >= 1 for w in widths):
        shown = "[" + ",".join(str(w) for w in widths) + "]"
        raise ConfigError(
            f"{path}={shown} is not valid: every hidden-layer width must be an integer >= 1"
        )


def _check_value(name: str, path: str, value: Any) -> None:
    if value is None or value == "auto":
        return
    if COUNT.match(name):
        if not _is_int(value) or value < 1:
            raise ConfigError(f"{path}={value!r} is not valid: it is a count; use an integer >= 1")
    elif PHASE.match(name):
        if not _is_int(value) or value < 0:
            raise ConfigError(
                f"{path}={value!r} is not valid: it is a number of steps; use an integer >= 0"
            )
    elif WEIGHT.match(name):
        if not _is_number(value) or value < 0:
            raise ConfigError(
                f"{path}={value!r} is not valid: it is a loss weight; use a number >= 0"
            )


def _get(node: DictConfig, key: Any) -> Any:
    """``node[key]`` resolved, or None where its interpolation cannot be resolved here."""
    try:
        return node[key]
    except Exception:  # e.g. ${hydra:...} outside a Hydra run: nothing to check
        return None


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# -- loggers ----------------------------------------------------------------------------------
def check_wandb_login(cfg: DictConfig, environ: dict[str, str] | None = None) -> None:
    """An online wandb logger needs an API key; raise instead of letting wandb prompt for one.

    Parameters
    ----------
    cfg : DictConfig
        The composed config of one job.
    environ : dict, optional
        The environment to look in (default ``os.environ``).
    """
    env = os.environ if environ is None else environ
    for name, c in (cfg.get("logger") or {}).items():
        if not isinstance(c, DictConfig) or not str(c.get("_target_", "")).endswith("WandbLogger"):
            continue
        offline = bool(c.get("offline", False)) or c.get("mode") in ("offline", "disabled")
        if offline or env.get("WANDB_MODE", "").lower() in ("offline", "disabled", "dryrun"):
            continue
        if not wandb_api_key_found(env):
            raise ConfigError(
                f"logger.{name}.offline=false needs a wandb API key and none was found "
                "(WANDB_API_KEY is unset and ~/.netrc has no wandb entry): run `wandb login` or "
                f"set WANDB_API_KEY, or stay offline with logger.{name}.offline=true"
            )


def wandb_api_key_found(environ: dict[str, str] | None = None) -> bool:
    """Whether wandb will find credentials: WANDB_API_KEY, an identity token or a netrc entry."""
    env = os.environ if environ is None else environ
    if env.get("WANDB_API_KEY") or env.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = urlsplit(env.get("WANDB_BASE_URL") or "https://api.wandb.ai").netloc
    if env.get("NETRC"):
        paths = [Path(env["NETRC"])]
    else:
        home = Path(env.get("HOME") or Path.home())
        paths = [home / ".netrc", home / "_netrc"]
    for path in paths:
        try:
            entry = netrc.netrc(path).authenticators(host)
        except (OSError, netrc.NetrcParseError):
            continue
        if entry and entry[2]:
            return True
    return False


# -- the output folder ------------------------------------------------------------------------
def check_output_dir(path: str | Path, key: str = "hydra.run.dir") -> None:
    """Raise a ConfigError unless the folder ``path`` exists writable or can be created.

    Nothing is created: the nearest existing folder on the way is probed with a temporary
    folder that is removed again.
    """
    target = Path(path).expanduser().absolute()
    existing = target
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(
            f"{key}={path} cannot be created: {existing} is a file; point {key} (or "
            "paths.output_root) at a writable folder"
        )
    try:
        os.rmdir(tempfile.mkdtemp(dir=existing, prefix=".write_test_"))
    except OSError as err:
        raise ConfigError(
            f"{key}={path} cannot be created: {existing} is not writable ({err.strerror}); "
            f"point {key} (or paths.output_root) at a writable folder"
        ) from None


class OutputDirCheck(Callback):
    """Hydra callback: check the run (or sweep) folder before Hydra creates it.

    Hydra makes the run folder before the task function runs, so an unwritable one ends in a
    traceback. Registered under ``hydra.callbacks``, this check prints one sentence and exits
    with status 1 instead (Hydra turns an exception of a callback into a mere warning, so the
    check exits with ``SystemExit``)::

        hydra:
          callbacks:
            output_dir:
              _target_: ot_experiments.checks.OutputDirCheck
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:  # noqa: D102
        self._check(config, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:  # noqa: D102
        self._check(config, "hydra.sweep.dir")

    @staticmethod
    def _check(config: DictConfig, key: str) -> None:
        try:
            check_output_dir(OmegaConf.select(config, key), key)
        except ConfigError as err:
            raise SystemExit(str(err)) from None


# -- method and problem -----------------------------------------------------------------------
def _problem_target(path: Path) -> str | None:
    """The ``_target_`` of a problem config: at its top, or under ``problem:`` (global package)."""
    node = OmegaConf.load(path)
    target = node.get("_target_")
    if target is None and isinstance(node.get("problem"), DictConfig):
        target = node.problem.get("_target_")
    return target


def problems_offering(needs: frozenset[str]) -> list[str]:
    """Names of the problem configs in conf/problem whose class offers everything in ``needs``.

    Parameters
    ----------
    needs : frozenset of str
        What a method needs (``samples``, ``log_density``, ``labels``, ...).

    Returns
    -------
    list of str
        The names, sorted.
    """
    names = []
    for path in sorted((CONF_DIR / "problem").glob("*.yaml")):
        try:
            target = _problem_target(path)
            if target and needs <= get_class(target).offers:
                names.append(path.stem)
        except Exception:  # a problem whose module cannot be imported here offers nothing
            continue
    return names


def check_compatible(method_name: str, method_cls: type, problem_name: str, problem: Any) -> None:
    """Raise a ConfigError naming what is missing and which problems fit.

    Parameters
    ----------
    method_name, problem_name : str
        The config names (``method.name``, ``problem.name``).
    method_cls : type
        The method's class (its ``needs``).
    problem : Problem
        The built problem (its ``offers``).
    """
    missing = set(method_cls.needs) - set(problem.offers)
    if missing:
        fits = ", ".join(problems_offering(frozenset(method_cls.needs))) or "none yet"
        raise ConfigError(
            f"method '{method_name}' needs {', '.join(sorted(missing))} that problem "
            f"'{problem_name}' does not offer; problems that fit: {fits}"
        )


@contextmanager
def config_errors_alone() -> Iterator[None]:
    """Re-raise a ConfigError from inside ``hydra.utils.instantiate`` alone.

    Hydra wraps whatever a constructor raises in an InstantiationException ("Error in call to
    target '…'" and the repr of the error); a ConfigError is meant to be read as its sentence.
    """
    try:
        yield
    except InstantiationException as err:
        cause = err.__cause__
        while isinstance(cause, InstantiationException):
            cause = cause.__cause__
        if isinstance(cause, ConfigError):
            raise cause from None
        raise
