"""Cold-start compression: runs, the completion contract, both rewriters, dialogues and drop counts."""

from __future__ import annotations

import json
import random
import re
from typing import Any

import pytest

from longshort.errors import LongShortError
from longshort.protocol import parse_turn
from longshort.testbed.rewriter import TestbedRewriter
from longshort.testbed.sources import testbed_problems
from longshort.testbed.tasks import Problem, generate_problems
from longshort.testbed.teachers import long_trace, oracle_episode
from longshort.training.analysis.rollouts import AnalysisProblem
from longshort.training.coldstart.compression import (
    DROP_REASONS,
    CompressionError,
    Dialogue,
    LLMRewriter,
    build_dialogue,
    compress_all,
    runs_of,
    validate_completion,
)
from tests.fake_chat import DeadChat, RecordingChat

N = 24


@pytest.fixture(scope="module")
def testbed() -> tuple[list[AnalysisProblem], dict[str, Problem]]:
    problems = testbed_problems(N, 0, count_tokens=len)
    sources = {p.id: p for p in generate_problems("test", N, seed=0)}
    assert [p.problem_id for p in problems] == list(sources)
    assert any(p.n_hard > 1 for p in sources.values())  # the "Next: a * b" hand-backs get exercised
    return problems, sources


def _needed(problem: AnalysisProblem) -> list[bool]:
    assert problem.needed is not None
    return [True, *problem.needed[1:]]


# --------------------------------------------------------------------------- runs_of


def test_runs_of() -> None:
    assert runs_of([True, True, False, True, False, False]) == [
        ("long", [1, 2]),
        ("short", [3]),
        ("long", [4]),
        ("short", [5, 6]),
    ]
    assert runs_of([False]) == [("short", [1])]
    assert runs_of([True, True]) == [("long", [1, 2])]
    assert runs_of([]) == []


# --------------------------------------------------------------------------- validate_completion


def _completion(*texts: str) -> dict[str, Any]:
    return {"completed steps": [{"run": r, "text": t} for r, t in enumerate(texts, 1)]}


def test_validate_completion_accepts_dict_json_fenced_and_any_order() -> None:
    good = _completion("a = 1", " b = 2 ")
    assert validate_completion(good, 2) == ["a = 1", "b = 2"]
    assert validate_completion(json.dumps(good), 2) == ["a = 1", "b = 2"]
    fenced = f"Sure! Here you go:\n```json\n{json.dumps(good, indent=2)}\n```\nDone."
    assert validate_completion(fenced, 2) == ["a = 1", "b = 2"]
    swapped = {"completed steps": list(reversed(good["completed steps"]))}
    assert validate_completion(swapped, 2) == ["a = 1", "b = 2"]
    assert validate_completion({"completed steps": []}, 0) == []


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("I cannot do that.", "no JSON object found"),
        ('{"completed steps": [{"run": 1, "text": "x"},]}', "malformed JSON"),
        ({"steps": []}, "missing 'completed steps'"),
        ({"completed steps": {"run": 1}}, "'completed steps' must be a list, got dict"),
        (_completion("x"), "run 2 is missing"),
        ({"completed steps": [{"run": 1, "text": "x"}, {"run": 3, "text": "z"}]}, "run 3 is extra"),
        (_completion("x", "y", "z"), "run 3 is extra: there are only 2 runs"),
        ({"completed steps": [{"run": 1, "text": "x"}, {"run": 1, "text": "y"}]}, "run 1 appears twice"),
        (_completion("x", "   "), "run 2 has an empty text"),
        ({"completed steps": [{"run": 1, "text": "x"}, {"run": 2}]}, "run 2 has an empty text, got None"),
        (_completion("x", "<think> y"), "run 2 contains the protocol tag <think>"),
        (_completion("3 + 4 = 7 </answer>", "y"), "run 1 contains the protocol tag </answer>"),
        (_completion("x", "y </rethink>"), "run 2 contains the protocol tag </rethink>"),
        ({"completed steps": [{"run": "1", "text": "x"}]}, "entry 1: 'run' must be an integer run number, got '1'"),
        ({"completed steps": [{"text": "x"}]}, "entry 1 is missing 'run'"),
        ({"completed steps": ["x"]}, "entry 1 must be an object"),
    ],
)
def test_validate_completion_rejects_with_a_precise_message(raw: str | dict[str, Any], message: str) -> None:
    with pytest.raises(CompressionError, match=re.escape(message)) as info:
        validate_completion(raw, 2)
    assert info.value.reason == "rewriter_failed"


def test_compression_error_is_a_longshort_error() -> None:
    assert issubclass(CompressionError, LongShortError)


# --------------------------------------------------------------------------- LLMRewriter


TOY = AnalysisProblem(
    problem_id="toy",
    question="What is 12 * 34 + 5?",
    answer="413",
    thoughts=[
        "I need 12 * 34 + 5.",
        "12 * 34 = 12 * 30 + 12 * 4 = 360 + 48 = 408.",
        "Let me check: 408 / 12 = 34.",
        "Hmm, 34 * 12 = 340 + 68 = 408 too.",
        "Then 408 + 5 = 413.",
        "So the answer is \\boxed{413}.",
    ],
    types=["problem understanding", "calculation", "verification", "verification", "calculation", "conclusion"],
    tokens=[6, 12, 8, 9, 6, 7],
)
TOY_SELECTED = [True, True, False, False, True, False]  # runs: long 1-2, short 3-4, long 5, short 6
VALID = json.dumps(_completion("Checked: 12 * 34 = 408.", "408 + 5 = 413"))


def test_llm_rewriter_valid_first_answer_and_prompt_contract() -> None:
    chat = RecordingChat(responses=[f"```json\n{VALID}\n```"], seen=[])
    dialogue = build_dialogue(TOY, TOY_SELECTED, LLMRewriter(chat))
    assert len(chat.seen) == 1
    prompt = chat.seen[0][0].text
    payload = json.loads(prompt[prompt.index("Input:") + len("Input:") :])
    assert payload["question"] == TOY.question
    assert payload["chunks"][:3] == [
        {"index": 1, "kind": "kept", "text": TOY.thoughts[0]},
        {"index": 2, "kind": "kept", "text": TOY.thoughts[1]},
        {"index": 3, "kind": "compressed", "type": "verification"},
    ]
    assert [c["index"] for c in payload["chunks"]] == [1, 2, 3, 4, 5, 6]
    assert all("text" not in c for c in payload["chunks"] if c["kind"] == "compressed")
    assert "there are 2 runs" in prompt and "run 1: chunks 3-4; run 2: chunk 6" in prompt
    assert '"completed steps"' in prompt
    assert dialogue.rewriter == "llm" and dialogue.kept == [1, 2, 5]
    assert [s.thoughts for s in dialogue.segments] == [[1, 2], [3, 4], [5], [6]]
    assert dialogue.turns == [
        ("long", f"<think>\n{TOY.thoughts[0]}\n\n{TOY.thoughts[1]}\n</think>"),
        ("short", "<answer> Checked: 12 * 34 = 408. </rethink>"),
        ("long", f"<think>\n{TOY.thoughts[4]}\n</think>"),
        ("short", "<answer> 408 + 5 = 413\n\\boxed{413} </answer>"),
    ]


def test_llm_rewriter_feeds_the_error_back_and_retries() -> None:
    missing = json.dumps(_completion("only one"))
    chat = RecordingChat(responses=["no json here", missing, VALID], seen=[])
    texts = LLMRewriter(chat).rewrite(TOY, [(1, "a")], [[(3, "c"), (4, "d")], [(6, "f")]])
    assert texts == ["Checked: 12 * 34 = 408.", "408 + 5 = 413"]
    second, third = chat.seen[1], chat.seen[2]
    assert [m.type for m in second] == ["human", "ai", "human"]
    assert second[1].text == "no json here" and "no JSON object found" in second[2].text
    assert len(third) == 5 and "run 2 is missing" in third[4].text and "There are 2 runs" in third[4].text


def test_llm_rewriter_raises_after_max_retries() -> None:
    chat = RecordingChat(responses=[json.dumps(_completion("x", "y </answer>"))], seen=[])
    with pytest.raises(CompressionError, match="after 3 attempts.*run 2 contains the protocol tag") as info:
        LLMRewriter(chat, max_retries=3).rewrite(TOY, [(1, "a")], [[(3, "c")], [(6, "f")]])
    assert len(chat.seen) == 3
    assert (info.value.reason, info.value.problem_id) == ("rewriter_failed", "toy")


def test_llm_rewriter_counts_model_errors_as_failed_attempts() -> None:
    chat = DeadChat(responses=[])
    with pytest.raises(CompressionError, match="chat model failed: ConnectionError"):
        LLMRewriter(chat, max_retries=2).rewrite(TOY, [(1, "a")], [[(3, "c")]])
    assert chat.calls == 2


def test_llm_rewriter_makes_no_call_without_a_compressed_run() -> None:
    chat = DeadChat(responses=[])
    dialogue = build_dialogue(TOY, [True] * 6, LLMRewriter(chat))
    assert chat.calls == 0
    assert dialogue.turns[-1] == ("short", "<answer> \\boxed{413} </answer>")


def test_llm_rewriter_rejects_bad_max_retries() -> None:
    with pytest.raises(ValueError, match="max_retries must be >= 1, got 0"):
        LLMRewriter(DeadChat(responses=[]), max_retries=0)


# --------------------------------------------------------------------------- TestbedRewriter + build_dialogue


def _short_lines_of(dialogue: Dialogue) -> list[str]:
    return [
        line for role, text in dialogue.turns if role == "short" for line in parse_turn(role, text).content.split("\n")
    ]


def _check_dialogue(dialogue: Dialogue, problem: AnalysisProblem, source: Problem) -> None:
    roles = [role for role, _ in dialogue.turns]
    assert roles == ["long", "short"] * (len(roles) // 2)
    parsed = [parse_turn(role, text) for role, text in dialogue.turns]
    assert all(p.ok for p in parsed), [p.error for p in parsed]
    assert all(text.endswith("</rethink>") for role, text in dialogue.turns[1:-1:2])
    assert dialogue.turns[-1][1].endswith("</answer>") and parsed[-1].answer == source.answer
    assert parsed[-1].content.endswith(f"\\boxed{{{source.answer}}}")
    # kept thoughts verbatim, in order, and nothing else in the long turns
    kept_text = [problem.thoughts[i - 1] for i in dialogue.kept]
    assert [t for p in parsed if p.role == "long" for t in p.content.split("\n\n")] == kept_text
    # every thought is in exactly one segment
    covered = sorted(i for s in dialogue.segments for i in s.thoughts)
    assert covered == list(range(1, len(problem.thoughts) + 1))
    # each step's lines appear at most once (exactly once when a short turn ends the trace)
    lines = [re.sub(r"^From above, ", "", line) for line in _short_lines_of(dialogue)]
    ends_short = bool(dialogue.segments[-1].thoughts)
    for i, op in enumerate(source.ops):
        wanted = []
        if op.hard:
            wanted.append(f"{op.factors[0]} * {op.factors[1]} = {op.amount}")  # type: ignore[index]
        if i:
            sign = "+" if op.kind == "add" else "-"
            wanted.append(f"{source.ops[i - 1].value} {sign} {op.amount} = {op.value}")
        for line in wanted:
            assert (lines.count(line) == 1) if ends_short else (lines.count(line) <= 1), (line, lines)


def test_needed_selection_reproduces_the_oracle_short_turns(testbed) -> None:
    problems, sources = testbed
    rewriter = TestbedRewriter(sources)
    for problem in problems:
        source = sources[problem.problem_id]
        dialogue = build_dialogue(problem, _needed(problem), rewriter)
        _check_dialogue(dialogue, problem, source)
        assert dialogue.kept[0] == 1 and dialogue.rewriter == "testbed"
        # y1 (restate) is forced long, so a first (restatement) exchange precedes the oracle's turns
        assert dialogue.turns[1][1].startswith("<answer> The whole computation is ")
        oracle = oracle_episode(source, 0)
        assert dialogue.turns[2:] == oracle
        oracle_lines = {
            line for role, t in oracle if role == "short" for line in parse_turn(role, t).content.split("\n")
        }
        assert oracle_lines <= set(_short_lines_of(dialogue))


def test_random_selections_give_valid_dialogues(testbed) -> None:
    problems, sources = testbed
    rewriter = TestbedRewriter(sources.values())
    rng = random.Random(7)
    for problem in problems:
        for _ in range(6):
            selected = [rng.random() < 0.3 for _ in problem.thoughts]
            dialogue = build_dialogue(problem, selected, rewriter)
            _check_dialogue(dialogue, problem, sources[problem.problem_id])
            assert dialogue.kept == [1, *(i for i, s in enumerate(selected, 1) if s and i > 1)]


def test_compressed_decompose_is_computed_one_shot_and_kept_one_quoted(testbed) -> None:
    problems, sources = testbed
    problem = next(p for p in problems if sources[p.problem_id].n_hard > 1)
    source = sources[problem.problem_id]
    thoughts = long_trace(source, 0).thoughts
    first, second = (k for k, t in enumerate(thoughts) if t.type == "decompose")
    selected = [False] * len(thoughts)
    selected[second] = True  # only the second product is decomposed by the long model
    dialogue = build_dialogue(problem, selected, TestbedRewriter(sources))
    _check_dialogue(dialogue, problem, source)
    hard = [op for op in source.ops if op.hard]
    a, b = hard[0].factors  # type: ignore[misc]
    c, d = hard[1].factors  # type: ignore[misc]
    lines = _short_lines_of(dialogue)
    assert f"{a} * {b} = {hard[0].amount}" in lines and f"From above, {c} * {d} = {hard[1].amount}" in lines
    assert lines.index(f"{a} * {b} = {hard[0].amount}") < lines.index(f"Next: {c} * {d}")


def test_a_run_without_a_new_step_writes_the_running_total(testbed) -> None:
    problems, sources = testbed
    problem, source = problems[0], sources[problems[0].problem_id]
    thoughts = long_trace(source, 0).thoughts
    decompose = next(k for k, t in enumerate(thoughts, 1) if t.type == "decompose")
    assert [t.type for t in thoughts[-2:]] == ["review", "final"]
    # long: y1..decompose, short: every step after it, long: the review, short: the final thought
    selected = [i <= decompose or i == len(thoughts) - 1 for i in range(1, len(thoughts) + 1)]
    dialogue = build_dialogue(problem, selected, TestbedRewriter(sources))
    _check_dialogue(dialogue, problem, source)
    op = source.ops[0]
    assert [s.role for s in dialogue.segments] == ["long", "short", "long", "short"]
    assert dialogue.segments[1].text.split("\n")[0] == f"From above, {op.factors[0]} * {op.factors[1]} = {op.amount}"  # type: ignore[index]
    assert dialogue.segments[3].text == f"So far: {source.answer}\n\\boxed{{{source.answer}}}"


def test_all_selected_ends_with_a_closing_short_turn(testbed) -> None:
    problems, sources = testbed
    problem = problems[0]
    dialogue = build_dialogue(problem, [True] * len(problem.thoughts), TestbedRewriter(sources))
    assert [role for role, _ in dialogue.turns] == ["long", "short"]
    assert dialogue.turns[-1] == ("short", f"<answer> \\boxed{{{problem.answer}}} </answer>")
    assert dialogue.segments[-1].thoughts == [] and dialogue.kept == list(range(1, len(problem.thoughts) + 1))


def test_first_thought_not_selected_is_forced_long(testbed) -> None:
    problems, sources = testbed
    problem = problems[0]
    selected = [False, *_needed(problem)[1:]]
    scores = [0.5] * len(problem.thoughts)
    dialogue = build_dialogue(problem, selected, TestbedRewriter(sources), scores=scores)
    assert dialogue.kept[0] == 1 and dialogue.segments[0].thoughts == [1]
    assert dialogue.turns[0][0] == "long" and problem.thoughts[0] in dialogue.turns[0][1]
    assert dialogue == build_dialogue(problem, _needed(problem), TestbedRewriter(sources), scores=scores)


def test_testbed_rewriter_refuses_foreign_thoughts(testbed) -> None:
    problems, sources = testbed
    problem = problems[0].model_copy(update={"thoughts": ["x"] * len(problems[0].thoughts)})
    with pytest.raises(CompressionError, match="not the long teacher's trace for seed 0"):
        build_dialogue(problem, _needed(problems[0]), TestbedRewriter(sources))
    with pytest.raises(CompressionError, match="not a known testbed problem"):
        build_dialogue(problems[0], _needed(problems[0]), TestbedRewriter({}))


def test_build_dialogue_rejects_inconsistent_inputs() -> None:
    with pytest.raises(ValueError, match="5 selection flags for 6 thoughts"):
        build_dialogue(TOY, [True] * 5, TestbedRewriter({}))
    with pytest.raises(ValueError, match="2 scores for 6 thoughts"):
        build_dialogue(TOY, [True] * 6, TestbedRewriter({}), scores=[1.0, 2.0])


# --------------------------------------------------------------------------- failures are dropped and counted


class FixedRewriter:
    """Returns the given texts whatever it is asked."""

    name = "fixed"

    def __init__(self, texts: list[str]) -> None:
        self.texts = texts

    def rewrite(self, problem: AnalysisProblem, kept: Any, compressed: Any) -> list[str]:
        return list(self.texts)


@pytest.mark.parametrize(
    ("texts", "reason", "message"),
    [
        (["ok"], "rewriter_failed", "returned 1 texts for 2 runs"),
        (["ok", "  "], "rewriter_failed", "returned an empty text"),
        (["checked", "408 + 5 = 413 \\boxed{999}."], "wrong_answer", "final answer '999' is not '413'"),
        (["checked <answer>", "408 + 5 = 413"], "parse_failed", "turn 2 is malformed: short turn nests or repeats"),
        (["checked </answer>", "408 + 5 = 413"], "parse_failed", "turn 2 is malformed"),
    ],
)
def test_build_dialogue_raises_with_a_reason(texts: list[str], reason: str, message: str) -> None:
    with pytest.raises(CompressionError, match=re.escape(message)) as info:
        build_dialogue(TOY, TOY_SELECTED, FixedRewriter(texts))
    assert info.value.reason == reason and info.value.problem_id == "toy"


def test_a_boxed_gold_answer_at_the_end_is_not_repeated() -> None:
    dialogue = build_dialogue(TOY, TOY_SELECTED, FixedRewriter(["checked", "408 + 5 = \\boxed{413}."]))
    assert dialogue.turns[-1] == ("short", "<answer> 408 + 5 = \\boxed{413}. </answer>")


def test_no_gold_answer_is_dropped() -> None:
    with pytest.raises(CompressionError, match="no gold answer") as info:
        build_dialogue(TOY.model_copy(update={"answer": None}), TOY_SELECTED, FixedRewriter(["a", "b"]))
    assert info.value.reason == "no_answer"


def test_compress_all_drops_and_counts(testbed) -> None:
    problems, sources = testbed
    dead = LLMRewriter(DeadChat(responses=[]), max_retries=1)
    selections = {p.problem_id: _needed(p) for p in problems[:3]}
    dialogues, dropped = compress_all(problems[:4], selections, dead)
    assert dialogues == []
    assert dropped == {**dict.fromkeys(DROP_REASONS, 0), "rewriter_failed": 3, "no_selection": 1}

    scores = {p.problem_id: [0.0] * len(p.thoughts) for p in problems[:3]}
    dialogues, dropped = compress_all(problems[:4], selections, TestbedRewriter(sources), scores=scores)
    assert [d.problem_id for d in dialogues] == [p.problem_id for p in problems[:3]]
    assert dialogues[0].scores == scores[problems[0].problem_id]
    assert dropped["no_selection"] == 1 and sum(dropped.values()) == 1
