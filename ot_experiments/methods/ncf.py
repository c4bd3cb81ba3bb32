"""NCF: neural Hamilton–Jacobi characteristic flows (docs/methods/ncf.md).

One potential u_θ(x, t) solves ∂t u + H(∇u) = 0 on Ω × [0, T]. Characteristics are straight
lines, so both OT maps are closed-form:

    T_θ(x) = x + T ∇H(∇ₓu_θ(x, 0)),      S_θ(y) = y − T ∇H(∇ₓu_θ(y, T)).

Training minimises L_HJ + λ L_MMD (energy-distance MMD in both directions, per class when the
problem has labels). The math is in the pure functions below; ``NCF`` wires them to Lightning.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from ot_experiments.costs import QuadraticHamiltonian
from ot_experiments.errors import ConfigError
from ot_experiments.methods.base import OTMethod
from ot_experiments.metrics.distances import energy_distance, sinkhorn_loss

# u(x, t): x (n, d), t (n, 1) → (n,)
Potential = Callable[[Tensor, Tensor], Tensor]


def value_and_spatial_grad(
    u: Potential, x: Tensor, t: Tensor, create_graph: bool = True
) -> tuple[Tensor, Tensor]:
    """u(x, t) (n,) and ∇ₓu(x, t) (n, d) by autograd (x need not require grad)."""
    with torch.enable_grad():
        if not x.requires_grad:
            x = x.detach().requires_grad_(True)
        val = u(x, t)
        (grad,) = torch.autograd.grad(val.sum(), x, create_graph=create_graph)
    return val, grad


def half_quadratic_form(z: Tensor, p: Tensor) -> Tensor:
    """½ zᵀPz for each row of z (n, k), P (k, k) → (n,); its gradient in z is ½ (P + Pᵀ) z."""
    return 0.5 * ((z @ p) * z).sum(1)


def time_quadratic_form(x: Tensor, t: Tensor, p: Tensor) -> Tensor:
    """½ Σₖ tᵏ xᵀPₖx, k = 1 … K, for each row: x (n, d), t (n, 1), P (K, d, d) → (n,).

    Beside ½ zᵀPz it lets the potential's quadratic in x change with time, as every
    Hamilton–Jacobi solution with a quadratic start does (for H = ½|p|²: u = ½ xᵀS(I + tS)⁻¹x,
    whose Taylor series in t has Pₖ = (−1)ᵏ Sᵏ⁺¹).
    """
    powers = t ** torch.arange(1, len(p) + 1, device=t.device, dtype=t.dtype)  # (n, K)
    forms = torch.einsum("ni,kij,nj->nk", x, p, x)  # (n, K)
    return 0.5 * (powers * forms).sum(1)


def check_quadratic_options(term: bool, degree: int, lr_scale: float) -> None:
    """The quadratic term's options: a degree >= 0 and a scale > 0, set only with the term."""
    if isinstance(degree, bool) or not isinstance(degree, int) or degree < 0:
        raise ConfigError(
            f"method.quadratic_time_degree={degree!r} is not valid: use an integer >= 0"
        )
    if not lr_scale > 0:
        raise ConfigError(f"method.quadratic_lr_scale={lr_scale!r} is not valid: use a number > 0")
    if not term and (degree or lr_scale != 1):
        key = "quadratic_time_degree" if degree else "quadratic_lr_scale"
        raise ConfigError(f"method.{key} shapes the quadratic term: set method.quadratic_term=true")


def ncf_forward_map(u: Potential, x: Tensor, horizon: float, ham, create_graph=False) -> Tensor:
    """T(x) = x + T ∇H(∇ₓu(x, 0)); x (n, d) → (n, d)."""
    t0 = torch.zeros(x.shape[0], 1, device=x.device, dtype=x.dtype)
    _, p = value_and_spatial_grad(u, x, t0, create_graph)
    return x + horizon * ham.grad(p)


def ncf_backward_map(u: Potential, y: Tensor, horizon: float, ham, create_graph=False) -> Tensor:
    """S(y) = y − T ∇H(∇ₓu(y, T)); y (n, d) → (n, d)."""
    t1 = torch.full((y.shape[0], 1), float(horizon), device=y.device, dtype=y.dtype)
    _, p = value_and_spatial_grad(u, y, t1, create_graph)
    return y - horizon * ham.grad(p)


def characteristic_terms(u: Potential, x: Tensor, t: Tensor, ham) -> tuple[Tensor, ...]:
    """(u(x, t) (n,), ∇H(p) (n, d), p · ∇H(p) − H(p) (n,)) with p = ∇ₓu(x, t), graph kept:
    what both implicit residuals need at (x, t), computed once when both are used."""
    val, p = value_and_spatial_grad(u, x, t, create_graph=True)
    dh = ham.grad(p)
    return val, dh, (p * dh).sum(-1) - ham(p)


def hj_implicit_residual(u: Potential, x: Tensor, t: Tensor, ham, terms=None) -> Tensor:
    """Residual of the implicit solution formula of ∂t u + H(∇u) = 0, shape (n,).

    r(x, t) = u(x, t) − u(x − t ∇H(p), 0) − t [p · ∇H(p) − H(p)],  p = ∇ₓu(x, t);
    x (n, d), t (n, 1). Zero for every (x, t) when u solves the HJ equation. ``terms``:
    ``characteristic_terms(u, x, t, ham)`` when already computed.
    """
    val, dh, lag = terms if terms is not None else characteristic_terms(u, x, t, ham)
    return val - u(x - t * dh, torch.zeros_like(t)) - t[:, 0] * lag


def hj_terminal_residual(
    u: Potential, x: Tensor, t: Tensor, horizon: float, ham, terms=None
) -> Tensor:
    """Residual of the implicit formula anchored at t = T instead of 0, shape (n,).

    r_T(x, t) = u(x, t) − u(x + (T − t) ∇H(p), T) + (T − t) [p · ∇H(p) − H(p)],
    p = ∇ₓu(x, t); x (n, d), t (n, 1). Along the characteristic through (x, t), u grows by
    (T − t)(p·∇H − H) up to time T, so r_T is zero when u solves the HJ equation. It ties
    u(·, t) to u(·, T), which the backward map reads, as ``hj_implicit_residual`` ties it to
    u(·, 0) (the NCF paper adds this backward loss in its latent experiments). ``terms``: as
    for ``hj_implicit_residual``.
    """
    val, dh, lag = terms if terms is not None else characteristic_terms(u, x, t, ham)
    rest = horizon - t
    return val - u(x + rest * dh, torch.full_like(t, horizon)) + rest[:, 0] * lag


def hj_pinn_residual(u: Potential, x: Tensor, t: Tensor, ham) -> Tensor:
    """PDE residual ∂t u(x, t) + H(∇ₓu(x, t)), shape (n,); x (n, d), t (n, 1)."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        t = t.detach().requires_grad_(True)
        val = u(x, t)
        px, pt = torch.autograd.grad(val.sum(), (x, t), create_graph=True)
    return pt[:, 0] + ham(px)


class NCF(OTMethod):
    """Neural characteristic flow.

    Parameters
    ----------
    problem : Problem
        Needs samples; uses labels for class-conditional MMD when ``conditional`` allows.
    network : callable
        Partial network constructor, called as ``network(in_dim=d + 1, out_dim=1)``.
    optimizer, scheduler : callable
        Partial constructors (see ``OTMethod``).
    hamiltonian : object
        ``QuadraticHamiltonian`` or ``PowerHamiltonian`` (cost c(x, y) = h(y − x)).
    horizon : float
        Terminal time T of the HJ equation.
    mmd_weight : float
        λ in L_HJ + λ L_MMD.
    hj_loss : {"implicit", "implicit_both", "pinn", "none"}
        Implicit-formula loss anchored at t = 0 (the paper), the sum of it and the one anchored
        at t = T (the paper's latent experiments), the HJ-PINN ablation, or MMD only.
    n_collocation, n_mmd : int
        Collocation points on Ω × [0, T] and MMD samples per side per step.
    conditional : {"auto", True, False}
        Class-conditional MMD; ``auto`` uses labels whenever the problem offers them.
    time_weight_decay : float
        w(t) = exp(−a t / T) in the HJ loss; a = 0 gives w ≡ 1.
    quadratic_term : bool
        Add a full quadratic form to the potential, u_θ(z) = net(z) + ½ zᵀPz with z = [x, t] and
        P ((d + 1) × (d + 1)) learned from zero, so that the potential's growth far from the
        data is a learned quadratic rather than whatever the network's units extrapolate.
    net_weight_decay : float
        Weight decay of the network's weights alone (P is not decayed), in the optimizer's own
        kind: an L2 term with Adam, a decoupled decay with AdamW.
    quadratic_lr_scale : float
        P (and the Pₖ) learn at this multiple of the optimizer's lr; needs ``quadratic_term``.
    quadratic_time_degree : int
        K > 0 adds ½ Σₖ tᵏ xᵀPₖx, k = 1 … K (``time_quadratic_form``), so the quadratic in x
        may change with t; needs ``quadratic_term``.
    matching : {"energy", "sinkhorn"}
        The distance between pushed and target samples in L_MMD: the energy distance (the
        paper) or the debiased Sinkhorn divergence ``sinkhorn_loss`` with ε = ``sinkhorn_eps``.
    sinkhorn_eps : float
        ε of ``matching="sinkhorn"`` and of the polish, in units of the squared distance.
    polish_steps, polish_points : int
        The last ``polish_steps`` of ``trainer.max_steps`` match by the Sinkhorn divergence on
        ``polish_points`` samples a side (0: never): it pulls back the points beyond both sample
        sets, which the energy distance lets drift (its gradient there tends to zero).
    collocation : {"box", "data", "mixed"}
        Where the HJ residual is fitted: uniform on the data's bounding box × [0, T] (the
        paper), ``data``: at time t = sT the point (1 − s) x + s y of a fresh source and
        target sample (the region the characteristics sweep; in high d a uniform box point is
        almost never near it), or ``mixed``: half of each.
    """

    has_inverse = True

    def __init__(
        self,
        problem,
        network: Callable,
        optimizer: Callable,
        scheduler: Callable | None = None,
        hamiltonian=None,
        horizon: float = 1.0,
        mmd_weight: float = 1.0,
        hj_loss: str = "implicit",
        n_collocation: int = 1000,
        n_mmd: int = 2000,
        conditional: str | bool = "auto",
        time_weight_decay: float = 0.0,
        collocation: str = "box",
        quadratic_term: bool = False,
        net_weight_decay: float = 0.0,
        quadratic_lr_scale: float = 1.0,
        quadratic_time_degree: int = 0,
        eval_points: int = 2000,
        matching: str = "energy",
        sinkhorn_eps: float = 1.0,
        polish_steps: int = 0,
        polish_points: int = 1000,
    ) -> None:
        super().__init__(problem, optimizer, scheduler, eval_points=eval_points)
        if hj_loss not in ("implicit", "implicit_both", "pinn", "none"):
            raise ConfigError(
                f"method.hj_loss={hj_loss!r} is not valid; "
                "choose implicit, implicit_both, pinn or none"
            )
        if collocation not in ("box", "data", "mixed"):
            raise ConfigError(
                f"method.collocation={collocation!r} is not valid; choose box, data or mixed"
            )
        if matching not in ("energy", "sinkhorn") or not sinkhorn_eps > 0:
            raise ConfigError(
                f"method.matching={matching!r} with method.sinkhorn_eps={sinkhorn_eps!r} is not "
                "valid: choose energy or sinkhorn, and an eps > 0"
            )
        if not (int(polish_steps) >= 0 and int(polish_points) >= 2):
            raise ConfigError(
                f"method.polish_steps={polish_steps!r} / method.polish_points={polish_points!r} "
                "are not valid: use polish_steps >= 0 and polish_points >= 2"
            )
        if conditional is True and "labels" not in problem.offers:
            raise ConfigError(
                "method.conditional=true needs a labelled problem (e.g. problem=toy2d_classes)"
            )
        check_quadratic_options(quadratic_term, quadratic_time_degree, quadratic_lr_scale)
        if net_weight_decay < 0:
            raise ConfigError(
                f"method.net_weight_decay={net_weight_decay!r} is not valid: use a number >= 0"
            )
        self.dim = problem.dim
        self.net = network(in_dim=self.dim + 1, out_dim=1)
        z_dim = self.dim + 1
        self.quad = nn.Parameter(torch.zeros(z_dim, z_dim)) if quadratic_term else None
        k = int(quadratic_time_degree)
        self.quad_time = nn.Parameter(torch.zeros(k, self.dim, self.dim)) if k else None
        self.net_weight_decay = float(net_weight_decay)
        self.quadratic_lr_scale = float(quadratic_lr_scale)
        self.ham = hamiltonian if hamiltonian is not None else QuadraticHamiltonian()
        self.horizon = float(horizon)
        self.mmd_weight = float(mmd_weight)
        self.hj_loss = hj_loss
        self.n_collocation = int(n_collocation)
        self.n_mmd = int(n_mmd)
        self.conditional = "labels" in problem.offers if conditional == "auto" else conditional
        self.time_weight_decay = float(time_weight_decay)
        self.collocation = collocation
        self.matching, self.sinkhorn_eps = matching, float(sinkhorn_eps)
        self.polish_steps, self.polish_points = int(polish_steps), int(polish_points)
        low, high = problem.bounding_box()
        self.register_buffer("box_low", low)
        self.register_buffer("box_high", high)

    # the potential ------------------------------------------------------------------------
    def potential(self, x: Tensor, t: Tensor) -> Tensor:
        """u_θ(x, t) = net([x, t]) (+ ½ zᵀPz with ``quadratic_term``, + ½ Σₖ tᵏ xᵀPₖx with
        ``quadratic_time_degree``): x (n, d), t (n, 1) → (n,)."""
        z = torch.cat([x, t], dim=1)
        u = self.net(z)[:, 0]
        if self.quad is not None:
            u = u + half_quadratic_form(z, self.quad)
        if self.quad_time is not None:
            u = u + time_quadratic_form(x, t, self.quad_time)
        return u

    def parameter_groups(self):
        """The network's weights decay by ``net_weight_decay``; the quadratic form P does not, and
        it learns at ``quadratic_lr_scale`` times the optimizer's rate."""
        if not self.net_weight_decay and (self.quad is None or self.quadratic_lr_scale == 1):
            return self.parameters()
        lr = getattr(self._make_optimizer, "keywords", {}).get("lr")
        if lr is None and self.quadratic_lr_scale != 1:
            raise ConfigError(
                "method.quadratic_lr_scale needs the optimizer's lr set (optimizer.lr)"
            )
        groups = [{"params": list(self.net.parameters()), "weight_decay": self.net_weight_decay}]
        if self.quad is not None:
            quad = [self.quad] if self.quad_time is None else [self.quad, self.quad_time]
            groups.append({"params": quad, "weight_decay": 0.0, "lr": lr * self.quadratic_lr_scale})
        return groups

    # maps -------------------------------------------------------------------------------
    def transport(self, x: Tensor) -> Tensor:
        def fn(c: Tensor) -> Tensor:
            return ncf_forward_map(self.potential, c, self.horizon, self.ham)

        return self.map_in_chunks(fn, x).to(x.device)

    def inverse_transport(self, y: Tensor) -> Tensor:
        def fn(c: Tensor) -> Tensor:
            return ncf_backward_map(self.potential, c, self.horizon, self.ham)

        return self.map_in_chunks(fn, y).to(y.device)

    def trajectory(self, x: Tensor, ts: Tensor) -> Tensor:
        """Straight characteristics x + t ∇H(∇u(x, 0)) at times ``ts`` (k,) → (k, n, d)."""
        v = (self.transport(x) - x) / self.horizon
        return x[None] + ts.to(x)[:, None, None] * v[None]

    # losses -----------------------------------------------------------------------------
    def collocation_points(self, n: int) -> tuple[Tensor, Tensor]:
        """(x (n, d), t (n, 1)) for the HJ residual: ``box``: uniform on box × [0, T];
        ``data``: x = (1 − t/T) x₀ + (t/T) y₀, x₀ ∼ μ, y₀ ∼ ν independent; ``mixed``: the first
        n // 2 from the box, the rest from the data."""
        if self.collocation == "box":
            return self._box_points(n)
        if self.collocation == "data":
            return self._data_points(n)
        (xb, tb), (xd, td) = self._box_points(n // 2), self._data_points(n - n // 2)
        return torch.cat([xb, xd]), torch.cat([tb, td])

    def _box_points(self, n: int) -> tuple[Tensor, Tensor]:
        dev = self.device
        x = self.box_low + (self.box_high - self.box_low) * torch.rand(n, self.dim, device=dev)
        return x, self.horizon * torch.rand(n, 1, device=dev)

    def _data_points(self, n: int) -> tuple[Tensor, Tensor]:
        dev = self.device
        t = self.horizon * torch.rand(n, 1, device=dev)
        s = t / self.horizon
        x0 = self.problem.sample_source(n, device=dev)
        y0 = self.problem.sample_target(n, device=dev)
        return (1 - s) * x0 + s * y0, t

    def hj_term(self) -> Tensor:
        """Mean of w(t) r(x, t)² over the collocation points (plus w(t) r_T(x, t)² for
        ``implicit_both``)."""
        x, t = self.collocation_points(self.n_collocation)
        if self.hj_loss == "pinn":
            sq = hj_pinn_residual(self.potential, x, t, self.ham).square()
        else:
            terms = characteristic_terms(self.potential, x, t, self.ham)
            sq = hj_implicit_residual(self.potential, x, t, self.ham, terms).square()
        if self.hj_loss == "implicit_both":  # the same u(x, t) and ∇ₓu(x, t), anchored at T
            r_end = hj_terminal_residual(self.potential, x, t, self.horizon, self.ham, terms)
            sq = sq + r_end.square()
        w = torch.exp(-self.time_weight_decay * t[:, 0] / self.horizon)
        return (w * sq).mean()

    def mmd_term(self, matching: str | None = None, n_mmd: int | None = None) -> Tensor:
        """ED(T#μ, ν) + ED(S#ν, μ) without θ-free terms (or S_ε with ``matching="sinkhorn"``)
        on ``n_mmd`` points a side (default: the method's), summed over classes if conditional.

        The classes' samples are stacked to (K, n, d): one pass of each map over all K·n
        points and one batched energy distance, instead of 2K small passes.
        """
        matching, n_mmd = matching or self.matching, n_mmd or self.n_mmd
        groups = self.problem.classes if self.conditional else (None,)
        n = n_mmd // len(groups) if self.conditional else n_mmd
        xs, ys = [], []
        for k in groups:
            xs.append(self.problem.sample_source(n, device=self.device, cls=k))
            ys.append(self.problem.sample_target(n, device=self.device, cls=k))
        x, y = torch.stack(xs), torch.stack(ys)
        tx = ncf_forward_map(self.potential, x.flatten(0, 1), self.horizon, self.ham, True)
        sy = ncf_backward_map(self.potential, y.flatten(0, 1), self.horizon, self.ham, True)
        if matching == "sinkhorn":
            fwd = sinkhorn_loss(tx.view_as(x), y, self.sinkhorn_eps)
            return (fwd + sinkhorn_loss(sy.view_as(y), x, self.sinkhorn_eps)).sum()
        ed = energy_distance(tx.view_as(x), y, y_fixed=True)
        return (ed + energy_distance(sy.view_as(y), x, y_fixed=True)).sum()

    def polishing(self, step: int) -> bool:
        """Whether ``step`` is in the last ``polish_steps`` of ``trainer.max_steps``."""
        if self.polish_steps and self.trainer.max_steps < 0:
            raise ConfigError("method.polish_steps needs a step budget: set trainer.max_steps")
        return bool(self.polish_steps) and step >= self.trainer.max_steps - self.polish_steps

    def training_loss(self, step: int):
        polish = self.polishing(step)
        mmd = self.mmd_term("sinkhorn", self.polish_points) if polish else self.mmd_term()
        logs = {"mmd": mmd.detach()}
        loss = self.mmd_weight * mmd
        if self.hj_loss != "none":
            hj = self.hj_term()
            logs["hj"] = hj.detach()
            loss = loss + hj
        return loss, logs


__all__ = [
    "NCF",
    "half_quadratic_form",
    "characteristic_terms",
    "hj_implicit_residual",
    "hj_pinn_residual",
    "hj_terminal_residual",
    "ncf_backward_map",
    "ncf_forward_map",
    "value_and_spatial_grad",
]
