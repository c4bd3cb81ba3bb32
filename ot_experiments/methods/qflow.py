"""Q-flow: a neural-ODE flow between P and Q refined towards dynamic OT (docs/methods/qflow.md).

Over 400 lines for now: the time grid / RK4, the phase schedule and the density-ratio half
are to move to their own modules (open redesign issue), checked by scripts/check_identical.py.

The flow x'(t) = f(x(t), t; θ) on [0, 1] is split into time blocks (reference: 0.25), each
integrated by fixed-grid RK4 (torchdiffeq, 3 steps per block). Training has two phases,
mapped onto ``trainer.max_steps`` by ``build_schedule``:

1. Flow matching: regress f(x_t, t) on Y − X along x_t = (1 − t) X + t Y (independent or
   mini-batch OT coupling).
2. Refinement, alternating per direction and round: a classifier logit r₁ is fitted with the
   logistic loss E_{P₁} softplus(r) + E_Q softplus(−r) (so r₁ ≈ log q − log p₁) between pushed
   samples T(X) and target samples; then the flow takes a step on

       L = −E r₁(T(X)) + γ Σ_k E‖x_k − x_{k−1}‖² / (2 h_k)

   (r₁ frozen), followed by a few classifier steps on freshly pushed samples. The reverse
   direction Q → P (integrate t: 1 → 0) has its own classifier r₀.

Optionally (``density_ratio``) a Q-flow-ratio net r(x, t) is trained at the end on samples
pushed along the time grid (``methods.density_ratio``), with the "1 ratio" classifier and the
KDE baseline for comparison.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torchdiffeq import odeint, odeint_adjoint

from ot_experiments.errors import ConfigError
from ot_experiments.methods.base import OTMethod
from ot_experiments.methods.density_ratio import (
    flow_log_ratio,
    flow_ratio_loss,
    kde_log_ratio,
    logistic_ratio_loss,
    median_bandwidth,
)
from ot_experiments.metrics.distances import exact_plan

# f(t, x): t scalar, x (n, d) → (n, d)   (torchdiffeq's argument order)
Velocity = Callable[[Tensor, Tensor], Tensor]


# -- time grids and integration ---------------------------------------------------------
def block_times(block_length: float) -> Tensor:
    """Block end points 0 = t_0 < … < t_K = 1 with h_k = ``block_length``, shape (K+1,)."""
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


# -- losses -----------------------------------------------------------------------------
def flow_matching_loss(velocity: Velocity, x0: Tensor, x1: Tensor, t: Tensor) -> Tensor:
    """E‖f(x_t, t) − (x1 − x0)‖², x_t = (1 − t) x0 + t x1; x0, x1 (n, d), t (n,) → scalar."""
    tc = t[:, None]
    xt = (1 - tc) * x0 + tc * x1
    return (velocity(tc, xt) - (x1 - x0)).square().sum(1).mean()


def ot_pairing(x0: Tensor, x1: Tensor) -> Tensor:
    """Reorder x1 (n, d) by the exact OT plan (POT ``ot.emd``, squared cost) to x0 (n, d).

    With equal uniform weights the plan is a permutation: returns x1[σ] with σ optimal.
    """
    plan = exact_plan(x0, x1, max_iter=1_000_000)
    return x1[torch.as_tensor(plan.argmax(1), device=x1.device)]


def path_energy(states: Tensor, ts: Tensor) -> Tensor:
    """Discrete kinetic energy Σ_k E‖x_k − x_{k−1}‖² / h_k, h_k = |t_k − t_{k−1}|.

    states (K+1, n, d), ts (K+1,) → scalar. It approximates ∫₀¹ E‖v‖² dt, is ≥ E‖x_K − x_0‖²
    (Cauchy–Schwarz), with equality for straight constant-speed paths; W2² at the optimum.
    """
    h = (ts[1:] - ts[:-1]).abs().to(states)
    sq = (states[1:] - states[:-1]).square().sum(-1).mean(-1)
    return (sq / h).sum()


def refinement_loss(end_logits: Tensor, states: Tensor, ts: Tensor, gamma: float) -> Tensor:
    """−E r(x_K) + γ Σ_k E‖x_k − x_{k−1}‖² / (2 h_k); end_logits (n,), states (K+1, n, d)."""
    return -end_logits.mean() + 0.5 * gamma * path_energy(states, ts)


# -- the schedule -----------------------------------------------------------------------
class Action(NamedTuple):
    """One training step: kind ∈ {fm, clf, flow, ratio}, direction ∈ {fwd, bwd, ""}, round."""

    kind: str
    direction: str = ""
    round: int = 0


def refinement_pattern(
    rounds: int,
    directions: tuple[str, ...],
    clf_warmup: int,
    flow_updates: int,
    clf_per_update: int,
    halve: bool,
) -> list[Action]:
    """The alternating refinement schedule.

    For each round r and direction: ⌊warmup·f⌉ classifier steps, then ``flow_updates`` × [one
    flow step + ⌊clf_per_update·f⌉ classifier steps], with f = 0.5^r if ``halve`` else 1.
    """
    out: list[Action] = []
    for r in range(rounds):
        f = 0.5**r if halve else 1.0
        for d in directions:
            out += [Action("clf", d, r)] * round(clf_warmup * f)
            inner = max(1, round(clf_per_update * f)) if clf_per_update > 0 else 0
            for _ in range(flow_updates):
                out += [Action("flow", d, r)] + [Action("clf", d, r)] * inner
    return out


def build_schedule(
    max_steps: int,
    *,
    rounds: int = 2,
    directions: tuple[str, ...] = ("fwd", "bwd"),
    clf_warmup: int = 300,
    flow_updates: int = 50,
    clf_per_update: int = 4,
    halve: bool = True,
    ratio_steps: int = 0,
    min_fm_fraction: float = 0.25,
) -> list[Action]:
    """Map flow matching, refinement and density-ratio training onto ``max_steps`` steps.

    The refinement pattern and the ratio steps come last; if together they exceed
    (1 − ``min_fm_fraction``) · max_steps, the warm-up, the number of flow updates and the
    ratio steps are shrunk by the same factor (at least one flow update per round and
    direction) and, if still too long, the refinement is cut short. Flow matching fills the
    remaining steps at the start. Length == max_steps.
    """
    avail = max_steps - math.ceil(min_fm_fraction * max_steps)

    def pattern(c: float) -> list[Action]:
        if rounds <= 0 or not directions:
            return []
        return refinement_pattern(
            rounds,
            directions,
            round(clf_warmup * c),
            max(1, round(flow_updates * c)) if flow_updates > 0 else 0,
            clf_per_update,
            halve,
        )

    ref = pattern(1.0)
    n_ratio = ratio_steps
    if len(ref) + n_ratio > avail:
        c = avail / max(1, len(ref) + n_ratio)
        ref = pattern(c)
        n_ratio = max(1, round(ratio_steps * c)) if ratio_steps > 0 else 0
    n_ratio = min(n_ratio, avail)
    tail = ref[: avail - n_ratio] + [Action("ratio")] * n_ratio
    return [Action("fm")] * (max_steps - len(tail)) + tail


# -- the method -------------------------------------------------------------------------
class QFlow(OTMethod):
    """Q-flow with symmetric refinement and optional flow-based density-ratio estimation.

    Parameters
    ----------
    problem : Problem
        Needs samples only.
    network : callable
        Partial velocity constructor, called as ``network(in_dim=d, out_dim=d)``; the module's
        ``forward(t, x)`` follows torchdiffeq (``networks.velocity.ConcatSquashVelocity``).
    optimizer, scheduler : callable
        Partial constructors; the optimizer serves every network (learning rates below), the
        scheduler (if any) only the flow-matching phase.
    classifier : callable
        Partial classifier constructor ``classifier(in_dim=d, out_dim=1)`` (two are built).
    ratio_network : callable
        Partial r(x, t) constructor ``ratio_network(in_dim=d)`` (density_ratio only).
    block_length, steps_per_block : float, int
        Time blocks of the flow and RK4 steps per block.
    adjoint : bool
        Back-propagate with ``odeint_adjoint`` instead of through the solver.
    fm_coupling : {"independent", "ot"}
        Pairing of X and Y in flow matching (``ot``: exact mini-batch OT with POT).
    fm_batch, fm_sigma : int, float
        Flow-matching batch and noise σ added to x_t (0: deterministic paths).
    fm_lr_final : float
        The flow-matching lr decays exponentially from ``method.lr`` to ``fm_lr_final`` ×
        ``method.lr`` over phase 1 (1: constant); a configured scheduler replaces the decay.
    refine, symmetric : bool
        Run phase 2; also refine the reverse direction Q → P.
    rounds, clf_warmup_steps, flow_updates, clf_steps_per_update, halve : schedule
        See ``refinement_pattern``; ``halve`` also halves the refinement learning rates
        every round.
    min_fm_fraction : float
        Least share of ``trainer.max_steps`` left to flow matching.
    gamma : float
        γ, weight of the transport term.
    refine_lr, clf_lr : float
        Adam learning rates of the flow during refinement and of the classifiers (the
        flow-matching rate is ``method.lr``).
    flow_batch, clf_batch, pool_size : int
        Flow-step batch, classifier batch, and number of pushed samples the classifier
        draws from (re-pushed after every flow update).
    density_ratio : {"auto", True, False}
        Train the Q-flow-ratio net (and the 1-ratio baseline) at the end; ``auto``: when the
        problem asks for it (``method_hints``: ``problem=dre_mixtures``), else not.
    ratio_steps, ratio_lr, ratio_batch, ratio_times : int, float, int, int
        Steps, learning rate and batch per time of the ratio nets; number of grid times.
    ratio_pool_size : int
        Source samples pushed once along the grid times for the ratio net (a small pool
        over-fits: with 1,024 the test MAE grew during training).
    ratio_ends : {"real", "pushed"}
        Samples of the chain's end points: ``real`` uses fresh P and Q samples at t = 0 and
        t = 1, so the telescoped sum targets log(q/p) even where T#P ≠ Q; ``pushed`` uses
        the pushed pool at every time (its last set estimates T#P, not Q).
    ratio_lr_final : float
        The ratio nets' lr decays exponentially to ``ratio_lr_final`` × ``ratio_lr``.
    kde_points, kde_factor : int, float
        Samples per side and bandwidth factor of the KDE baseline.
    """

    has_inverse = True
    is_dynamic = True
    needs = frozenset({"samples"})
    trains_parts = True  # each step trains one sub-network: DDP must look for unused parameters
    # training state beyond the weights that a checkpoint carries (see callbacks.ResumeState)
    resume_attributes = (
        "_fm_snapshot",
        "_pools",
        "_ratio_pool",
        "_ratio_trained",
        "_ratio_step_count",
        "_fm_lr0",
        "_n_fm",
        "refine_log",
    )

    def __init__(
        self,
        problem,
        network: Callable,
        optimizer: Callable,
        scheduler: Callable | None = None,
        classifier: Callable | None = None,
        ratio_network: Callable | None = None,
        block_length: float = 0.25,
        steps_per_block: int = 3,
        adjoint: bool = False,
        fm_coupling: str = "independent",
        fm_batch: int = 512,
        fm_sigma: float = 0.0,
        fm_lr_final: float = 0.1,
        refine: bool = True,
        symmetric: bool = True,
        rounds: int = 2,
        clf_warmup_steps: int = 300,
        flow_updates: int = 50,
        clf_steps_per_update: int = 4,
        halve: bool = True,
        min_fm_fraction: float = 0.25,
        gamma: float = 0.5,
        refine_lr: float = 5e-5,
        clf_lr: float = 1e-3,
        flow_batch: int = 2000,
        clf_batch: int = 200,
        pool_size: int = 2000,
        density_ratio: str | bool = "auto",
        ratio_steps: int = 1000,
        ratio_lr: float = 1e-3,
        ratio_batch: int = 500,
        ratio_times: int = 10,
        ratio_pool_size: int = 20_000,
        ratio_ends: str = "real",
        ratio_lr_final: float = 1.0,
        kde_points: int = 5000,
        kde_factor: float = 0.1,
        eval_points: int = 2000,
    ) -> None:
        super().__init__(problem, optimizer, scheduler, eval_points=eval_points)
        self.automatic_optimization = False
        if fm_coupling not in ("independent", "ot"):
            raise ConfigError(
                f"method.fm_coupling={fm_coupling!r} is not valid; choose independent or ot"
            )
        if steps_per_block < 1:
            raise ConfigError(f"method.steps_per_block={steps_per_block} must be >= 1")
        if not 0.0 <= min_fm_fraction <= 1.0:
            raise ConfigError(f"method.min_fm_fraction={min_fm_fraction} must lie in [0, 1]")
        if density_ratio not in ("auto", True, False):
            raise ConfigError(
                f"method.density_ratio={density_ratio!r} is not valid; choose auto, true or false"
            )
        if ratio_ends not in ("real", "pushed"):
            raise ConfigError(
                f"method.ratio_ends={ratio_ends!r} is not valid; choose real or pushed"
            )
        if density_ratio is True and ratio_network is None:
            raise ConfigError("method.density_ratio=true needs method.ratio_network")
        self.dim = d = problem.dim
        self.velocity = network(in_dim=d, out_dim=d)
        if classifier is None:
            from ot_experiments.networks.mlp import MLP

            def classifier(in_dim, out_dim):
                return MLP(in_dim, out_dim, hidden=(312, 312, 312), beta=20.0)

        self.clf = nn.ModuleDict(
            {"fwd": classifier(in_dim=d, out_dim=1), "bwd": classifier(in_dim=d, out_dim=1)}
        )
        if density_ratio == "auto":  # not filled by the problem's method_hints
            density_ratio = False
        self.density_ratio = bool(density_ratio)
        if self.density_ratio:
            self.ratio_net = ratio_network(in_dim=d)
            self.one_ratio = classifier(in_dim=d, out_dim=1)
        self.register_buffer("block_ts", block_times(block_length))
        self.step_size = float(block_length) / int(steps_per_block)
        self.adjoint = bool(adjoint)
        self.fm_coupling, self.fm_batch, self.fm_sigma = fm_coupling, int(fm_batch), fm_sigma
        self.fm_lr_final = float(fm_lr_final)
        self._fm_lr0: float | None = None
        self._n_fm: int | None = None
        self.refine, self.symmetric = bool(refine), bool(symmetric)
        self.rounds, self.clf_warmup_steps = int(rounds), int(clf_warmup_steps)
        self.flow_updates, self.clf_steps_per_update = int(flow_updates), int(clf_steps_per_update)
        self.halve, self.min_fm_fraction = bool(halve), float(min_fm_fraction)
        self.gamma, self.refine_lr, self.clf_lr = float(gamma), float(refine_lr), float(clf_lr)
        self.flow_batch, self.clf_batch, self.pool_size = flow_batch, clf_batch, pool_size
        self.ratio_steps, self.ratio_lr = int(ratio_steps), float(ratio_lr)
        self.ratio_batch, self.ratio_times = int(ratio_batch), int(ratio_times)
        self.ratio_pool_size, self.ratio_ends = int(ratio_pool_size), ratio_ends
        self.ratio_lr_final = float(ratio_lr_final)
        self._ratio_step_count = 0
        self.kde_points = int(kde_points)
        self.kde_factor = float(kde_factor)
        self.schedule: list[Action] | None = None
        self._pools: dict[str, Tensor | None] = {"fwd": None, "bwd": None}
        self._ratio_pool: Tensor | None = None
        self._ratio_trained = False
        self._fm_snapshot: dict[str, Tensor] | None = None
        self.refine_log: list[dict[str, float]] = []
        self._kde_cache: dict | None = None

    # -- maps -----------------------------------------------------------------------------
    def flow(self, x: Tensor, ts: Tensor, adjoint: bool | None = None) -> Tensor:
        """States along the flow at the times ``ts`` (from x at ts[0]); (n, d) → (m, n, d)."""
        adj = self.adjoint if adjoint is None else adjoint
        return integrate(self.velocity, x, ts.to(x), self.step_size, adjoint=adj)

    @torch.no_grad()
    def _chunked(self, z: Tensor, ts: Tensor, chunk: int = 8192) -> Tensor:
        z = z.to(self.device, torch.float32)
        out = [self.flow(c, ts, adjoint=False) for c in z.split(chunk)]
        return torch.cat(out, dim=1)

    def transport(self, x: Tensor) -> Tensor:
        """T(x) = x(1) of the flow from x(0) = x."""
        ts = torch.tensor([0.0, 1.0])
        return self._chunked(x, ts)[-1].to(x.device)

    def inverse_transport(self, y: Tensor) -> Tensor:
        """S(y) = x(0) of the flow with x(1) = y (integrated backwards in time)."""
        ts = torch.tensor([1.0, 0.0])
        return self._chunked(y, ts)[-1].to(y.device)

    def trajectory(self, x: Tensor, ts: Tensor) -> Tensor:
        """Positions at increasing times ``ts`` (k,) ⊂ [0, 1] of the flow from x(0) = x."""
        ts = ts.detach().float().cpu()
        start = bool(ts[0] != 0)
        grid = torch.cat([torch.zeros(1), ts]) if start else ts
        out = self._chunked(x, grid)
        return (out[1:] if start else out).to(x.device)

    def discrete_kinetic_energy(self, x: Tensor) -> float:
        """Σ_k E‖x_k − x_{k−1}‖²/h_k on the block grid (≥ E‖T(x) − x‖²)."""
        return float(path_energy(self._chunked(x, self.block_ts.cpu()), self.block_ts.cpu()))

    # -- schedule -------------------------------------------------------------------------
    def make_schedule(self, max_steps: int) -> list[Action]:
        """The step-by-step plan for ``max_steps`` steps (see ``build_schedule``)."""
        dirs = ("fwd", "bwd") if self.symmetric else ("fwd",)
        return build_schedule(
            max_steps,
            rounds=self.rounds if self.refine else 0,
            directions=dirs,
            clf_warmup=self.clf_warmup_steps,
            flow_updates=self.flow_updates,
            clf_per_update=self.clf_steps_per_update,
            halve=self.halve,
            ratio_steps=self.ratio_steps if self.density_ratio else 0,
            min_fm_fraction=self.min_fm_fraction,
        )

    def configure_optimizers(self):  # noqa: D102
        mk = self._make_optimizer
        opts = [
            mk(params=self.velocity.parameters()),
            mk(params=self.velocity.parameters(), lr=self.refine_lr),
            mk(params=self.clf["fwd"].parameters(), lr=self.clf_lr),
            mk(params=self.clf["bwd"].parameters(), lr=self.clf_lr),
        ]
        if self.density_ratio:
            params = [*self.ratio_net.parameters(), *self.one_ratio.parameters()]
            opts.append(mk(params=params, lr=self.ratio_lr))
        self._fm_scheduler = (
            self._make_scheduler(optimizer=opts[0]) if self._make_scheduler else None
        )
        return opts

    # -- sampling helpers -----------------------------------------------------------------
    def _draw(self, side: str, n: int) -> Tensor:
        fn = self.problem.sample_source if side == "source" else self.problem.sample_target
        return fn(n, device=self.device)

    def _ends(self, direction: str) -> tuple[str, str, Tensor]:
        """(start side, end side, block times in integration order) of a direction."""
        ts = self.block_ts if direction == "fwd" else self.block_ts.flip(0)
        return ("source", "target", ts) if direction == "fwd" else ("target", "source", ts)

    def _pool(self, direction: str) -> Tensor:
        if self._pools[direction] is None:
            start, _, ts = self._ends(direction)
            x = self._draw(start, self.pool_size)
            self._pools[direction] = self._chunked(x, ts[[0, -1]].cpu())[-1]
        return self._pools[direction]

    # -- the steps ------------------------------------------------------------------------
    def _fm_step(self) -> tuple[Tensor, dict]:
        x0, x1 = self._draw("source", self.fm_batch), self._draw("target", self.fm_batch)
        if self.fm_coupling == "ot":
            x1 = ot_pairing(x0, x1)
        t = torch.rand(self.fm_batch, device=self.device)
        if self.fm_sigma > 0:
            x0 = x0 + self.fm_sigma * torch.randn_like(x0)
        loss = flow_matching_loss(self.velocity, x0, x1, t)
        return loss, {"fm": loss.detach()}

    def _clf_step(self, direction: str) -> tuple[Tensor, dict]:
        _, end, _ = self._ends(direction)
        pool = self._pool(direction)
        pushed = pool[torch.randint(0, len(pool), (self.clf_batch,), device=pool.device)]
        real = self._draw(end, self.clf_batch)
        net = self.clf[direction]
        loss = logistic_ratio_loss(net(pushed)[:, 0], net(real)[:, 0])
        return loss, {f"clf_{direction}": loss.detach()}

    def _flow_step(self, direction: str) -> tuple[Tensor, dict]:
        start, _, ts = self._ends(direction)
        x = self._draw(start, self.flow_batch)
        states = self.flow(x, ts)
        net = self.clf[direction]
        net.requires_grad_(False)
        try:
            logits = net(states[-1])[:, 0]
        finally:
            net.requires_grad_(True)
        energy = path_energy(states, ts)
        kl = -logits.mean()
        loss = refinement_loss(logits, states, ts, self.gamma)
        logs = {f"kl_{direction}": kl.detach(), f"transport_{direction}": energy.detach()}
        return loss, logs

    def _ratio_step(self) -> tuple[Tensor, dict]:
        ts = torch.linspace(0.0, 1.0, self.ratio_times)
        if self._ratio_pool is None:
            x = self._draw("source", max(self.ratio_pool_size, self.ratio_batch))
            self._ratio_pool = self._chunked(x, ts)
        pool = self._ratio_pool
        idx = torch.randint(0, pool.shape[1], (len(ts), self.ratio_batch), device=pool.device)
        batch = torch.stack([pool[k, idx[k]] for k in range(len(ts))])
        if self.ratio_ends == "real":  # exact end points: the chain telescopes to log(q/p)
            batch[0] = self._draw("source", self.ratio_batch)
            batch[-1] = self._draw("target", self.ratio_batch)
        lr_loss = flow_ratio_loss(self.ratio_net, batch, ts)
        p, q = self._draw("source", self.ratio_batch), self._draw("target", self.ratio_batch)
        one = logistic_ratio_loss(self.one_ratio(p)[:, 0], self.one_ratio(q)[:, 0])
        self._ratio_trained = True
        return lr_loss + one, {"flow_ratio": lr_loss.detach(), "one_ratio": one.detach()}

    def _set_lr(self, opt, base: float, rnd: int) -> None:
        lr = base * (0.5**rnd if self.halve else 1.0)
        for group in opt.param_groups:
            group["lr"] = lr

    def _decay_fm_lr(self, opt, step: int) -> None:
        """lr_i = lr_0 · fm_lr_final^(i / (n_fm − 1)) over the flow-matching steps."""
        if self._fm_lr0 is None:
            self._fm_lr0 = float(opt.param_groups[0]["lr"])
        if self._n_fm is None:
            self._n_fm = sum(a.kind == "fm" for a in self.schedule)
        frac = step / max(1, self._n_fm - 1)
        for group in opt.param_groups:
            group["lr"] = self._fm_lr0 * self.fm_lr_final**frac

    def _decay_ratio_lr(self, opt) -> None:
        """lr_i = ratio_lr · ratio_lr_final^(i / n_ratio) over the ratio steps."""
        n = max(1, sum(a.kind == "ratio" for a in self.schedule))
        frac = min(1.0, self._ratio_step_count / n)
        for group in opt.param_groups:
            group["lr"] = self.ratio_lr * self.ratio_lr_final**frac
        self._ratio_step_count += 1

    def _snapshot_after_fm(self) -> None:
        """Keep trajectories and transport cost of the flow-matching flow (for figures)."""
        g = torch.Generator().manual_seed(3)
        x = self.problem.sample_source(self.eval_points, generator=g).to(self.device)
        ts = torch.linspace(0.0, 1.0, 21)
        traj = self._chunked(x, ts)
        self._fm_snapshot = {
            "traj": traj.cpu(),
            "w2_sq": float((traj[-1] - traj[0]).square().sum(1).mean()),
            "path_energy": float(path_energy(self._chunked(x, self.block_ts.cpu()), self.block_ts)),
        }

    def training_step(self, batch, batch_idx):  # noqa: D102
        if self.schedule is None:
            self.schedule = self.make_schedule(int(self.trainer.max_steps))
        step = int(self.global_step)  # one optimizer step per training step; kept on resume
        action = self.schedule[min(step, len(self.schedule) - 1)]
        opts = self.optimizers()
        opts = opts if isinstance(opts, list) else [opts]
        if action.kind != "fm" and self._fm_snapshot is None:
            self._snapshot_after_fm()
        if action.kind == "fm":
            loss, logs = self._fm_step()
            opt = opts[0]
            if self._fm_scheduler is None:
                self._decay_fm_lr(opt, step)
        elif action.kind == "clf":
            loss, logs = self._clf_step(action.direction)
            opt = opts[2 if action.direction == "fwd" else 3]
            self._set_lr(opt, self.clf_lr, action.round)
        elif action.kind == "flow":
            loss, logs = self._flow_step(action.direction)
            opt = opts[1]
            self._set_lr(opt, self.refine_lr, action.round)
        else:
            loss, logs = self._ratio_step()
            opt = opts[4]
            self._decay_ratio_lr(opt)
        self.check_loss(loss)
        opt.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        opt.step()
        if action.kind == "fm" and self._fm_scheduler is not None:
            self._fm_scheduler.step()
        if action.kind == "flow":
            self._pools = {"fwd": None, "bwd": None}
            d = action.direction
            self.refine_log.append(
                {
                    "step": step,
                    "round": action.round,
                    "direction": 0.0 if d == "fwd" else 1.0,
                    "kl": float(logs[f"kl_{d}"]),
                    "transport": float(logs[f"transport_{d}"]),
                }
            )
        self.log("train/loss", loss.detach(), prog_bar=True, batch_size=1)
        for k, v in logs.items():
            self.log(f"train/{k}", v, batch_size=1)
        return loss.detach()

    # -- metrics --------------------------------------------------------------------------
    def _kde(self, problem) -> dict:
        if self._kde_cache is None:
            g = torch.Generator().manual_seed(777)
            p = problem.sample_source(self.kde_points, generator=g)
            q = problem.sample_target(self.kde_points, generator=g)
            self._kde_cache = {"p": p, "q": q, "h": median_bandwidth(p, q, self.kde_factor)}
        return self._kde_cache

    @torch.no_grad()
    def log_ratio_estimates(self, x: Tensor) -> dict[str, Tensor]:
        """log(q/p)(x) by the flow-ratio net, the 1-ratio classifier and KDE, each (n,); {}
        before the ratio nets are trained (or without ``density_ratio``)."""
        if not (self.density_ratio and self._ratio_trained):
            return {}
        ts = torch.linspace(0.0, 1.0, self.ratio_times)
        z = x.to(self.device)
        kde = self._kde(self.problem)
        return {
            "flow_ratio": flow_log_ratio(self.ratio_net, z, ts).cpu(),
            "one_ratio": self.one_ratio(z)[:, 0].cpu(),
            "kde": kde_log_ratio(x.cpu(), kde["p"], kde["q"], kde["h"]),
        }

    def extra_metrics(self, x: Tensor, problem) -> dict[str, float]:
        """path_energy, w2_sq/path_energy after flow matching, classifier KLs, DRE MAEs."""
        out = {"path_energy": self.discrete_kinetic_energy(x)}
        if self._fm_snapshot is not None:
            out["w2_sq_after_fm"] = self._fm_snapshot["w2_sq"]
            out["path_energy_after_fm"] = self._fm_snapshot["path_energy"]
        if self.refine_log:
            with torch.no_grad():
                tx = self.transport(x).to(self.device)
                out["kl_fwd"] = float(-self.clf["fwd"](tx)[:, 0].mean())
                if self.symmetric:
                    y = problem.sample_target(len(x), generator=torch.Generator().manual_seed(5))
                    sy = self.inverse_transport(y).to(self.device)
                    out["kl_bwd"] = float(-self.clf["bwd"](sy)[:, 0].mean())
        if self.density_ratio and self._ratio_trained:  # the MAEs: problem.evaluate_method
            out["kde_bandwidth"] = self._kde(problem)["h"]
        return out

    # -- figures --------------------------------------------------------------------------
    def extra_figures(self, out: Path) -> list[Path]:
        """Trajectories (after flow matching vs refined), refinement curves, DRE figures."""
        from ot_experiments.methods.density_ratio import plot_dre

        out = Path(out)
        paths: list[Path] = []
        if self.dim == 2:
            paths.append(plot_trajectories(self, out / "trajectories.png"))
        if self.refine_log:
            paths.append(plot_refinement(self.refine_log, out / "refinement.png"))
        if self.density_ratio and self._ratio_trained and self.dim == 2:
            paths += plot_dre(self, self.problem, out)
        return paths


# -- figures ----------------------------------------------------------------------------
def _draw_paths(ax, traj: Tensor, title: str, n: int = 300) -> None:
    from matplotlib.collections import LineCollection

    segs = traj[:, :n].permute(1, 0, 2).numpy()
    ax.add_collection(LineCollection(segs, colors="0.35", linewidths=0.5, alpha=0.4))
    ax.scatter(*traj[0, :n].T, s=3, c="tab:blue", label="x(0) ~ P")
    ax.scatter(*traj[-1, :n].T, s=3, c="tab:green", label="x(1) = T(x)")
    ax.set_title(title)
    ax.set_aspect("equal", adjustable="datalim")


def plot_trajectories(method: QFlow, path: Path) -> Path:
    """Trajectories after flow matching (if kept) and after refinement, side by side; titles
    give E‖T(x) − x‖² and the path energy Σ_k E‖x_k − x_{k−1}‖²/h_k (equal for straight paths)."""
    import matplotlib.pyplot as plt

    g = torch.Generator().manual_seed(3)
    x = method.problem.sample_source(method.eval_points, generator=g)
    ts = torch.linspace(0.0, 1.0, 21)
    now = method.trajectory(x, ts).cpu()
    panels = []
    if method._fm_snapshot is not None:
        snap = method._fm_snapshot
        title = f"after flow matching\nE‖T(x)−x‖² = {snap['w2_sq']:.3f}"
        panels.append((snap["traj"], f"{title}, path energy {snap['path_energy']:.3f}"))
    cost = float((now[-1] - now[0]).square().sum(1).mean())
    energy = method.discrete_kinetic_energy(x)
    label = "after refinement" if method.refine_log else "final flow"
    panels.append((now, f"{label}\nE‖T(x)−x‖² = {cost:.3f}, path energy {energy:.3f}"))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 5), squeeze=False)
    y = method.problem.sample_target(1000, generator=g)
    for ax, (traj, title) in zip(axes[0], panels):
        ax.scatter(*y.T, s=2, c="tab:orange", alpha=0.3, label="target Q")
        _draw_paths(ax, traj, title)
    axes[0, 0].legend(loc="best", markerscale=3, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_refinement(log: list[dict[str, float]], path: Path) -> Path:
    """Transport cost Σ E‖Δx‖²/h and classifier KL per flow update, per direction."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for d, name in ((0.0, "P→Q"), (1.0, "Q→P")):
        rows = [r for r in log if r["direction"] == d]
        if not rows:
            continue
        steps = [r["step"] for r in rows]
        axes[0].plot(steps, [r["transport"] for r in rows], ".-", label=name)
        axes[1].plot(steps, [r["kl"] for r in rows], ".-", label=name)
    axes[0].set_title("transport cost Σ_k E‖x_k − x_{k−1}‖²/h_k")
    axes[1].set_title("classifier KL estimate −E r(T(x))")
    for ax in axes:
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


__all__ = [
    "Action",
    "QFlow",
    "block_times",
    "build_schedule",
    "fine_time_grid",
    "flow_matching_loss",
    "integrate",
    "ot_pairing",
    "path_energy",
    "plot_refinement",
    "plot_trajectories",
    "refinement_loss",
    "refinement_pattern",
]
