"""Device audit: every torch tensor factory (``torch.zeros``, ``linspace``, ``tensor``, ...) in a
training path either names its ``device=`` or is on the reviewed list below.

Why an audit and not a run: this machine has one device, so a tensor created on the wrong one
cannot fail here; the audit fails the day someone adds ``torch.zeros(n)`` to a method's loss,
which would break ``hardware=gpu``. The listed calls were reviewed and ran on an H200
(``scripts/gpu_check.sh``, 2026-11-30: every method × problem family trained and evaluated on
the GPU). Not audited: ``plotting.py`` and ``data/`` (CPU by design: matplotlib, file loading)
and ``__init__`` methods (parameters and buffers move with their module). ``*_like`` factories
follow their argument.
"""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

import ot_experiments

PACKAGE = Path(ot_experiments.__file__).parent
FACTORIES = {"zeros", "ones", "full", "empty", "rand", "randn", "randint", "linspace", "arange"}
FACTORIES |= {"tensor", "eye"}

# file::function -> number of device-less factory calls, with why each is safe
REVIEWED = {
    # time grids made on the CPU and moved by the caller (.to(x), the ODE solver, .cpu() users)
    "methods/lagrangian.py::characteristics": 1,
    "ode.py::block_times": 1,  # Q-flow's registered buffer: moves with the module
    "ode.py::fine_time_grid": 2,
    "methods/qflow.py::transport": 1,
    "methods/qflow.py::inverse_transport": 1,
    "methods/qflow.py::trajectory": 1,
    "methods/qflow.py::_snapshot_after_fm": 1,
    "methods/density_ratio.py::grid": 1,  # the ratio net's grid times (floats to quadrature)
    "networks/nodal.py::layer": 1,  # a scalar time fed to the weight net (moved inside)
    # figures and figure grids (CPU, matplotlib)
    "methods/qflow_plots.py::_grid": 2,
    "methods/qflow_plots.py::plot_trajectories": 1,
    "problems/latent.py::figures": 1,
    # parameter initialisers (wrapped in nn.Parameter inside __init__)
    "networks/gradnets.py::_xavier": 1,
    "networks/nodal.py::_uniform": 1,
    # problem constants in float64 on the CPU, moved to the samples' device per call
    "problems/gaussian.py::random_rotation_covariance": 2,
    "problems/gaussian.py::_preset": 7,
    "problems/crowd_motion.py::_gaussian_max": 1,
    "problems/mnist_morphing.py::pixel_centres": 2,
    "problems/toy2d.py::_log_density": 1,
    "problems/color_transfer.py::bounding_box": 2,
    # sampling with a CPU torch.Generator; the sampler moves the result to `device`
    "problems/color_transfer.py::_draw": 1,
    "problems/mnist_morphing.py::sample_mixture": 1,
    "problems/base.py::draw_rows": 2,  # latent and array problems; the rows move to `device`
    "problems/latent.py::balanced_subset": 1,
    "problems/latent.py::load_split": 1,
    "problems/latent.py::baselines": 2,  # POT baselines run on CPU copies
}


def device_less_factories(root: Path = PACKAGE) -> Counter:
    """file::function -> count of torch factory calls without ``device=`` under ``root``."""
    found: Counter = Counter()
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if rel == "plotting.py" or rel.startswith("data/"):
            continue

        def visit(node, function, rel=rel):
            for child in ast.iter_child_nodes(node):
                inner = child.name if isinstance(child, ast.FunctionDef) else function
                if (
                    isinstance(child, ast.Call)
                    and isinstance(child.func, ast.Attribute)
                    and child.func.attr in FACTORIES
                    and isinstance(child.func.value, ast.Name)
                    and child.func.value.id == "torch"
                    and "device" not in {k.arg for k in child.keywords}
                    and function != "__init__"
                ):
                    found[f"{rel}::{function}"] += 1
                visit(child, inner)

        visit(ast.parse(path.read_text()), None)
    return found


def test_every_tensor_factory_in_a_training_path_names_its_device():
    found = device_less_factories()
    new = {k: v for k, v in found.items() if v > REVIEWED.get(k, 0)}
    assert not new, (
        f"torch tensor factories without device= in {new}: pass device= (the inputs' or the "
        "module's device), or review the call and add it to REVIEWED with the reason"
    )
    stale = {k: v for k, v in REVIEWED.items() if found.get(k, 0) < v}
    assert not stale, f"REVIEWED lists calls that are gone: lower or remove {stale}"


def test_the_audit_sees_a_stray_factory(tmp_path):
    (tmp_path / "methods").mkdir()
    (tmp_path / "methods" / "probe.py").write_text(
        "import torch\n\n\ndef loss(x):\n"
        "    return x + torch.zeros(3) + torch.ones(3, device=x.device)\n"
    )
    assert device_less_factories(tmp_path) == Counter({"methods/probe.py::loss": 1})
