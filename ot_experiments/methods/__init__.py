"""Methods: how to solve a problem. One file per method (Q-flow's schedule, density-ratio
estimator and figures in ``qflow_schedule``, ``density_ratio`` and ``qflow_plots``); all share
``OTMethod``'s interface."""

from ot_experiments.methods.base import OTMethod
from ot_experiments.methods.ncf import NCF

__all__ = ["NCF", "OTMethod"]
