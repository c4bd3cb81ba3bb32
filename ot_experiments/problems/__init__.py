"""Problems: what to transport (see ``base.Problem``)."""

from ot_experiments.problems.base import CAPABILITIES, Problem
from ot_experiments.problems.gaussian import GaussianProblem
from ot_experiments.problems.toy2d import ClassMixtureProblem, Toy2DProblem

__all__ = ["CAPABILITIES", "ClassMixtureProblem", "GaussianProblem", "Problem", "Toy2DProblem"]
