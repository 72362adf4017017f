"""``ScoreConfig``: ``longshort analyze score``, M(yi) and the selections (see importance.py, report.py).

longshort analyze score --dir runs/analysis
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from longshort.config import ConfigError, option

__all__ = ["ScoreConfig"]


@dataclass
class ScoreConfig:
    """M(yi) under both metrics and each one's selection, for every problem with complete rollouts."""

    dir: Path = option(Path("runs/analysis"), help="the analysis directory (from `analyze rollout`)")
    alpha: float = option(0.05, help="level of the significance variant's test")

    def __post_init__(self) -> None:
        if not 0 <= self.alpha <= 1:
            raise ConfigError(f"alpha must be in [0, 1], got {self.alpha}", key="alpha")
