"""ProcessBackend: the same tokens as the in-process backend, from a child process that can die.

Each child imports torch and loads its model (a few seconds on CPU), so the module shares one
child per model and kills only the one it spawns for that purpose.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from longshort._async import run_sync
from longshort.agents import GenerationRequest, ProcessBackend, long_agent, short_agent
from longshort.agents.hf import TransformersBackend
from longshort.graphs import build_reasoner, episode_from_state

QUESTIONS = ["What is 6 * 7?", "What is 12 * 34 + 5?", "What is 6 * 7? Think.", "Compute 12 * 34."]


@pytest.fixture(scope="module")
def child(protocol_model_dir: Path) -> Iterator[ProcessBackend]:
    with ProcessBackend(protocol_model_dir, num_threads=1, device="cpu", max_batch_size=8) as backend:
        yield backend


@pytest.fixture(scope="module")
def local(protocol_model_dir: Path) -> Iterator[TransformersBackend]:
    with TransformersBackend(protocol_model_dir, device="cpu", max_batch_size=8) as backend:
        yield backend


def _episodes(long_backend, short_backend, **agent_kw) -> list:
    graph = build_reasoner(
        long_agent(long_backend, **agent_kw),
        short_agent(short_backend, **agent_kw),
        max_turns=6,
        max_tokens_per_turn=48,
        max_total_tokens=160,
    )
    outs = run_sync(graph.abatch([{"question": q} for q in QUESTIONS]))
    return [episode_from_state(o) for o in outs]


def _tokens(episodes) -> list:
    return [(e.status, [(t.agent, t.token_ids) for t in e.turns]) for e in episodes]


def test_graph_episodes_match_the_in_process_backend(child: ProcessBackend, local: TransformersBackend) -> None:
    assert child.tokenizer is not None and child.max_context == local.max_context
    theirs, ours = _episodes(child, child), _episodes(local, local)
    assert _tokens(theirs) == _tokens(ours)
    assert any(e.status == "answered" for e in ours)  # the protocol model really plays the roles
    assert child.stats["requests"] >= len(QUESTIONS)


def test_seeded_samples_match_the_in_process_backend(child: ProcessBackend, local: TransformersBackend) -> None:
    requests = [
        GenerationRequest(prompt_ids=local.encode(q), max_new_tokens=12, temperature=1.0, seed=i)
        for i, q in enumerate(QUESTIONS)
    ]
    theirs, ours = child.generate(requests), local.generate(requests)
    assert [r.token_ids for r in theirs] == [r.token_ids for r in ours]
    flat = [lp for r in theirs for lp in r.logprobs or []]
    assert flat == pytest.approx([lp for r in ours for lp in r.logprobs or []], abs=1e-5)


def test_tempered_logprobs_pass_through_unchanged(child: ProcessBackend, local: TransformersBackend) -> None:
    """Logprobs are log_softmax(logits / T) in the child too; the pipe carries them as they are."""
    requests = [
        GenerationRequest(prompt_ids=local.encode(q), max_new_tokens=12, temperature=t, seed=i)
        for i, (q, t) in enumerate(zip(QUESTIONS, [0.7, 0.0, 1.3, 0.7], strict=True))
    ]
    theirs, ours = child.generate(requests), local.generate(requests)
    assert [r.token_ids for r in theirs] == [r.token_ids for r in ours]
    for a, b in zip(theirs, ours, strict=True):
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-5)


def test_bad_request_fails_alone(child: ProcessBackend) -> None:
    good = GenerationRequest(prompt_ids=child.encode("What is 6 * 7?"), max_new_tokens=4)
    bad = GenerationRequest(prompt_ids=[10**6], max_new_tokens=4)
    results = asyncio.run(child.agenerate([bad, good]))
    assert results[0].finish_reason == "error" and "vocabulary" in (results[0].error or "")
    assert results[1].finish_reason != "error" and results[1].num_tokens > 0


def test_cancelled_caller_frees_its_row(child: ProcessBackend) -> None:
    long_request = GenerationRequest(prompt_ids=child.encode("What is"), max_new_tokens=2000)
    before = child.stats["cancelled"]

    async def cancel_one() -> None:
        task = asyncio.ensure_future(child.agenerate([long_request]))
        await asyncio.sleep(0.5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_one())
    deadline = time.monotonic() + 10
    while child.stats["cancelled"] == before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert child.stats["cancelled"] > before
    after = child.generate([GenerationRequest(prompt_ids=child.encode("So"), max_new_tokens=3)])
    assert after[0].num_tokens == 3  # the worker is free again


def test_missing_model_fails_at_construction(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ProcessBackend(tmp_path / "nope")


def test_model_instance_is_refused(local: TransformersBackend) -> None:
    with pytest.raises(TypeError, match="path"):
        ProcessBackend(local.model)  # type: ignore[arg-type]


def test_dead_child_fails_pending_and_later_calls(protocol_model_dir: Path) -> None:
    backend = ProcessBackend(protocol_model_dir, num_threads=1, device="cpu")
    request = GenerationRequest(prompt_ids=backend.encode("What is"), max_new_tokens=5000)

    async def kill_midway() -> None:
        task = asyncio.ensure_future(backend.agenerate([request]))
        await asyncio.sleep(0.5)
        os.kill(backend.pid, signal.SIGKILL)
        with pytest.raises(RuntimeError, match="not running"):
            await asyncio.wait_for(task, timeout=20)

    asyncio.run(kill_midway())
    with pytest.raises(RuntimeError, match="not running"):
        backend.generate([request])
    backend.close()
    with pytest.raises(RuntimeError, match="closed"):
        backend.generate([request])


def test_hf_process_backend_kind(protocol_model_dir: Path) -> None:
    from longshort.agents.loading import BACKENDS, load_agents

    assert "hf-process" in BACKENDS
    long, short = load_agents(str(protocol_model_dir), backend="hf-process", device="cpu")
    try:
        assert isinstance(long.backend, ProcessBackend) and short.backend is long.backend  # one model, one child
        episode = _episodes(long.backend, short.backend)[0]
        assert episode.turns and episode.turns[0].agent == "long"
    finally:
        long.backend.close()
