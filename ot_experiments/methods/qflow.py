"""Q-flow: a neural-ODE flow between P and Q refined towards dynamic OT (docs/methods/qflow.md).

The flow x'(t) = f(x(t), t; θ) on [0, 1] is split into time blocks (reference: 0.25), each
integrated by fixed-grid RK4 (``ode.integrate``, torchdiffeq, 3 steps per block). Training has
two phases, mapped onto ``trainer.max_steps`` by ``qflow_schedule.build_schedule``:

1. Flow matching (``method.fm``): regress f(x_t, t) on Y − X along x_t = (1 − t) X + t Y
   (independent or mini-batch OT coupling).
2. Refinement (``method.refine``), alternating per direction and round: a classifier logit r₁
   is fitted with the logistic loss E_{P₁} softplus(r) + E_Q softplus(−r) (so
   r₁ ≈ log q − log p₁) between pushed samples T(X) and target samples; then the flow takes a
   step on

       L = −E r₁(T(X)) + γ Σ_k E‖x_k − x_{k−1}‖² / (2 h_k)

   (r₁ frozen), followed by a few classifier steps on freshly pushed samples. The reverse
   direction Q → P (integrate t: 1 → 0) has its own classifier r₀.

Optionally (``method.density_ratio``, sized by ``method.ratio``) a Q-flow-ratio net r(x, t) is
trained at the end on samples pushed along the time grid, with the "1 ratio" classifier and the
KDE baseline for comparison (``density_ratio.FlowRatioEstimator``). Figures:
``qflow_plots``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ot_experiments.errors import ConfigError
from ot_experiments.methods.base import OTMethod
from ot_experiments.methods.density_ratio import (
    FlowRatioEstimator,
    OnEstimator,
    RatioSettings,
    logistic_ratio_loss,
)
from ot_experiments.methods.qflow_schedule import (
    Action,
    FlowMatchingSettings,
    RefinementSettings,
    regroup,
    schedule_for,
    settings,
)
from ot_experiments.metrics.distances import ot_pairing
from ot_experiments.ode import Velocity, block_times, integrate, path_energy


# -- losses -----------------------------------------------------------------------------
def flow_matching_loss(velocity: Velocity, x0: Tensor, x1: Tensor, t: Tensor) -> Tensor:
    """E‖f(x_t, t) − (x1 − x0)‖², x_t = (1 − t) x0 + t x1; x0, x1 (n, d), t (n,) → scalar."""
    tc = t[:, None]
    xt = (1 - tc) * x0 + tc * x1
    return (velocity(tc, xt) - (x1 - x0)).square().sum(1).mean()


def refinement_loss(end_logits: Tensor, states: Tensor, ts: Tensor, gamma: float) -> Tensor:
    """−E r(x_K) + γ Σ_k E‖x_k − x_{k−1}‖² / (2 h_k); end_logits (n,), states (K+1, n, d)."""
    return -end_logits.mean() + 0.5 * gamma * path_energy(states, ts)


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
        Partial constructors; the optimizer serves every network (learning rates in the
        groups below, flow matching at ``method.lr``), the scheduler (if any) only flow
        matching.
    classifier : callable
        Partial classifier constructor ``classifier(in_dim=d, out_dim=1)`` (two are built,
        a third for the 1-ratio baseline).
    ratio_network : callable
        Partial r(x, t) constructor ``ratio_network(in_dim=d)`` (density_ratio only).
    block_length, steps_per_block : float, int
        Time blocks of the flow and RK4 steps per block.
    adjoint : bool
        Back-propagate with ``odeint_adjoint`` instead of through the solver.
    fm, refine, ratio : mapping
        The option groups of flow matching (``FlowMatchingSettings``), the refinement
        (``RefinementSettings``) and density-ratio estimation (``RatioSettings``); missing
        options take those classes' defaults.
    density_ratio : {"auto", True, False}
        Train the Q-flow-ratio net (and the 1-ratio baseline) at the end; ``auto``: when the
        problem asks for it (``method_hints``: ``problem=dre_mixtures``), else not.
    eval_points : int
        Samples for the validation metrics.
    **flat
        The flat option names of configs written before the groups (``FLAT_OPTIONS``).
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
    _ratio_pool = OnEstimator("pool", None)
    _ratio_trained = OnEstimator("trained", False)
    _ratio_step_count = OnEstimator("step_count", 0)

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
        fm: Mapping | None = None,
        refine: Mapping | None = None,
        ratio: Mapping | None = None,
        density_ratio: str | bool = "auto",
        eval_points: int = 2000,
        **flat: Any,
    ) -> None:
        super().__init__(problem, optimizer, scheduler, eval_points=eval_points)
        self.automatic_optimization = False
        groups = regroup({"fm": fm, "refine": refine, "ratio": ratio}, flat)
        self.fm = settings(FlowMatchingSettings, groups["fm"], "method.fm")
        self.refine = settings(RefinementSettings, groups["refine"], "method.refine")
        ratio_settings = settings(RatioSettings, groups["ratio"], "method.ratio")
        if steps_per_block < 1:
            raise ConfigError(f"method.steps_per_block={steps_per_block} must be >= 1")
        if density_ratio not in ("auto", True, False):
            raise ConfigError(
                f"method.density_ratio={density_ratio!r} is not valid; choose auto, true or false"
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
        self.dre: FlowRatioEstimator | None = None
        if self.density_ratio:
            self.ratio_net = ratio_network(in_dim=d)
            self.one_ratio = classifier(in_dim=d, out_dim=1)
            self.dre = FlowRatioEstimator(self.ratio_net, self.one_ratio, ratio_settings)
        self.register_buffer("block_ts", block_times(block_length))
        self.step_size = float(block_length) / int(steps_per_block)
        self.adjoint = bool(adjoint)
        self._fm_lr0: float | None = None
        self._n_fm: int | None = None
        self.schedule: list[Action] | None = None
        self._pools: dict[str, Tensor | None] = {"fwd": None, "bwd": None}
        self._fm_snapshot: dict[str, Tensor] | None = None
        self.refine_log: list[dict[str, float]] = []

    # -- maps -----------------------------------------------------------------------------
    def flow(self, x: Tensor, ts: Tensor, adjoint: bool | None = None) -> Tensor:
        """States along the flow at the times ``ts`` (from x at ts[0]); (n, d) → (m, n, d)."""
        adj = self.adjoint if adjoint is None else adjoint
        return integrate(self.velocity, x, ts.to(x), self.step_size, adjoint=adj)

    def _push(self, z: Tensor, ts: Tensor) -> Tensor:
        """States (m, n, d) at the times ``ts`` (m,) from z (n, d), without gradients."""
        return self.map_in_chunks(lambda c: self.flow(c, ts, adjoint=False), z, dim=1)

    def transport(self, x: Tensor) -> Tensor:
        """T(x) = x(1) of the flow from x(0) = x."""
        ts = torch.tensor([0.0, 1.0])
        return self._push(x, ts)[-1].to(x.device)

    def inverse_transport(self, y: Tensor) -> Tensor:
        """S(y) = x(0) of the flow with x(1) = y (integrated backwards in time)."""
        ts = torch.tensor([1.0, 0.0])
        return self._push(y, ts)[-1].to(y.device)

    def trajectory(self, x: Tensor, ts: Tensor) -> Tensor:
        """Positions at increasing times ``ts`` (k,) ⊂ [0, 1] of the flow from x(0) = x."""
        ts = ts.detach().float().cpu()
        start = bool(ts[0] != 0)
        grid = torch.cat([torch.zeros(1), ts]) if start else ts
        out = self._push(x, grid)
        return (out[1:] if start else out).to(x.device)

    def discrete_kinetic_energy(self, x: Tensor) -> float:
        """Σ_k E‖x_k − x_{k−1}‖²/h_k on the block grid (≥ E‖T(x) − x‖²)."""
        return float(path_energy(self._push(x, self.block_ts.cpu()), self.block_ts.cpu()))

    # -- schedule and optimizers ----------------------------------------------------------
    def make_schedule(self, max_steps: int) -> list[Action]:
        """The step-by-step plan for ``max_steps`` steps (``qflow_schedule.build_schedule``)."""
        ratio_steps = self.dre.settings.steps if self.dre is not None else 0
        return schedule_for(max_steps, self.fm, self.refine, ratio_steps)

    def configure_optimizers(self):  # noqa: D102
        mk = self._make_optimizer
        opts = [
            mk(params=self.velocity.parameters()),
            mk(params=self.velocity.parameters(), lr=self.refine.lr),
            mk(params=self.clf["fwd"].parameters(), lr=self.refine.clf_lr),
            mk(params=self.clf["bwd"].parameters(), lr=self.refine.clf_lr),
        ]
        if self.dre is not None:
            opts.append(mk(params=self.dre.parameters(), lr=self.dre.settings.lr))
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
            x = self._draw(start, self.refine.pool_size)
            self._pools[direction] = self._push(x, ts[[0, -1]].cpu())[-1]
        return self._pools[direction]

    # -- the steps ------------------------------------------------------------------------
    def _fm_step(self) -> tuple[Tensor, dict]:
        n = self.fm.batch
        x0, x1 = self._draw("source", n), self._draw("target", n)
        if self.fm.coupling == "ot":
            x1 = ot_pairing(x0, x1)
        t = torch.rand(n, device=self.device)
        if self.fm.sigma > 0:
            x0 = x0 + self.fm.sigma * torch.randn_like(x0)
        loss = flow_matching_loss(self.velocity, x0, x1, t)
        return loss, {"fm": loss.detach()}

    def _clf_step(self, direction: str) -> tuple[Tensor, dict]:
        _, end, _ = self._ends(direction)
        pool, n = self._pool(direction), self.refine.clf_batch
        pushed = pool[torch.randint(0, len(pool), (n,), device=pool.device)]
        real = self._draw(end, n)
        net = self.clf[direction]
        loss = logistic_ratio_loss(net(pushed)[:, 0], net(real)[:, 0])
        return loss, {f"clf_{direction}": loss.detach()}

    def _flow_step(self, direction: str) -> tuple[Tensor, dict]:
        start, _, ts = self._ends(direction)
        x = self._draw(start, self.refine.flow_batch)
        states = self.flow(x, ts)
        net = self.clf[direction]
        net.requires_grad_(False)
        try:
            logits = net(states[-1])[:, 0]
        finally:
            net.requires_grad_(True)
        energy = path_energy(states, ts)
        kl = -logits.mean()
        loss = refinement_loss(logits, states, ts, self.refine.gamma)
        logs = {f"kl_{direction}": kl.detach(), f"transport_{direction}": energy.detach()}
        return loss, logs

    def _set_lr(self, opt, base: float, rnd: int) -> None:
        lr = base * (0.5**rnd if self.refine.halve else 1.0)
        for group in opt.param_groups:
            group["lr"] = lr

    def _decay_fm_lr(self, opt, step: int) -> None:
        """lr_i = lr_0 · fm.lr_final^(i / (n_fm − 1)) over the flow-matching steps."""
        if self._fm_lr0 is None:
            self._fm_lr0 = float(opt.param_groups[0]["lr"])
        if self._n_fm is None:
            self._n_fm = sum(a.kind == "fm" for a in self.schedule)
        frac = step / max(1, self._n_fm - 1)
        for group in opt.param_groups:
            group["lr"] = self._fm_lr0 * self.fm.lr_final**frac

    def _snapshot_after_fm(self) -> None:
        """Keep trajectories and transport cost of the flow-matching flow (for figures)."""
        g = torch.Generator().manual_seed(3)
        x = self.problem.sample_source(self.eval_points, generator=g).to(self.device)
        ts = torch.linspace(0.0, 1.0, 21)
        traj = self._push(x, ts)
        self._fm_snapshot = {
            "traj": traj.cpu(),
            "w2_sq": float((traj[-1] - traj[0]).square().sum(1).mean()),
            "path_energy": float(path_energy(self._push(x, self.block_ts.cpu()), self.block_ts)),
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
            self._set_lr(opt, self.refine.clf_lr, action.round)
        elif action.kind == "flow":
            loss, logs = self._flow_step(action.direction)
            opt = opts[1]
            self._set_lr(opt, self.refine.lr, action.round)
        else:
            loss, logs = self.dre.step_loss(self._draw, self._push)
            opt = opts[4]
            self.dre.decay_lr(opt, sum(a.kind == "ratio" for a in self.schedule))
        self.report_step(loss.detach(), logs)
        opt.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        opt.step()
        if action.kind == "fm" and self._fm_scheduler is not None:
            self._fm_scheduler.step()
        if action.kind == "flow":
            self._pools = {"fwd": None, "bwd": None}
            d = action.direction
            row = {"step": step, "round": action.round, "direction": float(d == "bwd")}
            row.update(kl=float(logs[f"kl_{d}"]), transport=float(logs[f"transport_{d}"]))
            self.refine_log.append(row)
        return loss.detach()

    # -- metrics and figures --------------------------------------------------------------
    def log_ratio_estimates(self, x: Tensor) -> dict[str, Tensor]:
        """log(q/p)(x) by the flow-ratio net, the 1-ratio classifier and KDE, each (n,); {}
        before the ratio nets are trained (or without ``density_ratio``)."""
        if self.dre is None:
            return {}
        return self.dre.log_ratio_estimates(x, self.problem, self.device)

    def extra_metrics(self, x: Tensor, problem) -> dict[str, float]:
        """path_energy, w2_sq/path_energy after flow matching, classifier KLs, KDE bandwidth
        (the log-ratio MAEs come from ``problem.evaluate_method``)."""
        out = {"path_energy": self.discrete_kinetic_energy(x)}
        if self._fm_snapshot is not None:
            out["w2_sq_after_fm"] = self._fm_snapshot["w2_sq"]
            out["path_energy_after_fm"] = self._fm_snapshot["path_energy"]
        if self.refine_log:
            with torch.no_grad():
                tx = self.transport(x).to(self.device)
                out["kl_fwd"] = float(-self.clf["fwd"](tx)[:, 0].mean())
                if self.refine.symmetric:
                    y = problem.sample_target(len(x), generator=torch.Generator().manual_seed(5))
                    sy = self.inverse_transport(y).to(self.device)
                    out["kl_bwd"] = float(-self.clf["bwd"](sy)[:, 0].mean())
        if self.dre is not None and self.dre.trained:
            out["kde_bandwidth"] = self.dre.kde_reference(problem)["h"]
        return out

    def extra_figures(self, out: Path) -> list[Path]:
        """Trajectories (after flow matching vs refined), refinement curves, DRE figures."""
        from ot_experiments.methods.qflow_plots import qflow_figures

        return qflow_figures(self, Path(out))


__all__ = ["QFlow", "flow_matching_loss", "refinement_loss"]
