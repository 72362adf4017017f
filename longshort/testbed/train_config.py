"""``TestbedTrainConfig``: ``longshort testbed train``, one testbed model from scratch (see train.py).

    longshort testbed train --model reasoner --out runs/testbed            # the R1-Distill analogue
    longshort testbed train --config runs/testbed/reasoner/config.yaml     # the same run again

Not a TRL ``SFTConfig``: the recipe derives the trainer's settings (``output_dir`` per model, the
warm-up from ``steps``, a wall-time schedule with ``max_seconds``), so its fields are the recipe's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from longshort.config import ConfigError, option

__all__ = ["ModelKind", "TestbedTrainConfig"]

ModelKind = Literal["reasoner", "base"]


@dataclass
class TestbedTrainConfig:
    """Train one testbed model from scratch (TRL SFTTrainer): the tokenizer first if OUT has none."""

    model: ModelKind = option(help="reasoner (long traces) or base (short + switch traces)")
    out: str = option("runs/testbed", help="output root; the model goes to OUT/<model>")
    n_train: int = option(20000, help="training problems drawn from the train split")
    n_ops: int = option(3, help="operations per problem")
    steps: int = option(3000, help="optimizer steps")
    batch_size: int = option(128, help="sequences per step")
    lr: float = option(1e-3, help="peak learning rate (cosine schedule, 5% warm-up)")
    hidden_size: int = option(256, help="model width")
    layers: int = option(4, help="transformer layers")
    heads: int = option(4, help="attention heads")
    vocab_size: int = option(1024, help="tokenizer vocabulary (trained if OUT/tokenizer is absent)")
    max_positions: int = option(3072, help="context length (RoPE: costs no parameters)")
    switches_per_problem: int = option(4, help="base only: long prefixes per problem")
    selections_per_problem: int = option(2, help="base only: gapped selections of long thoughts per problem")
    seed: int = option(0, help="seed for problems, teachers, init and data order")
    device: str | None = option(None, help="cuda / cpu (default: cuda if available)")
    init: str | None = option(
        None,
        help="continue from the model of the same kind in this assets folder (and its tokenizer) instead of a "
        "random init: one long run split over several GPU leases; the chain is kept in train_info.json",
    )
    max_seconds: float | None = option(
        None,
        help="train for this much wall time instead of a step count: the cosine schedule runs over time and "
        "training stops (and saves) when it is spent; for leased GPUs of unknown speed",
    )

    def __post_init__(self) -> None:
        if self.model not in ("reasoner", "base"):
            raise ConfigError(f"model must be 'reasoner' or 'base', got {self.model!r}", key="model")
        minimum = {"n_train": 1, "n_ops": 1, "steps": 1, "batch_size": 1, "hidden_size": 8, "layers": 1, "heads": 1}
        minimum |= {"vocab_size": 300, "max_positions": 64, "switches_per_problem": 0, "selections_per_problem": 0}
        minimum |= {"seed": 0}
        for name, low in minimum.items():
            if getattr(self, name) < low:
                raise ConfigError(f"{name} must be >= {low}, got {getattr(self, name)}", key=name)
        if self.lr <= 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}", key="lr")
        if self.max_seconds is not None and self.max_seconds <= 0:
            raise ConfigError(f"max_seconds must be > 0, got {self.max_seconds}", key="max_seconds")
