"""``MeasureConfig``: ``longshort testbed measure``, the issue's numbers of built assets (see build.py).

longshort testbed measure --assets runs/assets --eval-n 500
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from longshort.config import ConfigError, option

__all__ = ["MeasureConfig"]


@dataclass
class MeasureConfig:
    """Measure the issue's numbers for built assets and write them into their manifest."""

    assets: Path = option(help="a testbed assets folder (from `testbed build`)")
    eval_n: int = option(500, help="held-out test problems")
    eval_seed: int = option(0, help="seed of the held-out problems")
    results: Path = option(Path("results/testbed.json"), help="where the measured numbers are written")
    device: str | None = option(None, help="cpu or cuda (default: cuda if available)")

    def __post_init__(self) -> None:
        if self.eval_n < 1:
            raise ConfigError(f"eval_n must be >= 1, got {self.eval_n}", key="eval_n")
        if self.eval_seed < 0:
            raise ConfigError(f"eval_seed must be >= 0, got {self.eval_seed}", key="eval_seed")
