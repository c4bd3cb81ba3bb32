"""Fixed-step ODE integration and quadrature on [0, 1], shared by the dynamic methods.

The characteristics of a velocity field v(z, t) with the log-density along them,

    dz/dt = v(z, t),   dℓ/dt = −∇·v(z, t),

by classical RK4 with equal steps; composite Simpson and trapezoid rules on equally spaced
values; straight-segment refinement of a path (for costs paid along paths). For a plain
velocity field x' = f(t, x) (Q-flow): a block time grid and fixed-grid RK4 through torchdiffeq
between requested times (``integrate``), backward in time too and with the adjoint method, and
the discrete kinetic energy of the states on a grid (``path_energy``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor
from torchdiffeq import odeint, odeint_adjoint

from ot_experiments.errors import ConfigError

# field(z (n, d), t) → (v (n, d), ∇·v (n,))
Field = Callable[[Tensor, float], tuple[Tensor, Tensor]]
# f(t, x): t scalar, x (n, d) → (n, d)   (torchdiffeq's argument order)
Velocity = Callable[[Tensor, Tensor], Tensor]


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


def simpson_nodes(n_intervals: int, device: torch.device | str | None = None) -> Tensor:
    """Times of the composite Simpson rule: t_j = j / (2N), j = 0 … 2N, shape (2N + 1,)."""
    return torch.linspace(0.0, 1.0, 2 * n_intervals + 1, device=device)


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


def refine_path(path: Tensor, r: int) -> Tensor:
    """Points on the straight segments between consecutive positions, r per segment.

    ``path`` (k + 1, n, d) → ((k r) + 1, n, d): z_j + (i/r)(z_{j+1} − z_j), i = 0 … r − 1,
    then the last position. A characteristic that jumps across a thin obstacle within one
    time step leaves points inside it (the positions alone would not).
    """
    frac = torch.arange(r, dtype=path.dtype, device=path.device) / r  # (r,)
    seg = path[:-1, None] + frac[None, :, None, None] * (path[1:] - path[:-1])[:, None]
    return torch.cat([seg.reshape(-1, *path.shape[1:]), path[-1:]])


def path_energy(states: Tensor, ts: Tensor) -> Tensor:
    """Discrete kinetic energy Σ_k E‖x_k − x_{k−1}‖² / h_k, h_k = |t_k − t_{k−1}|.

    states (K+1, n, d), ts (K+1,) → scalar. It approximates ∫₀¹ E‖v‖² dt, is ≥ E‖x_K − x_0‖²
    (Cauchy–Schwarz), with equality for straight constant-speed paths; W2² at the optimum.
    """
    h = (ts[1:] - ts[:-1]).abs().to(states)
    sq = (states[1:] - states[:-1]).square().sum(-1).mean(-1)
    return (sq / h).sum()


def rk4_stage_times(n_steps: int) -> list[float]:
    """Every time at which RK4 with ``n_steps`` equal steps on [0, 1] evaluates the field."""
    h = 1.0 / n_steps
    return sorted({round(k * h / 2, 12) for k in range(2 * n_steps + 1)})


# -- a plain velocity field with torchdiffeq (Q-flow) --------------------------------------
def block_times(block_length: float) -> Tensor:
    """Block end points 0 = t_0 < … < t_K = 1 with h_k = ``block_length``, shape (K+1,).

    Raises
    ------
    ConfigError
        When ``block_length`` does not divide [0, 1] into whole blocks.
    """
    k = round(1.0 / block_length)
    if k < 1 or abs(k * block_length - 1.0) > 1e-6:
        raise ConfigError(
            f"method.block_length={block_length} must divide [0, 1] into whole blocks "
            "(e.g. 0.25, 0.2, 0.5, 1.0)"
        )
    return torch.linspace(0.0, 1.0, k + 1)


def fine_time_grid(ts: Tensor, step: float) -> tuple[Tensor, Tensor]:
    """Refine a monotone grid ``ts`` (m,) so that no step exceeds ``step``.

    Returns (grid (G,), idx (m,)) with grid[idx] == ts; each interval [ts_i, ts_{i+1}] is cut
    into ceil(|Δ| / step) equal sub-steps (a zero-length interval gets none).
    """
    ts = ts.detach().double().cpu()
    pieces, idx = [ts[:1]], [0]
    for a, b in zip(ts[:-1].tolist(), ts[1:].tolist()):
        n = math.ceil(abs(b - a) / step - 1e-6) if b != a else 0
        if n > 0:
            pieces.append(torch.linspace(a, b, n + 1, dtype=torch.float64)[1:])
        idx.append(idx[-1] + n)
    return torch.cat(pieces).float(), torch.tensor(idx)


def integrate(
    velocity: Velocity, x: Tensor, ts: Tensor, step: float, adjoint: bool = False
) -> Tensor:
    """States x(t) at the times ``ts`` (m,) of x' = f(t, x), x(ts_0) = x; (n, d) → (m, n, d).

    Fixed-grid RK4 (torchdiffeq ``rk4``, the 3/8 rule) with steps of at most ``step`` between
    consecutive times; ``ts`` may decrease (backward integration). ``adjoint=True`` uses
    ``odeint_adjoint`` (``velocity`` must then be an ``nn.Module``).
    """
    grid, idx = fine_time_grid(ts, step)
    if len(grid) == 1:
        return x[None]
    grid = grid.to(x.device, x.dtype)
    solve = odeint_adjoint if adjoint else odeint
    kwargs = {"adjoint_params": tuple(velocity.parameters())} if adjoint else {}
    sol = solve(velocity, x, grid, method="rk4", **kwargs)
    return sol[idx.to(x.device)]


def path_integral(cost: Callable[[Tensor], Tensor], zs: Tensor, weights: Tensor) -> Tensor:
    """∫₀¹ Σᵢ wᵢ c(zᵢ(t)) dt by composite Simpson on equally spaced positions.

    ``cost`` maps points (m, d) → (m,); ``zs`` (2N + 1, n, d) on [0, 1]; ``weights`` (n,)
    → scalar.
    """
    k, n, d = zs.shape
    q = cost(zs.reshape(k * n, d)).reshape(k, n)
    return simpson(q @ weights, (k - 1) // 2)
