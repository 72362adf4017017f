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
