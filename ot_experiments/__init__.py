"""ot-experiments: a config-driven framework for neural optimal transport experiments."""

from omegaconf import OmegaConf

OmegaConf.register_new_resolver("max", lambda *a: max(a), replace=True)
OmegaConf.register_new_resolver("min", lambda *a: min(a), replace=True)
OmegaConf.register_new_resolver("mul", lambda *a: __import__("math").prod(a), replace=True)
OmegaConf.register_new_resolver("div", lambda a, b: a // b, replace=True)
OmegaConf.register_new_resolver("ceildiv", lambda a, b: -(-a // b), replace=True)
# ${above:x,threshold,a,b}: a when x > threshold, else b (a recipe that changes with d)
OmegaConf.register_new_resolver("above", lambda x, t, a, b: a if x > t else b, replace=True)

from ot_experiments.api import ArrayProblem, FittedMap, fit  # noqa: E402
from ot_experiments.results import Run, load_run  # noqa: E402

__version__ = "0.1.0"
__all__ = ["ArrayProblem", "FittedMap", "Run", "__version__", "fit", "load_run"]
