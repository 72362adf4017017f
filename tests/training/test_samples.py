"""episode_sample: one graph episode → one agent's training row, exactly what the agent was fed."""

import pytest

from longshort.agents import ScriptedBackend, TransformersBackend, long_agent, short_agent
from longshort.graphs import build_reasoner, episode_from_state
from longshort.graphs.turn import document_ids, view_ids
from longshort.protocol import OPEN_TAG
from longshort.trace import Episode, Turn
from longshort.training.samples import AgentSample, episode_sample

Q = "What is 12 * 34 + 5?"
THINK = "<think> 12 * 34 = 408 </think>"
RETHINK = "<answer> check 12 * 34 </rethink>"
ANSWER = "<answer> 408 + 5 = \\boxed{413} </answer>"


def _run(long_script, short_script, tok):
    long_b, short_b = ScriptedBackend(long_script, tok), ScriptedBackend(short_script, tok)
    agents = {"long": long_agent(long_b), "short": short_agent(short_b)}
    graph = build_reasoner(agents["long"], agents["short"])
    return episode_from_state(graph.invoke({"question": Q})), agents


def _first_views(ep: Episode, agents, role: str) -> dict[int, list[int]]:
    """turn index -> the prompt ids the agent was given for that turn's first attempt."""
    requests = iter(agents[role].backend.requests)
    views = {}
    for k, turn in enumerate(ep.turns):
        if turn.agent == role:
            views[k] = next(requests).prompt_ids
            for _ in range(turn.attempts - 1):
                next(requests)
    return views


def test_completion_is_the_document_and_mask_the_own_sampled_tokens(tiny_tokenizer):
    ep, agents = _run([THINK, THINK], [RETHINK, ANSWER], tiny_tokenizer)
    assert ep.status == "answered" and len(ep.turns) == 4
    for role, agent in agents.items():
        sample = episode_sample(ep, agent)
        assert isinstance(sample, AgentSample) and sample.agent == role and sample.episode_id == ep.id
        assert sample.prompt_ids == agent.prompt_ids(Q)
        assert sample.completion_ids == [i for t in ep.turns for i in t.token_ids]  # one tokenizer
        assert sample.completion_ids == document_ids(agent, ep.turns)
        own = [t for t in ep.turns if t.agent == role]
        assert sum(sample.mask) == sample.num_trained == sum(t.num_tokens - t.forced_tokens for t in own) > 0
        assert len(sample.turn_spans) == len(ep.turns)
        assert [e - s for s, e in sample.turn_spans] == [len(t.token_ids) for t in ep.turns]
        assert sample.turn_spans[0][0] == 0 and sample.turn_spans[-1][1] == len(sample.completion_ids)
        for turn, (start, end) in zip(ep.turns, sample.turn_spans, strict=True):
            assert sample.completion_ids[start:end] == turn.token_ids
            assert set(sample.mask[start:end]) == ({1} if turn.agent == role else {0})
        assert len(sample.logprobs) == len(sample.completion_ids)


def test_each_turn_prefix_is_the_view_the_agent_was_fed(tiny_tokenizer):
    ep, agents = _run([THINK, THINK], [RETHINK, ANSWER], tiny_tokenizer)
    for role, agent in agents.items():
        sample = episode_sample(ep, agent)
        views = _first_views(ep, agents, role)
        assert len(views) == 2  # both agents spoke twice
        for k, view in views.items():
            end = sample.turn_spans[k - 1][1] if k else 0
            assert sample.prompt_ids + sample.completion_ids[:end] == view == view_ids(agent, Q, ep.turns[:k])


def test_a_repaired_turn_has_its_forced_ids_masked(tiny_tokenizer):
    ep, agents = _run(["forgot the tag </think>", " 12 * 34 = 408 </think>"], [ANSWER], tiny_tokenizer)
    assert ep.status == "answered"
    repaired = ep.turns[0]
    tag = tiny_tokenizer.encode(OPEN_TAG["long"], add_special_tokens=False)
    assert repaired.forced_tokens == len(tag) > 0
    sample = episode_sample(ep, agents["long"])
    start, end = sample.turn_spans[0]
    assert sample.completion_ids[start : start + len(tag)] == tag
    assert sample.mask[start:end] == [0] * len(tag) + [1] * (end - start - len(tag))
    assert sample.logprobs[start : start + len(tag)] == [0.0] * len(tag)
    assert sum(sample.mask) == sum(t.num_tokens - t.forced_tokens for t in ep.turns if t.agent == "long")
    # the repair was fed the view plus the forced tag: the same prefix of the sample
    repair_view = agents["long"].backend.requests[1].prompt_ids
    assert repair_view == sample.prompt_ids + sample.completion_ids[: start + len(tag)]


def test_logprobs_of_a_real_model_are_carried_on_the_own_tokens(protocol_model_dir):
    with TransformersBackend(protocol_model_dir, device="cpu") as backend:
        agents = {"long": long_agent(backend, temperature=0.7, seed=1), "short": short_agent(backend)}
        graph = build_reasoner(agents["long"], agents["short"], max_tokens_per_turn=40)
        ep = episode_from_state(graph.invoke({"question": Q}))
    assert len(ep.turns) >= 2
    for role, agent in agents.items():
        sample = episode_sample(ep, agent)
        assert sample.completion_ids == [i for t in ep.turns for i in t.token_ids]
        for k, (turn, (start, end)) in enumerate(zip(ep.turns, sample.turn_spans, strict=True)):
            got = sample.logprobs[start:end]
            if turn.agent != role:
                assert got == [0.0] * (end - start)
                continue
            f = turn.forced_tokens
            assert got == [0.0] * f + list(turn.logprobs[f:])
            assert all(lp <= 0.0 for lp in got)
            before = sample.turn_spans[k - 1][1] if k else 0
            assert sample.prompt_ids + sample.completion_ids[:before] == view_ids(agent, Q, ep.turns[:k])


def test_an_agent_that_never_spoke_gets_an_all_zero_mask(tiny_tokenizer):
    ep, agents = _run(["<think> nested <think> tags </think>"] * 2, [ANSWER], tiny_tokenizer)
    assert ep.status == "malformed" and {t.agent for t in ep.turns} == {"long"}
    sample = episode_sample(ep, agents["short"])
    assert sample.completion_ids == ep.turns[0].token_ids and sum(sample.mask) == 0


def test_chat_agents_and_chat_episodes_are_refused(tiny_tokenizer):
    chat = long_agent(ScriptedBackend([]))  # no tokenizer: not token-level
    ep, agents = _run([THINK], [ANSWER], tiny_tokenizer)
    with pytest.raises(ValueError, match="token-level"):
        episode_sample(ep, chat)
    text_only = Episode(
        id="e1",
        question=Q,
        status="answered",
        turns=[Turn(agent="long", text=THINK, num_tokens=8), Turn(agent="short", text=ANSWER, num_tokens=9)],
    )
    with pytest.raises(ValueError, match="no token_ids"):
        episode_sample(text_only, agents["long"])
