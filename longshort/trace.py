"""The episode trace: the one record that inference, evaluation and training all share.

A trace is token-exact for local backends: ``Turn.token_ids`` are the ids the agent generated,
so an episode can be replayed as an RL sample without re-tokenizing anything.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, Field, computed_field

from longshort.protocol import Role, TurnKind

if TYPE_CHECKING:
    from datasets import Dataset

EpisodeStatus = Literal["answered", "max_turns", "token_budget", "malformed", "backend_error"]
FinishReason = Literal["stop", "eos", "length", "error", "cancelled"]


class Turn(BaseModel):
    """One agent's segment of the shared document."""

    agent: Role
    text: str
    token_ids: list[int] = Field(default_factory=list)
    logprobs: list[float] | None = None
    num_tokens: int = Field(0, description="generated tokens; len(token_ids) when the backend gives ids")
    prompt_tokens: int = Field(0, description="length of the agent's view when it generated this turn")
    finish_reason: FinishReason = "stop"
    kind: TurnKind | None = Field(None, description="think / rethink / answer; None if malformed")
    error: str | None = Field(None, description="why the turn is malformed, or the backend error")
    attempts: int = Field(1, description="2 when a repair retry was needed")
    forced_tokens: int = Field(
        0,
        ge=0,
        description="how many leading token_ids were forced (prefilled, e.g. the opening tag on a repair), "
        "not sampled; their logprobs are 0.0 and a trainer masks them out",
    )
    wall_time: float = 0.0
    model_id: str = ""
    model_fingerprint: str | None = Field(None, description="tokenizer hash: equal ones share token ids")


class TokenCounts(BaseModel):
    long: int = 0
    short: int = 0
    total: int = 0


class Episode(BaseModel):
    """A whole Long⊗Short episode, serialisable to JSON lines and to a ``datasets`` table."""

    id: str
    question: str
    reference: str | None = None
    answer: str | None = None
    status: EpisodeStatus
    error: str | None = None
    turns: list[Turn] = Field(default_factory=list)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def tokens(self) -> TokenCounts:
        long = sum(t.num_tokens for t in self.turns if t.agent == "long")
        short = sum(t.num_tokens for t in self.turns if t.agent == "short")
        return TokenCounts(long=long, short=short, total=long + short)

    @property
    def document(self) -> str:
        """The shared transcript as text (what a chat backend sees)."""
        return document_text(self.turns)


def document_text(turns: Iterable[Turn]) -> str:
    """The shared document of ``turns`` as one text: the turns back to back."""
    return "".join(t.text for t in turns)


def write_jsonl(episodes: Iterable[Episode], path: str | Path, *, append: bool = False) -> int:
    """Write episodes one per line; flush each so an interrupted run loses nothing written."""
    n = 0
    with open(path, "a" if append else "w", encoding="utf-8") as f:
        for ep in episodes:
            f.write(ep.model_dump_json() + "\n")
            f.flush()
            n += 1
    return n


def read_jsonl(path: str | Path) -> Iterator[Episode]:
    """Read episodes back; a truncated last line (a killed writer) is skipped, not fatal."""
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            yield Episode.model_validate_json(line)
        except ValueError:
            if i == len(lines) - 1:
                return
            raise


def to_dataset(episodes: Iterable[Episode]) -> Dataset:
    """A ``datasets.Dataset`` with one row per episode (turns as a list of structs)."""
    from datasets import Dataset

    rows = [json.loads(ep.model_dump_json()) for ep in episodes]
    return Dataset.from_list(rows)


def from_dataset(dataset: Dataset) -> list[Episode]:
    return [Episode.model_validate(row) for row in dataset]
