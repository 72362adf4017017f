"""The recorded LangSmith export (``tests/fixtures/langsmith``) rebuilds its episodes token-exactly.

``python -m tests.fixtures.langsmith.record`` regenerates the fixture from the shipped models.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from longshort.agents import ScriptedBackend, long_agent, short_agent
from longshort.agents.roles import chat_prompt_ids
from longshort.graphs.tracing import episodes_from_runs, turns_from_runs
from longshort.graphs.turn import view_ids
from longshort.trace import read_jsonl

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "langsmith"
EXPORT_FIELDS = {"id", "trace_id", "parent_run_id", "run_type", "name", "inputs", "outputs", "extra"}


@pytest.fixture(scope="module")
def runs() -> list[dict]:
    with open(FIXTURE / "export.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.fixture(scope="module")
def episodes():
    return list(read_jsonl(FIXTURE / "episodes.jsonl"))


def test_the_export_looks_like_a_langsmith_export(runs, episodes):
    assert len(episodes) == 2
    assert all(EXPORT_FIELDS <= run.keys() and run["start_time"] and run["end_time"] for run in runs)
    roots = [r for r in runs if r["parent_run_id"] is None]
    assert len(roots) == 2 and {r["trace_id"] for r in runs} == {r["id"] for r in roots}
    turn_runs = [r for r in runs if r["run_type"] == "llm"]
    assert len(turn_runs) == sum(t.attempts for e in episodes for t in e.turns)
    assert (FIXTURE / "export.jsonl").stat().st_size < 300_000


def test_the_turn_runs_rebuild_the_episodes_token_exactly(runs, episodes):
    rebuilt = {e.id: e for e in episodes_from_runs(runs)}
    for episode in episodes:
        again = rebuilt[episode.id]
        assert (again.question, again.answer, again.status) == (episode.question, episode.answer, episode.status)
        assert [t.token_ids for t in again.turns] == [t.token_ids for t in episode.turns]
        assert [t.logprobs for t in again.turns] == [t.logprobs for t in episode.turns]  # bit-exact
        skip = {"wall_time"}
        assert [t.model_dump(exclude=skip) for t in again.turns] == [t.model_dump(exclude=skip) for t in episode.turns]
    # without the root runs, the turn runs alone still give every turn's ids
    alone = turns_from_runs(r for r in runs if r["run_type"] == "llm")
    assert {k: [t.token_ids for t in v] for k, v in alone.items()} == {
        e.id: [t.token_ids for t in e.turns] for e in episodes
    }


def test_the_views_rebuild_the_prompt_ids(runs, episodes):
    """A turn run's view (system prompt, question) and the earlier turn runs' ids give the ids the model was fed."""
    from transformers import AutoTokenizer

    from longshort.shipped import default_model

    tokenizer = AutoTokenizer.from_pretrained(default_model("long"))
    backend = ScriptedBackend([], tokenizer)
    agents = {"long": long_agent(backend), "short": short_agent(backend)}
    by_id, rebuilt = {e.id: e for e in episodes}, turns_from_runs(runs)
    for run in (r for r in runs if r["run_type"] == "llm"):
        meta = run["extra"]["metadata"]
        assert meta["tokenizer_fingerprint"] == backend.tokenizer_fingerprint  # both agents share it
        episode, k = by_id[meta["episode_id"]], meta["turn"]
        system, human, *document = [m["kwargs"]["content"] for m in run["inputs"]["messages"][0]]
        assert document == ([episode.document[: sum(len(t.text) for t in episode.turns[:k])]] if k else [])
        prompt = [{"role": "system", "content": system}, {"role": "user", "content": human}]
        ids = chat_prompt_ids(tokenizer, prompt) + [i for t in rebuilt[episode.id][:k] for i in t.token_ids]
        assert len(ids) == meta["prompt_tokens"]
        assert ids == view_ids(agents[meta["agent"]], episode.question, episode.turns[:k])  # the graph's own view
