"""``longshort traces import|stats|export``: one trace store for every episode, LangSmith exports in.

    longshort traces import --store traces.sqlite --file export.jsonl     # or --project NAME (LangSmith API)
    longshort traces stats --store traces.sqlite
    longshort traces export --store traces.sqlite --out traces.parquet    # or a folder: a datasets folder

An import rebuilds each episode from its turn runs (``longshort.graphs.tracing.episodes_from_runs``)
so that traces of served or interactive runs can be trained on like RL and eval episodes. Episodes
whose turn runs carried no token ids (chat backends, ``LONGSHORT_TRACE_TOKENS=0``) are kept but marked
``token_exact: false``: a trainer that needs the generated ids must not take re-tokenized text for
them. Traces without longshort turn runs (other apps in the project) are skipped; an episode whose
turn runs do not rebuild its document (a turn missing, a view that is not the turns before it, a
root run that says otherwise) is rejected with the reason, since training on it would teach a
conversation that never happened.
"""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import typer
from pydantic import BaseModel, Field
from rich.console import Console
from rich.table import Table

from longshort.cli._console import console
from longshort.cli._console import fail as _fail
from longshort.errors import LongShortError
from longshort.store import TraceStore
from longshort.trace import Episode, document_text

__all__ = ["ImportReport", "import_runs", "read_export", "traces_app"]

traces_app = typer.Typer(no_args_is_help=True, help="The trace store: import LangSmith runs, stats, export.")

_TURN_KEYS = {"agent", "episode_id", "turn", "attempt"}


class ImportReport(BaseModel):
    """What an import did: the counts it prints, the rejected episodes with their reasons."""

    imported: int = 0
    non_exact: int = Field(0, description="imported without the generated token ids (token_exact: false)")
    skipped: int = Field(0, description="traces without longshort turn runs")
    rejected: dict[str, str] = Field(default_factory=dict, description="episode id -> why it was not imported")


def _get(run: Any, key: str) -> Any:
    return run.get(key) if isinstance(run, Mapping) else getattr(run, key, None)


def _meta(run: Any) -> dict[str, Any]:
    return dict((_get(run, "extra") or {}).get("metadata") or {})


def _is_turn_run(run: Any) -> bool:
    return _get(run, "run_type") == "llm" and _TURN_KEYS <= _meta(run).keys()


def read_export(path: Path) -> list[dict[str, Any]]:
    """One LangSmith run per JSON line (blank lines allowed); a bad line is an error naming the file and line."""
    runs = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                run = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: line {number} is not JSON ({e.msg})") from None
            if not isinstance(run, dict):
                raise ValueError(f"{path}: line {number} is not a run (a JSON object)")
            runs.append(run)
    return runs


def fetch_project(project: str) -> list[Any]:
    """Every run of a LangSmith project (needs the ``langsmith`` package and LANGSMITH_API_KEY)."""
    try:
        from langsmith import Client
    except ImportError:
        raise LongShortError(
            "importing a LangSmith project needs the langsmith package: pip install langsmith"
        ) from None
    if not (os.environ.get("LANGSMITH_API_KEY") or os.environ.get("LANGCHAIN_API_KEY")):
        raise LongShortError("importing a LangSmith project needs an API key: set LANGSMITH_API_KEY")
    return list(Client().list_runs(project_name=project))


def _token_exact(episode: Episode) -> bool:
    """Whether every turn carries its generated ids (a turn's count of ids is its token count)."""
    return all(len(t.token_ids) == t.num_tokens and (t.token_ids or not t.text) for t in episode.turns)


def _check(episode: Episode, turn_runs: list[Any], root: Mapping[str, Any] | None) -> str | None:
    """Why ``episode``'s turns do not rebuild its document, or None when they do."""
    indices = sorted({int(_meta(r)["turn"]) for r in turn_runs if not _get(r, "error")})
    if indices != list(range(len(indices))):
        missing = sorted(set(range(indices[-1] + 1)) - set(indices)) if indices else [0]
        return f"turn {missing[0]} has no successful turn run"
    for run in turn_runs:  # a token-level view ends with the document so far (plus a repair's prefill)
        meta = _meta(run)
        messages = ((_get(run, "inputs") or {}).get("messages") or [[]])[0]
        fields = [m.get("kwargs", m) if isinstance(m, Mapping) else {} for m in messages]
        if meta["turn"] and fields and fields[-1].get("type") == "ai":
            before = document_text(episode.turns[: int(meta["turn"])]) + str(meta.get("forced_text") or "")
            if str(fields[-1].get("content", "")) != before:
                return f"turn {meta['turn']} (attempt {meta['attempt']}) saw a document that is not the turns before it"
    if root and isinstance(root.get("turns"), list):
        recorded = "".join(str(t.get("text", "")) for t in root["turns"] if isinstance(t, Mapping))
        if recorded != episode.document:
            return "the turn runs do not rebuild the document the graph's root run recorded"
    return None


def import_runs(runs: Iterable[Any], store: TraceStore, *, run: str) -> ImportReport:
    """Rebuild the episodes of ``runs`` (dicts of an export or ``langsmith`` Run objects) into ``store``."""
    from longshort.graphs.tracing import episodes_from_runs

    runs = list(runs)
    traces: dict[str, list[Any]] = defaultdict(list)
    for r in runs:
        traces[str(_get(r, "trace_id") or _get(r, "id"))].append(r)
    report = ImportReport(skipped=sum(1 for group in traces.values() if not any(map(_is_turn_run, group))))
    by_episode: dict[str, list[Any]] = defaultdict(list)
    roots: dict[str, Mapping[str, Any]] = {}
    for r in runs:
        if _is_turn_run(r):
            by_episode[str(_meta(r)["episode_id"])].append(r)
        outputs = _get(r, "outputs") or {}
        if _get(r, "parent_run_id") is None and isinstance(outputs, Mapping) and outputs.get("id"):
            roots[str(outputs["id"])] = outputs
    kept: list[Episode] = []
    for episode in episodes_from_runs(runs):
        reason = _check(episode, by_episode[episode.id], roots.get(episode.id))
        if reason is not None:
            report.rejected[episode.id] = reason
        else:
            kept.append(episode)
    for turn_runs in by_episode.values():  # an episode with no successful turn run is not rebuilt at all
        episode_id = str(_meta(turn_runs[0])["episode_id"])
        if all(_get(r, "error") for r in turn_runs):
            report.rejected[episode_id] = "no successful turn run"
    exact = [_token_exact(ep) for ep in kept]
    if kept:
        store.append(kept, run=run, source="langsmith", token_exact=exact)
    report.imported, report.non_exact = len(kept), exact.count(False)
    return report


@traces_app.command("import")
def import_command(
    store: Path = typer.Option(..., "--store", help="The trace store (SQLite) to append to."),
    project: str = typer.Option(None, "--project", help="A LangSmith project (API: LANGSMITH_API_KEY)."),
    file: Path = typer.Option(None, "--file", help="An export: one JSON run per line."),
) -> None:
    """Rebuild episodes from LangSmith runs (a project or an exported file) into the trace store."""
    if (project is None) == (file is None):
        _fail("give exactly one of --project NAME or --file EXPORT.jsonl")
    try:
        if file is not None:
            if not file.is_file():
                _fail(f"--file {file}: no such file")
            runs, run = read_export(file), f"langsmith/{file.stem}"
        else:
            runs, run = fetch_project(project), f"langsmith/{project}"
        with TraceStore(store) as db:
            report = import_runs(runs, db, run=run)
    except (LongShortError, ValueError, OSError) as e:
        _fail(str(e))
    for episode_id, reason in report.rejected.items():
        console.print(f"[yellow]rejected[/] {episode_id}: {reason}", soft_wrap=True, markup=True, highlight=False)
    console.print(
        f"imported {report.imported} episode(s) into {store} ({report.non_exact} non-exact), "
        f"skipped {report.skipped} trace(s) without longshort runs, rejected {len(report.rejected)}",
        soft_wrap=True,
        markup=False,
    )


def _correct(row: Any) -> bool | None:
    """The row's correctness: its ``em`` reward, else its answer graded against a known reference."""
    em = row.rewards.get("em")
    if em is not None:
        return em >= 1.0
    if row.episode.reference is None:
        return None
    from longshort.evals.grading import grade_answer

    return bool(grade_answer(row.episode.answer, row.episode.reference).correct)


@traces_app.command("stats")
def stats_command(store: Path = typer.Option(..., "--store", help="The trace store (SQLite).")) -> None:
    """Episodes by source and status, accuracy where known, mean tokens per agent."""
    if not store.is_file():
        _fail(f"--store {store}: no such file")
    try:
        with TraceStore(store) as db:
            rows = list(db.rows())
    except (LongShortError, OSError, ValueError) as e:
        _fail(str(e))
    groups: dict[tuple[str, str], list[Any]] = defaultdict(list)
    for row in rows:
        groups[(row.source, row.episode.status)].append(row)
    table = Table(title=f"{store}: {len(rows)} episode(s)")
    for col in ("source", "status", "episodes", "accuracy", "graded", "long tokens", "short tokens", "non-exact"):
        table.add_column(col, justify="left" if col in ("source", "status") else "right")
    for (source, status), group in sorted(groups.items()):
        verdicts = [v for v in map(_correct, group) if v is not None]
        accuracy = f"{100 * sum(verdicts) / len(verdicts):.1f}%" if verdicts else "—"
        n = len(group)
        table.add_row(
            source,
            status,
            str(n),
            accuracy,
            str(len(verdicts)),
            f"{sum(r.episode.tokens.long for r in group) / n:.0f}",
            f"{sum(r.episode.tokens.short for r in group) / n:.0f}",
            str(Counter(r.token_exact for r in group)[False]),
        )
    Console(width=160).print(table)


@traces_app.command("export")
def export_command(
    store: Path = typer.Option(..., "--store", help="The trace store (SQLite)."),
    out: Path = typer.Option(..., "--out", help="FILE.parquet, or a folder: a datasets folder (save_to_disk)."),
    run: str = typer.Option(None, "--run", help="Only this run."),
    source: str = typer.Option(None, "--source", help="Only this source (rl, eval, solve, demo, server, langsmith)."),
    status: str = typer.Option(None, "--status", help="Only this status (answered, max_turns, …)."),
) -> None:
    """Write the store (or a filtered part) as Parquet or as a ``datasets`` folder."""
    if not store.is_file():
        _fail(f"--store {store}: no such file")
    try:
        with TraceStore(store) as db:
            n = db.count(run, source=source, status=status)
            if out.suffix == ".parquet":
                db.to_parquet(out, run, source=source, status=status)
            else:
                db.save_to_disk(out, run, source=source, status=status)
    except (LongShortError, OSError, ValueError) as e:
        _fail(str(e))
    console.print(f"wrote {n} episode(s) to {out}", soft_wrap=True, markup=False)
