"""Classical solvers to compare against (from POT where POT has them)."""

from ot_experiments.baselines.pot import pot_baselines

__all__ = ["pot_baselines"]
