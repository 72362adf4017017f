"""Cold-start compression (paper §5): turn a scored long CoT into a Long⊗Short dialogue.

The thought analysis marks each thought y1..yn as *selected* (worth the long model's tokens) or
not. The cold-start data keeps the selected thoughts verbatim as long turns and replaces each run
of consecutive compressed thoughts by ONE concise short turn, written by a rewriter from the
run's type labels; the result {l1, s1, l2, s2, …} is what the SFT step trains both agents on.

The paper's rewriter is an instruction LLM. Its contract here (``COMPLETION_PROMPT``)::

    in:  {"question": "...", "chunks": [{"index": 1, "kind": "kept", "text": "..."},
                                        {"index": 2, "kind": "compressed", "type": "verification"}, ...]}
    out: {"completed steps": [{"run": 1, "text": "..."}, {"run": 2, "text": "..."}]}

Compressed chunks carry only their type; consecutive compressed chunks form one run, numbered
1..R in order, and the reply holds exactly one non-empty, tag-free text per run
(``validate_completion``). ``LLMRewriter`` feeds a validation error back and retries, as the
chunker does; any object with ``rewrite`` serves (``longshort.testbed.rewriter`` writes the testbed's
short-teacher phrasing without an LLM).

Drop-and-count policy: unlike chunking, which falls back to one thought per step, compression
never falls back. A rewriter that loses a step, a turn that breaks the protocol, or a final answer
that does not grade as the gold one would teach the agents exactly that, so ``build_dialogue``
raises ``CompressionError`` (with a ``reason``) and ``compress_all`` drops the problem and counts
the reason.

Departures, all documented where they happen: the long model always opens a dialogue, so a
selection whose first thought is compressed gets y1 kept (the paper's selection rule keeps y1
anyway); a dialogue whose last segment is long gets a closing short turn holding only
``\\boxed{answer}``; the last short turn always ends with the gold answer boxed, appended when the
rewriter did not end its text with a boxed answer.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal, Protocol, get_args

from pydantic import BaseModel

from longshort.errors import LongShortError
from longshort.evals.grading import grade_answer
from longshort.protocol import (
    ALL_TAGS,
    ANSWER_CLOSE,
    ANSWER_OPEN,
    RETHINK_CLOSE,
    THINK_CLOSE,
    THINK_OPEN,
    Role,
    parse_turn,
)
from longshort.training._llm import ChatStep
from longshort.training.analysis.chunking import ChunkingError, _parse_json_object
from longshort.training.analysis.rollouts import AnalysisProblem

__all__ = [
    "COMPLETION_PROMPT",
    "DROP_REASONS",
    "CompressionError",
    "Dialogue",
    "DropReason",
    "LLMRewriter",
    "Rewriter",
    "Segment",
    "build_dialogue",
    "completion_payload",
    "compress_all",
    "runs_of",
    "validate_completion",
]

logger = logging.getLogger(__name__)

DropReason = Literal["rewriter_failed", "parse_failed", "wrong_answer", "no_answer", "no_selection"]
#: Every reason ``compress_all`` counts (all present in its counts, zero or not).
DROP_REASONS: tuple[str, ...] = get_args(DropReason)


class CompressionError(LongShortError):
    """A problem cannot become a dialogue; ``reason`` is what ``compress_all`` counts it under."""

    def __init__(self, message: str, *, reason: DropReason = "rewriter_failed", problem_id: str | None = None) -> None:
        super().__init__(message if problem_id is None else f"{problem_id}: {message}")
        self.reason = reason
        self.problem_id = problem_id


# --------------------------------------------------------------------------- models


class Segment(BaseModel):
    """One turn's content: kept thoughts verbatim (long) or one rewritten run (short)."""

    role: Role
    thoughts: list[int]  # 1-based indices it covers; empty for the closing short turn of a long ending
    text: str


class Dialogue(BaseModel):
    """A cold-start example: the segments and their protocol-tagged turns, one to one."""

    problem_id: str
    question: str
    answer: str
    segments: list[Segment]
    turns: list[tuple[Role, str]]
    kept: list[int]  # 1-based indices of the thoughts kept verbatim (y1 always among them)
    scores: list[float] | None = None
    rewriter: str


def runs_of(selected: Sequence[bool]) -> list[tuple[Role, list[int]]]:
    """Maximal runs of equal flags as (role, 1-based indices); selected thoughts are long."""
    runs: list[tuple[Role, list[int]]] = []
    for i, flag in enumerate(selected, 1):
        role: Role = "long" if flag else "short"
        if runs and runs[-1][0] == role:
            runs[-1][1].append(i)
        else:
            runs.append((role, [i]))
    return runs


# --------------------------------------------------------------------------- the completion contract

_RUNS_KEYS = ("completed steps", "completed_steps")


def _entry_run(k: int, entry: Any) -> int:
    if not isinstance(entry, dict):
        raise CompressionError(f"entry {k} must be an object with 'run' and 'text', got {type(entry).__name__}")
    if "run" not in entry:
        raise CompressionError(f"entry {k} is missing 'run'")
    run = entry["run"]
    if isinstance(run, bool) or not isinstance(run, int):
        raise CompressionError(f"entry {k}: 'run' must be an integer run number, got {run!r}")
    return run


def validate_completion(raw: str | dict[str, Any], n_runs: int) -> list[str]:
    """Parse and check a completion against the contract; raise ``CompressionError`` if it breaks it.

    ``raw`` is the LLM's reply (JSON, possibly fenced or wrapped in prose) or a parsed dict
    ``{"completed steps": [{"run": r, "text": "…"}, …]}``. Runs 1..``n_runs`` must each appear once,
    with a non-empty text free of protocol tags. Returns the texts (stripped) in run order.
    """
    if n_runs < 0:
        raise ValueError(f"n_runs must be >= 0, got {n_runs}")
    if isinstance(raw, str):
        try:
            parsed: Any = _parse_json_object(raw)
        except ChunkingError as exc:
            raise CompressionError(str(exc)) from None
    else:
        parsed = raw
    if not isinstance(parsed, dict):
        raise CompressionError(f"expected a JSON object, got {type(parsed).__name__}")
    key = next((k for k in _RUNS_KEYS if k in parsed), None)
    if key is None:
        raise CompressionError(f"missing 'completed steps'; the object has keys {sorted(map(str, parsed))}")
    entries = parsed[key]
    if not isinstance(entries, list):
        raise CompressionError(f"'completed steps' must be a list, got {type(entries).__name__}")

    texts: dict[int, str] = {}
    for k, entry in enumerate(entries, 1):
        run = _entry_run(k, entry)
        if not 1 <= run <= n_runs:
            raise CompressionError(f"run {run} is extra: there are only {n_runs} runs (1..{n_runs})")
        if run in texts:
            raise CompressionError(f"run {run} appears twice")
        text = entry.get("text")
        if not isinstance(text, str) or not text.strip():
            raise CompressionError(f"run {run} has an empty text, got {text!r}")
        tags = [t for t in ALL_TAGS if t in text]
        if tags:
            raise CompressionError(f"run {run} contains the protocol tag {tags[0]}; write plain text")
        texts[run] = text.strip()
    missing = [r for r in range(1, n_runs + 1) if r not in texts]
    if missing:
        raise CompressionError(f"run {missing[0]} is missing: expected one entry for each run 1..{n_runs}")
    return [texts[r] for r in range(1, n_runs + 1)]


# --------------------------------------------------------------------------- rewriters


class Rewriter(Protocol):
    """Writes one concise short text per run of compressed thoughts."""

    name: str

    def rewrite(
        self, problem: AnalysisProblem, kept: list[tuple[int, str]], compressed: list[list[tuple[int, str]]]
    ) -> list[str]:
        """``kept``: (index, text) of the kept thoughts; ``compressed``: the runs, in order. One text per run."""
        ...


COMPLETION_PROMPT = """Below is a problem and a step-by-step solution cut into numbered chunks. The "kept" \
chunks are shown in full. The "compressed" chunks were removed and only their type is given. Consecutive \
compressed chunks form one run; there are {n_runs} runs, in order: {runs}.

For each run, write the steps it stood for as ONE concise text: the calculations and conclusions only, \
one short line per step, without re-checks or restating the problem. Each text must lead from the kept \
chunk before it to the kept chunk after it. If the solution ends with a run, that run finishes the \
solution and ends with the final answer in \\boxed{{}}. Never write the tags <think>, </think>, <answer>, \
</answer> or </rethink>.

Return ONLY a JSON object in this format, with exactly one entry per run and no other text:
{{"completed steps": [{{"run": 1, "text": "..."}}, {{"run": 2, "text": "..."}}]}}

Input:
{payload}"""

RETRY_PROMPT = (
    "Those completed steps are invalid: {error}. There are {n_runs} runs. "
    "Return ONLY the corrected JSON object, with no other text."
)


def _span(run: Sequence[tuple[int, str]]) -> str:
    first, last = run[0][0], run[-1][0]
    return f"chunk {first}" if first == last else f"chunks {first}-{last}"


def completion_payload(
    problem: AnalysisProblem, kept: list[tuple[int, str]], compressed: list[list[tuple[int, str]]]
) -> dict[str, Any]:
    """The contract's input object: every chunk in order, compressed ones by type only."""
    chunks: list[dict[str, Any]] = [{"index": i, "kind": "kept", "text": text} for i, text in kept]
    chunks += [{"index": i, "kind": "compressed", "type": problem.types[i - 1]} for run in compressed for i, _ in run]
    return {"question": problem.question, "chunks": sorted(chunks, key=lambda c: c["index"])}


class LLMRewriter(ChatStep):
    """The paper's rewriter: ask a chat model for the completed steps, feed errors back, retry.

    Any LangChain ``BaseChatModel`` works. An exception from the model counts as a failed attempt;
    after ``max_retries`` failed attempts ``CompressionError`` is raised (no fallback: see the
    module docstring). No call is made when there is no compressed run.
    """

    name = "llm"

    def rewrite(
        self, problem: AnalysisProblem, kept: list[tuple[int, str]], compressed: list[list[tuple[int, str]]]
    ) -> list[str]:
        from longshort.training._llm import ask_until_valid

        n_runs = len(compressed)
        if not n_runs:
            return []
        runs = "; ".join(f"run {r}: {_span(run)}" for r, run in enumerate(compressed, 1))
        payload = json.dumps(completion_payload(problem, kept, compressed), ensure_ascii=False, indent=1)
        texts, _, error = ask_until_valid(
            self.chat_model,
            COMPLETION_PROMPT.format(n_runs=n_runs, runs=runs, payload=payload),
            lambda text: validate_completion(text, n_runs),
            lambda error: RETRY_PROMPT.format(error=error, n_runs=n_runs),
            max_retries=self.max_retries,
            invalid=CompressionError,
        )
        if texts is not None:
            return texts
        raise CompressionError(
            f"no valid completion after {self.max_retries} attempts; last error: {error}",
            reason="rewriter_failed",
            problem_id=problem.problem_id,
        )


# --------------------------------------------------------------------------- dialogues


def _ends_with_boxed(text: str) -> bool:
    """Whether ``text`` ends with a ``\\boxed{…}`` (trailing ``.``/``$``/spaces allowed)."""
    at = text.rfind("\\boxed")
    if at < 0:
        return False
    depth, opened = 0, False
    for k in range(at, len(text)):
        if text[k] == "{":
            depth, opened = depth + 1, True
        elif text[k] == "}" and opened:
            depth -= 1
            if depth == 0:
                return not text[k + 1 :].strip(" \t\n.$")
    return False


def _turn(segment: Segment, final: bool) -> str:
    if segment.role == "long":
        return f"{THINK_OPEN}\n{segment.text}\n{THINK_CLOSE}"
    return f"{ANSWER_OPEN} {segment.text} {ANSWER_CLOSE if final else RETHINK_CLOSE}"


def _check_turns(turns: list[tuple[Role, str]], gold: str) -> None:
    """Every turn parses for its role, roles alternate from long, and the final answer is the gold one."""
    for k, (role, text) in enumerate(turns):
        expected: Role = "long" if k % 2 == 0 else "short"
        if role != expected:
            raise CompressionError(f"turn {k + 1} is {role}, expected {expected}", reason="parse_failed")
        parsed = parse_turn(role, text)
        if not parsed.ok:
            raise CompressionError(f"turn {k + 1} is malformed: {parsed.error}", reason="parse_failed")
        final = k == len(turns) - 1
        if role == "short" and parsed.kind != ("answer" if final else "rethink"):
            where = "the last turn" if final else f"turn {k + 1}"
            raise CompressionError(f"{where} is a {parsed.kind} turn", reason="parse_failed")
    if not turns or turns[-1][0] != "short":
        raise CompressionError("the dialogue does not end with a short turn", reason="parse_failed")
    answer = parse_turn("short", turns[-1][1]).answer
    if answer is None:
        raise CompressionError("the last turn has no boxed answer", reason="no_answer")
    verdict = grade_answer(answer, gold)
    if not verdict.correct:
        raise CompressionError(f"final answer {answer!r} is not {gold!r} ({verdict.reason})", reason="wrong_answer")


def build_dialogue(
    problem: AnalysisProblem,
    selected: Sequence[bool],
    rewriter: Rewriter,
    *,
    scores: Sequence[float] | None = None,
) -> Dialogue:
    """Keep the selected thoughts verbatim, rewrite each compressed run into one short turn, check it all.

    The long model always opens the dialogue, so a compressed first thought is kept anyway (the
    paper's selection rule always keeps y1; this only guards other selections). When the last
    segment is long, a closing short turn holding only ``\\boxed{answer}`` is appended; the last
    short turn always ends with the gold answer boxed (appended unless the rewriter's text already
    ends with a boxed answer, which must then grade as the gold one). Raises ``CompressionError``
    when the problem has no answer, the rewriter fails or returns the wrong number of texts, a turn
    breaks the protocol, or the final answer is wrong; ``ValueError`` for inconsistent inputs.
    """
    n = len(problem.thoughts)
    if not n:
        raise ValueError(f"problem {problem.problem_id} has no thoughts")
    if len(selected) != n:
        raise ValueError(f"problem {problem.problem_id}: {len(selected)} selection flags for {n} thoughts")
    if scores is not None and len(scores) != n:
        raise ValueError(f"problem {problem.problem_id}: {len(scores)} scores for {n} thoughts")
    if not problem.answer or not problem.answer.strip():
        raise CompressionError("no gold answer", reason="no_answer", problem_id=problem.problem_id)
    boxed = f"\\boxed{{{problem.answer}}}"

    flags = [True, *(bool(s) for s in selected[1:])]  # the long model opens every dialogue
    runs = runs_of(flags)
    kept = [i for i, flag in enumerate(flags, 1) if flag]
    thought = problem.thoughts
    compressed = [[(i, thought[i - 1]) for i in indices] for role, indices in runs if role == "short"]
    texts = rewriter.rewrite(problem, [(i, thought[i - 1]) for i in kept], compressed) if compressed else []
    if len(texts) != len(compressed):
        raise CompressionError(
            f"rewriter {rewriter.name!r} returned {len(texts)} texts for {len(compressed)} runs",
            problem_id=problem.problem_id,
        )
    if any(not t.strip() for t in texts):
        raise CompressionError(f"rewriter {rewriter.name!r} returned an empty text", problem_id=problem.problem_id)

    rewritten = iter(texts)
    segments = [
        Segment(
            role=role,
            thoughts=indices,
            text="\n\n".join(thought[i - 1] for i in indices) if role == "long" else next(rewritten).strip(),
        )
        for role, indices in runs
    ]
    last = segments[-1]
    if last.role == "long":
        segments.append(Segment(role="short", thoughts=[], text=boxed))
    elif not _ends_with_boxed(last.text):
        last.text = f"{last.text}\n{boxed}"
    turns: list[tuple[Role, str]] = [(s.role, _turn(s, k == len(segments) - 1)) for k, s in enumerate(segments)]
    try:
        _check_turns(turns, problem.answer)
    except CompressionError as exc:
        raise CompressionError(str(exc), reason=exc.reason, problem_id=problem.problem_id) from None
    return Dialogue(
        problem_id=problem.problem_id,
        question=problem.question,
        answer=problem.answer,
        segments=segments,
        turns=turns,
        kept=kept,
        scores=None if scores is None else [float(s) for s in scores],
        rewriter=rewriter.name,
    )


def compress_all(
    problems: Iterable[AnalysisProblem],
    selections: Mapping[str, Sequence[bool]],
    rewriter: Rewriter,
    *,
    scores: Mapping[str, Sequence[float]] | None = None,
) -> tuple[list[Dialogue], dict[str, int]]:
    """Build every problem's dialogue; drop and count (by ``DROP_REASONS``) the ones that fail.

    A problem without a selection (the analysis found it unusable) counts as ``no_selection``.
    Each drop is logged at WARNING with its message.
    """
    dialogues: list[Dialogue] = []
    dropped = dict.fromkeys(DROP_REASONS, 0)
    for problem in problems:
        selected = selections.get(problem.problem_id)
        try:
            if selected is None:
                raise CompressionError("no selection", reason="no_selection", problem_id=problem.problem_id)
            score = None if scores is None else scores.get(problem.problem_id)
            dialogues.append(build_dialogue(problem, selected, rewriter, scores=score))
        except CompressionError as exc:
            dropped[exc.reason] += 1
            logger.warning("dropped %s (%s): %s", problem.problem_id, exc.reason, exc)
    return dialogues, dropped
