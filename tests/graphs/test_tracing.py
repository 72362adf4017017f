"""LangSmith runs worth keeping, recorded from the real ``langsmith`` client on a loopback endpoint."""

from __future__ import annotations

import json
import random
import struct

import pytest
from langchain_core.language_models import GenericFakeChatModel
from langchain_core.tracers.context import collect_runs

from longshort.agents import ChatModelBackend, ScriptedBackend, long_agent, short_agent
from longshort.agents.base import GenerationResult
from longshort.graphs import build_reasoner, episode_from_state
from longshort.graphs.tracing import TRACE_TOKENS_ENV, episodes_from_runs, turns_from_runs
from longshort.protocol import SYSTEM_PROMPTS
from tests.fixtures.langsmith.recorder import Recorder

Q1 = "What is 12 * 34 + 5?"
Q2 = "What is 17 * 23 - 4?"
#: a long turn of a few hundred tokens, like the shipped reasoner's
STEPS = "".join(f"{a} * {b} = {a * b}. Check: {a * b} / {b} = {a}. " for a in range(11, 31) for b in (7, 13))
THINK = f"<think> {STEPS}So the product is 408. </think>"
RETHINK = "<answer> We need 12 * 34 checked first. </rethink>"
ANSWER = "<answer> 408 + 5 = \\boxed{413} </answer>"


def _f32(x: float) -> float:
    return struct.unpack("f", struct.pack("f", x))[0]


class Sampled(ScriptedBackend):
    """Scripted turns with logprobs that look sampled: float32 values of every magnitude, reproducibly."""

    def _one(self, request) -> GenerationResult:
        result = super()._one(request)
        if result.logprobs is not None:
            rng = random.Random(len(self.requests))
            result.logprobs = [_f32(-rng.expovariate(3.0)) for _ in result.logprobs]
        return result


def _graph(tokenizer, long_script, short_script):
    long_b, short_b = Sampled(long_script, tokenizer), Sampled(short_script, tokenizer)
    return build_reasoner(long_agent(long_b), short_agent(short_b)), long_b, short_b


def _record(graph, questions, config=None):
    with Recorder() as rec:
        with rec.tracing():
            episodes = [episode_from_state(graph.invoke({"question": q}, config)) for q in questions]
        return rec, rec.runs(), episodes


def _message(run) -> dict:
    return run["outputs"]["generations"][0][0]["message"]["kwargs"]


def _turn_runs(runs):
    return sorted(
        (r for r in runs if r["name"] in ("long_turn", "short_turn")),
        key=lambda r: (r["extra"]["metadata"]["episode_id"], r["extra"]["metadata"]["turn"]),
    )


@pytest.fixture(scope="module")
def recorded(tiny_tokenizer):
    graph, _, _ = _graph(tiny_tokenizer, [THINK, THINK, THINK], [RETHINK, ANSWER, ANSWER])
    return _record(graph, [Q1, Q2])


def test_turn_runs_are_llm_runs_with_the_view_and_the_tokens(recorded):
    _, runs, episodes = recorded
    assert [len(e.turns) for e in episodes] == [4, 2] and all(e.status == "answered" for e in episodes)
    by_id = {e.id: e for e in episodes}
    turn_runs = _turn_runs(runs)
    assert len(turn_runs) == 6
    for run in turn_runs:
        meta = run["extra"]["metadata"]
        episode = by_id[meta["episode_id"]]
        k = meta["turn"]
        turn = episode.turns[k]
        assert run["run_type"] == "llm" and run["name"] == f"{turn.agent}_turn"
        assert {"longshort", f"agent:{turn.agent}"} <= set(run["tags"])
        assert (meta["agent"], meta["attempt"], meta["model"]) == (turn.agent, 0, "scripted")
        assert (meta["prompt_tokens"], meta["completion_tokens"]) == (turn.prompt_tokens, turn.num_tokens)
        assert meta["finish_reason"] == turn.finish_reason
        # inputs: the agent's view, as messages
        view = [(m["id"][-1], m["kwargs"]["content"]) for m in run["inputs"]["messages"][0]]
        expected = [("SystemMessage", SYSTEM_PROMPTS[turn.agent]), ("HumanMessage", episode.question)]
        if k:
            expected.append(("AIMessage", "".join(t.text for t in episode.turns[:k])))
        assert view == expected
        # outputs: text, usage, ids and logprobs
        message = _message(run)
        assert message["content"] == turn.text
        assert message["usage_metadata"]["output_tokens"] == turn.num_tokens
        assert run["outputs"]["usage_metadata"] == message["usage_metadata"]
        assert message["response_metadata"]["token_ids"] == turn.token_ids
        assert [_f32(x) for x in message["response_metadata"]["logprobs"]] == turn.logprobs  # float32-exact


def test_node_runs_carry_only_what_they_add(recorded):
    _, runs, episodes = recorded
    names = {r["name"] for r in runs}
    assert {"longshort", "start", "long", "short", "finish"} <= names
    assert not names & {"_after_long", "_after_short"}  # the routing functions are not traced
    for run in runs:
        if run["name"] in ("long_turn", "short_turn") or run["parent_run_id"] is None:
            continue  # turn runs hold the tokens; the root run is LangGraph's (its output is the Episode)
        text = json.dumps([run["inputs"], run["outputs"]])
        assert "token_ids" not in text and "logprobs" not in text, run["name"]
        assert "turns" not in (run["inputs"] or {}), run["name"]
    # one node run per turn: the node's own lambda no longer traces a copy inside it
    assert sum(r["name"] in ("long", "short") for r in runs) == sum(len(e.turns) for e in episodes)
    long_run = next(r for r in runs if r["name"] == "long")
    assert long_run["inputs"]["num_turns"] == 0 and long_run["outputs"]["turns"][0]["agent"] == "long"


def test_upload_is_small_next_to_the_episodes(recorded):
    rec, _, episodes = recorded
    size = sum(len(e.model_dump_json()) for e in episodes)
    # the root run's output is the episodes once, the turn runs their tokens once; the rest is
    # LangSmith's per-run envelope (runtime, metadata, multipart framing): 8x before
    assert rec.bytes <= 2.5 * size, (rec.bytes, size)


def test_an_export_rebuilds_the_episodes_token_exactly(recorded):
    _, runs, episodes = recorded
    rebuilt = {e.id: e for e in episodes_from_runs(runs)}
    assert set(rebuilt) == {e.id for e in episodes}
    for episode in episodes:
        again = rebuilt[episode.id]
        assert (again.question, again.answer, again.status) == (episode.question, episode.answer, episode.status)
        exclude = {"wall_time"}
        assert [t.model_dump(exclude=exclude) for t in again.turns] == [
            t.model_dump(exclude=exclude) for t in episode.turns
        ]
    # turn runs alone (no root run in the export) are enough too
    alone = turns_from_runs(r for r in runs if r["run_type"] == "llm")
    assert {k: [t.token_ids for t in v] for k, v in alone.items()} == {
        e.id: [t.token_ids for t in e.turns] for e in episodes
    }


def test_a_repair_records_the_prefilled_tag(tiny_tokenizer):
    # the long agent forgets its tag; the retry is prefilled with <think> and continues after it
    graph, long_b, _ = _graph(tiny_tokenizer, ["12 * 34 = 408", " 12 * 34 = 408 </think>"], [ANSWER])
    _, runs, (episode,) = _record(graph, [Q1])
    turn = episode.turns[0]
    assert turn.attempts == 2 and turn.forced_tokens == 1 and turn.text.startswith("<think>")
    attempts = [r for r in runs if r["name"] == "long_turn"]
    assert [r["extra"]["metadata"]["attempt"] for r in attempts] == [0, 1]
    retry = attempts[1]["extra"]["metadata"]
    assert retry["forced_ids"] == tiny_tokenizer.encode("<think>", add_special_tokens=False)
    assert retry["forced_text"] == "<think>"
    assert attempts[1]["inputs"]["messages"][0][-1]["kwargs"]["content"] == "<think>"  # the view it continued
    (again,) = episodes_from_runs(runs)
    assert again.turns[0].model_dump(exclude={"wall_time"}) == turn.model_dump(exclude={"wall_time"})


def _turn_outputs(graph, config=None) -> list[dict]:
    with collect_runs() as cb:
        graph.invoke({"question": Q1}, config)
    stack, found = list(cb.traced_runs), []
    while stack:
        run = stack.pop()
        stack.extend(run.child_runs)
        if run.name.endswith("_turn"):
            found.append(run.outputs["generations"][0][0]["message"]["kwargs"]["response_metadata"])
    return found


def test_the_token_payload_switch(tiny_tokenizer, monkeypatch):
    graph, _, _ = _graph(tiny_tokenizer, [THINK] * 9, [ANSWER] * 9)
    assert all("token_ids" in m for m in _turn_outputs(graph))  # on by default for token-level backends
    monkeypatch.setenv(TRACE_TOKENS_ENV, "0")
    assert not any("token_ids" in m or "logprobs" in m for m in _turn_outputs(graph))
    on = {"configurable": {"trace_tokens": True}}  # a run's config wins over the environment
    assert all(m["token_ids"] for m in _turn_outputs(graph, on))


def test_chat_turn_runs_show_the_request_messages_and_no_tokens():
    long_b = ChatModelBackend(GenericFakeChatModel(messages=iter(["<think> 12 * 34 = 408 </think>"])))
    short_b = ChatModelBackend(GenericFakeChatModel(messages=iter([ANSWER])))
    with Recorder() as rec:
        with rec.tracing():
            build_reasoner(long_agent(long_b), short_agent(short_b)).invoke({"question": Q1})
        runs = rec.runs()
    turn_runs = _turn_runs(runs)
    assert [r["name"] for r in turn_runs] == ["long_turn", "short_turn"]
    assert [m["kwargs"]["content"] for m in turn_runs[0]["inputs"]["messages"][0]] == [SYSTEM_PROMPTS["long"], Q1]
    assert "token_ids" not in _message(turn_runs[1])["response_metadata"]
    assert "The transcript so far" in turn_runs[1]["inputs"]["messages"][0][1]["kwargs"]["content"]
    # the chat model inside the backend leaves no run of its own
    assert all(r["name"] != "GenericFakeChatModel" for r in runs) and all(
        r["run_type"] != "llm" or r in turn_runs for r in runs
    )
