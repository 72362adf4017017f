"""Token streaming through the graph: ``stream_mode="messages"`` yields each turn as it is generated."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import pytest
from langchain_core.language_models import GenericFakeChatModel
from langchain_core.messages import AIMessageChunk
from typer.testing import CliRunner

from longshort.agents import ChatModelBackend, ScriptedBackend, TransformersBackend, long_agent, short_agent
from longshort.agents.base import GenerationRequest, GenerationResult, IncrementalDetokenizer
from longshort.graphs import build_reasoner, episode_from_state

Q = "What is 12 * 34 + 5?"
THINK = "<think> 12 * 34 = 408 </think>"
RETHINK = "<answer> check 12 * 34 </rethink>"
ANSWER = "<answer> 408 + 5 = \\boxed{413} </answer>"


def _by_turn(items) -> dict[int, list]:
    turns: dict[int, list] = {}
    for chunk, meta in items:
        turns.setdefault(meta["turn"], []).append((chunk, meta))
    return turns


def _check_stream(items, episode) -> None:
    """Every item is a chunk of one turn, with its metadata; each turn's chunks make its text."""
    assert items and all(isinstance(chunk, AIMessageChunk) for chunk, _ in items)
    turns = _by_turn(items)
    assert sorted(turns) == list(range(len(episode.turns)))
    for k, turn in enumerate(episode.turns):
        chunks = turns[k]
        assert "".join(c.content for c, _ in chunks) == turn.text
        assert {(m["agent"], m["episode_id"], m["langgraph_node"]) for _, m in chunks} == {
            (turn.agent, episode.id, turn.agent)
        }
        assert len({c.id for c, _ in chunks}) == 1  # one message per turn, streamed in pieces


def _stream(graph):
    """The graph's ``messages`` items and the Episode its last ``values`` state holds."""
    items, final = [], None
    for mode, data in graph.stream({"question": Q}, stream_mode=["messages", "values"]):
        if mode == "messages":
            items.append(data)
        else:
            final = data
    return items, episode_from_state(final)


def test_sync_stream_yields_each_turn_token_by_token(tiny_tokenizer):
    long_b, short_b = (
        ScriptedBackend([THINK, THINK], tiny_tokenizer),
        ScriptedBackend([RETHINK, ANSWER], tiny_tokenizer),
    )
    graph = build_reasoner(long_agent(long_b), short_agent(short_b))
    items, episode = _stream(graph)
    assert episode.status == "answered" and len(episode.turns) == 4
    _check_stream(items, episode)
    assert len(items) >= sum(len(t.token_ids) for t in episode.turns) // 2  # pieces, not whole turns


def test_no_listener_no_hook(tiny_tokenizer):
    """invoke (and stream modes other than messages) never ask a backend for pieces."""
    long_b, short_b = ScriptedBackend([THINK] * 2, tiny_tokenizer), ScriptedBackend([RETHINK, ANSWER], tiny_tokenizer)
    graph = build_reasoner(long_agent(long_b), short_agent(short_b))
    graph.invoke({"question": Q})
    list(graph.stream({"question": Q}, stream_mode="updates"))
    assert all(r.on_token is None for r in long_b.requests + short_b.requests)


class GatedBackend(ScriptedBackend):
    """Sends the first half of a turn's pieces, then waits until someone has seen one of them.

    A graph that delivered pieces only when the turn ended would keep it waiting ``hold_s``.
    """

    def __init__(self, *args, hold_s: float = 10.0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.gate = threading.Event()
        self.hold_s = hold_s
        self.held: list[bool] = []

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        results = []
        for request in requests:
            hook = request.on_token
            (result,) = super().generate([request.model_copy(update={"on_token": None})])
            if hook is not None:
                pieces = IncrementalDetokenizer(self.tokenizer, hook)
                half = len(result.token_ids) // 2
                for i in result.token_ids[:half]:
                    pieces.push(i)
                self.held.append(self.gate.wait(self.hold_s))
                self.gate.clear()
                for i in result.token_ids[half:]:
                    pieces.push(i)
                pieces.finish(result.text)
            results.append(result)
        return results


def test_async_stream_delivers_chunks_while_the_turn_decodes(tiny_tokenizer):
    long_b = GatedBackend([THINK], tiny_tokenizer)
    short_b = ScriptedBackend([ANSWER], tiny_tokenizer)
    graph = build_reasoner(long_agent(long_b), short_agent(short_b))

    async def main():
        items = []
        async for chunk, meta in graph.astream({"question": Q}, stream_mode="messages"):
            items.append((chunk, meta))
            long_b.gate.set()  # the backend thread may go on only once a chunk got here
        return items

    items = asyncio.run(main())
    assert long_b.held == [True]  # the first chunks reached the consumer before the turn ended
    assert "".join(c.content for c, m in items if m["turn"] == 0) == THINK


def test_sync_stream_delivers_chunks_while_the_turn_decodes(tiny_tokenizer):
    long_b = GatedBackend([THINK], tiny_tokenizer)
    graph = build_reasoner(long_agent(long_b), short_agent(ScriptedBackend([ANSWER], tiny_tokenizer)))
    texts = []
    for chunk, _ in graph.stream({"question": Q}, stream_mode="messages"):
        texts.append(chunk.content)
        long_b.gate.set()
    assert long_b.held == [True] and "".join(texts) == THINK + ANSWER


@pytest.fixture(scope="module")
def protocol_backend(protocol_model_dir):
    with TransformersBackend(protocol_model_dir, device="cpu") as backend:
        yield backend


def test_local_model_streams_through_astream(protocol_backend):
    """The transformers backend decodes in its worker thread; the chunks reach the event loop."""
    graph = build_reasoner(long_agent(protocol_backend), short_agent(protocol_backend), max_tokens_per_turn=40)

    async def main():
        items, final = [], None
        async for mode, data in graph.astream({"question": Q}, stream_mode=["messages", "values"]):
            if mode == "messages":
                items.append(data)
            else:
                final = data
        return items, episode_from_state(final)

    items, episode = asyncio.run(main())
    assert episode.status == "answered" and len(episode.turns) == 4
    _check_stream(items, episode)
    assert len(items) > len(episode.turns) * 3


def test_chat_backend_turns_are_streamed_once(tiny_tokenizer):
    """The chat model inside the backend is not traced or streamed on its own: no duplicate chunks."""
    long_b = ChatModelBackend(GenericFakeChatModel(messages=iter([THINK])))
    short_b = ChatModelBackend(GenericFakeChatModel(messages=iter([ANSWER])))
    graph = build_reasoner(long_agent(long_b), short_agent(short_b))
    items, episode = _stream(graph)
    assert [t.text for t in episode.turns] == [THINK, ANSWER]
    _check_stream(items, episode)


def test_solve_prints_the_turns_as_they_come(protocol_model_dir):
    from longshort.cli import app

    result = CliRunner().invoke(
        app,
        ["solve", "What is 6 * 7?", "--long-model", str(protocol_model_dir), "--max-tokens-per-turn", "40"]
        + ["--stream"],
    )
    assert result.exit_code == 0, result.output
    out = result.output
    assert "0: long" in out and "1: short" in out
    assert "6 * 7 = 42" in out and "\\boxed{42}" in out
    assert "answered answer=42" in out
    assert out.count("6 * 7 = 42") == 1  # streamed once, not printed again in panels
