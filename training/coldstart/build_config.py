"""``ColdstartDataConfig``: ``longshort train data``, cold-start dialogues and per-agent SFT tables (see build.py).

longshort train data --analysis runs/coldstart/analysis --out runs/coldstart/sft --source paper
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from longshort.config import ConfigError, option

__all__ = ["ColdstartDataConfig", "Source"]

Source = Literal["paper", "significance", "random"]


@dataclass
class ColdstartDataConfig:
    """Cold-start data: keep the selected thoughts long, rewrite the rest short, one SFT table per agent."""

    analysis: Path = option(Path("runs/analysis"), help="the analysis directory (chunks.jsonl + rollouts.jsonl)")
    out: Path = option(
        Path("runs/coldstart/sft"), help="where dialogues.jsonl, long/, short/, data.json and config.yaml go"
    )
    source: Source = option(
        "paper", help="which thoughts stay long: the paper's metric, the significance variant, or random (ablation)"
    )
    rewriter: Literal["testbed", "llm"] = option(
        "testbed", help="who rewrites the other thoughts short: the testbed's short teacher, or an LLM (llm_model)"
    )
    llm_model: str | None = option(None, help="chat model for rewriter llm")
    llm_base_url: str | None = option(None, help="OpenAI-compatible server of llm_model")
    llm_api_key: str = option("EMPTY", help="API key of llm_base_url", envvar="OPENAI_API_KEY", secret=True)
    retries: int = option(5, help="LLM rewriting attempts per run of thoughts")
    long_tokenizer: str | None = option(None, help="the long agent's tokenizer (default: the shipped reasoner's)")
    short_tokenizer: str | None = option(None, help="the short agent's tokenizer (default: the shipped base's)")
    alpha: float = option(0.05, help="level of the significance variant's test")
    seed: int = option(0, help="seed of the random source and the rewriter")

    def __post_init__(self) -> None:
        if not 0 <= self.alpha <= 1:
            raise ConfigError(f"alpha must be in [0, 1], got {self.alpha}", key="alpha")
        if self.retries < 1:
            raise ConfigError(f"retries must be >= 1, got {self.retries}", key="retries")
        if self.seed < 0:
            raise ConfigError(f"seed must be >= 0, got {self.seed}", key="seed")
        if self.rewriter == "llm" and not self.llm_model:
            raise ConfigError(
                "rewriter llm needs llm_model (and llm_base_url for a local OpenAI-compatible server)", key="llm_model"
            )
