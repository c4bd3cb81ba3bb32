"""``python -m ot_experiments ...`` is ``python train.py ...``."""

from ot_experiments.cli import train

if __name__ == "__main__":
    train()
