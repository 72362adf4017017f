"""``RolloutConfig``: ``longshort analyze rollout``, N graded continuations of every prefix (see rollouts.py).

longshort analyze rollout --dir runs/analysis --n-rollouts 128      # the shipped testbed base by default
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from longshort.config import ConfigError, option

__all__ = ["RolloutConfig"]


@dataclass
class RolloutConfig:
    """N continuations of every prefix y1..yi by the base model, graded; resumable (DIR/rollouts.jsonl)."""

    dir: Path = option(Path("runs/analysis"), help="the analysis directory (from `analyze chunk`)")
    model: str | None = option(None, help="base model, a path or hub id (default: the shipped testbed base)")
    base_url: str | None = option(None, help="an OpenAI-compatible server instead of a local model")
    device: str | None = option(None, help="cpu or cuda (default: cuda if available)")
    n_rollouts: int = option(32, help="continuations per prefix (paper: 128 for the analysis)")
    max_new_tokens: int = option(512, help="tokens per continuation")
    max_batch_size: int = option(256, help="continuations decoded together")
    seed: int = option(0, help="sampling seed (each continuation's is derived from it)")
    share_prefills: bool = option(True, help="prefill each prefix once for all its continuations")

    def __post_init__(self) -> None:
        for name in ("n_rollouts", "max_new_tokens", "max_batch_size"):
            value = getattr(self, name)
            if value is not None and value < 1:  # None: ReportConfig's 'as many as the prefixes had'
                raise ConfigError(f"{name} must be >= 1, got {value}", key=name)
        if self.seed < 0:
            raise ConfigError(f"seed must be >= 0, got {self.seed}", key="seed")
