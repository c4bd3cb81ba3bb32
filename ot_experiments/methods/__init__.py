"""Methods: how to solve a problem. One file per method; all share ``OTMethod``'s interface."""

from ot_experiments.methods.base import OTMethod
from ot_experiments.methods.ncf import NCF

__all__ = ["NCF", "OTMethod"]
