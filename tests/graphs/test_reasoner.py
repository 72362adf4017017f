"""The reasoner's protocol, stops and bad input, driven by scripted backends (exact control)."""

import asyncio
import json

import pytest

from longshort.agents import ScriptedBackend, long_agent, short_agent
from longshort.errors import BackendError
from longshort.graphs import build_reasoner, episode_from_state
from longshort.graphs.turn import document_ids

Q = "What is 12 * 34 + 5?"
THINK = "<think> 12 * 34 = 408 </think>"
RETHINK = "<answer> check 12 * 34 </rethink>"
ANSWER = "<answer> 408 + 5 = \\boxed{413} </answer>"


def solve(long_script, short_script, tok, question=Q, **kw):
    long_b, short_b = ScriptedBackend(long_script, tok), ScriptedBackend(short_script, tok)
    graph = build_reasoner(long_agent(long_b), short_agent(short_b), **kw)
    return episode_from_state(graph.invoke({"question": question})), long_b, short_b


def test_full_protocol_with_a_rethink(tiny_tokenizer):
    ep, _, _ = solve([THINK, THINK], [RETHINK, ANSWER], tiny_tokenizer)
    assert ep.status == "answered" and ep.answer == "413"
    assert [(t.agent, t.kind) for t in ep.turns] == [
        ("long", "think"),
        ("short", "rethink"),
        ("long", "think"),
        ("short", "answer"),
    ]
    assert ep.tokens.total == sum(len(t.token_ids) for t in ep.turns) > 0
    json.loads(ep.model_dump_json())


def test_each_agent_view_extends_its_previous_view_exactly(tiny_tokenizer):
    ep, long_b, short_b = solve([THINK, THINK], [RETHINK, ANSWER], tiny_tokenizer)
    for backend, role in ((long_b, "long"), (short_b, "short")):
        views = [r.prompt_ids for r in backend.requests]
        assert len(views) == 2
        assert views[1][: len(views[0])] == views[0], f"{role} view was re-tokenized"
        # the extension is exactly the token ids generated since (own turn + partner's turn)
        own = 0 if role == "long" else 1
        since = ep.turns[own].token_ids + ep.turns[own + 1].token_ids
        assert views[1][len(views[0]) :] == since
        assert views[0][-len(ep.turns[0].token_ids) :] == ep.turns[0].token_ids or role == "long"


def test_partner_with_another_tokenizer_is_encoded_once(tiny_tokenizer):
    from longshort.testbed.tokenizer import train_tokenizer

    other = train_tokenizer(["<think> other words 12 34 </think> <answer> \\boxed{1} </answer>"] * 5, 300)
    long_b, short_b = ScriptedBackend([THINK, THINK], tiny_tokenizer), ScriptedBackend([RETHINK, ANSWER], other)
    graph = build_reasoner(long_agent(long_b), short_agent(short_b))
    ep = episode_from_state(graph.invoke({"question": Q}))
    assert ep.status == "answered"
    v0, v1 = (r.prompt_ids for r in short_b.requests)
    assert v1[: len(v0)] == v0
    assert document_ids(short_agent(short_b), ep.turns[:1]) == other.encode(THINK)


def test_max_turns(tiny_tokenizer):
    ep, _, _ = solve(lambda r: THINK, lambda r: RETHINK, tiny_tokenizer, max_turns=5)
    assert ep.status == "max_turns"
    assert len(ep.turns) == 5


def test_token_budget_is_a_status_not_a_crash(tiny_tokenizer):
    ep, _, _ = solve(lambda r: THINK, lambda r: RETHINK, tiny_tokenizer, max_total_tokens=30)
    assert ep.status == "token_budget"
    assert ep.tokens.total <= 30


def test_context_window_caps_the_turn(tiny_tokenizer):
    long_b = ScriptedBackend(lambda r: "<think> " + "1 " * 500, tiny_tokenizer, max_context=400)
    graph = build_reasoner(long_agent(long_b), short_agent(ScriptedBackend([ANSWER], tiny_tokenizer)))
    ep = episode_from_state(graph.invoke({"question": Q}))
    assert ep.status == "token_budget"
    assert ep.turns[0].prompt_tokens + ep.turns[0].num_tokens <= 400


@pytest.mark.parametrize(
    "bad",
    [
        "<answer> wrong role's tags </answer>",
        "<think> nested <think> tags </think>",
        "<answer> hands back </rethink>",
    ],
)
def test_malformed_long_turn_gets_one_repair_then_a_status(tiny_tokenizer, bad):
    ep, long_b, _ = solve(lambda r: bad, [ANSWER], tiny_tokenizer, max_tokens_per_turn=64)
    assert ep.status == "malformed"
    assert len(long_b.requests) == 2  # the first try and one repair, no more
    assert ep.turns[-1].attempts == 2 and ep.turns[-1].error
    assert ep.turns[-1].discarded_tokens > 0 and ep.tokens.total > ep.tokens.kept  # the first try counts


def test_a_turn_that_hits_the_per_turn_cap_ends_as_turn_cap_without_a_retry(tiny_tokenizer):
    ep, long_b, _ = solve(lambda r: "<think> never closes " * 40, [ANSWER], tiny_tokenizer, max_tokens_per_turn=64)
    assert ep.status == "turn_cap" and "per-turn cap (64 tokens)" in ep.error
    assert len(long_b.requests) == 1 and ep.turns[-1].attempts == 1 and ep.tokens.total == 64


def test_repair_prefills_the_opening_tag(tiny_tokenizer):
    # the model forgot its tag once; the repair prefills "<think>" and the turn then parses
    ep, long_b, _ = solve(["forgot the tag </think>", " 12 * 34 = 408 </think>"], [ANSWER], tiny_tokenizer)
    assert ep.status == "answered"
    assert ep.turns[0].attempts == 2 and ep.turns[0].text.startswith("<think>")
    repair = long_b.requests[1].prompt_ids
    assert repair[-1] == tiny_tokenizer.convert_tokens_to_ids("<think>")


def test_malformed_short_turn(tiny_tokenizer):
    ep, _, _ = solve([THINK], lambda r: "<think> short agent thinking </think>", tiny_tokenizer)
    assert ep.status == "malformed" and "long agent's tag" in ep.error


def test_backend_error_is_recorded(tiny_tokenizer):
    long_b = ScriptedBackend([THINK, THINK], tiny_tokenizer)
    short_b = ScriptedBackend([RETHINK], tiny_tokenizer, fail_on=[1])
    graph = build_reasoner(long_agent(long_b), short_agent(short_b))
    ep = episode_from_state(graph.invoke({"question": Q}))
    assert ep.status == "backend_error" and "scripted failure" in ep.error
    assert len(ep.turns) == 4 and ep.turns[-1].finish_reason == "error"


def test_backend_error_raised_when_asked(tiny_tokenizer):
    graph = build_reasoner(
        long_agent(ScriptedBackend([], tiny_tokenizer)),
        short_agent(ScriptedBackend([], tiny_tokenizer)),
        raise_backend_errors=True,
    )
    with pytest.raises(BackendError, match="script exhausted"):
        graph.invoke({"question": Q})


def test_a_backend_that_raises_is_contained(tiny_tokenizer):
    def boom(request):
        raise ConnectionError("server went away")

    ep, _, _ = solve(boom, [ANSWER], tiny_tokenizer)
    assert ep.status == "backend_error" and "server went away" in ep.error


@pytest.mark.parametrize(
    ("question", "exc", "match"),
    [("", ValueError, "empty"), ("   \n", ValueError, "empty"), (42, TypeError, "string"), (None, TypeError, "string")],
)
def test_bad_questions_fail_clearly(tiny_tokenizer, question, exc, match):
    with pytest.raises(exc, match=match):
        solve([THINK], [ANSWER], tiny_tokenizer, question=question)


def test_question_longer_than_the_context(tiny_tokenizer):
    long_b = ScriptedBackend([THINK], tiny_tokenizer, max_context=256)
    graph = build_reasoner(long_agent(long_b), short_agent(ScriptedBackend([ANSWER], tiny_tokenizer)))
    with pytest.raises(ValueError, match="does not fit"):
        graph.invoke({"question": "1 + " * 300})


def test_invalid_utf8_pieces_stay_serialisable(tiny_tokenizer):
    long_b = ScriptedBackend(["<think> \ud83d broken \ufffd </think>"])  # chat-style, raw text
    graph = build_reasoner(long_agent(long_b), short_agent(ScriptedBackend([ANSWER])))
    ep = episode_from_state(graph.invoke({"question": Q}))
    assert ep.status == "answered"
    ep.model_dump_json().encode("utf-8")


def test_chat_style_backends_see_the_transcript_in_the_user_message():
    long_b, short_b = ScriptedBackend([THINK, THINK]), ScriptedBackend([RETHINK, ANSWER])
    ep = episode_from_state(build_reasoner(long_agent(long_b), short_agent(short_b)).invoke({"question": Q}))
    assert ep.status == "answered" and ep.answer == "413"
    assert long_b.requests[0].messages[-1]["content"] == Q
    assert THINK in short_b.requests[0].messages[-1]["content"]
    assert RETHINK in long_b.requests[1].messages[-1]["content"]


def test_wrong_roles_are_rejected_at_build_time(tiny_tokenizer):
    b = ScriptedBackend([], tiny_tokenizer)
    with pytest.raises(ValueError, match="roles"):
        build_reasoner(short_agent(b), long_agent(b))
    with pytest.raises(ValueError, match="max_turns must be an integer >= 1"):
        build_reasoner(long_agent(b), short_agent(b), max_turns=0)


def test_async_batch_and_stream(tiny_tokenizer):
    graph = build_reasoner(
        long_agent(ScriptedBackend(lambda r: THINK, tiny_tokenizer)),
        short_agent(ScriptedBackend(lambda r: ANSWER, tiny_tokenizer)),
    )
    outs = asyncio.run(graph.abatch([{"question": f"{Q} #{i}"} for i in range(5)]))
    assert [o["status"] for o in outs] == ["answered"] * 5
    assert len({o["id"] for o in outs}) == 5
    one = asyncio.run(graph.ainvoke({"question": Q, "id": "mine"}))
    assert one["id"] == "mine"
    nodes = [next(iter(chunk)) for chunk in graph.stream({"question": Q}, stream_mode="updates")]
    assert nodes == ["start", "long", "short", "finish"]


def test_resume_a_thread_after_interruption(tiny_tokenizer, tmp_path):
    from langgraph.checkpoint.sqlite import SqliteSaver

    calls = {"short": 0}

    def flaky_short(request):
        calls["short"] += 1
        if calls["short"] == 2:
            raise KeyboardInterrupt  # the process is interrupted mid-episode
        return RETHINK if calls["short"] == 1 else ANSWER

    long_b = ScriptedBackend(lambda r: THINK, tiny_tokenizer)
    short_b = ScriptedBackend(flaky_short, tiny_tokenizer)
    config = {"configurable": {"thread_id": "t1"}}
    with SqliteSaver.from_conn_string(str(tmp_path / "ckpt.sqlite")) as saver:
        graph = build_reasoner(long_agent(long_b), short_agent(short_b), checkpointer=saver)
        with pytest.raises(KeyboardInterrupt):
            graph.invoke({"question": Q}, config)
        assert len(graph.get_state(config).values["turns"]) == 3
    with SqliteSaver.from_conn_string(str(tmp_path / "ckpt.sqlite")) as saver:  # a new process, same file
        graph = build_reasoner(long_agent(long_b), short_agent(short_b), checkpointer=saver)
        ep = episode_from_state(graph.invoke(None, config))
    assert ep.status == "answered" and len(ep.turns) == 4
    assert len(long_b.requests) == 2  # long turns were not regenerated on resume


def test_turns_are_traced_as_runs_with_metadata(tiny_tokenizer):
    from langchain_core.tracers.context import collect_runs

    graph = build_reasoner(
        long_agent(ScriptedBackend([THINK, THINK], tiny_tokenizer)),
        short_agent(ScriptedBackend([RETHINK, ANSWER], tiny_tokenizer)),
    )
    with collect_runs() as cb:
        out = graph.invoke({"question": Q})
    runs = []
    stack = list(cb.traced_runs)
    while stack:
        run = stack.pop()
        runs.append(run)
        stack.extend(run.child_runs)
    turns = sorted(
        (r for r in runs if r.name in ("long_turn", "short_turn")), key=lambda r: r.extra["metadata"]["turn"]
    )
    assert [r.extra["metadata"]["agent"] for r in turns] == ["long", "short", "long", "short"]
    for i, run in enumerate(turns):
        meta = run.extra["metadata"]
        assert meta["episode_id"] == out["id"] and meta["turn"] == i
        assert meta["prompt_tokens"] > 0
        assert meta["completion_tokens"] == len(out["turns"][i].token_ids)
        assert run.outputs["usage_metadata"]["output_tokens"] == meta["completion_tokens"]
        assert f"agent:{meta['agent']}" in run.tags
