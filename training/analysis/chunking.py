"""Thought chunking (paper §1): cut a long chain of thought into thoughts y1..yn with type labels.

Everything downstream works on thoughts, not tokens: the Monte Carlo rollouts continue each prefix
y1..yi, the metric scores each yi, and the cold-start data keeps or compresses whole thoughts. So a
long CoT is first split into *steps* on blank lines, then consecutive steps are grouped into
thoughts and labelled with a broad type ("problem understanding", "verification", …).

The paper asks an instruction LLM (Qwen2.5-72B-Instruct, temperature 0.1) for the grouping, as JSON::

    {"block 1": {"start": 1, "end": 3, "block type": "problem understanding"}, "block 2": {...}}

(1-based, inclusive), and retries up to 5 times when the blocks are malformed. Here:

- ``validate_blocks`` enforces that contract (blocks start at step 1, are contiguous, cover every
  step, carry a type) and says precisely what is wrong, so the message can be fed back to the LLM;
- ``LLMGrouper`` wraps any LangChain chat model with that retry loop. After the last failed attempt
  (bad JSON, bad blocks, or the server itself failing) it falls back to one thought per step and
  records why in ``fallback_reason``: a data-building run over thousands of CoTs never crashes on
  one bad reply, and the fallbacks can be counted afterwards;
- ``RuleGrouper`` is the offline default (no LLM): a step opening with a self-check cue ("Wait",
  "Let me check", …) joins the previous thought; types come from keyword rules. It departs from
  the paper, which only uses the LLM;
- ``StepGrouper`` keeps one thought per step, for text whose paragraphs already are thoughts.

``chunk_response`` runs split + group; ``thoughts_table`` flattens results to one row per thought.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel

from longshort.errors import LongShortError
from longshort.protocol import THINK_CLOSE, THINK_OPEN
from longshort.training._llm import ChatStep

if TYPE_CHECKING:
    import datasets

__all__ = [
    "CONTINUATION_CUES",
    "GROUPING_PROMPT",
    "NEW_THOUGHT_CUES",
    "THOUGHT_COLUMNS",
    "TYPE_RULES",
    "Block",
    "ChunkedCoT",
    "ChunkingError",
    "GroupResult",
    "Grouper",
    "LLMGrouper",
    "RuleGrouper",
    "StepGrouper",
    "chunk_response",
    "format_steps",
    "split_steps",
    "thoughts_table",
    "validate_blocks",
]


class ChunkingError(LongShortError):
    """A response could not be chunked, or a grouping breaks the block contract (message says how)."""


# --------------------------------------------------------------------------- steps

_BLANK_LINE = re.compile(r"\n\s*\n")


def split_steps(response: str) -> list[str]:
    """Split a long CoT into steps on blank lines; only the first ``<think>`` block if there is one.

    A missing ``<think>`` before ``</think>`` (chat templates often prefill it) or a missing
    ``</think>`` after ``<think>`` (a truncated generation) still selects the reasoning part.
    """
    text = response
    open_at = text.find(THINK_OPEN)
    if open_at >= 0:
        text = text[open_at + len(THINK_OPEN) :]
    close_at = text.find(THINK_CLOSE)
    if close_at >= 0:
        text = text[:close_at]
    return [step for step in (part.strip() for part in _BLANK_LINE.split(text)) if step]


# --------------------------------------------------------------------------- models


class Block(BaseModel):
    """Steps ``start``..``end`` (1-based, inclusive) form one thought of type ``type``."""

    start: int
    end: int
    type: str


class GroupResult(BaseModel):
    """What a grouper returns: the blocks, how many LLM calls it took, and why it fell back (if it did)."""

    blocks: list[Block]
    attempts: int = 0
    fallback_reason: str | None = None


class ChunkedCoT(BaseModel):
    """One long CoT cut into steps and grouped into typed thoughts."""

    question: str
    answer: str | None
    steps: list[str]
    blocks: list[Block]
    grouper: str
    attempts: int = 0
    fallback_reason: str | None = None

    @property
    def thoughts(self) -> list[str]:
        """The text of each thought: its steps joined by blank lines."""
        return ["\n\n".join(self.steps[b.start - 1 : b.end]) for b in self.blocks]

    @property
    def thought_types(self) -> list[str]:
        return [b.type for b in self.blocks]


# --------------------------------------------------------------------------- the block contract

_BLOCK_KEY = re.compile(r"^\s*block[\s_]*(\d+)\s*$", re.IGNORECASE)
_TYPE_KEYS = ("block type", "block_type", "type")


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise ChunkingError(f"duplicate key {key!r} in the JSON")
        seen[key] = value
    return seen


def _parse_json_object(raw: str) -> dict[str, Any]:
    """The outermost ``{…}`` in ``raw`` (tolerates code fences and prose around it)."""
    first, last = raw.find("{"), raw.rfind("}")
    if first < 0 or last < first:
        raise ChunkingError("no JSON object found in the reply; return only the JSON object")
    try:
        parsed = json.loads(raw[first : last + 1], object_pairs_hook=_no_duplicate_keys)
    except json.JSONDecodeError as exc:
        raise ChunkingError(f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    return parsed


def _int_field(name: str, block: dict[str, Any], key: str) -> int:
    if key not in block:
        raise ChunkingError(f"{name} is missing {key!r}")
    value = block[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise ChunkingError(f"{name}: {key!r} must be an integer step number, got {value!r}")
    return value


def validate_blocks(raw: str | dict[str, Any], n_steps: int) -> list[Block]:
    """Parse and check a grouping against the paper's contract; raise ``ChunkingError`` if it breaks it.

    ``raw`` is the LLM's reply (JSON, possibly fenced or wrapped in prose) or an already parsed dict
    ``{"block 1": {"start": i, "end": j, "block type": "…"}, …}``. Blocks are taken in the order of
    their numbers and must start at step 1, follow each other without gap or overlap, and end at
    step ``n_steps``; every type must be a non-empty string.
    """
    if n_steps < 1:
        raise ChunkingError(f"there are no steps to group (n_steps={n_steps})")
    parsed = _parse_json_object(raw) if isinstance(raw, str) else raw
    if not isinstance(parsed, dict):
        raise ChunkingError(f"expected a JSON object of blocks, got {type(parsed).__name__}")
    if not parsed:
        raise ChunkingError("no blocks: expected {'block 1': {...}, ...}")

    numbered: dict[int, Any] = {}
    for key, value in parsed.items():
        match = _BLOCK_KEY.match(str(key))
        if match is None:
            raise ChunkingError(f"unexpected key {key!r}: keys must be 'block 1', 'block 2', …")
        number = int(match.group(1))
        if number in numbered:
            raise ChunkingError(f"block {number} appears twice")
        numbered[number] = value

    blocks: list[Block] = []
    previous: tuple[str, int] | None = None  # (name, end) of the block before
    for number in sorted(numbered):
        name, block = f"block {number}", numbered[number]
        if not isinstance(block, dict):
            raise ChunkingError(
                f"{name} must be an object with 'start', 'end' and 'block type', got {type(block).__name__}"
            )
        start, end = _int_field(name, block, "start"), _int_field(name, block, "end")
        type_key = next((k for k in _TYPE_KEYS if k in block), None)
        if type_key is None:
            raise ChunkingError(f"{name} is missing 'block type'")
        kind = block[type_key]
        if not isinstance(kind, str) or not kind.strip():
            raise ChunkingError(f"{name}: 'block type' must be a non-empty string, got {kind!r}")
        if start > end:
            raise ChunkingError(f"{name} starts at {start} after it ends at {end}")
        if previous is None:
            if start != 1:
                raise ChunkingError(f"{name} starts at {start} but the first block must start at step 1")
        elif start != previous[1] + 1:
            gap = "leaving steps uncovered" if start > previous[1] + 1 else "overlapping it"
            raise ChunkingError(
                f"{name} starts at {start} but {previous[0]} ended at {previous[1]} ({gap}); "
                f"it must start at {previous[1] + 1}"
            )
        if end > n_steps:
            raise ChunkingError(f"{name} ends at {end} but there are only {n_steps} steps")
        blocks.append(Block(start=start, end=end, type=kind.strip()))
        previous = (name, end)

    assert previous is not None
    if previous[1] != n_steps:
        raise ChunkingError(
            f"the last block ({previous[0]}) ends at {previous[1]} but there are {n_steps} steps; "
            f"every step must be in a block"
        )
    return blocks


def _as_contract(blocks: Sequence[Block]) -> dict[str, dict[str, Any]]:
    return {f"block {i}": {"start": b.start, "end": b.end, "block type": b.type} for i, b in enumerate(blocks, 1)}


# --------------------------------------------------------------------------- groupers


class Grouper(Protocol):
    """Groups consecutive steps into typed thoughts."""

    name: str

    def group(self, steps: list[str]) -> GroupResult: ...


def _require_steps(steps: Sequence[str]) -> None:
    if not steps:
        raise ChunkingError("there are no steps to group")


class StepGrouper:
    """One thought per step, typed ``"step"``: for text whose paragraphs already are thoughts."""

    name = "step"

    def group(self, steps: list[str]) -> GroupResult:
        _require_steps(steps)
        return GroupResult(blocks=[Block(start=i, end=i, type="step") for i in range(1, len(steps) + 1)])


#: A step opening with one of these continues the previous thought (self-checks, second looks).
CONTINUATION_CUES: tuple[str, ...] = (
    r"but wait",
    r"wait",
    r"hmm+",
    r"hold on",
    r"actually",
    r"alternatively",
    r"let me (?:double[- ]?)?check",
    r"let me verify",
    r"let's (?:double[- ]?)?check",
    r"let's verify",
    r"double[- ]?check",
    r"check:",
)
#: A step opening with one of these starts a new thought. Continuation cues are tried first, so
#: "Let me check" continues while "Let me compute" starts a new thought.
NEW_THOUGHT_CUES: tuple[str, ...] = (
    r"first(?:ly)?",
    r"next",
    r"now",
    r"then",
    r"so",
    r"therefore",
    r"thus",
    r"finally",
    r"let me",
    r"let's",
    r"step",
)
#: (type, pattern) tried in order on a thought's text; the first thought is "problem understanding"
#: unless it is already a conclusion, and a thought no rule matches is a "calculation".
TYPE_RULES: tuple[tuple[str, str], ...] = (
    ("conclusion", r"\\boxed|final answer|^\W*(?:therefore|thus|hence)\b"),
    ("verification", r"\b(?:check|verif(?:y|ies|ied|ying|ication))"),
    ("reflection", r"\b(?:wait|hmm+|alternatively|actually)\b"),
)


def _opening(cues: Sequence[str]) -> re.Pattern[str]:
    # Leading markdown (bullets, bold, quotes) is skipped; the cue must end at a word boundary
    # ("Now" but not "Nowhere"; "Check:" works because the lookahead only refuses a letter).
    return re.compile(r"^[\s*_#>\-]*(?:" + "|".join(f"(?:{c})" for c in cues) + r")(?![A-Za-z])", re.IGNORECASE)


class RuleGrouper:
    """Offline grouping by opening cues; a departure from the paper, which asks an LLM.

    A step opening with a continuation cue ("Wait", "Let me check", …) joins the previous thought;
    one opening with a new-direction cue ("First", "Next", "So", "Let me", …) starts a new thought;
    any other step continues the current thought (R1 paragraphs that carry on a computation).
    """

    name = "rule"

    def __init__(
        self,
        *,
        continuation_cues: Sequence[str] = CONTINUATION_CUES,
        new_thought_cues: Sequence[str] = NEW_THOUGHT_CUES,
        type_rules: Sequence[tuple[str, str]] = TYPE_RULES,
    ) -> None:
        if not continuation_cues or not new_thought_cues:
            raise ValueError("RuleGrouper needs at least one continuation cue and one new-thought cue")
        self._continues = _opening(continuation_cues)
        self._starts = _opening(new_thought_cues)
        self._types = [(kind, re.compile(pattern, re.IGNORECASE | re.MULTILINE)) for kind, pattern in type_rules]

    def starts_thought(self, step: str) -> bool:
        """Whether ``step`` opens a new thought (it never does when it opens with a continuation cue)."""
        return not self._continues.match(step) and bool(self._starts.match(step))

    def classify(self, text: str, *, first: bool) -> str:
        """The type of a thought: the first matching rule; the first thought is "problem understanding"."""
        matched = next((kind for kind, pattern in self._types if pattern.search(text)), None)
        if first:
            return "conclusion" if matched == "conclusion" else "problem understanding"
        return matched or "calculation"

    def group(self, steps: list[str]) -> GroupResult:
        _require_steps(steps)
        starts = [1] + [i for i in range(2, len(steps) + 1) if self.starts_thought(steps[i - 1])]
        ends = [s - 1 for s in starts[1:]] + [len(steps)]
        blocks = [
            Block(start=s, end=e, type=self.classify("\n\n".join(steps[s - 1 : e]), first=k == 0))
            for k, (s, e) in enumerate(zip(starts, ends, strict=True))
        ]
        validate_blocks(_as_contract(blocks), len(steps))  # valid by construction; cheap to prove
        return GroupResult(blocks=blocks)


GROUPING_PROMPT = """Below is a step-by-step solution to a problem. Group consecutive steps into thoughts: \
a thought is a run of steps that serves one purpose, such as understanding the problem, setting up an \
approach, carrying out a calculation, verifying a result, reflecting on or revising earlier work, or \
concluding. Label each thought with a broad type (for example "problem understanding", "approach", \
"calculation", "verification", "reflection", "conclusion").

Rules:
- Blocks are numbered "block 1", "block 2", … in order; "start" and "end" are step numbers (inclusive).
- Block 1 starts at step 1; each block starts right after the previous one ends; the last block ends \
at step {n_steps}. Every step belongs to exactly one block.

Return ONLY a JSON object in this format, with no other text:
{{"block 1": {{"start": 1, "end": 3, "block type": "problem understanding"}}, \
"block 2": {{"start": 4, "end": 6, "block type": "calculation"}}}}

Problem steps:
{steps}"""

RETRY_PROMPT = (
    "That grouping is invalid: {error}. There are {n_steps} steps. "
    "Return ONLY the corrected JSON object, with no other text."
)


def format_steps(steps: Sequence[str]) -> str:
    """Steps as the paper numbers them: ``Step 1: …`` separated by blank lines."""
    return "\n\n".join(f"Step {i}: {step}" for i, step in enumerate(steps, 1))


class LLMGrouper(ChatStep):
    """The paper's grouping: ask a chat model for the blocks, feed validation errors back, retry.

    Any LangChain ``BaseChatModel`` works (an OpenAI-compatible server through ``langchain-openai``,
    or a fake model in tests); set its temperature low (paper: 0.1) when building it. After
    ``max_retries`` failed attempts, or errors from the model itself, the result is one block per
    step with ``fallback_reason`` set: chunking never raises because of the LLM.
    """

    name = "llm"

    def group(self, steps: list[str]) -> GroupResult:
        from longshort.training._llm import ask_until_valid

        _require_steps(steps)
        n_steps = len(steps)
        blocks, attempts, error = ask_until_valid(
            self.chat_model,
            GROUPING_PROMPT.format(n_steps=n_steps, steps=format_steps(steps)),
            lambda text: validate_blocks(text, n_steps),
            lambda error: RETRY_PROMPT.format(error=error, n_steps=n_steps),
            max_retries=self.max_retries,
            invalid=ChunkingError,
        )
        if blocks is not None:
            return GroupResult(blocks=blocks, attempts=attempts)
        fallback = StepGrouper().group(steps)
        return GroupResult(blocks=fallback.blocks, attempts=self.max_retries, fallback_reason=error)


# --------------------------------------------------------------------------- pipeline


def chunk_response(question: str, response: str, grouper: Grouper, *, answer: str | None = None) -> ChunkedCoT:
    """Split ``response`` into steps and group them; ``ChunkingError("empty response")`` if it has none."""
    steps = split_steps(response)
    if not steps:
        raise ChunkingError("empty response")
    result = grouper.group(steps)
    return ChunkedCoT(
        question=question,
        answer=answer,
        steps=steps,
        blocks=result.blocks,
        grouper=grouper.name,
        attempts=result.attempts,
        fallback_reason=result.fallback_reason,
    )


#: The columns of ``thoughts_table``, in order.
THOUGHT_COLUMNS = ("problem_id", "question", "answer", "index", "text", "type", "tokens", "grouper", "fallback_reason")


def _word_count(text: str) -> int:
    return len(text.split())


def thoughts_table(
    chunked: Sequence[ChunkedCoT],
    *,
    count_tokens: Callable[[str], int] | None = None,
    ids: Sequence[str] | None = None,
) -> datasets.Dataset:
    """One row per thought: problem_id, question, answer, index (1-based), text, type, tokens, grouper,
    fallback_reason. ``tokens`` uses ``count_tokens`` (default: whitespace word count)."""
    import datasets

    if ids is not None and len(ids) != len(chunked):
        raise ValueError(f"ids has {len(ids)} entries but there are {len(chunked)} chunked responses")
    count = count_tokens or _word_count
    columns: dict[str, list[Any]] = {name: [] for name in THOUGHT_COLUMNS}
    for i, cot in enumerate(chunked):
        problem_id = str(ids[i]) if ids is not None else str(i)
        for index, (text, kind) in enumerate(zip(cot.thoughts, cot.thought_types, strict=True), 1):
            row = {
                "problem_id": problem_id,
                "question": cot.question,
                "answer": cot.answer,
                "index": index,
                "text": text,
                "type": kind,
                "tokens": int(count(text)),
                "grouper": cot.grouper,
                "fallback_reason": cot.fallback_reason,
            }
            for name, value in row.items():
                columns[name].append(value)
    # An explicit schema: all-None columns (answer, fallback_reason) would otherwise become "null".
    string, integer = datasets.Value("string"), datasets.Value("int64")
    features = datasets.Features({name: integer if name in ("index", "tokens") else string for name in columns})
    return datasets.Dataset.from_dict(columns, features=features)
