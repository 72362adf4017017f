"""The Long⊗Short turn protocol: tags, system prompts and strict per-role parsers.

The long agent writes ``<think> … </think>``; the short agent writes ``<answer> … </rethink>``
(hand control back) or ``<answer> … </answer>`` (final, answer in ``\\boxed{}``). The parsers are
strict on purpose: a turn that nests or repeats tags, uses the partner's tags or never closes is
*malformed*, because an RL sample built from a sloppy turn teaches the sloppiness.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
ANSWER_OPEN = "<answer>"
ANSWER_CLOSE = "</answer>"
RETHINK_CLOSE = "</rethink>"
ALL_TAGS = (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE, RETHINK_CLOSE)

Role = Literal["long", "short"]
TurnKind = Literal["think", "rethink", "answer"]

#: Where each role must stop generating: the closing tags it may emit.
STOP_STRINGS: dict[str, tuple[str, ...]] = {
    "long": (THINK_CLOSE,),
    "short": (RETHINK_CLOSE, ANSWER_CLOSE),
}
#: The tag each role's turn opens with (used to prefill a repair attempt).
OPEN_TAG: dict[str, str] = {"long": THINK_OPEN, "short": ANSWER_OPEN}

SHARED_PROMPT = (
    "A user brings a problem to two assistants who solve it together in one shared transcript. "
    "The first assistant takes the hard steps and thinks them through carefully. The second "
    "assistant carries out the remaining routine steps briefly and precisely. If the second "
    "assistant finds the reasoning so far insufficient, or meets a hard step, it hands the turn "
    "back to the first assistant with </rethink> so that the first one thinks again."
)
LONG_ROLE_PROMPT = (
    "You are the first assistant. Write your reasoning for the next hard step inside "
    "<think> and </think>, then stop and let the second assistant continue."
)
SHORT_ROLE_PROMPT = (
    "You are the second assistant. Continue concisely inside <answer>. If you can finish, give "
    "the final answer as \\boxed{...} and close with </answer>. If the first assistant should "
    "think again, close with </rethink> instead."
)
SYSTEM_PROMPTS: dict[str, str] = {
    "long": f"{SHARED_PROMPT}\n\n{LONG_ROLE_PROMPT}",
    "short": f"{SHARED_PROMPT}\n\n{SHORT_ROLE_PROMPT}",
}


class ParsedTurn(BaseModel):
    """The meaning of one generated segment, or why it has none."""

    role: Role
    kind: TurnKind | None = None
    content: str = ""
    answer: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


_BOXED = re.compile(r"\\boxed\s*\{")
_BRACE = re.compile(r"[{}]")
#: "answer", then optionally "is" or ":", then the letter. The spaces after "is"/":" sit inside the
#: optional group: two adjacent ``\s*`` made rejecting a long run of spaces after "answer" quadratic.
_LETTER = re.compile(r"answer\s*(?:(?:is|:)\s*)?\(?\b([A-J])\b\)?", re.IGNORECASE)


def clean_text(text: str) -> str:
    """Make any decoded text JSON- and UTF-8-safe (lone surrogates become U+FFFD)."""
    return text.encode("utf-8", errors="surrogatepass").decode("utf-8", errors="replace")


def extract_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{…}`` with balanced braces, or None.

    One pass over the braces with a stack, so the work is linear in ``text``: scanning ahead from
    every ``\\boxed{`` instead made a long response full of unclosed ones quadratic (a 1 MB final
    turn did not finish in minutes). A brace pops the innermost open one; the box whose own
    brace is popped is closed there, and of the closed boxes the one opened last wins.
    """
    openers = [match.end() - 1 for match in _BOXED.finditer(text)]
    if not openers:
        return None
    boxes, last = set(openers), openers[-1]
    stack: list[int] = []
    best: tuple[int, int] | None = None  # (opening brace, closing brace) of the last-opened closed box
    for brace in _BRACE.finditer(text, openers[0]):  # braces before the first box cannot close one
        i = brace.start()
        if text[i] == "{":
            stack.append(i)
        elif stack:
            start = stack.pop()
            if start in boxes and (best is None or start > best[0]):
                best = (start, i)
                if start == last:  # no box opens later: this one is the answer
                    break
    return None if best is None else text[best[0] + 1 : best[1]].strip()


def extract_answer(text: str, *, choices: str | None = None) -> str | None:
    """The final answer: the last ``\\boxed{}``; for multiple choice (``choices="ABCD"``) a letter.

    A boxed letter such as ``\\boxed{(C)}`` is normalised to ``C`` when ``choices`` is given.
    """
    boxed = extract_boxed(text)
    if choices is None:
        return boxed
    if boxed is not None:
        letter = boxed.strip().strip("()").strip()
        letter = re.sub(r"^\\text\{(.*)\}$", r"\1", letter).strip()
        if len(letter) == 1 and letter.upper() in choices:
            return letter.upper()
    found = [m.group(1).upper() for m in _LETTER.finditer(text) if m.group(1).upper() in choices]
    return found[-1] if found else None


def _count(text: str, tag: str) -> int:
    return text.count(tag)


def parse_turn(role: Role, text: str, *, choices: str | None = None) -> ParsedTurn:
    """Parse one segment strictly for ``role``.

    Leading/trailing whitespace is allowed; anything else outside the tags, a partner's tag,
    a nested or repeated tag, or a missing close makes the turn malformed (``error`` says which).
    """
    body = text.strip()
    if role == "long":
        foreign = [t for t in (ANSWER_OPEN, ANSWER_CLOSE, RETHINK_CLOSE) if t in body]
        if foreign:
            return ParsedTurn(role=role, error=f"long turn uses the short agent's tag {foreign[0]}")
        if not body.startswith(THINK_OPEN):
            return ParsedTurn(role=role, error="long turn does not start with <think>")
        if not body.endswith(THINK_CLOSE):
            return ParsedTurn(role=role, error="long turn is not closed with </think>")
        if _count(body, THINK_OPEN) != 1 or _count(body, THINK_CLOSE) != 1:
            return ParsedTurn(role=role, error="long turn nests or repeats <think> tags")
        content = body[len(THINK_OPEN) : -len(THINK_CLOSE)].strip()
        return ParsedTurn(role=role, kind="think", content=content)
    foreign = [t for t in (THINK_OPEN, THINK_CLOSE) if t in body]
    if foreign:
        return ParsedTurn(role=role, error=f"short turn uses the long agent's tag {foreign[0]}")
    if not body.startswith(ANSWER_OPEN):
        return ParsedTurn(role=role, error="short turn does not start with <answer>")
    closes = _count(body, ANSWER_CLOSE) + _count(body, RETHINK_CLOSE)
    if _count(body, ANSWER_OPEN) != 1 or closes > 1:
        return ParsedTurn(role=role, error="short turn nests or repeats <answer> tags")
    if body.endswith(RETHINK_CLOSE):
        content = body[len(ANSWER_OPEN) : -len(RETHINK_CLOSE)].strip()
        return ParsedTurn(role=role, kind="rethink", content=content)
    if body.endswith(ANSWER_CLOSE):
        content = body[len(ANSWER_OPEN) : -len(ANSWER_CLOSE)].strip()
        # A final turn without \boxed{} is well-formed but unanswered: graders count it apart.
        answer = extract_answer(content, choices=choices)
        return ParsedTurn(role=role, kind="answer", content=content, answer=answer)
    return ParsedTurn(role=role, error="short turn is not closed with </answer> or </rethink>")


def truncate_at_stop(text: str, stops: tuple[str, ...]) -> tuple[str, bool]:
    """Cut ``text`` just after the first stop string; say whether one was found.

    Servers differ on whether they honour or echo stop sequences; this makes them agree.
    """
    best = None
    for stop in stops:
        i = text.find(stop)
        if i >= 0 and (best is None or i + len(stop) < best):
            best = i + len(stop)
    return (text, False) if best is None else (text[:best], True)
