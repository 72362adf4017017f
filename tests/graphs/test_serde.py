"""Checkpointed threads restore longshort's types without LangGraph's "unregistered type" warning.

LangGraph reports an unregistered msgpack type through ``logging`` (logger
``langgraph.checkpoint.serde.jsonplus``), not ``warnings``, and only once per process and type:
the tests reset its once-only sets and read the log records.
"""

from __future__ import annotations

import logging
import sqlite3

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.serde import _msgpack
from langgraph.checkpoint.serde import jsonplus as lg_jsonplus
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.checkpoint.sqlite import SqliteSaver

from longshort.agents import ScriptedBackend, long_agent, short_agent
from longshort.graphs import build_reasoner
from longshort.graphs.chat_app import build_chat_app
from longshort.graphs.serde import CHECKPOINT_TYPES, checkpoint_serde, msgpack_allowlist
from longshort.trace import Episode, TokenCounts, Turn

THINK = "<think> 6 * 7 = 42 </think>"
ANSWER = "<answer> \\boxed{42} </answer>"


@pytest.fixture
def serde_log(monkeypatch, caplog):
    """The serializer's warnings from now on (its once-per-process memory cleared; not strict)."""
    monkeypatch.setattr(lg_jsonplus, "_warned_unregistered_types", set())
    monkeypatch.setattr(lg_jsonplus, "_warned_blocked_types", set())
    monkeypatch.setattr(_msgpack, "STRICT_MSGPACK_ENABLED", False)
    caplog.set_level(logging.WARNING, logger="langgraph.checkpoint.serde.jsonplus")

    def messages() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "langgraph.checkpoint.serde.jsonplus"]

    return messages


def _reasoner(tok, checkpointer):
    return build_reasoner(
        long_agent(ScriptedBackend(lambda r: THINK, tok)),
        short_agent(ScriptedBackend(lambda r: ANSWER, tok)),
        checkpointer=checkpointer,
    )


def _resume_a_thread(graph) -> list:
    """Two questions on one thread (the second run loads the checkpoint), then the saved state."""
    config = {"configurable": {"thread_id": "t1"}}
    graph.invoke({"question": "What is 6 * 7?"}, config)
    graph.invoke({"question": "And 7 * 6?"}, config)
    return graph.get_state(config).values["turns"]


def _savers():
    yield "memory", lambda serde: InMemorySaver(serde=serde)
    yield "sqlite", lambda serde: SqliteSaver(sqlite3.connect(":memory:", check_same_thread=False), serde=serde)


@pytest.mark.parametrize("name,saver", list(_savers()), ids=[n for n, _ in _savers()])
def test_a_resumed_thread_restores_turns_without_the_warning(tiny_tokenizer, serde_log, name, saver):
    turns = _resume_a_thread(_reasoner(tiny_tokenizer, saver(checkpoint_serde())))
    assert [type(t) for t in turns] == [Turn, Turn]  # instances, not plain dicts
    assert [t.agent for t in turns] == ["long", "short"] and turns[1].kind == "answer"
    assert serde_log() == []


def test_the_default_serializer_warns_about_turn(tiny_tokenizer, serde_log):
    turns = _resume_a_thread(_reasoner(tiny_tokenizer, InMemorySaver(serde=JsonPlusSerializer())))
    assert all(isinstance(t, Turn) for t in turns)
    assert any("Deserializing unregistered type longshort.trace.Turn" in m for m in serde_log()), serde_log()


def test_a_chat_thread_restores_messages_and_turns(tiny_tokenizer, serde_log):
    reasoner = _reasoner(tiny_tokenizer, None)
    app = build_chat_app(reasoner, checkpointer=InMemorySaver(serde=checkpoint_serde()))
    config = {"configurable": {"thread_id": "chat"}}
    app.invoke({"messages": [HumanMessage("What is 6 * 7?")]}, config)
    out = app.invoke({"messages": [HumanMessage("And 7 * 6?")]}, config)
    assert [type(m) for m in out["messages"]] == [HumanMessage, AIMessage] * 2
    assert out["messages"][-1].response_metadata["episode"]["status"] == "answered"
    history = list(app.get_state_history(config))  # every checkpoint of the thread
    assert history and serde_log() == []


def test_episode_and_token_counts_round_trip(serde_log):
    serde = checkpoint_serde()
    turn = Turn(agent="long", text=THINK, token_ids=[1, 2, 3], num_tokens=3)
    episode = Episode(id="e", question="q", status="answered", answer="42", turns=[turn])
    value = {"episode": episode, "tokens": TokenCounts(long=3, total=3), "turns": [turn]}
    back = serde.loads_typed(serde.dumps_typed(value))
    assert back == value and type(back["episode"]) is Episode and type(back["tokens"]) is TokenCounts
    assert serde_log() == []


def test_allowlist_names_the_types_and_extras():
    keys = msgpack_allowlist(HumanMessage, ("my.module", "MyType"))
    assert keys[: len(CHECKPOINT_TYPES)] == (
        ("longshort.trace", "Turn"),
        ("longshort.trace", "TokenCounts"),
        ("longshort.trace", "Episode"),
    )
    assert keys[-2:] == (("langchain_core.messages.human", "HumanMessage"), ("my.module", "MyType"))
    assert msgpack_allowlist(Turn) == msgpack_allowlist()  # no duplicates
