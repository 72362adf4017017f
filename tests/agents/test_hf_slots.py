"""The slot KV layout (``agents/_hf_slots.py``) must generate exactly what the dynamic layout does.

On CPU ``cuda_graphs=True`` runs the slot layout eagerly, so every equivalence here is the layout
itself: rows written at their own columns, freed and refilled slots, pool growth, prefix hits and
shared prefills copied into slots. Graph capture proper needs CUDA; its failure paths (a bucket out
of memory, an uncapturable model) are driven here by making the capture raise.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from longshort.agents._hf_slots import SlotPool
from longshort.agents.base import GenerationRequest, GenerationResult
from longshort.agents.hf import TransformersBackend
from tests.agents.test_hf import PROMPTS, _requests, staggered
from tests.agents.test_hf import _ids as _all_ids


@pytest.fixture(scope="module", params=["tiny_qwen_dir", "tiny_llama_dir"])
def pair(request: pytest.FixtureRequest) -> Iterator[tuple[TransformersBackend, TransformersBackend]]:
    path: Path = request.getfixturevalue(request.param)
    with (
        TransformersBackend(path, device="cpu", max_batch_size=16, cuda_graphs=False) as dynamic,
        TransformersBackend(path, device="cpu", max_batch_size=16, cuda_graphs=True) as slots,
    ):
        yield dynamic, slots


def _ids(results: list[GenerationResult]) -> list[list[int]]:
    """The token ids, after checking that no request failed (two failures would compare equal)."""
    assert all(r.error is None for r in results), [r.error for r in results]
    return _all_ids(results)


def test_decode_attention_packs_query_groups_exactly() -> None:
    """The grouped-query decode step without repeat_kv gives transformers' SDPA result."""
    from types import SimpleNamespace

    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from longshort.agents._hf_slots import decode_sdpa

    g = torch.Generator().manual_seed(0)
    module = SimpleNamespace(num_key_value_groups=7, training=False, is_causal=True)
    q, k, v = (torch.randn(*shape, generator=g) for shape in ((5, 28, 1, 16), (5, 4, 40, 16), (5, 4, 40, 16)))
    mask = (torch.arange(40)[None] <= torch.tensor([3, 10, 39, 0, 20])[:, None])[:, None, None, :]
    want, _ = sdpa_attention_forward(module, q, k, v, mask, scaling=0.25)
    got, _ = decode_sdpa(module, q, k, v, mask, scaling=0.25)
    assert got.shape == want.shape == (5, 1, 28, 16)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    prefill = torch.randn(2, 28, 3, 16, generator=g)  # more than one query token: transformers' own path
    torch.testing.assert_close(
        decode_sdpa(module, prefill, k[:2], v[:2], None)[0],
        sdpa_attention_forward(module, prefill, k[:2], v[:2], None)[0],
    )


def test_cpu_default_is_the_dynamic_layout(tiny_qwen_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with TransformersBackend(tiny_qwen_dir, device="cpu") as backend:
        assert backend._slots is None  # CPU keeps today's path unless asked
    monkeypatch.setenv("LONGSHORT_CUDA_GRAPHS", "1")  # the switch for a whole run (CLI commands)
    with TransformersBackend(tiny_qwen_dir, device="cpu") as backend:
        assert backend._slots is not None
    with TransformersBackend(tiny_qwen_dir, device="cpu", cuda_graphs=False) as backend:
        assert backend._slots is None  # the argument wins


def test_greedy_sampled_and_stops_match_the_dynamic_layout(pair) -> None:
    dynamic, slots = pair
    before = slots.stats
    for kw in ({}, {"temperature": 0.8, "seed": 7}, {"temperature": 0.8, "top_p": 0.9, "seed": 3}):
        reqs = _requests(dynamic, **kw)
        assert _ids(slots.generate(reqs)) == _ids(dynamic.generate(reqs))
        assert [_ids(slots.generate([r]))[0] for r in reqs[:3]] == _ids(dynamic.generate(reqs[:3]))
    stops = [GenerationRequest(prompt_ids=dynamic.encode(p), max_new_tokens=40, stop=(" ", "is")) for p in PROMPTS]
    a, b = dynamic.generate(stops), slots.generate(stops)
    assert _ids(b) == _ids(a) and [r.finish_reason for r in b] == [r.finish_reason for r in a]
    after = slots.stats
    over_slots = after["eager_steps"] + after["graph_replays"] - before["eager_steps"] - before["graph_replays"]
    assert over_slots == after["decode_steps"] - before["decode_steps"] > 0  # it really decoded over slots


def test_admission_into_freed_slots_and_pool_growth(pair) -> None:
    """A long carrier decodes while others join one by one and finish: slots are freed and refilled."""
    dynamic, slots = pair
    carrier = GenerationRequest(prompt_ids=dynamic.encode(PROMPTS[0]), max_new_tokens=400)
    reqs = _requests(dynamic) * 3

    before = slots.stats["admitted_mid_batch"]
    want = _ids([*dynamic.generate([carrier]), *dynamic.generate(reqs)])
    assert _ids(staggered(slots, carrier, reqs, gap_s=0.004)) == want
    assert slots.stats["admitted_mid_batch"] > before
    assert slots._slots is not None and slots._slots.capacity >= 400  # grew past its first bucket


def test_prefix_hits_and_shared_prefills_land_in_slots(pair) -> None:
    dynamic, slots = pair
    first = GenerationRequest(prompt_ids=dynamic.encode(PROMPTS[2]), max_new_tokens=20)
    out = dynamic.generate([first])[0]
    follow = GenerationRequest(prompt_ids=first.prompt_ids + out.token_ids + dynamic.encode(" next"), max_new_tokens=15)
    hits = slots.stats["prefix_hits"]
    assert _ids(slots.generate([first])) == [out.token_ids]
    assert _ids(slots.generate([follow])) == _ids(dynamic.generate([follow]))
    assert slots.stats["prefix_hits"] > hits
    same = [
        GenerationRequest(prompt_ids=dynamic.encode(PROMPTS[1]), max_new_tokens=25, temperature=1.0, seed=s)
        for s in range(6)
    ]
    shared = slots.stats["shared_prefill_rows"]
    assert _ids(slots.generate(same)) == _ids(dynamic.generate(same))
    assert slots.stats["shared_prefill_rows"] > shared


def _hits(dynamic: TransformersBackend, max_new: list[int]) -> tuple[list[GenerationRequest], list[GenerationRequest]]:
    """First requests, and follow-ups that extend each one's prompt + output by tails of different lengths."""
    firsts = [GenerationRequest(prompt_ids=dynamic.encode(p), max_new_tokens=10 + 3 * i) for i, p in enumerate(PROMPTS)]
    outs = dynamic.generate(firsts)
    tails = [" next", " and then some more words here", "?", " Wait, check 12 * 34 again.", " so", " 408"]
    follows = [
        GenerationRequest(prompt_ids=f.prompt_ids + o.token_ids + dynamic.encode(t), max_new_tokens=m)
        for f, o, t, m in zip(firsts, outs, tails, max_new, strict=True)
    ]
    return firsts, follows


def test_prefix_hits_are_prefilled_together_in_slots(pair) -> None:
    """Follow-ups of six finished requests (tails of 1 to 9 tokens) are one forward, same tokens."""
    dynamic, slots = pair
    firsts, follows = _hits(dynamic, [15, 1, 20, 8, 1, 12])  # two stop at their first token
    want = _ids(dynamic.generate(follows))
    assert _ids(slots.generate(firsts)) == _ids(dynamic.generate(firsts))
    before = slots.stats
    assert _ids(slots.generate(follows)) == want
    after = slots.stats
    assert after["prefix_hits"] - before["prefix_hits"] == len(follows)
    assert after["prefills"] - before["prefills"] == 1  # all six tails in one forward
    again = [
        GenerationRequest(prompt_ids=f.prompt_ids + w[:1], max_new_tokens=5) for f, w in zip(follows, want, strict=True)
    ]
    assert _ids(slots.generate(again)) == _ids(dynamic.generate(again))  # the KV kept from the first tokens


def test_failed_batched_prefix_prefill_falls_back_one_by_one(tiny_qwen_dir: Path, monkeypatch) -> None:
    import longshort.agents._hf_scheduler as scheduler

    with (
        TransformersBackend(tiny_qwen_dir, device="cpu", cuda_graphs=False) as dynamic,
        TransformersBackend(tiny_qwen_dir, device="cpu", cuda_graphs=True) as slots,
    ):
        firsts, follows = _hits(dynamic, [12] * len(PROMPTS))
        want = _ids(dynamic.generate(follows))
        slots.generate(firsts)

        def broken(*args, **kwargs):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")

        monkeypatch.setattr(scheduler, "prefill_tails", broken)
        before = slots.stats
        assert _ids(slots.generate(follows)) == want
        assert slots.stats["prefix_hits"] - before["prefix_hits"] == len(follows)  # each alone, still a hit


def test_testbed_episodes_identical() -> None:
    """The shipped RL pair (merged adapters) through the graph: the same greedy episodes in both layouts."""
    from longshort.agents import long_agent, short_agent
    from longshort.agents.loading import load_backend
    from longshort.graphs import build_reasoner
    from longshort.testbed.checkpoints import shipped_pairs
    from longshort.testbed.tasks import generate_problems

    paths = shipped_pairs()["longshort-rl"]
    questions = [{"question": p.question} for p in generate_problems("test", 8, seed=3)]
    episodes = []
    for graphs in (False, True):
        long, short = (load_backend("hf", path, device="cpu", cuda_graphs=graphs) for path in paths)
        with long, short:
            graph = build_reasoner(long_agent(long), short_agent(short))
            outs = graph.batch(questions)
            episodes.append([(o["status"], o["answer"], [t.token_ids for t in o["turns"]]) for o in outs])
            over_slots = [b.stats["eager_steps"] + b.stats["graph_replays"] for b in (long, short)]
            assert all(over_slots) == graphs
    assert sum(len(turns) for *_, turns in episodes[0]) > 2 * len(questions)  # multi-turn episodes
    assert episodes[0] == episodes[1]


@pytest.mark.parametrize("graphs", [False, True], ids=["dynamic", "slots"])
def test_cancelled_rows_free_their_slots(tiny_qwen_dir: Path, graphs: bool) -> None:
    """Cancelling rows mid-decode (some, then all) frees their slots; the rest generate as before."""
    with (
        TransformersBackend(tiny_qwen_dir, device="cpu", cuda_graphs=False) as dynamic,
        TransformersBackend(tiny_qwen_dir, device="cpu", cuda_graphs=graphs) as backend,
    ):
        keep = _requests(dynamic)
        want = _ids(dynamic.generate(keep))
        long = GenerationRequest(prompt_ids=dynamic.encode("So"), max_new_tokens=2000)

        async def scenario() -> list[GenerationResult]:
            start = backend.stats["decode_steps"]
            doomed = [asyncio.create_task(backend.agenerate([long])) for _ in range(3)]
            kept = asyncio.create_task(backend.agenerate(keep))
            while backend.stats["decode_steps"] < start + 5:
                await asyncio.sleep(0.002)
            for task in doomed:
                task.cancel()
            results = await kept
            alone = asyncio.create_task(backend.agenerate([long]))
            while backend.stats["decode_steps"] < start + 60:
                await asyncio.sleep(0.002)
            alone.cancel()  # the only row left: the batch empties
            with pytest.raises(asyncio.CancelledError):
                await alone
            return results

        assert _ids(asyncio.run(asyncio.wait_for(scenario(), 60))) == want
        assert _ids(backend.generate(keep[:2])) == want[:2]  # the backend still serves
        assert backend.stats["cancelled"] == 4  # however each left the batch
        assert backend.stats["decode_steps"] < 1500  # the cancelled rows were not decoded to the end


def test_pool_that_cannot_be_allocated_falls_back_to_the_dynamic_layout(tiny_qwen_dir: Path, monkeypatch) -> None:
    with TransformersBackend(tiny_qwen_dir, device="cpu", cuda_graphs=False) as dynamic:
        want = _ids(dynamic.generate(_requests(dynamic)))

    def no_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")

    monkeypatch.setattr(SlotPool, "ensure", no_memory)
    with TransformersBackend(tiny_qwen_dir, device="cpu", cuda_graphs=True) as backend:
        assert _ids(backend.generate(_requests(backend))) == want
        assert backend.stats["slot_fallbacks"] == 1 and backend.stats["eager_steps"] == 0


def test_capture_failures_run_eagerly(tiny_qwen_dir: Path, monkeypatch, caplog) -> None:
    """A bucket out of memory runs eagerly that step (counted); an uncapturable model warns once."""
    with TransformersBackend(tiny_qwen_dir, device="cpu", cuda_graphs=False) as dynamic:
        want = _ids(dynamic.generate(_requests(dynamic)))
    calls = []

    def stream(*args, **kwargs):
        calls.append(1)
        raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")

    monkeypatch.setattr(torch.cuda, "Stream", stream)
    with TransformersBackend(tiny_qwen_dir, device="cpu", cuda_graphs=True) as backend:
        assert backend._slots is not None
        backend._slots.use_graphs = True  # as on CUDA: every step tries its bucket's graph
        assert _ids(backend.generate(_requests(backend))) == want
        stats = backend.stats
        assert stats["graph_fallbacks"] == len(calls) > 0  # once per bucket, then that bucket stays eager
        assert stats["graph_fallbacks"] < stats["decode_steps"] == stats["eager_steps"]

    def broken(*args, **kwargs):
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(torch.cuda, "Stream", broken)
    with caplog.at_level(logging.WARNING, logger="longshort.agents.hf"):
        with TransformersBackend(tiny_qwen_dir, device="cpu", cuda_graphs=True) as backend:
            backend._slots.use_graphs = True
            assert _ids(backend.generate(_requests(backend))) == want
            assert backend._slots.use_graphs is False and backend.stats["graph_captures"] == 0
    assert sum("cannot be captured" in r.message for r in caplog.records) == 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_cuda_graph_replay_matches_the_eager_slot_step(tiny_qwen_dir: Path) -> None:
    with (
        TransformersBackend(tiny_qwen_dir, device="cuda", max_batch_size=16) as graphs,
        TransformersBackend(tiny_qwen_dir, device="cuda", max_batch_size=16, cuda_graphs=True) as eager,
    ):
        assert graphs._slots is not None and eager._slots is not None
        eager._slots.use_graphs = False
        for kw in ({}, {"temperature": 0.8, "seed": 7}):
            reqs = _requests(graphs, **kw)
            assert _ids(graphs.generate(reqs)) == _ids(eager.generate(reqs))
        assert graphs.stats["graph_captures"] > 0 and graphs.stats["graph_replays"] > 0
