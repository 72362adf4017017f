"""The trace store: every episode a run produces, appended crash-safe, readable as a ``datasets`` table.

RL rollouts and eval runs append their episodes here with where they came from (run, round,
step, which agent was being trained) and their rewards; retraining from traces reads them back.
SQLite is the embedded default: one file, WAL journaling (readers never block the writer), and
one transaction per batch, so a process killed mid-write leaves whole batches or nothing.

    store = TraceStore("runs/rl/traces.sqlite")
    store.append(episodes, run="rl", round=1, step=3, agent="long", rewards=[{"em": 1.0}, ...])
    table = store.to_dataset(run="rl")          # one row per episode, turns as a list of structs
    store.to_parquet("traces.parquet")

A row is keyed by (run, round, step, episode id): appending the same batch again (a resumed run
re-doing a step) replaces it instead of duplicating it, and ``truncate_after`` drops what a run
logged after the checkpoint it resumes from.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from longshort.trace import Episode

if TYPE_CHECKING:
    from datasets import Dataset

__all__ = ["StoredEpisode", "TraceStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS episodes (
    run TEXT NOT NULL,
    round INTEGER NOT NULL,
    step INTEGER NOT NULL,
    episode_id TEXT NOT NULL,
    agent TEXT,
    source TEXT NOT NULL,
    rewards TEXT NOT NULL,
    episode TEXT NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (run, round, step, episode_id)
);
"""


class StoredEpisode(BaseModel):
    """One stored row: the episode and where it came from."""

    run: str = Field(description="the run that produced it (an RL run's name, an eval's output folder)")
    round: int = Field(0, description="RL round (0 for eval episodes)")
    step: int = Field(0, description="optimizer step within the round at which it was generated")
    agent: str | None = Field(None, description="the agent being trained when it was generated (None: eval)")
    source: str = Field("rl", description="rl or eval")
    rewards: dict[str, float | None] = Field(default_factory=dict, description="each reward's value, by name")
    episode: Episode
    created: float = 0.0


class TraceStore:
    """An append-only SQLite store of episodes (thread-safe for one writer per process)."""

    def __init__(self, path: str | Path, *, timeout_s: float = 30.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=timeout_s, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a crash loses no committed batch
        self._db.executescript(_SCHEMA)

    def append(
        self,
        episodes: Sequence[Episode],
        *,
        run: str,
        round: int = 0,
        step: int = 0,
        agent: str | None = None,
        source: str = "rl",
        rewards: Sequence[dict[str, float | None]] | None = None,
    ) -> int:
        """Store one batch in one transaction; returns how many rows it wrote (a re-append replaces)."""
        if rewards is not None and len(rewards) != len(episodes):
            raise ValueError(f"{len(rewards)} reward dicts for {len(episodes)} episodes")
        now = time.time()
        rows = [
            (
                run,
                round,
                step,
                ep.id,
                agent,
                source,
                json.dumps(rewards[i] if rewards is not None else {}),
                ep.model_dump_json(),
                now,
            )
            for i, ep in enumerate(episodes)
        ]
        with self._transaction():
            self._db.executemany("INSERT OR REPLACE INTO episodes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        return len(rows)

    def truncate_after(self, run: str, round: int, step: int) -> int:
        """Drop ``run``'s rows logged after (round, step): a resumed run redoes them. Returns the count."""
        with self._transaction():
            cur = self._db.execute(
                "DELETE FROM episodes WHERE run = ? AND (round > ? OR (round = ? AND step > ?))",
                (run, round, round, step),
            )
        return cur.rowcount

    def count(self, run: str | None = None) -> int:
        sql, args = self._where(run)
        return self._db.execute(f"SELECT COUNT(*) FROM episodes{sql}", args).fetchone()[0]

    def rows(self, run: str | None = None) -> Iterator[StoredEpisode]:
        """Every stored row of ``run`` (all runs when None), in (run, round, step, id) order."""
        sql, args = self._where(run)
        query = f"SELECT run, round, step, agent, source, rewards, episode, created FROM episodes{sql} "
        for r in self._db.execute(query + "ORDER BY run, round, step, episode_id", args):
            yield StoredEpisode(
                run=r[0],
                round=r[1],
                step=r[2],
                agent=r[3],
                source=r[4],
                rewards=json.loads(r[5]),
                episode=Episode.model_validate_json(r[6]),
                created=r[7],
            )

    def episodes(self, run: str | None = None) -> list[Episode]:
        return [row.episode for row in self.rows(run)]

    def to_dataset(self, run: str | None = None) -> Dataset:
        """A ``datasets.Dataset``: the episode's fields (turns as a list of structs) plus run/round/step/
        agent/source and one ``reward/<name>`` column per reward."""
        from datasets import Dataset

        records: list[dict[str, Any]] = []
        for row in self.rows(run):
            record = json.loads(row.episode.model_dump_json())
            record.update(run=row.run, round=row.round, step=row.step, agent_trained=row.agent, source=row.source)
            record.update({f"reward/{k}": v for k, v in row.rewards.items()})
            records.append(record)
        names = sorted({k for r in records for k in r if k.startswith("reward/")})
        for record in records:  # every row has every reward column (None where a batch lacked it)
            for name in names:
                record.setdefault(name, None)
        return Dataset.from_list(records)

    def to_parquet(self, path: str | Path, run: str | None = None) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.to_dataset(run).to_parquet(str(path))
        return path

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> TraceStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    @staticmethod
    def _where(run: str | None) -> tuple[str, tuple]:
        return (" WHERE run = ?", (run,)) if run is not None else ("", ())
