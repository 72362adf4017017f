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


def check_question(question: object) -> object:
    """``question``, unchanged, unless it is a string that cannot be encoded as UTF-8.

    A lone surrogate ("\\ud800" in JSON, or an undecodable byte of argv, which Python keeps as
    U+DC80-U+DCFF) reaches a tokenizer as an opaque ``TextEncodeInput`` error, and a chat backend
    as a question that is answered and then cannot be written to JSON: say what is wrong before
    anything is generated. Non-strings pass through for the graph's own type check.
    """
    if not isinstance(question, str):
        return question
    try:
        question.encode("utf-8")
    except UnicodeEncodeError as e:
        code = ord(question[e.start])
        cause = (
            f"an undecodable byte 0x{code - 0xDC00:02X} (the input was not valid UTF-8)"
            if 0xDC80 <= code <= 0xDCFF
            else "a lone surrogate (half of a UTF-16 pair, e.g. a broken \\u escape)"
        )
        raise ValueError(
            f"question is not valid Unicode text: character {e.start} is U+{code:04X}, {cause}; "
            "fix the question's encoding"
        ) from None
    return question


def _checked_question(_previous: str, question: str) -> str:
    """The ``question`` channel's reducer: every question written to the graph is checked."""
    return check_question(question)  # type: ignore[return-value]


class ReasonerInput(TypedDict, total=False):
    # A reducer, not a plain field, so that the check runs on the input itself, before any node.
    question: Annotated[str, _checked_question]
    reference: str | None
    choices: str | None  # e.g. "ABCD": the answer is a letter (multiple choice)
    id: str  # optional: an episode id chosen by the caller


class ReasonerOutput(TypedDict, total=False):
    id: str
    question: Annotated[str, _checked_question]  # the same channel as the input's
    reference: str | None
    answer: str | None
    status: EpisodeStatus | None
    error: str | None
    turns: Annotated[list[Turn], append_turns]
    tokens: dict[str, int]


class ReasonerState(ReasonerInput, ReasonerOutput, total=False):
    """Everything the nodes share; the document is ``turns`` (no copy of token views is kept)."""
