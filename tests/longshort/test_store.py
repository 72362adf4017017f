"""The trace store keeps whole batches through a crash, never duplicates a re-appended step, and reads back."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from longshort.store import TraceStore
from longshort.trace import Episode, Turn


def _episodes(n: int, tag: str = "e") -> list[Episode]:
    return [
        Episode(
            id=f"{tag}{i}",
            question=f"What is {i} + 1?",
            reference=str(i + 1),
            answer=str(i + 1),
            status="answered",
            turns=[
                Turn(agent="long", text="<think> x </think>", token_ids=[1, 2, 3], num_tokens=3),
                Turn(agent="short", text="<answer> \\boxed{1} </answer>", token_ids=[4, 5], num_tokens=2),
            ],
        )
        for i in range(n)
    ]


def test_append_and_read_back(tmp_path):
    with TraceStore(tmp_path / "t.sqlite") as store:
        store.append(_episodes(3), run="rl", round=1, step=0, agent="long", rewards=[{"em": 1.0, "format": 1.0}] * 3)
        store.append(_episodes(2, "f"), run="eval", source="eval")
        assert store.count() == 5 and store.count("rl") == 3
        rows = list(store.rows("rl"))
        assert [r.episode.id for r in rows] == ["e0", "e1", "e2"]
        assert rows[0].agent == "long" and rows[0].rewards == {"em": 1.0, "format": 1.0}
        assert rows[0].episode == _episodes(1)[0]
        table = store.to_dataset()
        assert len(table) == 5 and {"reward/em", "turns", "round", "agent_trained"} <= set(table.column_names)
        assert table[0]["turns"][0]["token_ids"] == [1, 2, 3]
        path = store.to_parquet(tmp_path / "t.parquet")
    import datasets

    assert len(datasets.Dataset.from_parquet(str(path))) == 5
    with pytest.raises(ValueError, match="2 reward dicts for 3"):
        TraceStore(tmp_path / "t.sqlite").append(_episodes(3), run="rl", rewards=[{}, {}])


def test_a_resumed_step_neither_duplicates_nor_loses_episodes(tmp_path):
    store = TraceStore(tmp_path / "t.sqlite")
    for step in range(4):
        store.append(_episodes(2, f"s{step}-"), run="rl", round=1, step=step)
    # the run checkpointed after step 1, was killed during step 3, and resumes: steps 2-3 are redone
    assert store.truncate_after("rl", round=1, step=1) == 4
    for step in (2, 3):
        store.append(_episodes(2, f"s{step}-"), run="rl", round=1, step=step)
    store.append(_episodes(2, "s3-"), run="rl", round=1, step=3)  # the same batch again: replaced
    ids = [r.episode.id for r in store.rows("rl")]
    assert len(ids) == len(set(ids)) == 8


def test_a_writer_killed_mid_batch_leaves_whole_batches(tmp_path):
    path = tmp_path / "t.sqlite"
    code = textwrap.dedent(
        f"""
        import os, signal
        from longshort.store import TraceStore
        from tests.longshort.test_store import _episodes
        store = TraceStore({str(path)!r})
        store.append(_episodes(5, "a"), run="rl", step=0)
        class Dying:  # the connection, but a batch insert writes one row and then the process is killed
            def __init__(self, db):
                self.db = db
            def __getattr__(self, name):
                return getattr(self.db, name)
            def executemany(self, sql, rows):
                self.db.execute(sql, list(rows)[0])
                os.kill(os.getpid(), signal.SIGKILL)
        store._db = Dying(store._db)
        store.append(_episodes(5, "b"), run="rl", step=1)
        """
    )
    result = subprocess.run([sys.executable, "-c", code], timeout=120)
    assert result.returncode == -9
    store = TraceStore(path)
    assert [r.step for r in store.rows()] == [0] * 5  # the killed batch left nothing
    store.append(_episodes(5, "b"), run="rl", step=1)
    assert store.count() == 10


# --- schema versions, provenance, filters, several writers ---------------------------------------

_V1_SCHEMA = """
CREATE TABLE episodes (
    run TEXT NOT NULL, round INTEGER NOT NULL, step INTEGER NOT NULL, episode_id TEXT NOT NULL,
    agent TEXT, source TEXT NOT NULL, rewards TEXT NOT NULL, episode TEXT NOT NULL, created REAL NOT NULL,
    PRIMARY KEY (run, round, step, episode_id)
);
"""


def test_a_first_version_store_is_migrated_in_place(tmp_path):
    import json
    import sqlite3

    from longshort.store import SCHEMA_VERSION

    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.executescript(_V1_SCHEMA)
    for ep in _episodes(2):
        db.execute(
            "INSERT INTO episodes VALUES (?, 0, 0, ?, NULL, 'eval', ?, ?, 1.0)",
            ("eval/x", ep.id, json.dumps({"em": 1.0}), ep.model_dump_json()),
        )
    db.commit()
    db.close()
    with TraceStore(path) as store:
        assert store.version == SCHEMA_VERSION
        rows = list(store.rows(status="answered"))
        assert [r.episode.id for r in rows] == ["e0", "e1"] and rows[0].rewards == {"em": 1.0}
        assert rows[0].token_exact and rows[0].command is None
        question = store._db.execute("SELECT question FROM episodes WHERE episode_id = 'e1'").fetchone()[0]
        assert question == "What is 1 + 1?"
        indexes = {r[1] for r in store._db.execute("PRAGMA index_list(episodes)")}
        assert {"episodes_question", "episodes_status", "episodes_source"} <= indexes
        store.append(_episodes(1, "new"), run="eval/x", source="eval")
        assert store.count() == 3
    with TraceStore(path) as store:  # opening a current store again changes nothing
        assert store.count() == 3


def test_a_store_from_a_newer_schema_is_refused_by_name(tmp_path):
    import sqlite3

    from longshort.store import SCHEMA_VERSION, TraceStoreVersionError

    path = tmp_path / "new.sqlite"
    TraceStore(path).close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(TraceStoreVersionError) as err:
        TraceStore(path)
    message = str(err.value)
    assert (
        str(path) in message
        and f"version {SCHEMA_VERSION + 1}" in message
        and f"longshort's {SCHEMA_VERSION}" in message
    )


def test_provenance_defaults_and_explicit_values(tmp_path):
    import sys

    from longshort.store import hash_config

    episodes = _episodes(2)
    for ep in episodes:
        ep.turns[0].model_id, ep.turns[1].model_id = "reasoner", "base"
    with TraceStore(tmp_path / "t.sqlite") as store:
        store.append(episodes, run="solve", source="solve")
        store.append(
            _episodes(2, "x"),
            run="lang",
            source="langsmith",
            command="longshort traces import",
            long_model="L",
            short_model="S",
            config={"b": 1, "a": [2]},
            token_exact=[True, False],
        )
        default, *_ = store.rows("solve")
        assert default.command == " ".join(sys.argv) and default.created > 0
        assert (default.long_model, default.short_model, default.config_hash) == ("reasoner", "base", None)
        a, b = store.rows("lang")
        assert (a.command, a.long_model, a.short_model) == ("longshort traces import", "L", "S")
        assert a.config_hash == hash_config({"a": [2], "b": 1}) != hash_config({"a": [2], "b": 2})
        assert (a.token_exact, b.token_exact) == (True, False)
        with pytest.raises(ValueError, match="1 token_exact flags for 2"):
            store.append(_episodes(2), run="r", token_exact=[True])


def test_filters_and_the_datasets_folder(tmp_path):
    import datasets

    with TraceStore(tmp_path / "t.sqlite") as store:
        store.append(_episodes(3), run="rl", rewards=[{"em": 1.0}] * 3)
        failed = [ep.model_copy(update={"status": "max_turns", "answer": None}) for ep in _episodes(2, "f")]
        store.append(failed, run="eval/x", source="eval")
        assert store.count(source="eval") == 2 and store.count(status="answered") == 3
        assert store.count("eval/x", source="eval", status="max_turns") == 2
        assert [e.id for e in store.episodes(source="rl", status="answered")] == ["e0", "e1", "e2"]
        table = store.to_dataset(source="eval")
        assert len(table) == 2 and set(table["status"]) == {"max_turns"}
        assert {"command", "long_model", "config_hash", "token_exact", "created"} <= set(table.column_names)
        folder = store.save_to_disk(tmp_path / "ds", status="answered")
        assert len(store.to_dataset(run="rl", status="max_turns")) == 0
    again = datasets.load_from_disk(str(folder))
    assert len(again) == 3 and again[0]["turns"][1]["token_ids"] == [4, 5]


def test_several_writer_processes_share_one_store(tmp_path):
    path = tmp_path / "t.sqlite"
    code = textwrap.dedent(
        """
        import sys
        from longshort.store import TraceStore
        from tests.longshort.test_store import _episodes
        store = TraceStore(sys.argv[1])
        for step in range(10):
            store.append(_episodes(5, f"w{sys.argv[2]}-"), run=f"w{sys.argv[2]}", step=step)
        """
    )
    writers = [subprocess.Popen([sys.executable, "-c", code, str(path), str(i)]) for i in range(4)]
    assert [w.wait(timeout=120) for w in writers] == [0] * 4
    with TraceStore(path) as store:
        assert store.count() == 4 * 10 * 5 and all(store.count(f"w{i}") == 50 for i in range(4))
