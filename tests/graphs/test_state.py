"""The reasoner's input checks: a question that is not valid Unicode text fails before generation."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from longshort.agents import ScriptedBackend, long_agent, short_agent
from longshort.graphs import build_reasoner, episode_from_state
from longshort.graphs.state import check_question
from longshort.trace import read_jsonl, write_jsonl

THINK = "<think> 12 * 34 = 408 </think>"
ANSWER = "<answer> 408 + 5 = \\boxed{413} </answer>"


def _graph(tokenizer=None):
    """Scripted agents: token-level with a tokenizer, chat-style (raw text, like an API) without."""
    long_b, short_b = ScriptedBackend([THINK], tokenizer), ScriptedBackend([ANSWER], tokenizer)
    return build_reasoner(long_agent(long_b), short_agent(short_b)), long_b, short_b


@pytest.mark.parametrize(
    ("question", "match"),
    [
        ("x\ud800", r"character 1 is U\+D800, a lone surrogate"),
        ("\udfff tail", r"character 0 is U\+DFFF, a lone surrogate"),
        ("caf\udcc3 ok", r"character 3 is U\+DCC3, an undecodable byte 0xC3 \(the input was not valid UTF-8\)"),
    ],
)
def test_check_question_says_what_is_wrong(question, match):
    with pytest.raises(ValueError, match=f"question is not valid Unicode text: {match}"):
        check_question(question)


@pytest.mark.parametrize("question", ["What is 6 * 7?", "emoji 😀 and CJK 中文 and \U0001f9ee", 42, None])
def test_check_question_passes_valid_text_and_leaves_types_to_the_graph(question):
    assert check_question(question) is question


@pytest.mark.parametrize("token_level", [True, False])
def test_a_lone_surrogate_stops_the_graph_before_generation(tiny_tokenizer, token_level):
    """Token level: once an opaque ``TextEncodeInput`` error; chat: answered, then unwritable."""
    graph, long_b, short_b = _graph(tiny_tokenizer if token_level else None)
    with pytest.raises(ValueError, match=r"question is not valid Unicode text: character 1 is U\+D800"):
        graph.invoke({"question": "x\ud800"})
    assert long_b.requests == [] and short_b.requests == []


def test_valid_unicode_questions_are_answered_and_written(tiny_tokenizer, tmp_path):
    question = "What is 12 * 34 + 5? 😀 中文"
    episodes = []
    for tokenizer in (tiny_tokenizer, None):
        graph, _, _ = _graph(tokenizer)
        episodes.append(episode_from_state(graph.invoke({"question": question})))
    assert [ep.status for ep in episodes] == ["answered", "answered"]
    path = tmp_path / "eps.jsonl"
    assert write_jsonl(episodes, path) == 2
    assert [ep.question for ep in read_jsonl(path)] == [question, question]


def test_solve_with_invalid_utf8_in_argv_is_a_clear_error(tiny_qwen_dir):
    """Python decodes an invalid argv byte to U+DC80-U+DCFF: ``b"caf\\xc3 ok"`` is ``"caf\\udcc3 ok"``."""
    from longshort.cli import app

    result = CliRunner().invoke(app, ["solve", "caf\udcc3 ok", "--long-model", str(tiny_qwen_dir), "--json"])
    assert result.exit_code == 2, result.output
    said = " ".join(result.output.split())
    assert "question is not valid Unicode text" in said and "not valid UTF-8" in said
    assert "TextEncodeInput" not in said
