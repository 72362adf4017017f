"""training/recipes/langsmith_sample.py: eval traced to the loopback LangSmith recorder, written as an
export that ``traces import`` rebuilds into the same episodes as the eval's own store."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from typer.testing import CliRunner

from longshort.cli import app
from longshort.store import TraceStore

ROOT = Path(__file__).resolve().parents[3]


def _script():
    spec = importlib.util.spec_from_file_location("langsmith_sample", ROOT / "training/recipes/langsmith_sample.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_export_imports_token_exact_into_the_same_episodes(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # the recorder is imported from tests/, as from the repository root
    export, out = tmp_path / "export.jsonl", tmp_path / "sample"
    _script().main(
        ["--export", str(export), "--", "--benchmarks", "testbed-train", "--limit", "2", "--systems", "longshort",
         "--max-tokens-per-turn", "48", "--max-total-tokens", "96", "--no-progress", "--out", str(out)]
    )  # fmt: skip
    assert export.exists() and export.stat().st_size > 0
    result = CliRunner().invoke(
        app, ["traces", "import", "--store", str(tmp_path / "ls.sqlite"), "--file", str(export)]
    )
    assert result.exit_code == 0, result.output
    direct = {e.id: e for e in TraceStore(out / "traces.sqlite").episodes()}
    imported = {e.id: e for e in TraceStore(tmp_path / "ls.sqlite").episodes()}
    assert len(direct) == 2 and imported.keys() == direct.keys()
    for key, episode in direct.items():  # token-exact: every turn's ids and the document as the graph built them
        assert [t.token_ids for t in imported[key].turns] == [t.token_ids for t in episode.turns]
        assert imported[key].answer == episode.answer
    items = [json.loads(line) for line in (out / "items.jsonl").read_text().splitlines()]
    assert {i["episode_id"] for i in items} == direct.keys()
