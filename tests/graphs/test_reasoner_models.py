"""The whole protocol with real models: in-process transformers and an OpenAI-compatible server.

The model is a tiny Qwen2 trained (in the session fixture) to play both roles on two questions,
so these runs go through real tokenization, generation, stop handling and HTTP.
"""

import asyncio

import pytest

from longshort.agents import TransformersBackend, long_agent, short_agent
from longshort.graphs import build_reasoner, episode_from_state
from longshort.graphs.turn import view_ids
from tests.conftest import PROTOCOL_EPISODES

EXPECTED = [("42", 2), ("413", 4)]  # answer and number of turns of each memorised episode


@pytest.fixture(scope="module")
def hf_backend(protocol_model_dir):
    backend = TransformersBackend(protocol_model_dir)
    yield backend
    backend.close()


def _record_views(backend, monkeypatch):
    views: list[list[int]] = []
    original = backend.agenerate

    async def recording(requests):
        views.extend(r.prompt_ids for r in requests)
        return await original(requests)

    monkeypatch.setattr(backend, "agenerate", recording)
    return views


def test_local_backend_runs_the_protocol_and_views_only_grow(hf_backend, monkeypatch):
    views = _record_views(hf_backend, monkeypatch)
    graph = build_reasoner(long_agent(hf_backend), short_agent(hf_backend), max_tokens_per_turn=40)
    question = PROTOCOL_EPISODES[1][0]
    hits = hf_backend.stats["prefix_hits"]
    ep = episode_from_state(asyncio.run(graph.ainvoke({"question": question})))
    # turns 3 and 4 extend each agent's previous view: only their new tails were prefilled
    assert hf_backend.stats["prefix_hits"] - hits >= 2
    assert (ep.answer, len(ep.turns)) == EXPECTED[1]
    assert [t.kind for t in ep.turns] == ["think", "rethink", "think", "answer"]
    # the views alternate long, short, long, short; each agent's next view extends its last one
    long_views, short_views = views[0::2], views[1::2]
    for role_views in (long_views, short_views):
        for before, after in zip(role_views, role_views[1:], strict=False):
            assert after[: len(before)] == before
    # and each view is exactly prompt + the generated ids so far, never re-tokenized
    agents = {"long": long_agent(hf_backend), "short": short_agent(hf_backend)}
    for k, turn in enumerate(ep.turns):
        assert views[k] == view_ids(agents[turn.agent], question, ep.turns[:k])
        assert turn.logprobs is not None and len(turn.logprobs) == len(turn.token_ids) == turn.num_tokens


def test_local_backend_batch_of_episodes(hf_backend):
    graph = build_reasoner(long_agent(hf_backend), short_agent(hf_backend), max_tokens_per_turn=40)
    questions = [q for q, _ in PROTOCOL_EPISODES] * 3
    outs = asyncio.run(graph.abatch([{"question": q} for q in questions]))
    got = [(o["answer"], len(o["turns"])) for o in outs]
    assert got == EXPECTED * 3


@pytest.mark.parametrize("index", [0, 1])
def test_openai_compatible_server_runs_the_protocol(served_protocol_model, index):
    from longshort.agents.chat import openai_backend

    backend = openai_backend(served_protocol_model.base_url, served_protocol_model.model, timeout=30)
    graph = build_reasoner(long_agent(backend), short_agent(backend), max_tokens_per_turn=40)
    ep = episode_from_state(graph.invoke({"question": PROTOCOL_EPISODES[index][0]}))
    assert (ep.answer, len(ep.turns)) == EXPECTED[index]
    assert ep.status == "answered"
    assert all(t.num_tokens > 0 and t.model_id == served_protocol_model.model for t in ep.turns)
