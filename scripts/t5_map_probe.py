"""Where does T5's class-conditional map lose accuracy: fit, or generalisation to held-out digits?

Takes a T5 run folder (its ``.hydra/config.yaml``: task, d, VAE cache, potential network) and

1. prints the k-nearest-neighbour accuracy of the held-out source latents among the training
   latents (how well the latent space separates the classes locally);
2. regresses NCF's forward map x + ∇ₓu(x, 0) of a fresh potential of the run's network onto
   the class-wise exact-OT partner of every training latent (POT's ``emd`` between source class
   k and target class π(k)), and prints, every ``--every`` steps, the T5 accuracy on the
   held-out source latents and the agreement on the training latents.

A map that fits its training partners (high agreement) but scores low on held-out latents
is limited by how it generalises from the training digits, not by the loss it was fitted with.

Options for the loss's side of the question:

- ``--both`` also regresses the backward map y − ∇ₓu(y, T) onto the partners' sources;
- ``--then-ncf N`` continues N steps with NCF's own loss (the run's λ, learning rate and MMD
  points) from the regressed potential, scoring a 0.99 moving average of the weights: does
  the loss keep the regression's accuracy or pull it back to where training from scratch ends?
  (``--hj-loss none``: with the MMD term alone);
- ``--energy`` prints the class-conditional energy distance of the trained run's map (its last
  checkpoint) beside the sampling floor of two independent samples of the target classes and
  beside target samples with a share of other-class latents mixed in;
- ``--where`` splits the trained run's forward accuracy on the held-out digits by how clearly
  each source latent sits inside its class: whether the source VAE's round trip keeps its
  class, and the share of its 15 nearest training latents of its own class. Misses confined
  to mixed neighbourhoods mean the map blurs the class boundaries; misses in pure ones mean it
  sends whole regions to the wrong class.

    .venv/bin/python scripts/t5_map_probe.py outputs/<run folder> [--steps 3000] [--lr 1e-3]
"""

from __future__ import annotations

import argparse
import copy

import ot
import torch
from omegaconf import OmegaConf
from torch import Tensor

from ot_experiments.build import build_method, build_problem
from ot_experiments.methods.ncf import ncf_backward_map, ncf_forward_map
from ot_experiments.metrics.distances import energy_distance
from ot_experiments.results import load_run


def knn_accuracy(train_z: Tensor, train_y: Tensor, test_z: Tensor, test_y: Tensor, k: int):
    """Accuracy (%) of the k-NN majority vote of ``test_z`` (m, d) among ``train_z`` (n, d)."""
    idx = torch.cdist(test_z, train_z).topk(k, largest=False).indices
    votes = torch.nn.functional.one_hot(train_y[idx], int(train_y.max()) + 1).sum(1)
    return 100 * float((votes.argmax(1) == test_y).float().mean())


def class_ot_partners(problem, per_class: int | None = None) -> tuple[Tensor, Tensor]:
    """(x (n, d), y (n, d)): every source training latent of class k and its partner among the
    target training latents of class π(k) under the exact OT plan for ‖x − y‖² (equal counts
    per class: the first min(n_k, m_k, per_class) of each side)."""
    xs_all, ys_all = [], []
    src, tgt = problem.source, problem.target
    for k in problem.classes:
        xs = src.train_z[src.train_y == k]
        ys = tgt.train_z[tgt.train_y == int(problem.perm[k])]
        n = min(len(xs), len(ys), per_class or len(xs))
        xs, ys = xs[:n], ys[:n]
        w = torch.full((n,), 1.0 / n, dtype=torch.float64)
        plan = ot.emd(w, w, torch.cdist(xs, ys).double().square(), numItermax=10**8)
        xs_all.append(xs)
        ys_all.append(ys[plan.argmax(1)])
    return torch.cat(xs_all), torch.cat(ys_all)


def mixed_in(own: Tensor, other: Tensor, share: float, n: int, g: torch.Generator) -> Tensor:
    """n rows: round(share · n) drawn from ``other`` (m, d), the rest from ``own`` (k, d)."""
    m = round(share * n)
    pick = [own[torch.randperm(len(own), generator=g)[: n - m]]]
    return torch.cat([*pick, other[torch.randperm(len(other), generator=g)[:m]]])


def energy_report(problem, fmap, n: int, g: torch.Generator) -> None:
    """Sum over classes of ED(n mapped source latents, n target latents of the partner class),
    against two disjoint target samples of that class (the floor) and target samples with
    5 / 15 / 30 % of other-class latents (each class needs ≥ 2n training latents)."""
    src, tgt = problem.source, problem.target
    shares = {"floor": 0.0, **{f"{s:.0%} other-class": s for s in (0.05, 0.15, 0.3)}}
    rows = {"the run's map": 0.0, **dict.fromkeys(shares, 0.0)}
    for k in problem.classes:
        j = int(problem.perm[k])
        own, other = tgt.train_z[tgt.train_y == j], tgt.train_z[tgt.train_y != j]
        order = torch.randperm(len(own), generator=g)  # ref and the mixtures: disjoint halves
        ref, own = own[order[:n]], own[order[n:]]
        xs = src.train_z[src.train_y == k]
        mapped = fmap(xs[torch.randperm(len(xs), generator=g)[:n]]).detach()
        rows["the run's map"] += float(energy_distance(mapped, ref))
        for name, share in shares.items():
            rows[name] += float(energy_distance(mixed_in(own, other, share, n, g), ref))
    for name, value in rows.items():
        print(f"energy distance, {n} a class, {name}: {value:.4f}")


def where_report(problem, fmap, k: int = 15) -> None:
    """Forward accuracy on the held-out source latents by source round trip and by the share of
    the latent's k nearest training latents that are of its own class."""
    src, tgt = problem.source, problem.target
    z, y = src.test_z, src.test_y
    hit = tgt.classify(tgt.decode(fmap(z).detach())) == problem.perm[y]
    kept = src.classify(src.decode(z)) == y
    near = torch.cdist(z, src.train_z).topk(k, largest=False).indices
    purity = (src.train_y[near] == y[:, None]).float().mean(1)
    misses = int((~hit).sum())
    print(f"forward accuracy {100 * float(hit.float().mean()):.2f} % on {len(z)} held-out latents")

    def line(name: str, part: Tensor) -> None:
        acc = f"{100 * float(hit[part].float().mean()):.2f} %" if part.any() else "–"
        lost = 100 * int((~hit & part).sum()) / max(misses, 1)
        share = 100 * float(part.float().mean())
        print(f"{name}: {share:.1f} % of the latents, accuracy {acc}, {lost:.1f} % of the misses")

    line("round trip keeps the class", kept)
    line("round trip changes it", ~kept)
    for low, high in ((0.0, 0.5), (0.5, 0.8), (0.8, 1.0)):
        line(
            f"own-class share of the {k} nearest in [{low}, {high})",
            (purity >= low) & (purity < high),
        )
    line(f"own-class share of the {k} nearest = 1", purity == 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="a T5 run folder (with .hydra/config.yaml)")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--every", type=int, default=500)
    ap.add_argument("--per-class", type=int, default=None, help="partners a class (all)")
    ap.add_argument("--both", action="store_true", help="regress the backward map too")
    ap.add_argument("--then-ncf", type=int, default=0, help="steps of NCF's loss afterwards")
    ap.add_argument("--hj-loss", default=None, help="method.hj_loss for --then-ncf (the run's)")
    ap.add_argument("--energy", type=int, default=0, help="ED report with this many a class")
    ap.add_argument("--where", action="store_true", help="where the trained map's misses lie")
    args = ap.parse_args()
    cfg = OmegaConf.load(f"{args.run}/.hydra/config.yaml")
    if args.hj_loss:  # through the config, so NCF's constructor checks the value
        cfg.method.hj_loss = args.hj_loss
    if args.energy or args.where:  # the trained run, and its problem (built once)
        run = load_run(args.run, allow_unfinished=True)
        problem, trained = run.problem, run.method
    else:
        problem, trained = build_problem(cfg), None
    src, tgt = problem.source, problem.target
    for k in (1, 5, 15):
        acc = knn_accuracy(src.train_z, src.train_y, src.test_z, src.test_y, k)
        print(f"{k}-NN accuracy of held-out source latents: {acc:.1f} %")
    if args.where:
        where_report(problem, trained.transport)
    if args.energy:
        energy_report(problem, trained.transport, args.energy, torch.Generator().manual_seed(0))

    if args.steps == 0 and not args.then_ncf:  # the reports only
        return
    torch.manual_seed(0)
    method = build_method(cfg, problem)  # a fresh potential of the run's network
    x, y = class_ot_partners(problem, args.per_class)
    y_class = tgt.classify(tgt.decode(y))
    opt = torch.optim.Adam(method.parameters(), lr=args.lr)
    u, horizon, ham = method.potential, method.horizon, method.ham
    for step in range(args.steps + 1):
        idx = torch.randint(0, len(x), (args.batch,))
        loss = (ncf_forward_map(u, x[idx], horizon, ham, True) - y[idx]).square().sum(1).mean()
        if args.both:
            back = ncf_backward_map(u, y[idx], horizon, ham, True)
            loss = loss + (back - x[idx]).square().sum(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % args.every == 0:
            test = problem.scores(method.transport, limit=len(src.test_z))["accuracy_fwd"]
            agree = tgt.classify(tgt.decode(method.transport(x))) == y_class
            print(
                f"step {step}: loss {loss.item():.3f}, accuracy_fwd on held-out latents "
                f"{test:.1f} %, agreement with the partners' class on training latents "
                f"{100 * float(agree.float().mean()):.1f} %",
                flush=True,
            )
    if args.then_ncf:
        continue_with_ncf(method, problem, args.then_ncf, args.every)


def continue_with_ncf(method, problem, steps: int, every: int) -> None:
    """``steps`` of NCF's own loss and optimizer from the method's current weights, printing
    the accuracy of a 0.99 moving average of the weights every ``every`` steps."""
    opt = method.configure_optimizers()  # the run's optimizer (its scheduler, if any, unused)
    opt = opt["optimizer"] if isinstance(opt, dict) else opt
    average = copy.deepcopy(method.state_dict())
    for step in range(1, steps + 1):
        loss, logs = method.training_loss(step)
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            for name, value in method.state_dict().items():
                if value.dtype.is_floating_point:
                    average[name].mul_(0.99).add_(value, alpha=0.01)
        if step % every == 0:
            live = copy.deepcopy(method.state_dict())
            method.load_state_dict(average)
            acc = problem.scores(method.transport, method.inverse_transport, limit=10**9)
            method.load_state_dict(live)
            print(
                f"NCF loss step {step}: accuracy fwd / bwd {acc['accuracy_fwd']:.2f} / "
                f"{acc['accuracy_bwd']:.2f} % (moving average), mmd {float(logs['mmd']):.3f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
