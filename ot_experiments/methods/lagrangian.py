"""Lagrangian dynamic OT (docs/methods/lagrangian.md), with crowd motion.

Over 400 lines for now: RK4 / Simpson / trapezoid are to move to a shared ODE module and the
density figure to plotting (open redesign issue), checked by scripts/check_identical.py.

A velocity field v_θ(x, t) (``networks.nodal``) moves B samples xᵢ ∼ ρ0 along characteristics

    dz/dt = v(z, t),  z(0) = x;        dℓ/dt = −∇·v(z, t),  ℓ(0) = ln ρ0(x)   (ℓ = ln ρ(z, t)),

integrated by fixed-step RK4 (N outer intervals × k sub-steps). The loss is

    F = E + λ·KL + α·R + λ_P·Q,
    E  = ∫₀¹ Σᵢ wᵢ ‖v(zᵢ(t), t)‖² dt                    (kinetic energy = reported W2²)
    KL = Σᵢ wᵢ [ℓᵢ(1) − ln ρ1(zᵢ(1))]                    (Monte-Carlo KL(ρ(·, 1) ‖ ρ1))
    R  = Σⱼ ∫₀¹ ‖∇v(yⱼ, t)‖_F² dt, yⱼ ∼ U([−c, c]^d)     (H¹ regulariser, trapezoid in t)
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

# field(z (n, d), t) → (v (n, d), ∇·v (n,))
Field = Callable[[Tensor, float], tuple[Tensor, Tensor]]


# -- reference hyper-parameters -----------------------------------------------------------
GAUSSIAN_TESTS = ("shift", "scale_shift", "two_axis_shift")


def reference_h1_weight(preset: str | None, d: int) -> float:
    """The authors' α for the Gaussian Tests 1–3 (docs/methods/lagrangian.md); 1.0 otherwise.

    Tests 1–2 (shift, scale_shift): α = 1 for d ≤ 10, 0.1 above.
    Test 3 (two_axis_shift): α = 5 for d ≤ 20, 20 above.
    """
    if preset == "two_axis_shift":
        return 5.0 if d <= 20 else 20.0
    if preset in ("shift", "scale_shift"):
        return 1.0 if d <= 10 else 0.1
    return 1.0


# -- integration --------------------------------------------------------------------------
def rk4_step(field: Field, z: Tensor, ell: Tensor, t: float, h: float):
    """One classical RK4 step of (ż, ℓ̇) = (v, −∇·v) from t to t + h.

    Returns (z', ℓ', v(z, t)) with shapes (n, d), (n,), (n, d); the last is the first stage.
    """
    v1, d1 = field(z, t)
    v2, d2 = field(torch.add(z, v1, alpha=0.5 * h), t + 0.5 * h)
    v3, d3 = field(torch.add(z, v2, alpha=0.5 * h), t + 0.5 * h)
    v4, d4 = field(torch.add(z, v3, alpha=h), t + h)
    z_new = z + (h / 6) * (v1 + v4 + 2 * (v2 + v3))
    ell_new = ell - (h / 6) * (d1 + d4 + 2 * (d2 + d3))
    return z_new, ell_new, v1


def simpson_nodes(n_intervals: int) -> Tensor:
    """Times of the composite Simpson rule: t_j = j / (2N), j = 0 … 2N, shape (2N + 1,)."""
    return torch.linspace(0.0, 1.0, 2 * n_intervals + 1)


def rk4_characteristics(
    field: Field,
    z0: Tensor,
    ell0: Tensor,
    n_intervals: int,
    n_substeps: int,
    return_fine: bool = False,
):
    """Characteristics on the Simpson nodes by RK4 with N·k equal steps.

    Parameters
    ----------
    field : callable
        (z (n, d), t) → (v (n, d), ∇·v (n,)).
    z0, ell0 : Tensor
        Start points (n, d) and ln ρ0 there (n,).
    n_intervals, n_substeps : int
        N outer intervals, each integrated with k (even) RK4 steps of 1/(N k).

    return_fine : bool
        Also return the positions after every RK4 step, (N k + 1, n, d).

    Returns
    -------
    zs (2N+1, n, d), ells (2N+1, n), vs (2N+1, n, d): positions, ln ρ and v(z, t) at the
    Simpson nodes t_j = j/(2N) (``simpson_nodes``) [, z_fine (N k + 1, n, d)].
    """
    h = 1.0 / (n_intervals * n_substeps)
    half = n_substeps // 2
    z, ell = z0, ell0
    zs, ells, vs, fine = [z0], [ell0], [], [z0]
    for step in range(n_intervals * n_substeps):
        z, ell, v = rk4_step(field, z, ell, step * h, h)
        fine.append(z)
        if step % half == 0:
            vs.append(v)  # v at the node where this step starts
        if (step + 1) % half == 0:
            zs.append(z)
            ells.append(ell)
    vs.append(field(z, 1.0)[0])
    out = (torch.stack(zs), torch.stack(ells), torch.stack(vs))
    return (*out, torch.stack(fine)) if return_fine else out


def rk4_path(field: Field, z0: Tensor, ts: Tensor, max_step: float) -> Tensor:
    """Positions z(t) at the increasing times ``ts`` (k,) ⊂ [0, 1], z(0) = z0; (k, n, d).

    Between consecutive requested times RK4 takes ⌈Δt / max_step⌉ equal steps.
    """
    out, z, t = [], z0, 0.0
    ell = torch.zeros(z0.shape[0], dtype=z0.dtype, device=z0.device)
    for t_next in ts.tolist():
        n = max(1, math.ceil((t_next - t) / max_step - 1e-9)) if t_next > t else 0
        for i in range(n):
            dt = (t_next - t) / n
            z, ell, _ = rk4_step(field, z, ell, t + i * dt, dt)
        t = t_next if n else t
        out.append(z)
    return torch.stack(out)


def simpson(values: Tensor, n_intervals: int) -> Tensor:
    """Composite Simpson rule on [0, 1]: Σₙ (h/6)[f(tₙ) + 4 f(tₙ + h/2) + f(tₙ₊₁)], h = 1/N.

    ``values`` (2N + 1, ...) on ``simpson_nodes(N)`` → (...).
    """
    w = torch.ones(2 * n_intervals + 1, dtype=values.dtype, device=values.device)
    w[1::2] = 4.0
    w[2:-1:2] = 2.0
    w = w / (6 * n_intervals)
    return torch.tensordot(w, values, dims=1)


def trapezoid(values: Tensor, n_intervals: int) -> Tensor:
    """Composite trapezoid rule on [0, 1] over N + 1 equally spaced values (N + 1, ...)."""
    w = torch.ones(n_intervals + 1, dtype=values.dtype, device=values.device)
    w[0] = w[-1] = 0.5
    return torch.tensordot(w / n_intervals, values, dims=1)


# -- the loss terms as pure functions -----------------------------------------------------
def kinetic_energy(vs: Tensor, weights: Tensor, n_intervals: int) -> Tensor:
    """E = ∫₀¹ Σᵢ wᵢ ‖vᵢ(t)‖² dt (Simpson); vs (2N+1, n, d), weights (n,) → scalar."""
    return simpson(vs.square().sum(-1) @ weights, n_intervals)


def kl_estimate(ell1: Tensor, log_rho1: Tensor, weights: Tensor) -> Tensor:
    """Monte-Carlo KL(ρ(·, 1) ‖ ρ1) = Σᵢ wᵢ [ℓᵢ(1) − ln ρ1(zᵢ(1))]; (n,), (n,), (n,) → scalar."""
    return (ell1 - log_rho1) @ weights


def h1_regulariser(jac_sq: Tensor, n_intervals: int, normalization: str = "sum") -> Tensor:
    """R = Σⱼ ∫₀¹ ‖∇v(yⱼ, t)‖_F² dt (trapezoid over the N + 1 interval ends).

    ``jac_sq`` (N + 1, s); ``normalization="mean"`` divides by the number of points s.
    """
    per_point = trapezoid(jac_sq, n_intervals)
    return per_point.sum() if normalization == "sum" else per_point.mean()


def obstacle_ramp_factor(step: int, ramp_steps: int, start: float) -> float:
    """Geometric continuation start^(1 − k/K) for step k < K = ``ramp_steps``, then 1.

    ``ramp_steps = 0`` gives 1 at every step.
    """
    if ramp_steps <= 0 or step >= ramp_steps:
        return 1.0
    return start ** (1.0 - step / ramp_steps)


AUTO_RAMP_STEPS = 300  # obstacle_ramp_steps=auto for maze walls (maze1-3)
OBSTACLE_REFINE = 8  # points per RK4 step for obstacle_fraction


def refine_path(path: Tensor, r: int) -> Tensor:
    """Points on the straight segments between consecutive positions, r per segment.

    ``path`` (k + 1, n, d) → ((k r) + 1, n, d): z_j + (i/r)(z_{j+1} − z_j), i = 0 … r − 1,
    then the last position. A characteristic that jumps across a thin obstacle within one
    time step leaves points inside it (the positions alone would not).
    """
    frac = torch.arange(r, dtype=path.dtype, device=path.device) / r  # (r,)
    seg = path[:-1, None] + frac[None, :, None, None] * (path[1:] - path[:-1])[:, None]
    return torch.cat([seg.reshape(-1, *path.shape[1:]), path[-1:]])


def rk4_stage_times(n_steps: int) -> list[float]:
    """Every time at which RK4 with ``n_steps`` equal steps on [0, 1] evaluates the field."""
    h = 1.0 / n_steps
    return sorted({round(k * h / 2, 12) for k in range(2 * n_steps + 1)})


class FrozenField:
    """(z, t) ↦ (v(z, t), ∇·v(z, t)) with the network's layers at known times batched.

    ``net.layers(times)`` builds every effective layer in a few tensor operations, so each
    RK4 stage costs only two matrix products and a tanh. Times not in ``times`` fall back to
    ``net.layer(t)``.
    """

    def __init__(self, net: nn.Module, times: list[float]) -> None:
        self.net = net
        self.index = {round(t, 12): j for j, t in enumerate(times)}
        w1, b1, w2, b2 = net.layers(torch.tensor(times))
        c = (w2.transpose(1, 2) * w1).sum(-1)  # (S, K): W2[:, k]·W1[k, :]
        # unbind once: indexing the stacked tensors at every stage would make autograd build
        # a zero (S, K, d) gradient per stage (SelectBackward), a cost growing with S·d
        self.w1t = w1.transpose(1, 2).unbind(0)  # S × (d, K)
        self.w2t = w2.transpose(1, 2).unbind(0)  # S × (K, d)
        self.b1, self.b2 = b1.unbind(0), b2.unbind(0)
        self.c, self.c_sum = c.unbind(0), c.sum(-1).unbind(0)

    def __call__(self, z: Tensor, t: float) -> tuple[Tensor, Tensor]:
        j = self.index.get(round(float(t), 12))
        if j is None:
            return self.net.velocity_and_divergence(z, t)
        h = torch.tanh(torch.addmm(self.b1[j], z, self.w1t[j]))
        v = torch.addmm(self.b2[j], h, self.w2t[j])
        return v, self.c_sum[j] - (h * h) @ self.c[j]


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
    kl_weight : float or "auto"
        λ; auto: the problem's ``lambda_kl`` (crowd motion) or 1000.
    h1_weight : float or "auto"
        α; auto: 0 with an obstacle, ``reference_h1_weight(preset, d)`` for Gaussians.
    obstacle_weight : float or "auto"
        λ_P; auto: the problem's ``lambda_fp`` when it offers an obstacle, else 0.
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
        from start·λ_P to λ_P over the ramp steps; 0 steps = no ramp). auto: 300 steps for the
        maze walls (maze1–maze3; maze4 has its own continuation), else 0.
    importance : {"none", "uniform"}
        Sample the characteristics from ρ0 or from μ0 = U([−c, c]^d), c = ``importance_box``.
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
            case = getattr(problem, "case", None)
            walls = bool(getattr(case, "rects", ())) and not getattr(case, "continuation", False)
            obstacle_ramp_steps = AUTO_RAMP_STEPS if walls else 0
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
        has_obstacle = "obstacle" in problem.offers
        preset = getattr(problem, "preset", None)
        self.kl_weight = float(
            getattr(problem, "lambda_kl", 1000.0) if kl_weight == "auto" else kl_weight
        )
        if h1_weight == "auto":
            h1_weight = 0.0 if has_obstacle else reference_h1_weight(preset, self.dim)
        self.h1_weight = float(h1_weight)
        if obstacle_weight == "auto":
            obstacle_weight = problem.lambda_fp if has_obstacle else 0.0
        if float(obstacle_weight) != 0 and not has_obstacle:
            raise ConfigError(
                "method.obstacle_weight is set but the problem has no obstacle; "
                "use problem=crowd_motion or obstacle_weight=0"
            )
        self.obstacle_weight = float(obstacle_weight)
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
        k, n, d = zs.shape
        q = self.problem.obstacle_cost(zs.reshape(k * n, d), step=step).reshape(k, n)
        return simpson(q @ weights, (k - 1) // 2)

    def training_loss(self, step: int):
        x, log_rho0, w = self._starts(self.batch_size)
        zs, ells, vs, z_fine = self.characteristics(x, log_rho0, adjoint=self.gradient == "adjoint")
        energy = kinetic_energy(vs, w, self.n_intervals)
        kl = kl_estimate(ells[-1], self.problem.log_density_target(zs[-1]), w)
        loss = energy + self.kl_weight * kl
        logs = {"energy": energy.detach(), "kl": kl.detach()}
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
        x = x.to(self.device, torch.float32)
        field = FrozenField(self.net, rk4_stage_times(self.n_intervals * self.n_substeps))
        parts = [
            rk4_characteristics(
                field,
                c,
                self.problem.log_density_source(c),
                self.n_intervals,
                self.n_substeps,
                return_fine=True,
            )
            for c in x.split(chunk)
        ]
        return tuple(torch.cat(p, dim=1) for p in zip(*parts))

    def transport(self, x: Tensor) -> Tensor:
        return self._integrate(x)[0][-1].to(x.device)  # z(1)

    @torch.no_grad()
    def trajectory(self, x: Tensor, ts: Tensor) -> Tensor:
        """z(x, t) at the increasing times ``ts`` (k,) ⊂ [0, 1] → (k, n, d), RK4 steps ≤ 1/(N k)."""
        h = 1.0 / (self.n_intervals * self.n_substeps)
        z0 = x.to(self.device, torch.float32)
        return rk4_path(lambda z, t: self.field(z, t), z0, ts, h).to(x.device)

    def transport_cost(self, x: Tensor) -> float:
        """E = ∫₀¹ mean ‖v(z(x, t), t)‖² dt on the given source samples (Simpson)."""
        _, _, vs, _ = self._integrate(x)
        w = torch.full((x.shape[0],), 1.0 / x.shape[0], device=vs.device)
        return float(kinetic_energy(vs, w, self.n_intervals))

    def extra_metrics(self, x: Tensor, problem) -> dict[str, float]:
        """kl, map_cost = mean ‖z(1) − x‖² (≤ E), obstacle_cost, obstacle_fraction.

        ``obstacle_fraction``: share of the points of the characteristics inside the obstacle
        core, on every RK4 step refined to ``OBSTACLE_REFINE`` points per step along straight
        segments (``refine_path``), so that jumps across a thin wall are counted.
        """
        zs, ells, _, z_fine = self._integrate(x)
        n = x.shape[0]
        w = torch.full((n,), 1.0 / n, device=zs.device)
        out = {
            "kl": float(kl_estimate(ells[-1], problem.log_density_target(zs[-1]), w)),
            "map_cost": float((zs[-1] - zs[0]).square().sum(1).mean()),
            "kl_weight": self.kl_weight,
            "h1_weight": self.h1_weight,
            "obstacle_weight": self.obstacle_weight,
        }
        if "obstacle" in problem.offers:
            out["obstacle_cost"] = float(self.obstacle_integral(z_fine, w, None))
            path = refine_path(z_fine, OBSTACLE_REFINE)
            k, m, d = path.shape
            out["obstacle_fraction"] = float(
                problem.in_obstacle_core(path.reshape(k * m, d)).float().mean()
            )
        return out

    def extra_figures(self, out: Path) -> list[Path]:
        """Density snapshots with characteristics (and the obstacle) → ``density_evolution.png``."""
        path = Path(out) / "density_evolution.png"
        plot_density_evolution(self, self.problem, path)
        return [path]


SNAPSHOT_TIMES = (0.0, 0.2, 0.5, 0.8, 1.0)


def plot_density_evolution(
    method: Lagrangian, problem, path: Path, n: int = 20_000, n_lines: int = 40, bins: int = 120
) -> None:
    """Densities of z(t) at t = 0, 1/5, 1/2, 4/5, 1 and of ρ1, first two coordinates.

    Each panel is a 2-D histogram of n pushed samples (the marginal of (z₁, z₂) for d > 2)
    with ``n_lines`` characteristics in red; an obstacle, when the problem has one, is
    shaded in grey (Q on the (x1, x2) plane, other coordinates 0).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    g = torch.Generator().manual_seed(2)
    x = problem.sample_source(n, generator=g)
    y = problem.sample_target(n, generator=g)
    fine = torch.linspace(0, 1, 4 * method.n_intervals + 1)
    ts = torch.unique(torch.cat([fine, torch.tensor(SNAPSHOT_TIMES)]))
    path_z = method.trajectory(x, ts)[..., :2]
    lines = path_z[:, :n_lines].permute(1, 0, 2).numpy()
    snaps = [path_z[int(torch.argmin((ts - t).abs()))] for t in SNAPSHOT_TIMES]
    if hasattr(problem, "plot_box"):
        box = problem.plot_box()
    else:
        pts = torch.cat([x[:, :2], y[:, :2], *snaps])
        lo, hi = pts.quantile(0.002, 0), pts.quantile(0.998, 0)
        pad = 0.1 * (hi - lo)
        box = (
            float(lo[0] - pad[0]),
            float(hi[0] + pad[0]),
            float(lo[1] - pad[1]),
            float(hi[1] + pad[1]),
        )
    shade = None
    if "obstacle" in problem.offers:
        g1 = torch.linspace(box[0], box[1], 300)
        g2 = torch.linspace(box[2], box[3], 300)
        grid = torch.stack(torch.meshgrid(g1, g2, indexing="xy"), -1).reshape(-1, 2)
        grid = torch.cat([grid, torch.zeros(len(grid), problem.dim - 2)], 1)
        shade = problem.obstacle_cost(grid).reshape(300, 300).numpy()
    panels = [*zip([f"t = {t:g}" for t in SNAPSHOT_TIMES], snaps), ("target ρ1", y[:, :2])]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.4))
    for ax, (title, pts) in zip(axes, panels):
        hist = torch.histogramdd(pts.double(), bins=[bins, bins], range=[*box], density=True).hist
        ax.imshow(hist.T.numpy(), origin="lower", extent=box, cmap="viridis", aspect="equal")
        if shade is not None:
            ax.contourf(
                torch.linspace(box[0], box[1], 300).numpy(),
                torch.linspace(box[2], box[3], 300).numpy(),
                shade,
                levels=[0.05 * shade.max(), 0.5 * shade.max(), shade.max() * 1.0001],
                colors=["0.75", "0.45"],
                alpha=0.6,
            )
        if title != "target ρ1":
            for line in lines:
                ax.plot(line[:, 0], line[:, 1], color="red", lw=0.5, alpha=0.7)
        ax.set_xlim(box[0], box[1])
        ax.set_ylim(box[2], box[3])
        ax.set_title(title, fontsize=9)
    name = getattr(problem, "case_name", None) or getattr(problem, "preset", "")
    fig.suptitle(f"{type(problem).__name__} {name} d={problem.dim}: density of z(t) (x1, x2)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


__all__ = [
    "Lagrangian",
    "plot_density_evolution",
    "h1_regulariser",
    "kinetic_energy",
    "kl_estimate",
    "reference_h1_weight",
    "obstacle_ramp_factor",
    "refine_path",
    "rk4_characteristics",
    "rk4_path",
    "rk4_step",
    "simpson",
    "simpson_nodes",
    "trapezoid",
]
