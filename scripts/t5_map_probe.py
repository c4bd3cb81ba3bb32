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

    .venv/bin/python scripts/t5_map_probe.py outputs/<run folder> [--steps 3000] [--lr 1e-3]
"""

from __future__ import annotations

import argparse

import ot
import torch
from omegaconf import OmegaConf
from torch import Tensor

from ot_experiments.build import build_method, build_problem
from ot_experiments.methods.ncf import ncf_forward_map


def knn_accuracy(train_z: Tensor, train_y: Tensor, test_z: Tensor, test_y: Tensor, k: int):
    """Accuracy (%) of the k-NN majority vote of ``test_z`` (m, d) among ``train_z`` (n, d)."""
    idx = torch.cdist(test_z, train_z).topk(k, largest=False).indices
    votes = torch.nn.functional.one_hot(train_y[idx], int(train_y.max()) + 1).sum(1)
    return 100 * float((votes.argmax(1) == test_y).float().mean())


def class_ot_partners(problem) -> tuple[Tensor, Tensor]:
    """(x (n, d), y (n, d)): every source training latent of class k and its partner among the
    target training latents of class π(k) under the exact OT plan for ‖x − y‖² (equal counts
    per class: the first min(n_k, m_k) of each side)."""
    xs_all, ys_all = [], []
    src, tgt = problem.source, problem.target
    for k in problem.classes:
        xs = src.train_z[src.train_y == k]
        ys = tgt.train_z[tgt.train_y == int(problem.perm[k])]
        n = min(len(xs), len(ys))
        xs, ys = xs[:n], ys[:n]
        w = torch.full((n,), 1.0 / n, dtype=torch.float64)
        plan = ot.emd(w, w, torch.cdist(xs, ys).double().square())
        xs_all.append(xs)
        ys_all.append(ys[plan.argmax(1)])
    return torch.cat(xs_all), torch.cat(ys_all)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="a T5 run folder (with .hydra/config.yaml)")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--every", type=int, default=500)
    args = ap.parse_args()
    torch.manual_seed(0)
    cfg = OmegaConf.load(f"{args.run}/.hydra/config.yaml")
    problem = build_problem(cfg)
    method = build_method(cfg, problem)  # a fresh potential of the run's network
    src, tgt = problem.source, problem.target
    for k in (1, 5, 15):
        acc = knn_accuracy(src.train_z, src.train_y, src.test_z, src.test_y, k)
        print(f"{k}-NN accuracy of held-out source latents: {acc:.1f} %")

    x, y = class_ot_partners(problem)
    y_class = tgt.classify(tgt.decode(y))
    opt = torch.optim.Adam(method.parameters(), lr=args.lr)
    for step in range(args.steps + 1):
        idx = torch.randint(0, len(x), (args.batch,))
        mapped = ncf_forward_map(method.potential, x[idx], method.horizon, method.ham, True)
        loss = (mapped - y[idx]).square().sum(1).mean()
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


if __name__ == "__main__":
    main()
