"""``longshort traces`` (import a LangSmith export, stats, export) and ``--traces`` of solve and demo.

The import runs on the recorded export (tests/fixtures/langsmith), no network: the episodes it
rebuilds must equal the recorded ones token for token.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from longshort.cli import app
from longshort.store import TraceStore
from longshort.trace import read_jsonl

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "langsmith"


def _runs() -> list[dict]:
    with open(FIXTURE / "export.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _write(runs: list[dict], path: Path) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in runs), encoding="utf-8")
    return path


def test_import_rebuilds_the_recorded_episodes_token_exactly(tmp_path):
    store = tmp_path / "t.sqlite"
    args = ["traces", "import", "--store", str(store), "--file", str(FIXTURE / "export.jsonl")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "imported 2 episode(s)" in result.output and "(0 non-exact)" in result.output
    assert "skipped 0" in result.output and "rejected 0" in result.output
    assert CliRunner().invoke(app, args).exit_code == 0  # importing again replaces, never duplicates
    with TraceStore(store) as db:
        rows = {r.episode.id: r for r in db.rows()}
    recorded = list(read_jsonl(FIXTURE / "episodes.jsonl"))
    assert set(rows) == {e.id for e in recorded}
    for episode in recorded:
        row = rows[episode.id]
        assert (row.source, row.run, row.token_exact) == ("langsmith", "langsmith/export", True)
        assert row.long_model and row.short_model
        again = row.episode
        assert (again.question, again.answer, again.status, again.reference) == (
            episode.question,
            episode.answer,
            episode.status,
            episode.reference,
        )
        skip = {"wall_time"}
        assert [t.model_dump(exclude=skip) for t in again.turns] == [t.model_dump(exclude=skip) for t in episode.turns]


def test_text_only_foreign_and_broken_traces_are_counted(tmp_path):
    runs = _runs()
    first, second = sorted({r["trace_id"] for r in runs})
    for run in runs:  # the first trace: recorded without the token payload
        if run["trace_id"] == first and run["run_type"] == "llm":
            metadata = run["outputs"]["generations"][0][0]["message"]["kwargs"]["response_metadata"]
            metadata.pop("token_ids"), metadata.pop("logprobs")
    broken = next(r for r in runs if r["trace_id"] == second and r["name"] == "short_turn")
    broken["outputs"]["generations"][0][0]["message"]["kwargs"]["content"] += " edited"
    foreign = copy.deepcopy(next(r for r in runs if r["parent_run_id"] is None))
    foreign.update(id="foreign", trace_id="foreign", name="other-app", outputs={"text": "hi"})
    runs.append(foreign)
    store = tmp_path / "t.sqlite"
    result = CliRunner().invoke(
        app, ["traces", "import", "--store", str(store), "--file", str(_write(runs, tmp_path / "e.jsonl"))]
    )
    assert result.exit_code == 0, result.output
    assert "imported 1 episode(s)" in result.output and "(1 non-exact)" in result.output
    assert "skipped 1 trace(s)" in result.output and "rejected 1" in result.output
    assert "do not rebuild the document" in result.output
    with TraceStore(store) as db:
        (row,) = db.rows()
    assert not row.token_exact and row.episode.turns and not row.episode.turns[0].token_ids


def test_import_runs_rejects_an_episode_with_a_missing_turn(tmp_path):
    from longshort.cli.traces import import_runs

    runs = _runs()
    trace = runs[0]["trace_id"]
    runs = [r for r in runs if not (r["trace_id"] == trace and r["run_type"] == "llm" and r["name"] == "long_turn")]
    with TraceStore(tmp_path / "t.sqlite") as db:
        report = import_runs(runs, db, run="x")
    assert report.imported == 1 and list(report.rejected.values()) == ["turn 0 has no successful turn run"]


def test_import_errors_name_what_is_wrong(tmp_path, monkeypatch):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1}\nnot json\n', encoding="utf-8")
    store = str(tmp_path / "t.sqlite")
    result = CliRunner().invoke(app, ["traces", "import", "--store", store, "--file", str(bad)])
    assert result.exit_code == 2 and f"{bad}: line 2 is not JSON" in result.output
    result = CliRunner().invoke(app, ["traces", "import", "--store", store])
    assert result.exit_code == 2 and "exactly one of --project" in result.output
    for name in ("LANGSMITH_API_KEY", "LANGCHAIN_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    result = CliRunner().invoke(app, ["traces", "import", "--store", store, "--project", "p"])
    assert result.exit_code == 2 and "LANGSMITH_API_KEY" in result.output


def test_stats_and_export(tmp_path):
    import datasets

    store = tmp_path / "t.sqlite"
    runner = CliRunner()
    runner.invoke(app, ["traces", "import", "--store", str(store), "--file", str(FIXTURE / "export.jsonl")])
    with TraceStore(store) as db:
        db.append(list(read_jsonl(FIXTURE / "episodes.jsonl")), run="eval/x", source="eval", rewards=[{"em": 1.0}] * 2)
    result = runner.invoke(app, ["traces", "stats", "--store", str(store)])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if "answered" in line]
    assert any("eval" in line and "100.0%" in line for line in lines)
    assert any("langsmith" in line for line in lines)  # graded against the references
    result = runner.invoke(app, ["traces", "export", "--store", str(store), "--out", str(tmp_path / "t.parquet")])
    assert result.exit_code == 0 and "wrote 4 episode(s)" in result.output
    assert len(datasets.Dataset.from_parquet(str(tmp_path / "t.parquet"))) == 4
    out = tmp_path / "ds"
    result = runner.invoke(app, ["traces", "export", "--store", str(store), "--out", str(out), "--source", "eval"])
    assert result.exit_code == 0 and set(datasets.load_from_disk(str(out))["source"]) == {"eval"}
    result = runner.invoke(app, ["traces", "stats", "--store", str(tmp_path / "none.sqlite")])
    assert result.exit_code == 2 and "no such file" in result.output


# --- --traces of solve and demo -------------------------------------------------------------------


@pytest.fixture
def scripted(monkeypatch, tiny_tokenizer):
    import longshort.agents.loading as loading
    from longshort.agents import ScriptedBackend, long_agent, short_agent

    def load_agents(long_model=None, short_model=None, **kw):
        think = ScriptedBackend(lambda r: "<think> 6 * 7 = 42 </think>", tiny_tokenizer, model_id="long-m")
        answer = ScriptedBackend(lambda r: "<answer> \\boxed{42} </answer>", tiny_tokenizer, model_id="short-m")
        return long_agent(think), short_agent(answer)

    monkeypatch.setattr(loading, "load_agents", load_agents)


def test_solve_appends_its_episode(scripted, tmp_path, monkeypatch):
    path = tmp_path / "solve.sqlite"
    result = CliRunner().invoke(app, ["solve", "What is 6 * 7?", "--json", "--traces", str(path)])
    assert result.exit_code == 0, result.output
    monkeypatch.setenv("LONGSHORT_TRACES", str(path))
    assert CliRunner().invoke(app, ["solve", "What is 6 * 7?", "--json"]).exit_code == 0
    with TraceStore(path) as db:
        rows = list(db.rows())
    assert len(rows) == 2 and {r.source for r in rows} == {"solve"} and rows[0].episode.answer == "42"
    assert (rows[0].long_model, rows[0].short_model) == ("long-m", "short-m") and rows[0].config_hash


def test_solve_refuses_a_newer_store_before_loading(tmp_path):
    import sqlite3

    path = tmp_path / "new.sqlite"
    TraceStore(path).close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version=99")
    db.close()
    result = CliRunner().invoke(app, ["solve", "What is 6 * 7?", "--traces", str(path)])
    assert result.exit_code == 2 and "schema version 99" in result.output


def test_demo_appends_every_row(tmp_path, monkeypatch):
    import longshort.evals.systems as systems
    from longshort.testbed.demo import SYSTEMS
    from longshort.trace import Episode

    async def no_generation(*args, **kwargs):
        questions = next(a for a in args if isinstance(a, list))
        return [Episode(id=str(i), question=q, status="answered") for i, q in enumerate(questions)]

    monkeypatch.setattr(systems, "run_solo", no_generation)
    monkeypatch.setattr(systems, "run_longshort", no_generation)
    path = tmp_path / "demo.sqlite"
    args = ["demo", "--n", "2", "--out", str(tmp_path / "out"), "--no-shipped-pairs", "--traces", str(path)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    with TraceStore(path) as db:
        assert db.count(source="demo") == 2 * len(SYSTEMS)
        oracle = list(db.rows("demo/oracle"))
        assert all(r.rewards == {"em": 1.0} for r in oracle) and oracle[0].short_model.endswith("base")
        assert all(r.rewards == {"em": 0.0} for r in db.rows("demo/long-only"))
