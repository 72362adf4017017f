"""``TestbedBuildConfig``: ``longshort testbed build``, the whole testbed recipe (see build.py).

    longshort testbed build --out runs/testbed --assets runs/assets --eval-n 500

Every training field is ``TestbedTrainConfig``'s (both models train with them); build adds where
the assets go, which models to (re)train and how many problems to measure them on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, get_args

from longshort.config import ConfigError, option
from longshort.testbed.train_config import ModelKind, TestbedTrainConfig

__all__ = ["TestbedBuildConfig"]

MODELS: tuple[str, ...] = get_args(ModelKind)  # = longshort.shipped.MODELS, without its pydantic import


@dataclass
class TestbedBuildConfig(TestbedTrainConfig):
    """The full recipe (GPU): tokenizer, reasoner + base, measured numbers, assets + manifest."""

    #: build trains each of ``models``; ``model`` only names the one whose tokenizer ``init`` lends
    cli_exclude: ClassVar[tuple[str, ...]] = ("model",)

    model: ModelKind = option("reasoner", help="unused by build (it trains every model in `models`)")
    assets: Path | None = option(None, help="the assets folder to write (default: the installed package's)")
    models: list[str] = option(
        default_factory=lambda: list(MODELS),
        help="which models to train (comma-separated); the others, and the tokenizer, are kept from assets",
    )
    eval_n: int = option(500, help="held-out problems to measure on; 0: train only (`testbed measure` later)")
    eval_seed: int = option(0, help="seed of the held-out problems")
    results: Path = option(Path("results/testbed.json"), help="where the measured numbers are written")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.models or set(self.models) - set(MODELS) or len(set(self.models)) != len(self.models):
            raise ConfigError(f"models must be a non-empty subset of {MODELS}, got {self.models}", key="models")
        for name in ("eval_n", "eval_seed"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}", key=name)

    def train_config(self, model: ModelKind) -> TestbedTrainConfig:
        """The ``testbed train`` config of one of the models (the shared fields, this ``model``)."""
        from dataclasses import fields

        return TestbedTrainConfig(
            **{f.name: getattr(self, f.name) for f in fields(TestbedTrainConfig)} | {"model": model}
        )
