"""TransformersBackend on tiny random models: batching must never change what a request generates.

The models are random, so outputs are gibberish; what matters is that a request's tokens are the
same alone, batched, from many threads, or merged into a running batch mid-decode, and that one bad
request (or one failing forward) never takes the others down.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from longshort.agents.base import GenerationRequest, GenerationResult
from longshort.agents.hf import TransformersBackend

PROMPTS = [
    "What is 12 * 34 + 5?",
    "<think> First",
    "Compute step by step. Wait, verify the product again.",
    "<answer> 408 + 5 = 413.",
    "Let me check: 408 / 12",
    "So",
]


@pytest.fixture(scope="module")
def qwen(tiny_qwen_dir: Path) -> Iterator[TransformersBackend]:
    with TransformersBackend(tiny_qwen_dir, max_batch_size=16) as backend:
        yield backend


@pytest.fixture(scope="module")
def llama(tiny_llama_dir: Path) -> Iterator[TransformersBackend]:
    with TransformersBackend(tiny_llama_dir, max_batch_size=16) as backend:
        yield backend


def _requests(backend: TransformersBackend, **kw: object) -> list[GenerationRequest]:
    return [
        GenerationRequest(prompt_ids=backend.encode(p), max_new_tokens=12 + 9 * i, **kw)  # type: ignore[arg-type]
        for i, p in enumerate(PROMPTS)
    ]


def _ids(results: list[GenerationResult]) -> list[list[int]]:
    return [r.token_ids for r in results]


def staggered(
    backend: TransformersBackend, carrier: GenerationRequest, reqs: list[GenerationRequest], *, gap_s: float
) -> list[GenerationResult]:
    """``carrier`` starts decoding, then ``reqs`` arrive one by one ``gap_s`` apart (continuous admission)."""

    async def go() -> list[GenerationResult]:
        start = backend.stats["decode_steps"]
        first = asyncio.create_task(backend.agenerate([carrier]))
        while backend.stats["decode_steps"] < start + 3:
            await asyncio.sleep(0.001)
        rest = []
        for r in reqs:
            rest.append(asyncio.create_task(backend.agenerate([r])))
            await asyncio.sleep(gap_s)
        return [(await first)[0], *[(await t)[0] for t in rest]]

    return asyncio.run(go())


# ----------------------------------------------------------------------------------------------
# batching equivalence


@pytest.mark.parametrize("name", ["qwen", "llama"])
def test_greedy_same_alone_batched_threaded_and_merged(name: str, request: pytest.FixtureRequest) -> None:
    backend: TransformersBackend = request.getfixturevalue(name)
    reqs = _requests(backend)
    alone = [backend.generate([r])[0] for r in reqs]
    assert all(r.finish_reason in ("length", "eos") and r.error is None for r in alone)
    assert [r.num_tokens for r in alone if r.finish_reason == "length"] == [
        r.max_new_tokens for r, a in zip(reqs, alone, strict=True) if a.finish_reason == "length"
    ]

    batched = backend.generate(reqs)
    assert _ids(batched) == _ids(alone)

    threaded: list[GenerationResult | None] = [None] * len(reqs)

    def call(i: int) -> None:
        threaded[i] = backend.generate([reqs[i]])[0]

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(reqs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert _ids(threaded) == _ids(alone)  # type: ignore[arg-type]

    # staggered coroutines: a long "carrier" request is decoding when the others arrive one by one,
    # so they must be prefilled and merged into the running batch (continuous admission)
    carrier = GenerationRequest(prompt_ids=backend.encode(PROMPTS[0]), max_new_tokens=400)
    carrier_alone = backend.generate([carrier])[0]
    assert carrier_alone.finish_reason == "length"  # it really is still decoding while the others join
    before = backend.stats
    merged = staggered(backend, carrier, reqs, gap_s=0.003)
    assert _ids(merged) == _ids([carrier_alone, *alone])
    assert backend.stats["admitted_mid_batch"] >= before["admitted_mid_batch"] + len(reqs)


def test_prefill_groups_are_merged(tiny_qwen_dir: Path, qwen: TransformersBackend) -> None:
    """A small prefill budget splits one burst into several prefills that are merged (left padding)."""
    reqs = _requests(qwen)
    reference = qwen.generate(reqs)
    with TransformersBackend(tiny_qwen_dir, max_prefill_tokens=8) as small:
        results = small.generate(reqs)
        assert small.stats["prefills"] > 1
    assert _ids(results) == _ids(reference)


def test_equal_prompts_are_prefilled_once_with_the_same_samples(tiny_qwen_dir: Path, qwen: TransformersBackend) -> None:
    """N samples of one prefix (Monte Carlo rollouts): one prefill row, the same tokens as unshared."""
    reqs = [
        GenerationRequest(prompt_ids=qwen.encode(p), max_new_tokens=12, temperature=1.0, seed=i)
        for i, p in enumerate([PROMPTS[0]] * 5 + [PROMPTS[1]] * 3 + [PROMPTS[2]])
    ]
    with TransformersBackend(tiny_qwen_dir, share_prefills=False, prefix_cache_tokens=0) as unshared:
        reference = unshared.generate(reqs)
        assert unshared.stats["shared_prefill_rows"] == 0
    with TransformersBackend(tiny_qwen_dir, prefix_cache_tokens=0) as shared:
        results = shared.generate(reqs)
        assert shared.stats["shared_prefill_rows"] == 6  # 9 requests, 3 distinct prompts
    assert _ids(results) == _ids(reference)
    assert len({tuple(r.token_ids) for r in results[:5]}) > 1  # the copies still sample on their own


def test_simple_path_without_continuous_admission(tiny_llama_dir: Path, llama: TransformersBackend) -> None:
    reqs = _requests(llama)
    with TransformersBackend(tiny_llama_dir, continuous=False) as simple:
        assert _ids(simple.generate(reqs)) == _ids(llama.generate(reqs))
        assert simple.stats["admitted_mid_batch"] == 0


def test_seeded_sampling_same_alone_and_batched(qwen: TransformersBackend) -> None:
    reqs = [
        GenerationRequest(
            prompt_ids=qwen.encode(p), max_new_tokens=25, temperature=1.0, top_p=1.0 if i % 2 else 0.9, seed=i
        )
        for i, p in enumerate(PROMPTS)
    ]
    # mixed with greedy and unseeded rows, which must not disturb the seeded ones
    noise = [
        GenerationRequest(prompt_ids=qwen.encode("So"), max_new_tokens=30, temperature=0.7),
        GenerationRequest(prompt_ids=qwen.encode("Wait"), max_new_tokens=30),
    ]
    alone = [qwen.generate([r])[0] for r in reqs]
    batched = qwen.generate([noise[0], *reqs, noise[1]])[1:-1]
    assert _ids(batched) == _ids(alone)
    again = qwen.generate(list(reversed(reqs)))[::-1]
    assert _ids(again) == _ids(alone)

    # merged into a running batch mid-decode: still the same samples
    carrier = GenerationRequest(prompt_ids=qwen.encode("So"), max_new_tokens=300, temperature=1.0)
    before = qwen.stats

    async def staggered() -> list[GenerationResult]:
        first = asyncio.create_task(qwen.agenerate([carrier]))
        while qwen.stats["decode_steps"] < before["decode_steps"] + 3:
            await asyncio.sleep(0.001)
        rest = []
        for r in reqs:
            rest.append(asyncio.create_task(qwen.agenerate([r])))
            await asyncio.sleep(0.002)
        await first
        return [(await t)[0] for t in rest]

    assert _ids(asyncio.run(staggered())) == _ids(alone)
    assert qwen.stats["admitted_mid_batch"] > before["admitted_mid_batch"]
    assert len({tuple(r.token_ids) for r in alone}) == len(alone)  # different seeds, different samples


# ----------------------------------------------------------------------------------------------
# stop conditions, logprobs


def _sampled(backend: TransformersBackend, prompt: str, n: int, seed: int, **kw: object) -> GenerationResult:
    req = GenerationRequest(
        prompt_ids=backend.encode(prompt),
        max_new_tokens=n,
        temperature=1.0,
        seed=seed,
        **kw,  # type: ignore[arg-type]
    )
    return backend.generate([req])[0]


def test_single_token_stop(qwen: TransformersBackend) -> None:
    free = _sampled(qwen, "What is", 40, seed=3)
    tok = qwen.tokenizer
    assert tok is not None
    # a token from the unconstrained output whose text encodes back to exactly that id
    stop_id = next(
        t
        for i, t in enumerate(free.token_ids)
        if i >= 3 and tok.encode(tok.decode([t]), add_special_tokens=False) == [t]
    )
    stop = tok.decode([stop_id])
    assert qwen._stop_plan((stop,)).ids == (stop_id,)  # the id fast path
    first = free.token_ids.index(stop_id)
    stopped = _sampled(qwen, "What is", 40, seed=3, stop=(stop,))
    assert stopped.finish_reason == "stop"
    assert stopped.token_ids == free.token_ids[: first + 1]
    assert stopped.text.endswith(stop)
    assert len(stopped.logprobs or []) == stopped.num_tokens == first + 1


def test_multi_token_stop_uses_text(qwen: TransformersBackend) -> None:
    tok = qwen.tokenizer
    assert tok is not None
    free = _sampled(qwen, "Let me", 80, seed=11)
    ids = free.token_ids
    texts = [tok.decode([t]) for t in ids]

    def clean(j: int) -> bool:  # a printable, complete (not partial UTF-8) non-special token
        return j < len(ids) and texts[j].isprintable() and "\ufffd" not in texts[j] and ids[j] > 2

    def first_completion(stop: str) -> int:
        return next(j for j in range(len(ids)) if stop in tok.decode(ids[: j + 1]))

    # token-aligned stop: the text of two consecutive generated tokens
    j = next(j for j in range(3, len(ids) - 1) if clean(j) and clean(j + 1))
    stop = texts[j] + texts[j + 1]
    assert len(tok.encode(stop, add_special_tokens=False)) > 1
    plan = qwen._stop_plan((stop,))
    assert plan.texts == (stop,) and not plan.ids  # the decoded-text path, not the id fast path
    end = first_completion(stop)
    result = _sampled(qwen, "Let me", 80, seed=11, stop=(stop,))
    assert result.finish_reason == "stop"
    assert result.token_ids == ids[: end + 1]
    assert result.text.endswith(stop)
    assert result.logprobs == free.logprobs[: end + 1]  # type: ignore[index]

    # a stop that ends inside a token (on a non-space, so trigger gating is on): generation stops
    # at the token that completes it
    j, k = next(
        (j, k)
        for j in range(3, len(ids) - 1)
        if clean(j) and clean(j + 1)
        for k in range(1, len(texts[j + 1]))
        if not texts[j + 1][k - 1].isspace()
    )
    mid = texts[j] + texts[j + 1][:k]
    assert qwen._stop_plan(("never-seen-xyz", mid)).triggers is not None
    end = first_completion(mid)
    result = _sampled(qwen, "Let me", 80, seed=11, stop=("never-seen-xyz", mid))
    assert result.finish_reason == "stop"
    assert result.token_ids == ids[: end + 1]
    assert mid in result.text


@pytest.mark.parametrize("name", ["qwen", "llama"])
def test_eos_length_and_logprobs(name: str, request: pytest.FixtureRequest) -> None:
    backend: TransformersBackend = request.getfixturevalue(name)
    eos = backend.tokenizer.eos_token_id  # type: ignore[union-attr]
    # hot sampling makes eos likely somewhere among 16 seeded rows; seeds make it deterministic
    reqs = [
        GenerationRequest(prompt_ids=backend.encode("So"), max_new_tokens=150, temperature=3.0, seed=s)
        for s in range(16)
    ]
    results = backend.generate(reqs)
    finished = {r.finish_reason for r in results}
    assert finished <= {"eos", "length"} and "eos" in finished
    for req, r in zip(reqs, results, strict=True):
        assert r.error is None
        assert r.num_tokens == len(r.token_ids) == len(r.logprobs or [])
        assert all(lp <= 0.0 for lp in r.logprobs or [])
        assert eos not in r.token_ids
        if r.finish_reason == "length":
            assert r.num_tokens == req.max_new_tokens
        else:
            assert r.num_tokens < req.max_new_tokens
    eos_row = next(i for i, r in enumerate(results) if r.finish_reason == "eos")
    assert backend.generate([reqs[eos_row]])[0].token_ids == results[eos_row].token_ids

    greedy = backend.generate([GenerationRequest(prompt_ids=backend.encode("So"), max_new_tokens=5)])[0]
    assert greedy.finish_reason == "length" and greedy.num_tokens == 5
    assert backend.tokenizer.decode(greedy.token_ids) == greedy.text  # type: ignore[union-attr]


def test_max_new_tokens_clamped_to_context(qwen: TransformersBackend) -> None:
    assert qwen.max_context == 2048
    prompt = (qwen.encode(PROMPTS[2]) * 200)[:2040]
    result = qwen.generate([GenerationRequest(prompt_ids=prompt, max_new_tokens=50)])[0]
    assert result.finish_reason == "length"
    assert result.num_tokens == 8


# ----------------------------------------------------------------------------------------------
# bad input and failure isolation


def test_bad_requests_fail_alone(llama: TransformersBackend) -> None:
    good = _requests(llama)[:2]
    reference = llama.generate(good)
    bad = [
        GenerationRequest(prompt_ids=[], max_new_tokens=5),
        GenerationRequest(prompt_ids=[5, llama.vocab_size + 7], max_new_tokens=5),
        GenerationRequest(prompt_ids=[-1, 5], max_new_tokens=5),
        GenerationRequest(prompt_ids=[5] * 2049, max_new_tokens=5),
        GenerationRequest(prompt_ids=[5] * 2048, max_new_tokens=5),
        GenerationRequest(messages=[{"role": "user", "content": "hi"}], max_new_tokens=5),
    ]
    results = llama.generate([good[0], *bad, good[1]])
    assert _ids([results[0], results[-1]]) == _ids(reference)
    errors = results[1:-1]
    assert all(r.finish_reason == "error" and r.token_ids == [] for r in errors)
    messages = [r.error or "" for r in errors]
    assert "empty" in messages[0]
    assert str(llama.vocab_size + 7) in messages[1] and str(llama.vocab_size) in messages[1]
    assert "-1" in messages[2]
    assert "2049" in messages[3] and "2048" in messages[3]
    assert "2048" in messages[4]
    assert "TransformersBackend needs prompt_ids" in messages[5]


def test_model_and_tokenizer_instances(tiny_qwen_dir: Path, tiny_tokenizer: object, qwen: TransformersBackend) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_qwen_dir)
    reqs = _requests(qwen)[:3]
    with TransformersBackend(model, tiny_tokenizer, dtype="fp32") as backend:  # type: ignore[arg-type]
        assert backend.model is model and backend.tokenizer is tiny_tokenizer
        assert backend.max_context == 2048 and backend.device.type == "cpu"
        assert _ids(backend.generate(reqs)) == _ids(qwen.generate(reqs))
        # agenerate keeps the order and returns validation errors in place
        mixed = asyncio.run(backend.agenerate([reqs[0], GenerationRequest(prompt_ids=[], max_new_tokens=2), reqs[1]]))
        assert [r.finish_reason for r in mixed] == ["length", "error", "length"]
        assert _ids([mixed[0], mixed[2]]) == _ids(qwen.generate(reqs[:2]))
    assert backend.model is None  # close() released the weights


def test_missing_paths_raise_clearly(tmp_path: Path, tiny_qwen_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(FileNotFoundError, match="no-such-model"):
        TransformersBackend(missing)
    with pytest.raises(FileNotFoundError, match="no-such-model"):
        TransformersBackend(str(missing))
    with pytest.raises(FileNotFoundError, match="no-such-tokenizer"):
        TransformersBackend(tiny_qwen_dir, tokenizer=str(tmp_path / "no-such-tokenizer"))
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # no network waits in tests
    with pytest.raises(ValueError, match="nonexistent-org-xyz/tiny"):
        TransformersBackend("nonexistent-org-xyz/tiny")


def test_failing_forward_isolates_the_culprit(tiny_qwen_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with TransformersBackend(tiny_qwen_dir) as backend:
        reqs = _requests(backend)
        reference = backend.generate(reqs)
        model = backend.model
        assert model is not None
        original = model.forward
        poison = backend.encode("</rethink>")[0]  # in no prompt of PROMPTS
        state = {"decode_calls": 0}

        def flaky(*args: object, **kwargs: object) -> object:
            ids = kwargs["input_ids"]
            if ids.shape[1] > 1 and bool((ids == poison).any()):  # type: ignore[union-attr]
                raise RuntimeError("CUDA out of memory (simulated)")
            if ids.shape[1] == 1 and ids.shape[0] > 1:  # type: ignore[union-attr]
                state["decode_calls"] += 1
                if state["decode_calls"] == 3:  # one batched decode step fails once
                    raise RuntimeError("transient failure (simulated)")
            return original(*args, **kwargs)

        monkeypatch.setattr(model, "forward", flaky)
        poisoned = GenerationRequest(prompt_ids=backend.encode("1 </rethink>"), max_new_tokens=5)
        results = backend.generate([*reqs[:3], poisoned, *reqs[3:]])
        assert results[3].finish_reason == "error" and "out of memory" in (results[3].error or "")
        others = results[:3] + results[4:]
        assert _ids(others) == _ids(reference)
        assert all(r.error is None for r in others)
        assert backend.stats["isolated_retries"] >= 2
        # the worker survived
        assert backend.generate(reqs[:1])[0].token_ids == reference[0].token_ids


def test_out_of_memory_while_admitting_defers_the_newcomers(tiny_qwen_dir: Path, monkeypatch) -> None:
    """Merging newcomers copies the running batch's KV; if that runs out of memory, nobody fails."""
    with TransformersBackend(tiny_qwen_dir, max_batch_size=16) as backend:
        reqs = _requests(backend)
        alone = [backend.generate([r])[0] for r in reqs]
        carrier = GenerationRequest(prompt_ids=backend.encode(PROMPTS[0]), max_new_tokens=300)
        carrier_alone = backend.generate([carrier])[0]
        original, state = backend._merge, {"failures": 0}

        def merge(a, b):
            if a is not None and b is not None and state["failures"] < 1:
                state["failures"] += 1
                raise RuntimeError("CUDA out of memory (simulated)")
            return original(a, b)

        monkeypatch.setattr(backend, "_merge", merge)
        before = backend.stats

        async def staggered() -> list[GenerationResult]:
            first = asyncio.create_task(backend.agenerate([carrier]))
            while backend.stats["decode_steps"] < before["decode_steps"] + 3:
                await asyncio.sleep(0.001)
            rest = [asyncio.create_task(backend.agenerate([r])) for r in reqs]
            return [(await first)[0], *[(await t)[0] for t in rest]]

        results = asyncio.run(staggered())
        assert state["failures"] == 1 and backend.stats["admissions_deferred"] == 1
        # after the failure the batch admits no one beside the running row: they start when it is done
        assert backend.stats["admitted_mid_batch"] == before["admitted_mid_batch"]
        assert all(r.error is None for r in results)
        assert _ids(results) == _ids([carrier_alone, *alone])  # deferred rows restart from scratch


# ----------------------------------------------------------------------------------------------
# cancellation, lifecycle


def test_cancellation_releases_the_slot(tiny_qwen_dir: Path) -> None:
    with TransformersBackend(tiny_qwen_dir, max_batch_size=1) as backend:
        prompt = backend.encode("So")

        async def scenario() -> GenerationResult:
            long = asyncio.create_task(backend.agenerate([GenerationRequest(prompt_ids=prompt, max_new_tokens=2000)]))
            while backend.stats["decode_steps"] < 5:  # wait until it is decoding
                await asyncio.sleep(0.002)
            queued = asyncio.create_task(backend.agenerate([GenerationRequest(prompt_ids=prompt, max_new_tokens=2000)]))
            await asyncio.sleep(0.02)  # batch is full (max_batch_size=1): it waits in the queue
            queued.cancel()
            long.cancel()
            for task in (queued, long):
                with pytest.raises(asyncio.CancelledError):
                    await task
            return (await backend.agenerate([GenerationRequest(prompt_ids=prompt, max_new_tokens=3)]))[0]

        prefills_before = backend.stats["prefills"]
        result = asyncio.run(asyncio.wait_for(scenario(), 30))
        assert result.num_tokens == 3
        stats = backend.stats
        assert stats["cancelled"] == 2
        assert stats["prefills"] == prefills_before + 2  # the queued request never ran
        assert stats["decode_steps"] < 1000  # the long one was dropped, not decoded to the end


def test_close_then_generate_raises(tiny_qwen_dir: Path) -> None:
    backend = TransformersBackend(tiny_qwen_dir)
    req = GenerationRequest(prompt_ids=backend.encode("So"), max_new_tokens=3)
    assert backend.generate([req])[0].num_tokens == 3
    worker = backend._worker
    backend.close()
    backend.close()  # idempotent
    assert not worker.is_alive()
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="closed"):
        backend.generate([req])
    with pytest.raises(RuntimeError, match="closed"):
        asyncio.run(backend.agenerate([req]))
    assert time.monotonic() - start < 1.0


def test_close_fails_pending_callers(tiny_qwen_dir: Path) -> None:
    backend = TransformersBackend(tiny_qwen_dir)
    req = GenerationRequest(prompt_ids=backend.encode("So"), max_new_tokens=2000)
    errors: list[BaseException] = []

    def call() -> None:
        try:
            backend.generate([req])
        except RuntimeError as e:
            errors.append(e)

    caller = threading.Thread(target=call)
    caller.start()
    while backend.stats["decode_steps"] < 3:
        time.sleep(0.002)
    backend.close()
    caller.join(10)
    assert not caller.is_alive() and len(errors) == 1 and "closed" in str(errors[0])


class _Boom(BaseException):
    pass


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_dead_worker_raises_instead_of_hanging(tiny_qwen_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with TransformersBackend(tiny_qwen_dir) as backend:

        def die() -> None:
            raise _Boom("simulated crash")

        monkeypatch.setattr(backend, "_serve_once", die)
        req = GenerationRequest(prompt_ids=backend.encode("So"), max_new_tokens=3)
        with pytest.raises(RuntimeError, match="worker"):
            backend.generate([req])
        with pytest.raises(RuntimeError, match="worker"):
            backend.generate([req])


def test_abandoned_backend_is_collected(tiny_qwen_dir: Path) -> None:
    backend = TransformersBackend(tiny_qwen_dir)
    backend.generate([GenerationRequest(prompt_ids=backend.encode("So"), max_new_tokens=2)])
    worker = backend._worker
    del backend
    gc.collect()
    worker.join(5)
    assert not worker.is_alive()


def test_prefix_cache_reuses_a_finished_request_and_changes_nothing(tiny_qwen_dir):
    """A request that extends a finished one prefills only its tail, with the same greedy output."""
    cached = TransformersBackend(tiny_qwen_dir, device="cpu")
    plain = TransformersBackend(tiny_qwen_dir, device="cpu", prefix_cache_tokens=0)
    try:
        prompt = list(range(5, 45))
        first = cached.generate([GenerationRequest(prompt_ids=prompt, max_new_tokens=12)])[0]
        follow = prompt + first.token_ids + [7, 8, 9]  # the next turn: old view + what came since
        request = GenerationRequest(prompt_ids=follow, max_new_tokens=12)
        reused = cached.generate([request])[0]
        assert cached.stats["prefix_hits"] == 1
        assert cached.stats["prefix_tokens_reused"] >= len(prompt) + len(first.token_ids) - 1
        assert reused.token_ids == plain.generate([request])[0].token_ids
        assert plain.stats["prefix_hits"] == 0
    finally:
        cached.close()
        plain.close()
