"""Lagrangian dynamic OT (docs/methods/lagrangian.md), with crowd motion.

A velocity field v_θ(x, t) (``networks.nodal``) moves B samples xᵢ ∼ ρ0 along characteristics

    dz/dt = v(z, t),  z(0) = x;        dℓ/dt = −∇·v(z, t),  ℓ(0) = ln ρ0(x)   (ℓ = ln ρ(z, t)),

integrated by fixed-step RK4 (N outer intervals × k sub-steps). The loss is

    F = E + λ·KL + α·R + κ·(E − M) + λ_P·Q,
    E  = ∫₀¹ Σᵢ wᵢ ‖v(zᵢ(t), t)‖² dt                    (kinetic energy = reported W2²)
    KL = Σᵢ wᵢ [ℓᵢ(1) − ln ρ1(zᵢ(1))]                    (Monte-Carlo KL(ρ(·, 1) ‖ ρ1))
    R  = Σⱼ ∫₀¹ ‖∇v(yⱼ, t)‖_F² dt, yⱼ ∼ U([−c, c]^d)     (H¹ regulariser, trapezoid in t)
    M  = Σᵢ wᵢ ‖zᵢ(1) − xᵢ‖²                             (straight map cost; E − M ≥ 0)
    Q  = ∫₀¹ Σᵢ wᵢ Qobs(zᵢ(t)) dt                         (crowd motion)

with wᵢ = 1/B (or the importance weights ρ0(xᵢ)/(μ0(xᵢ) B) when xᵢ ∼ μ0 uniform; ρ/μ is
constant along a characteristic because both log-densities obey the same ODE). E and Q use
the composite Simpson rule on each outer interval (nodes t_n, t_n + h/2, t_{n+1}).

Gradients: ``backprop`` differentiates through the RK4 loop (discretize-then-optimize);
``adjoint`` uses torchdiffeq's ``odeint_adjoint`` on the augmented state (z, ℓ) with the same
fixed grid (optimize-then-discretize; torchdiffeq's fixed-step "rk4" is the 3/8-rule variant
of RK4, also fourth order), recomputing z backwards.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from ot_experiments.errors import ConfigError
from ot_experiments.methods.base import OTMethod
from ot_experiments.methods.lagrangian_terms import (
    antithetic_batch,
    h1_regulariser,
    kinetic_energy,
    kl_estimate,
    kl_weight_at,
    obstacle_ramp_factor,
    path_excess,
)
from ot_experiments.networks.nodal import FrozenField
from ot_experiments.ode import (
    path_integral,
    refine_path,
    rk4_characteristics,
    rk4_path,
    rk4_stage_times,
)


class _AugmentedField(nn.Module):
    """(t, (z, ℓ)) ↦ (v(z, t), −∇·v(z, t)), the right-hand side for torchdiffeq."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, t: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        v, div = self.net.velocity_and_divergence(state[0], float(t))
        return v, -div


class Lagrangian(OTMethod):
    """Dynamic OT by Lagrangian discretization with a nodal-basis velocity network.

    Parameters
    ----------
    problem : Problem
        Needs samples and log-densities (Gaussian presets, crowd_motion).
    network : callable
        Partial velocity network, called as ``network(in_dim=d, out_dim=d)``; must provide
        ``velocity_and_divergence(x, t)`` and ``jacobian_frobenius_sq(x, t)``.
    optimizer, scheduler : callable
        Partial constructors (authors: Adam lr 0.1, × 0.98 every 10 steps;
        our default × 0.97).
    n_intervals, n_substeps : int
        N outer intervals (Simpson) × k RK4 sub-steps each (reference 10 × 4; k even).
    batch_size : int
        B characteristics per step (reference 1024).
    kl_weight, h1_weight, obstacle_weight : float or "auto"
        λ, α and λ_P. ``auto`` takes the problem's value (``Problem.method_hints``: the
        Gaussian Tests' α, crowd motion's λ_KL, λ_FP and α = 0), else λ = 1000, α = 1, λ_P = 0.
    h1_points, h1_box : int, float
        s uniform points on [−c, c]^d for R (reference 5000, c = 10).
    h1_normalization : {"sum", "mean"}
        Sum R over the points (the authors' scripts) or average it.
    gradient : {"backprop", "adjoint"}
        Discretize-then-optimize or optimize-then-discretize (torchdiffeq).
    obstacle_quadrature : {"substeps", "nodes"}
        Simpson for the obstacle term over every RK4 step (default) or the 2N + 1 nodes.
    obstacle_refine : int
        With ``substeps``: r points per RK4 step on the straight segments between the RK4
        positions (``refine_path``; 1 = the positions only). r > 1 makes a characteristic
        that jumps a thin wall within one step pay for it (and get a gradient).
    obstacle_ramp_steps, obstacle_ramp_start : int or "auto", float
        Continuation of λ_P: the weight at step k is λ_P · ``obstacle_ramp_factor`` (geometric
        from start·λ_P to λ_P over the ramp steps; 0 steps = no ramp). auto: the problem's
        value (crowd motion: 300 steps for the maze walls of maze1–maze3), else 0.
    importance : {"none", "uniform"}
        Sample the characteristics from ρ0 or from μ0 = U([−c, c]^d), c = ``importance_box``.
    straightness_weight : float
        κ ≥ 0 of the straightening term κ·(E − M) (``path_excess``; 0 = off, the paper's loss).
    kl_weight_end, kl_ramp_from : float or None, float
        λ rises geometrically from ``kl_weight`` to ``kl_weight_end`` over the budget's last
        1 − r, r = ``kl_ramp_from`` (``kl_weight_at``); None keeps λ fixed (the paper).
    antithetic : bool
        Draw each batch as antithetic pairs x, 2c − x about the source's centre of symmetry
        (``antithetic_batch``; needs a symmetric source, e.g. a Gaussian, and x ~ ρ0).
    """

    needs = frozenset({"samples", "log_density"})
    is_dynamic = True

    def __init__(
        self,
        problem,
        network: Callable,
        optimizer: Callable,
        scheduler: Callable | None = None,
        n_intervals: int = 10,
        n_substeps: int = 4,
        batch_size: int = 1024,
        kl_weight: float | str = "auto",
        h1_weight: float | str = "auto",
        obstacle_weight: float | str = "auto",
        h1_points: int = 5000,
        h1_box: float = 10.0,
        h1_normalization: str = "sum",
        gradient: str = "backprop",
        importance: str = "none",
        obstacle_quadrature: str = "substeps",
        obstacle_refine: int = 1,
        obstacle_ramp_steps: int | str = 0,
        obstacle_ramp_start: float = 1e-3,
        importance_box: float = 10.0,
        eval_points: int = 2000,
        straightness_weight: float = 0.0,
        kl_weight_end: float | None = None,
        kl_ramp_from: float = 0.4,
        antithetic: bool = False,
    ) -> None:
        super().__init__(problem, optimizer, scheduler, eval_points=eval_points)
        if gradient not in ("backprop", "adjoint"):
            raise ConfigError(
                f"method.gradient={gradient!r} is not valid; choose backprop or adjoint"
            )
        if importance not in ("none", "uniform"):
            raise ConfigError(
                f"method.importance={importance!r} is not valid; choose none or uniform"
            )
        if obstacle_quadrature not in ("substeps", "nodes"):
            raise ConfigError(
                f"method.obstacle_quadrature={obstacle_quadrature!r} is not valid; "
                "choose substeps or nodes"
            )
        self.obstacle_quadrature = obstacle_quadrature
        if int(obstacle_refine) < 1:
            raise ConfigError(
                f"method.obstacle_refine={obstacle_refine} is not valid: "
                "need an integer >= 1 (points per RK4 step for the obstacle term)"
            )
        self.obstacle_refine = int(obstacle_refine)
        if obstacle_ramp_steps == "auto":
            obstacle_ramp_steps = 0
        if int(obstacle_ramp_steps) < 0 or not 0 < float(obstacle_ramp_start) <= 1:
            raise ConfigError(
                f"method.obstacle_ramp_steps={obstacle_ramp_steps}, "
                f"method.obstacle_ramp_start={obstacle_ramp_start} are not valid: need "
                "ramp steps >= 0 and a start factor in (0, 1]"
            )
        self.obstacle_ramp_steps = int(obstacle_ramp_steps)
        self.obstacle_ramp_start = float(obstacle_ramp_start)
        if h1_normalization not in ("sum", "mean"):
            raise ConfigError(
                f"method.h1_normalization={h1_normalization!r} is not valid; choose sum or mean"
            )
        if n_intervals < 1 or n_substeps < 2 or n_substeps % 2:
            raise ConfigError(
                f"method.n_intervals={n_intervals}, method.n_substeps={n_substeps} are not valid: "
                "need n_intervals >= 1 and an even n_substeps >= 2 (Simpson needs the midpoints)"
            )
        self.dim = problem.dim
        self.net = network(in_dim=self.dim, out_dim=self.dim)
        self.n_intervals, self.n_substeps = int(n_intervals), int(n_substeps)
        self.batch_size = int(batch_size)
        # "auto" values the problem did not fill (Problem.method_hints) fall back to these
        self.kl_weight = float(1000.0 if kl_weight == "auto" else kl_weight)
        self.h1_weight = float(1.0 if h1_weight == "auto" else h1_weight)
        obstacle_weight = 0.0 if obstacle_weight == "auto" else obstacle_weight
        if float(obstacle_weight) != 0 and "path_cost" not in problem.offers:
            raise ConfigError(
                "method.obstacle_weight is set but the problem has no cost along paths "
                "(e.g. an obstacle); use problem=crowd_motion or obstacle_weight=0"
            )
        self.obstacle_weight = float(obstacle_weight)
        if antithetic and ("symmetric_source" not in problem.offers or importance != "none"):
            raise ConfigError(
                "method.antithetic=true needs x ~ ρ0 (importance=none) from a source that is "
                "symmetric about a point (e.g. problem=gaussian); set method.antithetic=false"
            )
        self.antithetic = bool(antithetic)
        if float(straightness_weight) < 0 or not 0 <= float(kl_ramp_from) < 1:
            raise ConfigError(
                f"method.straightness_weight={straightness_weight}, "
                f"method.kl_ramp_from={kl_ramp_from} are not valid: need κ >= 0 and a "
                "ramp start in [0, 1) (a fraction of trainer.max_steps)"
            )
        if kl_weight_end is not None and float(kl_weight_end) <= 0:
            raise ConfigError(
                f"method.kl_weight_end={kl_weight_end} is not valid: need a positive λ "
                "(or null for a fixed λ)"
            )
        self.straightness_weight = float(straightness_weight)
        self.kl_weight_end = None if kl_weight_end is None else float(kl_weight_end)
        self.kl_ramp_from = float(kl_ramp_from)
        self.h1_points, self.h1_box = int(h1_points), float(h1_box)
        self.h1_normalization = h1_normalization
        self.gradient, self.importance = gradient, importance
        self.importance_box = float(importance_box)
        self.save_hyperparameters(
            {
                "kl_weight": self.kl_weight,
                "h1_weight": self.h1_weight,
                "obstacle_weight": self.obstacle_weight,
            }
        )

    # the field ---------------------------------------------------------------------------
    def field(self, z: Tensor, t: float) -> tuple[Tensor, Tensor]:
        """(v(z, t), ∇·v(z, t)) in closed form."""
        return self.net.velocity_and_divergence(z, t)

    def characteristics(self, x: Tensor, ell0: Tensor, adjoint: bool = False):
        """(zs, ells, vs, z_fine): Simpson nodes and every RK4 step (``rk4_characteristics``)."""
        if not adjoint:
            field = FrozenField(self.net, rk4_stage_times(self.n_intervals * self.n_substeps))
            return rk4_characteristics(
                field, x, ell0, self.n_intervals, self.n_substeps, return_fine=True
            )
        from torchdiffeq import odeint_adjoint

        h = 1.0 / (self.n_intervals * self.n_substeps)

        def grid(func, y0, t):
            n = max(1, round(float(t[-1] - t[0]) / h))
            return torch.linspace(float(t[0]), float(t[-1]), n + 1, dtype=t.dtype, device=t.device)

        fine_times = torch.linspace(0.0, 1.0, self.n_intervals * self.n_substeps + 1).to(x)
        func = _AugmentedField(self.net)
        z_fine, ell_fine = odeint_adjoint(
            func,
            (x, ell0),
            fine_times,
            method="rk4",
            options={"grid_constructor": grid},
            adjoint_params=tuple(self.net.parameters()),
        )
        half = self.n_substeps // 2
        zs, ells, nodes = z_fine[::half], ell_fine[::half], fine_times[::half]
        vs = torch.stack([self.net(z, float(t)) for z, t in zip(zs, nodes)])
        return zs, ells, vs, z_fine

    # training ----------------------------------------------------------------------------
    def _starts(self, n: int) -> tuple[Tensor, Tensor, Tensor]:
        """Start points x (n, d), ln ρ0(x) (n,), weights (n,) (importance or 1/n)."""
        if self.importance == "uniform":
            c = self.importance_box
            x = (torch.rand(n, self.dim, device=self.device) * 2 - 1) * c
            log_rho0 = self.problem.log_density_source(x)
            log_mu0 = -self.dim * math.log(2 * c)
            return x, log_rho0, torch.exp(log_rho0 - log_mu0) / n
        if self.antithetic:
            half = self.problem.sample_source(n - n // 2, device=self.device)
            x = antithetic_batch(half, self.problem.source_centre)[:n]
        else:
            x = self.problem.sample_source(n, device=self.device)
        w = torch.full((n,), 1.0 / n, device=self.device)
        return x, self.problem.log_density_source(x), w

    def h1_term(self) -> Tensor:
        """R on fresh uniform points, closed-form ‖∇v‖_F² at the N + 1 interval ends."""
        c = self.h1_box
        y = (torch.rand(self.h1_points, self.dim, device=self.device) * 2 - 1) * c
        times = torch.linspace(0.0, 1.0, self.n_intervals + 1, device=self.device)
        jac_sq = self.net.jacobian_frobenius_sq_at(y, times)  # (N+1, s)
        return h1_regulariser(jac_sq, self.n_intervals, self.h1_normalization)

    def obstacle_integral(self, zs: Tensor, weights: Tensor, step: int | None) -> Tensor:
        """∫₀¹ Σᵢ wᵢ Q(zᵢ(t)) dt by composite Simpson on equally spaced positions zs (2m+1, n, d).

        Called with every RK4 step (``obstacle_quadrature=substeps``: a fast particle cannot
        jump a thin wall between quadrature points) or with the Simpson nodes only (``nodes``).
        """
        return path_integral(lambda z: self.problem.path_cost(z, step=step), zs, weights)

    def kl_weight_now(self, step: int | None = None) -> float:
        """λ in force at training step ``step`` (default: the trainer's step; ``kl_weight_at``);
        outside a trainer, the starting λ."""
        if self._trainer is None:
            return self.kl_weight
        step = int(self.trainer.global_step) if step is None else step
        total = int(self.trainer.max_steps)
        return kl_weight_at(step, total, self.kl_weight, self.kl_weight_end, self.kl_ramp_from)

    def training_loss(self, step: int):
        x, log_rho0, w = self._starts(self.batch_size)
        zs, ells, vs, z_fine = self.characteristics(x, log_rho0, adjoint=self.gradient == "adjoint")
        energy = kinetic_energy(vs, w, self.n_intervals)
        kl = kl_estimate(ells[-1], self.problem.log_density_target(zs[-1]), w)
        loss = energy + self.kl_weight_now(step) * kl
        logs = {"energy": energy.detach(), "kl": kl.detach()}
        if self.straightness_weight > 0:
            excess = path_excess(energy, zs[0], zs[-1], w)
            loss = loss + self.straightness_weight * excess
            logs["path_excess"] = excess.detach()
        if self.h1_weight > 0:
            h1 = self.h1_term()
            loss = loss + self.h1_weight * h1
            logs["h1"] = h1.detach()
        if self.obstacle_weight > 0:
            path = zs
            if self.obstacle_quadrature == "substeps":
                path = (
                    refine_path(z_fine, self.obstacle_refine)
                    if self.obstacle_refine > 1
                    else z_fine
                )
            obst = self.obstacle_integral(path, w, step)
            ramp = obstacle_ramp_factor(step, self.obstacle_ramp_steps, self.obstacle_ramp_start)
            loss = loss + ramp * self.obstacle_weight * obst
            logs["obstacle"] = obst.detach()
        return loss, logs

    # maps and metrics ----------------------------------------------------------------------
    @torch.no_grad()
    def _integrate(self, x: Tensor, chunk: int = 8192):
        """(zs, ells, vs, z_fine) for evaluation points x ∼ ρ0 (ℓ(0) = ln ρ0), no gradients."""
        field = FrozenField(self.net, rk4_stage_times(self.n_intervals * self.n_substeps))

        def fn(c: Tensor) -> tuple[Tensor, ...]:
            ell0 = self.problem.log_density_source(c)
            return rk4_characteristics(
                field, c, ell0, self.n_intervals, self.n_substeps, return_fine=True
            )

        return self.map_in_chunks(fn, x, chunk, dim=1)

    def transport(self, x: Tensor) -> Tensor:
        return self._integrate(x)[0][-1].to(x.device)  # z(1)

    @torch.no_grad()
    def trajectory(self, x: Tensor, ts: Tensor) -> Tensor:
        """z(x, t) at the increasing times ``ts`` (k,) ⊂ [0, 1] → (k, n, d), RK4 steps ≤ 1/(N k)."""
        h = 1.0 / (self.n_intervals * self.n_substeps)
        z0 = x.to(self.device, torch.float32)
        return rk4_path(lambda z, t: self.field(z, t), z0, ts, h).to(x.device)

    def transport_cost(self, x: Tensor, tx: Tensor | None = None) -> float:
        """E = ∫₀¹ mean ‖v(z(x, t), t)‖² dt on the given source samples (Simpson); the kinetic
        energy needs the velocities along the paths, so ``tx`` is not used."""
        _, _, vs, _ = self._integrate(x)
        w = torch.full((x.shape[0],), 1.0 / x.shape[0], device=vs.device)
        return float(kinetic_energy(vs, w, self.n_intervals))

    def paths(self, x: Tensor) -> Tensor:
        """Positions after every RK4 step, (N k + 1, n, d): the characteristics the method
        integrates (equal steps on [0, 1]), for costs a problem charges along paths."""
        return self._integrate(x)[3].to(x.device)

    def extra_metrics(self, x: Tensor, problem) -> dict[str, float]:
        """kl, map_cost = mean ‖z(1) − x‖² (≤ E), and the weights λ (at this step), α, λ_P."""
        zs, ells, _, _ = self._integrate(x)
        n = x.shape[0]
        w = torch.full((n,), 1.0 / n, device=zs.device)
        return {
            "kl": float(kl_estimate(ells[-1], problem.log_density_target(zs[-1]), w)),
            "map_cost": float((zs[-1] - zs[0]).square().sum(1).mean()),
            "kl_weight": self.kl_weight_now(),
            "h1_weight": self.h1_weight,
            "obstacle_weight": self.obstacle_weight,
        }

    def extra_figures(self, out: Path) -> list[Path]:
        """Density snapshots with characteristics → ``density_evolution.png``."""
        from ot_experiments.plotting import plot_density_evolution

        path = Path(out) / "density_evolution.png"
        plot_density_evolution(self, self.problem, path)
        return [path]


__all__ = ["Lagrangian"]
