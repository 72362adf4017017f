"""The reasoner's typed state: input, output (the Episode's fields) and the whole."""

from __future__ import annotations

from typing import Annotated

from typing_extensions import TypedDict

from longshort.trace import EpisodeStatus, Turn


def append_turns(left: list[Turn] | None, right: list[Turn] | None) -> list[Turn]:
    """Reducer of the growing document: append; ``None`` starts a new episode on the thread."""
    if right is None:
        return []
    return [*(left or []), *right]


class ReasonerInput(TypedDict, total=False):
    question: str
    reference: str | None
    choices: str | None  # e.g. "ABCD": the answer is a letter (multiple choice)
    id: str  # optional: an episode id chosen by the caller


class ReasonerOutput(TypedDict, total=False):
    id: str
    question: str
    reference: str | None
    answer: str | None
    status: EpisodeStatus | None
    error: str | None
    turns: Annotated[list[Turn], append_turns]
    tokens: dict[str, int]


class ReasonerState(ReasonerInput, ReasonerOutput, total=False):
    """Everything the nodes share; the document is ``turns`` (no copy of token views is kept)."""
