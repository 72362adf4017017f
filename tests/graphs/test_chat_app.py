"""The reasoner embedded as a node of a ``messages`` app, and the langgraph.json factories."""

import asyncio
import json
from pathlib import Path

import pytest
from langchain_core.messages import AIMessage, HumanMessage

from longshort.agents import ScriptedBackend, long_agent, short_agent
from longshort.graphs import build_reasoner
from longshort.graphs.chat_app import build_chat_app

ROOT = Path(__file__).resolve().parents[2]


def _app(tok):
    reasoner = build_reasoner(
        long_agent(ScriptedBackend(lambda r: "<think> 6 * 7 = 42 </think>", tok)),
        short_agent(ScriptedBackend(lambda r: "<answer> \\boxed{42} </answer>", tok)),
    )
    return build_chat_app(reasoner)


def test_last_human_message_in_ai_answer_out(tiny_tokenizer):
    app = _app(tiny_tokenizer)
    out = app.invoke({"messages": [HumanMessage("hello"), AIMessage("hi"), HumanMessage("What is 6 * 7?")]})
    reply = out["messages"][-1]
    assert isinstance(reply, AIMessage) and "42" in reply.content
    assert reply.response_metadata["episode"]["status"] == "answered"
    assert asyncio.run(app.ainvoke({"messages": [HumanMessage("6*7?")]}))["messages"][-1].content == reply.content


def test_subgraph_turns_stream_through_the_parent(tiny_tokenizer):
    app = _app(tiny_tokenizer)
    chunks = list(app.stream({"messages": [HumanMessage("6*7?")]}, stream_mode="updates", subgraphs=True))
    inner = [next(iter(update)) for ns, update in chunks if ns]
    assert inner == ["start", "long", "short", "finish"]


def test_no_human_message_is_a_clear_error(tiny_tokenizer):
    with pytest.raises(ValueError, match="no human message"):
        _app(tiny_tokenizer).invoke({"messages": [AIMessage("only me")]})


def test_langgraph_json_points_at_real_factories(monkeypatch):
    spec = json.loads((ROOT / "langgraph.json").read_text())
    import importlib.util

    monkeypatch.delenv("LONGSHORT_LONG_MODEL", raising=False)  # the shipped testbed pair
    for name, target in spec["graphs"].items():
        file, func = target.split(":")
        module_spec = importlib.util.spec_from_file_location("lg_factory", ROOT / file)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
        graph = asyncio.run(getattr(module, func)({}))  # langgraph-api awaits the factory with a config
        assert graph.name == name
        nodes = set(graph.get_graph().nodes)
        assert {"long", "short"} <= nodes if name == "longshort" else "reasoner" in nodes
