"""Summary rows of graded episodes: accuracy, tokens per agent, turns, well-formed rate.

One function serves the demo, the benchmark runner and the analysis, so every table in the
project is computed the same way.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel

from longshort.evals.grading import grade_answer
from longshort.trace import Episode


class SystemRow(BaseModel):
    system: str
    accuracy: float | None
    mean_tokens: float
    mean_tokens_long: float
    mean_tokens_short: float
    mean_turns: float
    well_formed: float
    n: int


def well_formed(episode: Episode) -> bool:
    """Every turn parsed and the episode ended on a final answer turn."""
    return episode.status == "answered" and all(t.error is None for t in episode.turns)


def summarize(system: str, episodes: Sequence[Episode], golds: Sequence[str] | None = None) -> SystemRow:
    n = len(episodes)
    if n == 0:
        raise ValueError(f"no episodes to summarize for {system!r}")
    accuracy = None
    if golds is not None:
        accuracy = sum(grade_answer(ep.answer, g).correct for ep, g in zip(episodes, golds, strict=True)) / n
    return SystemRow(
        system=system,
        accuracy=accuracy,
        mean_tokens=sum(ep.tokens.total for ep in episodes) / n,
        mean_tokens_long=sum(ep.tokens.long for ep in episodes) / n,
        mean_tokens_short=sum(ep.tokens.short for ep in episodes) / n,
        mean_turns=sum(len(ep.turns) for ep in episodes) / n,
        well_formed=sum(well_formed(ep) for ep in episodes) / n,
        n=n,
    )
