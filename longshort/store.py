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

Every row also says what produced it (provenance): the command line, the long and short models,
a hash of the run's configuration, when it was written, and whether its token ids are the ones the
models generated (``token_exact``: false for episodes rebuilt from traces that carried only text).
``question``, ``status`` and ``source`` are columns of their own, indexed, so a retraining job can
select its episodes without decoding every row.

The schema is versioned (``PRAGMA user_version``): an older store is migrated in place when it is
opened, a store written by a newer longshort is refused (:class:`TraceStoreVersionError`) rather
than half-understood. Several processes may write one store: each batch is one ``BEGIN IMMEDIATE``
transaction and a writer waits (busy timeout) for the others instead of failing.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from longshort.errors import LongShortError
from longshort.trace import Episode

if TYPE_CHECKING:
    from datasets import Dataset

__all__ = ["SCHEMA_VERSION", "StoredEpisode", "TraceStore", "TraceStoreVersionError", "hash_config"]

#: the schema this module writes. 1: the first store (no user_version, no provenance columns);
#: 2: question/status/provenance columns and their indexes.
SCHEMA_VERSION = 2

_TABLE = """
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
    question TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL DEFAULT '',
    command TEXT,
    long_model TEXT,
    short_model TEXT,
    config_hash TEXT,
    token_exact INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (run, round, step, episode_id)
)
"""
_INDEXES = (
    "CREATE INDEX IF NOT EXISTS episodes_question ON episodes (question)",
    "CREATE INDEX IF NOT EXISTS episodes_status ON episodes (status)",
    "CREATE INDEX IF NOT EXISTS episodes_source ON episodes (source)",
)
#: columns version 2 added to version 1's table (name, declaration)
_V2_COLUMNS = (
    ("question", "TEXT NOT NULL DEFAULT ''"),
    ("status", "TEXT NOT NULL DEFAULT ''"),
    ("command", "TEXT"),
    ("long_model", "TEXT"),
    ("short_model", "TEXT"),
    ("config_hash", "TEXT"),
    ("token_exact", "INTEGER NOT NULL DEFAULT 1"),
)
_COLUMNS = (
    "run, round, step, episode_id, agent, source, rewards, episode, created, "
    "question, status, command, long_model, short_model, config_hash, token_exact"
)
_READ = (
    "run, round, step, agent, source, rewards, episode, created, "
    "command, long_model, short_model, config_hash, token_exact"
)


class TraceStoreVersionError(LongShortError):
    """The store was written by a newer schema than this longshort knows: upgrade longshort to read it."""

    def __init__(self, path: Path, found: int, supported: int) -> None:
        super().__init__(
            f"{path}: trace store schema version {found} is newer than this longshort's {supported}; "
            "upgrade longshort to read or write it"
        )
        self.path, self.found, self.supported = path, found, supported


def hash_config(config: Mapping[str, Any]) -> str:
    """A short stable hash of a run's configuration (canonical JSON): rows with equal ones came from equal settings."""
    text = json.dumps(config, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


class StoredEpisode(BaseModel):
    """One stored row: the episode, where it came from and what produced it."""

    run: str = Field(description="the run that produced it (an RL run's name, an eval's output folder)")
    round: int = Field(0, description="RL round (0 for eval episodes)")
    step: int = Field(0, description="optimizer step within the round at which it was generated")
    agent: str | None = Field(None, description="the agent being trained when it was generated (None: eval)")
    source: str = Field("rl", description="rl, eval, solve, demo, server or langsmith")
    rewards: dict[str, float | None] = Field(default_factory=dict, description="each reward's value, by name")
    episode: Episode
    created: float = Field(0.0, description="when it was stored (Unix time)")
    command: str | None = Field(None, description="the command line (or service) that produced it")
    long_model: str | None = Field(None, description="the long agent's model")
    short_model: str | None = Field(None, description="the short agent's model")
    config_hash: str | None = Field(None, description="hash_config() of the run's settings")
    token_exact: bool = Field(
        True, description="token ids are the generated ones (false: rebuilt from text-only traces)"
    )


def _model_of(episode: Episode, agent: str) -> str | None:
    """The model id the episode's turns of ``agent`` name (the default provenance)."""
    return next((t.model_id for t in episode.turns if t.agent == agent and t.model_id), None)


class TraceStore:
    """An append-only SQLite store of episodes, shared safely by threads and by writer processes."""

    def __init__(self, path: str | Path, *, timeout_s: float = 30.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()  # one connection per store: its transactions must not interleave
        self._db = sqlite3.connect(self.path, timeout=timeout_s, check_same_thread=False, isolation_level=None)
        try:
            self._db.execute(f"PRAGMA busy_timeout={int(timeout_s * 1000)}")  # wait for other writers
            self._check_version(self._db.execute("PRAGMA user_version").fetchone()[0])
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a crash loses no committed batch
            self._migrate()
        except BaseException:
            self._db.close()
            raise

    @property
    def version(self) -> int:
        return self._db.execute("PRAGMA user_version").fetchone()[0]

    def _check_version(self, found: int) -> None:
        if found > SCHEMA_VERSION:
            raise TraceStoreVersionError(self.path, found, SCHEMA_VERSION)

    def _migrate(self) -> None:
        """Create or upgrade the schema, in one transaction (a concurrent opener waits, then sees it done)."""
        with self._transaction():
            found = self._db.execute("PRAGMA user_version").fetchone()[0]
            self._check_version(found)  # again: another process may have upgraded it meanwhile
            if found == SCHEMA_VERSION:
                return
            exists = self._db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='episodes'").fetchone()
            if exists:  # version 1 (user_version 0): add the columns, fill question/status from the JSON
                have = {r[1] for r in self._db.execute("PRAGMA table_info(episodes)")}
                for name, decl in _V2_COLUMNS:
                    if name not in have:
                        self._db.execute(f"ALTER TABLE episodes ADD COLUMN {name} {decl}")
                self._db.execute(
                    "UPDATE episodes SET question = json_extract(episode, '$.question'), "
                    "status = json_extract(episode, '$.status')"
                )
            else:
                self._db.execute(_TABLE)
            for sql in _INDEXES:
                self._db.execute(sql)
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

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
        command: str | None = None,
        long_model: str | None = None,
        short_model: str | None = None,
        config: Mapping[str, Any] | None = None,
        config_hash: str | None = None,
        token_exact: bool | Sequence[bool] = True,
    ) -> int:
        """Store one batch in one transaction; returns how many rows it wrote (a re-append replaces).

        Provenance defaults: ``command`` is this process's command line, the models are the ones
        the episode's turns name, ``config_hash`` is ``hash_config(config)`` when ``config`` is given.
        ``token_exact`` is one flag for the batch or one per episode.
        """
        if rewards is not None and len(rewards) != len(episodes):
            raise ValueError(f"{len(rewards)} reward dicts for {len(episodes)} episodes")
        exact = [token_exact] * len(episodes) if isinstance(token_exact, bool) else list(token_exact)
        if len(exact) != len(episodes):
            raise ValueError(f"{len(exact)} token_exact flags for {len(episodes)} episodes")
        if command is None:
            command = " ".join(sys.argv)
        if config_hash is None and config is not None:
            config_hash = hash_config(config)
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
                ep.question,
                ep.status,
                command,
                long_model or _model_of(ep, "long"),
                short_model or _model_of(ep, "short"),
                config_hash,
                int(bool(exact[i])),
            )
            for i, ep in enumerate(episodes)
        ]
        with self._transaction():
            self._db.executemany(f"INSERT OR REPLACE INTO episodes ({_COLUMNS}) VALUES ({', '.join('?' * 16)})", rows)
        return len(rows)

    def truncate_after(self, run: str, round: int, step: int) -> int:
        """Drop ``run``'s rows logged after (round, step): a resumed run redoes them. Returns the count."""
        with self._transaction():
            cur = self._db.execute(
                "DELETE FROM episodes WHERE run = ? AND (round > ? OR (round = ? AND step > ?))",
                (run, round, round, step),
            )
        return cur.rowcount

    def count(self, run: str | None = None, *, source: str | None = None, status: str | None = None) -> int:
        sql, args = self._where(run, source, status)
        with self._lock:
            return self._db.execute(f"SELECT COUNT(*) FROM episodes{sql}", args).fetchone()[0]

    def rows(
        self, run: str | None = None, *, source: str | None = None, status: str | None = None
    ) -> Iterator[StoredEpisode]:
        """Every stored row of ``run`` (all runs when None; ``source``/``status`` filter too), in
        (run, round, step, id) order."""
        sql, args = self._where(run, source, status)
        with self._lock:
            found = self._db.execute(
                f"SELECT {_READ} FROM episodes{sql} ORDER BY run, round, step, episode_id", args
            ).fetchall()
        for r in found:
            yield StoredEpisode(
                run=r[0],
                round=r[1],
                step=r[2],
                agent=r[3],
                source=r[4],
                rewards=json.loads(r[5]),
                episode=Episode.model_validate_json(r[6]),
                created=r[7],
                command=r[8],
                long_model=r[9],
                short_model=r[10],
                config_hash=r[11],
                token_exact=bool(r[12]),
            )

    def episodes(
        self, run: str | None = None, *, source: str | None = None, status: str | None = None
    ) -> list[Episode]:
        return [row.episode for row in self.rows(run, source=source, status=status)]

    def to_dataset(self, run: str | None = None, *, source: str | None = None, status: str | None = None) -> Dataset:
        """A ``datasets.Dataset``: the episode's fields (turns as a list of structs) plus run/round/step/
        agent/source, the provenance columns and one ``reward/<name>`` column per reward."""
        from datasets import Dataset

        records: list[dict[str, Any]] = []
        for row in self.rows(run, source=source, status=status):
            record = json.loads(row.episode.model_dump_json())
            record.update(run=row.run, round=row.round, step=row.step, agent_trained=row.agent, source=row.source)
            record.update(
                created=row.created,
                command=row.command,
                long_model=row.long_model,
                short_model=row.short_model,
                config_hash=row.config_hash,
                token_exact=row.token_exact,
            )
            record.update({f"reward/{k}": v for k, v in row.rewards.items()})
            records.append(record)
        names = sorted({k for r in records for k in r if k.startswith("reward/")})
        for record in records:  # every row has every reward column (None where a batch lacked it)
            for name in names:
                record.setdefault(name, None)
        return Dataset.from_list(records)

    def to_parquet(
        self, path: str | Path, run: str | None = None, *, source: str | None = None, status: str | None = None
    ) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.to_dataset(run, source=source, status=status).to_parquet(str(path))
        return path

    def save_to_disk(
        self, path: str | Path, run: str | None = None, *, source: str | None = None, status: str | None = None
    ) -> Path:
        """The table as a ``datasets`` folder (``datasets.load_from_disk(path)`` reads it back)."""
        path = Path(path)
        self.to_dataset(run, source=source, status=status).save_to_disk(str(path))
        return path

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> TraceStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """BEGIN IMMEDIATE: take the write lock up front, so two writers queue instead of deadlocking."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    @staticmethod
    def _where(run: str | None, source: str | None = None, status: str | None = None) -> tuple[str, tuple]:
        filters = [
            (name, value) for name, value in (("run", run), ("source", source), ("status", status)) if value is not None
        ]
        if not filters:
            return "", ()
        return " WHERE " + " AND ".join(f"{name} = ?" for name, _ in filters), tuple(v for _, v in filters)
