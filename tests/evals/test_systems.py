"""The systems under test on bad input: one bad item is recorded alone, the batch's others are kept."""

from __future__ import annotations

import asyncio

import pytest

from longshort.agents import ScriptedBackend, long_agent
from longshort.evals import systems
from longshort.graphs import build_reasoner, episode_from_state
from tests.evals._scripted import Q, scripted_agents, too_long_for


def test_one_blank_question_among_64_is_recorded_alone(tiny_tokenizer):
    long, short = scripted_agents(tiny_tokenizer)
    questions = [Q] * 64
    questions[17] = "   "
    episodes = asyncio.run(systems.run_longshort(long, short, questions, references=["413"] * 64))
    assert len(episodes) == 64
    bad = episodes[17]
    assert bad.status == "backend_error" and bad.question == "   " and bad.reference == "413"
    assert bad.error == "ValueError: question is empty" and bad.answer is None and bad.turns == []
    assert all(e.status == "answered" and e.answer == "413" for i, e in enumerate(episodes) if i != 17)


def test_a_question_longer_than_the_context_is_a_backend_error_in_every_system(tiny_tokenizer):
    """Long⊗Short records it as long-only does: ``backend_error`` with the reason, the others kept."""
    context, long_question = too_long_for(long_agent(ScriptedBackend([], tiny_tokenizer)))
    long, short = scripted_agents(tiny_tokenizer, max_context=context)
    questions = [Q, long_question, Q]
    solo = asyncio.run(systems.run_solo(long, questions, max_new_tokens=64))
    graph = asyncio.run(systems.run_longshort(long, short, questions, max_total_tokens=128))
    for episodes in (solo, graph):
        assert [e.status for e in episodes] == ["answered", "backend_error", "answered"]
        assert "does not fit" in episodes[1].error and episodes[1].question == long_question
        assert episodes[0].answer == episodes[2].answer == "413"
    assert f"its model's context is {context}" in graph[1].error


def test_graph_abatch_returns_the_bad_inputs_exception_in_its_place(tiny_tokenizer):
    """The raw graph keeps LangGraph's semantics, as build_reasoner's docstring says."""
    graph = build_reasoner(*scripted_agents(tiny_tokenizer))
    inputs = [{"question": Q}, {"question": "   "}]
    with pytest.raises(ValueError, match="question is empty"):
        asyncio.run(graph.abatch(inputs))
    first, second = asyncio.run(graph.abatch(inputs, return_exceptions=True))
    assert episode_from_state(first).answer == "413" and isinstance(second, ValueError)
