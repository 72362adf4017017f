"""A turn records how many of its leading token ids were forced (a repair's prefilled tag), not sampled."""

import pytest

from longshort.agents import ScriptedBackend, TransformersBackend, long_agent, short_agent
from longshort.graphs import build_reasoner, episode_from_state
from longshort.protocol import OPEN_TAG

Q = "What is 12 * 34 + 5?"
THINK = "<think> 12 * 34 = 408 </think>"
ANSWER = "<answer> 408 + 5 = \\boxed{413} </answer>"


def _solve(long_script, short_script, tok, **kw):
    long_b, short_b = ScriptedBackend(long_script, tok), ScriptedBackend(short_script, tok)
    graph = build_reasoner(long_agent(long_b), short_agent(short_b), **kw)
    return episode_from_state(graph.invoke({"question": Q})), long_b, short_b


def test_a_repaired_turn_counts_its_prefilled_tag(tiny_tokenizer):
    ep, long_b, _ = _solve(["forgot the tag </think>", " 12 * 34 = 408 </think>"], [ANSWER], tiny_tokenizer)
    assert ep.status == "answered"
    repaired, normal = ep.turns
    tag = tiny_tokenizer.encode(OPEN_TAG["long"], add_special_tokens=False)
    assert repaired.attempts == 2 and repaired.forced_tokens == len(tag) > 0
    assert repaired.token_ids[: len(tag)] == tag
    assert long_b.requests[1].prompt_ids[-len(tag) :] == tag  # the ids that were prefilled
    assert repaired.num_tokens == len(repaired.token_ids)
    assert repaired.logprobs is not None and len(repaired.logprobs) == len(repaired.token_ids)
    assert repaired.logprobs[: len(tag)] == [0.0] * len(tag)
    assert normal.attempts == 1 and normal.forced_tokens == 0


def test_a_short_turn_repair_forces_its_own_tag(tiny_tokenizer):
    ep, _, short_b = _solve([THINK], ["no tag here </answer>", " 408 + 5 = \\boxed{413} </answer>"], tiny_tokenizer)
    assert ep.status == "answered"
    tag = tiny_tokenizer.encode(OPEN_TAG["short"], add_special_tokens=False)
    assert [t.forced_tokens for t in ep.turns] == [0, len(tag)]
    assert ep.turns[1].token_ids[: len(tag)] == tag


def test_chat_backends_force_nothing():
    """A chat backend's repair resamples instead of prefilling: nothing is forced."""
    long_b = ScriptedBackend(["forgot the tag </think>", THINK])
    graph = build_reasoner(long_agent(long_b), short_agent(ScriptedBackend([ANSWER])))
    ep = episode_from_state(graph.invoke({"question": Q}))
    assert ep.turns[0].attempts == 2 and all(t.forced_tokens == 0 for t in ep.turns)


@pytest.fixture(scope="module")
def random_qwen(tiny_qwen_dir):
    with TransformersBackend(tiny_qwen_dir, device="cpu") as backend:
        yield backend


class _StopsWithoutTag:
    """The real backend, but its turns end as if on a stop string: malformed, not cut by the cap (which
    is not retried), so the repair path runs on a real model."""

    def __init__(self, backend):
        self._backend = backend

    def __getattr__(self, name):
        return getattr(self._backend, name)

    def generate(self, requests):
        return [r.model_copy(update={"finish_reason": "stop"}) for r in self._backend.generate(requests)]


def test_a_real_model_repair_keeps_logprobs_aligned(random_qwen, tiny_tokenizer):
    """A random model never writes its tag: the repair prefills it, then the model samples on."""
    backend = _StopsWithoutTag(random_qwen)
    graph = build_reasoner(long_agent(backend), short_agent(backend), max_tokens_per_turn=12)
    ep = episode_from_state(graph.invoke({"question": Q}))
    turn = ep.turns[0]
    tag = tiny_tokenizer.encode(OPEN_TAG["long"], add_special_tokens=False)
    assert turn.attempts == 2 and turn.forced_tokens == len(tag)
    assert turn.token_ids[: len(tag)] == tag
    assert turn.logprobs is not None and len(turn.logprobs) == len(turn.token_ids) == turn.num_tokens
    assert turn.logprobs[: len(tag)] == [0.0] * len(tag)
    assert all(lp < 0.0 for lp in turn.logprobs[len(tag) :])  # sampled by the model: real logprobs
    assert turn.discarded_tokens == 12 and ep.tokens.long == 12 + turn.num_tokens  # both attempts count


def test_a_turn_cut_by_the_cap_is_its_own_status_and_not_retried(random_qwen):
    """A random model runs into the per-turn cap: that is `turn_cap`, not `malformed`, with one attempt."""
    graph = build_reasoner(long_agent(random_qwen), short_agent(random_qwen), max_tokens_per_turn=12)
    ep = episode_from_state(graph.invoke({"question": Q}))
    assert ep.status == "turn_cap" and "per-turn cap (12 tokens)" in ep.error
    assert ep.turns[0].attempts == 1 and ep.turns[0].finish_reason == "length" and ep.tokens.total == 12
