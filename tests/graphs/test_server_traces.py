"""``LONGSHORT_TRACES``: the server factories' graphs append each finished episode to the trace store.

In-process, with the scripted ``load_agents`` of ``test_server`` (no server is started): the
factories' graphs are what ``langgraph dev`` runs, and the recorder rides in their config.
"""

from __future__ import annotations

import asyncio

from longshort.store import TraceStore
from tests.graphs.test_server import fake_loads  # noqa: F401 (the fixture)


def test_each_finished_episode_is_stored_with_provenance(fake_loads, monkeypatch, tmp_path):  # noqa: F811
    from longshort.graphs.server import make_chat_app, make_reasoner

    path = tmp_path / "served.sqlite"
    monkeypatch.setenv("LONGSHORT_TRACES", str(path))
    monkeypatch.setenv("LONGSHORT_MAX_TURNS", "4")
    reasoner = asyncio.run(make_reasoner({}))
    assert reasoner.name == "longshort"
    out = reasoner.invoke({"question": "What is 6 * 7?"})
    asyncio.run(reasoner.ainvoke({"question": "What is 5 * 7?"}))
    chat = asyncio.run(make_chat_app({}))
    asyncio.run(chat.ainvoke({"messages": [("human", "What is 4 * 7?")]}))
    with TraceStore(path) as store:
        rows = list(store.rows())
    assert len(rows) == 3  # one per episode: the node runs and the chat graph's own run are not episodes
    assert {r.episode.question for r in rows} == {"What is 6 * 7?", "What is 5 * 7?", "What is 4 * 7?"}
    assert out["id"] in {r.episode.id for r in rows}
    row = rows[0]
    assert (row.run, row.source, row.long_model, row.short_model) == ("server", "server", "long", "short")
    assert row.config_hash and row.command.startswith("langgraph server") and row.episode.status == "answered"
    assert [t.agent for t in row.episode.turns] == ["long", "short"]


def test_without_the_variable_nothing_is_stored(fake_loads, monkeypatch, tmp_path):  # noqa: F811
    from longshort.graphs.server import make_reasoner

    monkeypatch.delenv("LONGSHORT_TRACES", raising=False)
    monkeypatch.chdir(tmp_path)
    graph = asyncio.run(make_reasoner({}))
    graph.invoke({"question": "What is 6 * 7?"})
    assert not (graph.config or {}).get("callbacks") and not list(tmp_path.iterdir())
