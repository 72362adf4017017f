"""``ChunkConfig``: ``longshort analyze chunk``, long CoTs cut into thoughts (see chunking.py).

longshort analyze chunk --testbed --n 100 --out runs/analysis       # or --input responses.jsonl
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from longshort.config import ConfigError, option

__all__ = ["ChunkConfig"]


@dataclass
class ChunkConfig:
    """Cut long CoTs into thoughts: OUT/chunks.jsonl (one problem per line) and OUT/thoughts.jsonl (a table)."""

    out: Path = option(Path("runs/analysis"), help="the analysis directory (chunks.jsonl, thoughts.jsonl, …)")
    input: Path | None = option(None, help="a JSONL of {question, answer, response} (id optional); or testbed")
    testbed: bool = option(False, help="held-out testbed problems with teacher thoughts and needed-labels")
    n: int = option(100, help="testbed problems")
    split: Literal["train", "validation", "test"] = option(
        "test", help="testbed split: test (held-out analysis) or train (cold-start data)"
    )
    seed: int = option(0, help="seed of the testbed problems")
    grouper: Literal["rule", "llm", "step"] = option(
        "rule", help="how steps become thoughts: rule (cue words), step (one per step) or llm"
    )
    llm_model: str | None = option(None, help="chat model for grouper llm")
    llm_base_url: str | None = option(None, help="OpenAI-compatible server of llm_model")
    llm_api_key: str = option("EMPTY", help="API key of llm_base_url", envvar="OPENAI_API_KEY", secret=True)
    retries: int = option(5, help="LLM grouping attempts before the rule fallback")
    tokenizer: str | None = option(
        None, help="tokenizer that measures thought lengths (default: the shipped testbed base's)"
    )

    def __post_init__(self) -> None:
        if self.testbed == (self.input is not None):
            raise ConfigError("give exactly one of --input FILE or --testbed", key="input")
        for name in ("n", "retries"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}", key=name)
        if self.seed < 0:
            raise ConfigError(f"seed must be >= 0, got {self.seed}", key="seed")
        if self.grouper == "llm" and not self.llm_model and not self.testbed:
            raise ConfigError(
                "grouper llm needs llm_model (and llm_base_url for a local OpenAI-compatible server)", key="llm_model"
            )
