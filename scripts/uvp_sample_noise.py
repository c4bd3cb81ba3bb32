"""How much a run's L2-UVP estimate moves with the evaluation sample: re-evaluates the forward
and backward UVP of a trained run (ground-truth problems) on several independent draws of n
points, for each n given, and prints the spread.

    python scripts/uvp_sample_noise.py outputs/runs/<run> --points 2000 20000 --draws 8
    python scripts/uvp_sample_noise.py outputs/runs/<run> --points 200000 --by-radius

``--by-radius`` splits the forward UVP of the first draw into shells of the source points'
distance from their mean (quantiles 50, 90, 99, 99.9 %): where the map's error sits, and
whether the map carries each shell too far out (radial error > 0) or pulls it in.
``--linear-split`` splits it into the error of the learned map's best affine fit and what the
map adds beyond that fit: which kind of error it is.

The final metrics take the UVPs on ``mc_points`` samples a side (20,000 by default); this is
the measurement that chose it. A run still training can be read too (its last checkpoint).
"""

from __future__ import annotations

import argparse
import statistics

import torch
from torch import Tensor

from ot_experiments.metrics import l2_uvp
from ot_experiments.results import load_run


def uvp_draws(run, n: int, draws: int, seed: int = 1000) -> tuple[list[float], list[float]]:
    """Forward and backward UVP (%) of ``run`` on ``draws`` independent draws of ``n`` points a
    side (generator seeds ``seed``, ``seed + 1``, …); two lists of length ``draws``."""
    problem, fwd, bwd = run.problem, [], []
    for k in range(draws):
        g = torch.Generator().manual_seed(seed + k)
        x = problem.sample_source(n, generator=g)
        y = problem.sample_target(n, generator=g)
        fwd.append(l2_uvp(run.transport(x), problem.transport_true(x), problem.target_variance()))
        if run.method.has_inverse:
            back = problem.inverse_transport_true(y)
            bwd.append(l2_uvp(run.inverse_transport(y), back, problem.source_variance()))
    return fwd, bwd


def first_draw(run, n: int, seed: int = 1000) -> tuple[Tensor, Tensor, Tensor]:
    """The ``n`` source points of ``uvp_draws``' first draw (generator ``seed``), their image
    under the learned map and under the exact one, each (n, d)."""
    x = run.problem.sample_source(n, generator=torch.Generator().manual_seed(seed))
    return x, run.transport(x).detach(), run.problem.transport_true(x)


def uvp_by_radius(
    run, n: int, seed: int = 1000, quantiles: tuple[float, ...] = (0.5, 0.9, 0.99, 0.999)
) -> list[tuple[float, float, float, float]]:
    """The forward UVP (%) of one draw of ``n`` source points (generator ``seed``, as the first
    draw of ``uvp_draws``) split by shells of ‖x − x̄‖ at the given quantiles: a list of
    (inner radius, outer radius, UVP contribution, radial error), one per shell. The
    contributions sum to the draw's UVP, 100 Σᵢ ‖T(xᵢ) − T*(xᵢ)‖² / (n Var ν); the radial error
    is the shell's mean of (T(x) − T*(x))·e(x), e(x) the unit vector from the mean of T*(x) to
    T*(x): positive where the map carries points too far out, negative where it pulls them in."""
    x, tx, true_x = first_draw(run, n, seed)
    err = 100 * (tx - true_x).square().sum(1) / (n * float(run.problem.target_variance()))
    out_dir = true_x - true_x.mean(0)
    radial = ((tx - true_x) * out_dir).sum(1) / out_dir.norm(dim=1).clamp_min(1e-12)
    r = (x - x.mean(0)).norm(dim=1)
    edges = [0.0, *torch.quantile(r, torch.tensor(quantiles)).tolist(), float("inf")]
    shells = [(r >= lo) & (r < hi) for lo, hi in zip(edges, edges[1:])]
    return [
        (lo, hi, float(err[m].sum()), float(radial[m].mean()))
        for lo, hi, m in zip(edges, edges[1:], shells)
    ]


def uvp_linear_split(
    map_x: Tensor, x: Tensor, true_x: Tensor, variance: float
) -> tuple[float, float]:
    """Split the forward UVP of a map into its affine part and the rest.

    L(x) = xB + c is the least-squares affine fit of the learned map's values ``map_x`` (n, d)
    on the source points ``x`` (n, d). Returns (100 E‖L(x) − T*(x)‖² / Var ν,
    100 E‖T̂(x) − L(x)‖² / Var ν) in %: the error of the map's affine part and its nonlinear
    part. When the exact map T* is affine (Gaussian pairs) the residual T̂ − L is orthogonal to
    every affine function of x, so the two parts sum to the UVP (Pythagoras); otherwise the sum
    differs by a cross term.
    """
    design = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)
    fit = design @ torch.linalg.lstsq(design, map_x).solution
    linear = l2_uvp(fit, true_x, variance)
    return linear, l2_uvp(map_x, fit, variance)


def spread(values: list[float]) -> str:
    """'mean ± sd (min … max)' of a list of UVPs."""
    if not values:
        return "—"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.5f} ± {sd:.5f} ({min(values):.5f} … {max(values):.5f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="a run folder of a problem with a ground truth")
    ap.add_argument("--points", type=int, nargs="+", default=[2000, 20000])
    ap.add_argument("--draws", type=int, default=8)
    ap.add_argument("--by-radius", action="store_true", help="forward UVP by shells of |x|")
    ap.add_argument(
        "--linear-split", action="store_true", help="forward UVP: affine part and the rest"
    )
    args = ap.parse_args()
    run = load_run(args.run, allow_unfinished=True)
    for n in args.points:
        fwd, bwd = uvp_draws(run, n, args.draws)
        print(f"n = {n:>7}: uvp_fwd {spread(fwd)}   uvp_bwd {spread(bwd)}", flush=True)
        if args.by_radius:
            for lo, hi, part, radial in uvp_by_radius(run, n):
                print(
                    f"    |x - mean| in [{lo:.2f}, {hi:.2f}): uvp_fwd {part:.5f}, "
                    f"radial error {radial:+.4f}",
                    flush=True,
                )
        if args.linear_split:
            x, tx, true_x = first_draw(run, n)
            linear, rest = uvp_linear_split(tx, x, true_x, run.problem.target_variance())
            print(f"    uvp_fwd: affine part {linear:.5f}, beyond the affine fit {rest:.5f}")


if __name__ == "__main__":
    main()
