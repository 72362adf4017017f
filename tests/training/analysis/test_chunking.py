"""Thought chunking: step splitting, the block contract, the three groupers and the thoughts table."""

from __future__ import annotations

import json
from typing import Any

import pytest

from longshort.errors import LongShortError
from longshort.training.analysis.chunking import (
    Block,
    ChunkedCoT,
    ChunkingError,
    LLMGrouper,
    RuleGrouper,
    StepGrouper,
    chunk_response,
    split_steps,
    thoughts_table,
    validate_blocks,
)
from tests.fake_chat import DeadChat, RecordingChat

R1_LIKE = """<think>
Okay, so I need to compute 12 * 34 + 5.

First, 12 * 34 = 12 * 30 + 12 * 4.

12 * 30 = 360 and 12 * 4 = 48, so 12 * 34 = 408.

Wait, let me double-check: 408 / 12 = 34. Yes.

Then add 5: 408 + 5 = 413.

Therefore the answer is \\boxed{413}.
</think>
The answer is \\boxed{413}."""


# --------------------------------------------------------------------------- split_steps


def test_split_steps_on_blank_lines_with_whitespace() -> None:
    text = "  step one\nstill one \n   \t \nstep two\n\n\n\nstep three\n \n"
    assert split_steps(text) == ["step one\nstill one", "step two", "step three"]


def test_split_steps_without_blank_lines_is_one_step() -> None:
    assert split_steps("a\nb\nc") == ["a\nb\nc"]


@pytest.mark.parametrize("text", ["", "   ", "\n\n \n", "<think>\n\n</think>"])
def test_split_steps_empty(text: str) -> None:
    assert split_steps(text) == []


def test_split_steps_uses_only_the_first_think_block() -> None:
    text = "preamble\n\nnoise<think>\nA\n\nB\n</think>\n\nanswer part\n\n<think>second</think>"
    assert split_steps(text) == ["A", "B"]


def test_split_steps_tolerates_a_prefilled_open_tag_and_a_truncated_close() -> None:
    assert split_steps("A\n\nB\n</think>\n\nfinal answer") == ["A", "B"]
    assert split_steps("<think>\nA\n\nB (cut off") == ["A", "B (cut off"]


def test_split_steps_r1_like() -> None:
    steps = split_steps(R1_LIKE)
    assert len(steps) == 6
    assert steps[0].startswith("Okay") and steps[-1] == "Therefore the answer is \\boxed{413}."


# --------------------------------------------------------------------------- validate_blocks

GOOD = {
    "block 1": {"start": 1, "end": 2, "block type": "problem understanding"},
    "block 2": {"start": 3, "end": 3, "block type": "calculation"},
    "block 3": {"start": 4, "end": 5, "block type": "verification"},
}
GOOD_BLOCKS = [
    Block(start=1, end=2, type="problem understanding"),
    Block(start=3, end=3, type="calculation"),
    Block(start=4, end=5, type="verification"),
]


def test_validate_blocks_accepts_dict_json_and_fenced_json() -> None:
    assert validate_blocks(GOOD, 5) == GOOD_BLOCKS
    assert validate_blocks(json.dumps(GOOD), 5) == GOOD_BLOCKS
    fenced = f"Here is the grouping:\n```json\n{json.dumps(GOOD, indent=2)}\n```\nHope this helps."
    assert validate_blocks(fenced, 5) == GOOD_BLOCKS


def test_validate_blocks_orders_by_block_number() -> None:
    shuffled = {k: GOOD[k] for k in ("block 3", "block 1", "block 2")}
    assert validate_blocks(shuffled, 5) == GOOD_BLOCKS


def _with(block: str, **fields: Any) -> dict[str, Any]:
    return {k: ({**v, **fields} if k == block else v) for k, v in GOOD.items()}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (_with("block 3", start=5), "block 3 starts at 5 but block 2 ended at 3 (leaving steps uncovered)"),
        (_with("block 2", start=2), "block 2 starts at 2 but block 1 ended at 2 (overlapping it)"),
        (_with("block 1", start=2), "block 1 starts at 2 but the first block must start at step 1"),
        (_with("block 3", end=4), "the last block (block 3) ends at 4 but there are 5 steps"),
        (_with("block 3", end=6), "block 3 ends at 6 but there are only 5 steps"),
        (_with("block 2", start=3, end=2), "block 2 starts at 3 after it ends at 2"),
        (_with("block 2", **{"block type": "  "}), "block 2: 'block type' must be a non-empty string"),
        (_with("block 2", **{"block type": 7}), "block 2: 'block type' must be a non-empty string, got 7"),
        (_with("block 2", start="3"), "block 2: 'start' must be an integer step number, got '3'"),
        (_with("block 2", end=3.0), "block 2: 'end' must be an integer step number, got 3.0"),
        (_with("block 2", end=True), "block 2: 'end' must be an integer step number, got True"),
        ({"block 1": {"start": 1, "block type": "x"}}, "block 1 is missing 'end'"),
        ({"block 1": {"start": 1, "end": 5}}, "block 1 is missing 'block type'"),
        ({"block 1": [1, 5]}, "block 1 must be an object"),
        ({"step 1": {"start": 1, "end": 5, "block type": "x"}}, "unexpected key 'step 1'"),
        ({}, "no blocks"),
        ('{"block 1": {"start": 1, "end": 5, "block type": "x"},}', "malformed JSON"),
        ('{"block 1": {"start": 1, "end": 5 "block type": "x"}}', "malformed JSON"),
        ("I cannot group these steps.", "no JSON object found"),
        ('{"block 1": {"start": 1, "end": 5, "block type": "x"}, "block 1": {}}', "duplicate key 'block 1'"),
        ("[1, 2]", "no JSON object found"),
    ],
)
def test_validate_blocks_rejects_with_a_precise_message(raw: str | dict[str, Any], message: str) -> None:
    with pytest.raises(ChunkingError) as info:
        validate_blocks(raw, 5)
    assert message in str(info.value)


def test_chunking_error_is_a_longshort_error() -> None:
    assert issubclass(ChunkingError, LongShortError)
    with pytest.raises(LongShortError):
        validate_blocks(GOOD, 0)


# --------------------------------------------------------------------------- groupers


def test_step_grouper_one_block_per_step() -> None:
    result = StepGrouper().group(["a", "b", "c"])
    assert result.blocks == [Block(start=i, end=i, type="step") for i in (1, 2, 3)]
    assert (result.attempts, result.fallback_reason) == (0, None)


def test_rule_grouper_joins_wait_into_the_previous_thought() -> None:
    chunked = chunk_response("What is 12 * 34 + 5?", R1_LIKE, RuleGrouper(), answer="413")
    assert [(b.start, b.end) for b in chunked.blocks] == [(1, 1), (2, 4), (5, 5), (6, 6)]
    assert chunked.thought_types == ["problem understanding", "verification", "calculation", "conclusion"]
    assert chunked.thoughts[1].endswith("Wait, let me double-check: 408 / 12 = 34. Yes.")
    assert "\n\n12 * 30 = 360" in chunked.thoughts[1]  # a step without a cue carries on the thought
    assert (chunked.grouper, chunked.answer, chunked.attempts, chunked.fallback_reason) == ("rule", "413", 0, None)


@pytest.mark.parametrize(
    ("step", "starts"),
    [
        ("Let me check the sum.", False),
        ("Let me verify: 2 + 2 = 4.", False),
        ("Let me double-check that.", False),
        ("Hmm, that seems off.", False),
        ("But wait, the sign.", False),
        ("Check: 3 * 4 = 12.", False),
        ("Actually, it is 13.", False),
        ("Let me compute 3 * 4.", True),
        ("Next, the remainder.", True),
        ("**Step 2**: divide.", True),
        ("Nowhere does it say so.", False),  # "Now" must be a whole word
        ("The product is 12.", False),
    ],
)
def test_rule_grouper_cues(step: str, starts: bool) -> None:
    assert RuleGrouper().starts_thought(step) is starts


def test_rule_grouper_custom_cues() -> None:
    grouper = RuleGrouper(continuation_cues=(r"also",), new_thought_cues=(r"part",))
    result = grouper.group(["intro", "Part A: x", "Also y", "Wait z", "Part B: w"])
    assert [(b.start, b.end) for b in result.blocks] == [(1, 1), (2, 4), (5, 5)]


def test_rule_grouper_single_step() -> None:
    assert RuleGrouper().group(["just one"]).blocks == [Block(start=1, end=1, type="problem understanding")]


# --------------------------------------------------------------------------- LLMGrouper


STEPS = ["Read the problem.", "Restate it.", "Compute 2 + 2 = 4.", "Check: 4 - 2 = 2.", "So 4."]
VALID = json.dumps(GOOD)


def test_llm_grouper_valid_first_answer() -> None:
    chat = RecordingChat(responses=[f"```json\n{VALID}\n```"], seen=[])
    result = LLMGrouper(chat).group(STEPS[:5])
    assert result.blocks == GOOD_BLOCKS
    assert (result.attempts, result.fallback_reason) == (1, None)
    prompt = chat.seen[0][0].text
    assert "Step 1: Read the problem." in prompt and "Step 5: So 4." in prompt
    assert '"block type"' in prompt and "ends at step 5" in prompt


def test_llm_grouper_feeds_the_error_back_and_retries() -> None:
    bad = json.dumps({"block 1": GOOD["block 1"], "block 2": {**GOOD["block 3"], "start": 4}})
    chat = RecordingChat(responses=["not json at all", bad, VALID], seen=[])
    result = LLMGrouper(chat).group(STEPS)
    assert result.blocks == GOOD_BLOCKS and result.attempts == 3 and result.fallback_reason is None
    second, third = chat.seen[1], chat.seen[2]
    assert [m.type for m in second] == ["human", "ai", "human"]
    assert second[1].text == "not json at all"
    assert "no JSON object found" in second[2].text
    assert len(third) == 5 and "block 2 starts at 4 but block 1 ended at 2" in third[4].text


def test_llm_grouper_malformed_then_valid_takes_two_attempts() -> None:
    chat = RecordingChat(responses=['{"block 1": {"start": 1,, }', VALID], seen=[])
    result = LLMGrouper(chat).group(STEPS)
    assert (result.attempts, result.fallback_reason, result.blocks) == (2, None, GOOD_BLOCKS)
    assert "malformed JSON" in chat.seen[1][-1].text


def test_llm_grouper_falls_back_after_max_retries() -> None:
    always_bad = '{"block 1": {"start": 1, "end": 3, "block type": "x"}}'
    chat = RecordingChat(responses=[always_bad], seen=[])
    result = LLMGrouper(chat).group(STEPS)  # the paper's 5 attempts
    assert result.blocks == StepGrouper().group(STEPS).blocks
    assert result.attempts == 5 and len(chat.seen) == 5
    assert result.fallback_reason == (
        "the last block (block 1) ends at 3 but there are 5 steps; every step must be in a block"
    )


def test_llm_grouper_survives_a_dead_chat_model() -> None:
    chat = DeadChat(responses=[])
    chunked = chunk_response("q", "\n\n".join(STEPS), LLMGrouper(chat, max_retries=2))
    assert chat.calls == 2
    assert chunked.blocks == StepGrouper().group(STEPS).blocks and chunked.thoughts == STEPS
    assert chunked.attempts == 2 and chunked.grouper == "llm"
    assert chunked.fallback_reason is not None and "connection refused on :8000" in chunked.fallback_reason


def test_llm_grouper_rejects_zero_retries() -> None:
    with pytest.raises(ValueError, match="max_retries must be >= 1, got 0"):
        LLMGrouper(RecordingChat(responses=[]), max_retries=0)


# --------------------------------------------------------------------------- pipeline and table


@pytest.mark.parametrize("response", ["", "  \n\n ", "<think></think>answer"])
def test_chunk_response_empty(response: str) -> None:
    with pytest.raises(ChunkingError, match="empty response"):
        chunk_response("q", response, RuleGrouper())


def test_chunked_cot_thoughts_join_steps() -> None:
    cot = ChunkedCoT(question="q", answer=None, steps=STEPS, blocks=GOOD_BLOCKS, grouper="test")
    assert cot.thoughts == [
        "Read the problem.\n\nRestate it.",
        "Compute 2 + 2 = 4.",
        "Check: 4 - 2 = 2.\n\nSo 4.",
    ]
    assert cot.thought_types == ["problem understanding", "calculation", "verification"]


def test_thoughts_table_rows() -> None:
    first = ChunkedCoT(question="q1", answer="4", steps=STEPS, blocks=GOOD_BLOCKS, grouper="llm", attempts=1)
    second = chunk_response("q2", "one two three\n\nWait, four", RuleGrouper())
    table = thoughts_table([first, second], ids=["p-a", "p-b"], count_tokens=len)  # characters
    assert table.column_names == [
        "problem_id",
        "question",
        "answer",
        "index",
        "text",
        "type",
        "tokens",
        "grouper",
        "fallback_reason",
    ]
    assert table["problem_id"] == ["p-a", "p-a", "p-a", "p-b"]
    assert table["index"] == [1, 2, 3, 1]
    assert table["text"] == [*first.thoughts, "one two three\n\nWait, four"]
    assert table["tokens"] == [len(t) for t in table["text"]]
    assert table["type"] == ["problem understanding", "calculation", "verification", "problem understanding"]
    assert table["answer"] == ["4", "4", "4", None]
    assert table["grouper"] == ["llm", "llm", "llm", "rule"]
    assert table["fallback_reason"] == [None] * 4


def test_thoughts_table_defaults() -> None:
    cot = chunk_response("q", "a b c\n\nFirst, d e", RuleGrouper())
    table = thoughts_table([cot])
    assert table["problem_id"] == ["0", "0"]
    assert table["tokens"] == [3, 3]  # whitespace words
    assert table.features["answer"].dtype == "string"  # all-None still gets a string column
    assert len(thoughts_table([])) == 0
    with pytest.raises(ValueError, match="ids has 2 entries"):
        thoughts_table([cot], ids=["a", "b"])
