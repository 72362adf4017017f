"""``EvalConfig``: everything that decides what ``longshort eval`` computes, and where (see runner.py).

longshort eval --benchmarks math500,aime24 --systems long-only,short-only,longshort --out runs/eval
longshort eval --config runs/eval/config.yaml                                # the same run (it resumes)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from longshort.config import ConfigError, option
from longshort.limits import MAX_TOKENS_PER_TURN, MAX_TOTAL_TOKENS, MAX_TURNS

__all__ = ["DEFAULT_BASELINE", "SYSTEMS", "EvalConfig", "server_of"]

SYSTEMS = ("longshort", "long-only", "short-only")
DEFAULT_BASELINE = "long-only"
LOCAL_BACKENDS = ("hf", "hf-process")


@dataclass
class EvalConfig:
    """Evaluate systems on benchmarks: resumable (re-run the same command), Table 2 style results."""

    benchmarks: list[str] = option(
        help="benchmarks (comma-separated): math500, aime24, aime25, amc23, gpqa, testbed (its held-out test "
        "split), testbed-train (its train split, e.g. to sample for retraining)",
        aliases=("--benchmark",),
    )
    systems: list[str] = option(
        default_factory=lambda: list(SYSTEMS),
        help="systems (comma-separated): longshort, long-only, short-only",
        aliases=("--system",),
    )
    long_model: str | None = option(
        None,
        help="the long model: a path, hub id or served name, or a shipped pair's name (longshort-sft, longshort-rl: "
        "both agents); default for hf backends: the shipped testbed reasoner",
    )
    short_model: str | None = option(None, help="the short model (default for hf backends: the shipped testbed base)")
    out: Path = option(
        Path("runs/eval"),
        help="items.jsonl, run.json, config.yaml, results.{json,md,png} go here (not results/); re-running with "
        "the same --out resumes: finished items are kept, items that ended in backend_error are retried",
    )
    backend: Literal["hf", "hf-process", "openai", "vllm"] = option("hf", help="generation backend")
    base_url: str | None = option(None, help="OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1")
    api_key: str | None = option(None, help="API key for backend openai", envvar="OPENAI_API_KEY", secret=True)
    timeout: float = option(
        60.0,
        help="per-attempt timeout for backend openai (s); a request gets 3 attempts and fails after 3 x this "
        "in all (180 s by default) with an error naming the deadline and the server",
    )
    device: str | None = option(None, help="for backend hf: cpu or cuda")
    data: Path | None = option(None, help="a local file for a single benchmark (else the Hub)")
    limit: int | None = option(None, help="the first N problems of each benchmark")
    offset: int = option(
        0, help="skip the first N problems of each benchmark (with --limit, a slice: shards of one run in parallel)"
    )
    k: int = option(1, help="samples per problem (Pass@1 = mean over them)", aliases=("-k",))
    temperature: float = option(0.0, help="0 = greedy; k > 1 needs > 0")
    max_turns: int = option(MAX_TURNS, help="Long⊗Short: turns per episode")
    max_tokens_per_turn: int = option(
        MAX_TOKENS_PER_TURN, help="Long⊗Short: the per-turn cap (a turn cut by it ends as turn_cap)"
    )
    max_total_tokens: int = option(
        MAX_TOTAL_TOKENS, help="tokens per episode, every attempt counted; also the solo systems' one-turn budget"
    )
    batch_size: int = option(32, help="problems per batch sent to the backend")
    store: Path | None = option(
        None,
        help="the trace store (SQLite) each episode is appended to, whole; default OUT/traces.sqlite",
    )
    baseline: str | None = option(None, help="the AES reference system (default: long-only if it runs)")
    progress: bool = option(True, help="show a progress bar")

    def __post_init__(self) -> None:
        if self.baseline is None and DEFAULT_BASELINE in self.systems:
            self.baseline = DEFAULT_BASELINE
        if self._names_a_shipped_pair():
            pass  # `--long-model longshort-rl`: load_agents resolves both of its agents
        elif self.long_model is None or self.short_model is None:
            if self.backend not in LOCAL_BACKENDS:
                raise ConfigError(
                    "--backend openai/vllm needs --long-model and --short-model (served names or paths)",
                    key="long_model" if self.long_model is None else "short_model",
                )
            from longshort.shipped import default_model

            self.long_model = self.long_model or str(default_model("long"))
            self.short_model = self.short_model or str(default_model("short"))
        self.validate()

    def _names_a_shipped_pair(self) -> bool:
        if self.long_model is None or self.short_model is not None or self.backend not in LOCAL_BACKENDS:
            return False
        from longshort.shipped import pair_named

        return pair_named(self.long_model) is not None

    def validate(self) -> None:
        """Reject requests that would silently compute something other than what was asked."""
        bad = [s for s in self.systems if s not in SYSTEMS]
        if bad or not self.systems:
            raise ConfigError(f"unknown system(s) {bad}; choose from {', '.join(SYSTEMS)}", key="systems")
        if not self.benchmarks:
            raise ConfigError("no benchmark given (--benchmarks math500,aime24)", key="benchmarks")
        if len(set(self.systems)) != len(self.systems) or len(set(self.benchmarks)) != len(self.benchmarks):
            raise ConfigError("a benchmark or system is listed twice", key="benchmarks")
        if self.data is not None and len(self.benchmarks) != 1:
            raise ConfigError("--data names one file, so it needs exactly one --benchmark", key="data")
        if self.k < 1:
            raise ConfigError(f"-k must be >= 1, got {self.k}", key="k")
        if self.k > 1 and self.temperature <= 0:
            raise ConfigError(
                f"-k {self.k} samples with --temperature 0 would be {self.k} identical copies; "
                "set --temperature > 0 (e.g. 0.6)",
                key="temperature",
            )
        if self.temperature < 0:
            raise ConfigError(f"temperature must be >= 0, got {self.temperature}", key="temperature")
        if self.baseline is not None and self.baseline not in self.systems:
            raise ConfigError(
                f"--baseline {self.baseline!r} is not among --systems {','.join(self.systems)}", key="baseline"
            )
        for name in ("batch_size", "max_turns", "max_tokens_per_turn", "max_total_tokens"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}", key=name)
        if self.limit is not None and self.limit < 0:
            raise ConfigError(f"limit must be >= 0, got {self.limit}", key="limit")
        if self.offset < 0:
            raise ConfigError(f"offset must be >= 0, got {self.offset}", key="offset")
        if self.timeout <= 0:
            raise ConfigError(f"timeout must be > 0, got {self.timeout}", key="timeout")

    def fingerprint(self, hashes: dict[str, str]) -> dict:
        """What must match for two runs to share an ``items.jsonl`` (systems and limit may differ).

        The server is part of it: two servers behind the same model names may serve different weights.
        """
        return {
            "long_model": self.long_model,
            "short_model": self.short_model,
            "backend": self.backend,
            "base_url": server_of(self.backend, self.base_url),
            "k": self.k,
            "temperature": self.temperature,
            "max_turns": self.max_turns,
            "max_tokens_per_turn": self.max_tokens_per_turn,
            "max_total_tokens": self.max_total_tokens,
            "benchmarks": hashes,
        }


def server_of(backend: str, base_url: str | None) -> str | None:
    """The server a run's items come from: the openai backend's URL without a trailing ``/``.

    ``None`` for the local backends, which ignore ``--base-url``: changing it there changes nothing.
    """
    return base_url.rstrip("/") if backend == "openai" and base_url else None
