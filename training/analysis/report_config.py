"""``ReportConfig``: ``longshort analyze report``, the functional check and analysis.json (see report.py).

longshort analyze report --dir runs/analysis                         # analysis.json + PNGs
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from longshort.config import ConfigError, option
from longshort.training.analysis.importance import DEFAULT_METRIC, Metric
from longshort.training.analysis.rollout_config import RolloutConfig

__all__ = ["ReportConfig"]


@dataclass
class ReportConfig(RolloutConfig):
    """The functional check (rollouts from the selected thoughts only, and from a random selection of the
    same token budget), then analysis.json with AUROC / precision / recall and the figures."""

    n_rollouts: int | None = option(None, help="continuations per selection (default: as many as the prefixes had)")
    out: Path | None = option(None, help="where analysis.json and the PNGs go (default: dir)")
    metric: Metric = option(DEFAULT_METRIC, help="the headline metric: paper or significance")
    alpha: float = option(0.05, help="level of the significance variant's test")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.alpha <= 1:
            raise ConfigError(f"alpha must be in [0, 1], got {self.alpha}", key="alpha")
