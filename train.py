"""Entry point: `python train.py method=ncf problem=gaussian d=64` (see README); the same as
`ot-train ...` and `python -m ot_experiments ...` (ot_experiments/cli.py)."""

from ot_experiments.cli import train

if __name__ == "__main__":
    train()
