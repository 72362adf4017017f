"""``longshort eval`` on bad input and flaky servers: per-item records, retried errors, one server per --out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from longshort.agents import Agent, ScriptedBackend, long_agent, short_agent
from longshort.cli import app
from longshort.evals import runner
from tests.evals._scripted import Q, scripted_agents, too_long_for


def write_items(path: Path, problems: list[str]) -> Path:
    with path.open("w", encoding="utf-8") as f:
        for n, problem in enumerate(problems):
            f.write(json.dumps({"id": f"math500-{n:03d}", "problem": problem, "answer": "413"}) + "\n")
    return path


def serve(monkeypatch, long: Agent, short: Agent) -> None:
    """Make ``eval`` use these agents instead of loading models (a scripted 'server')."""
    monkeypatch.setattr(runner, "_load_agents", lambda cfg, needed: (long, short, [long.backend, short.backend]))


def eval_cmd(data: Path, out: Path, systems: str, *extra: str) -> list[str]:
    return [
        "eval", "--benchmark", "math500", "--data", str(data), "--system", systems,
        "--long-model", "L", "--short-model", "S", "--max-total-tokens", "128", "--out", str(out), "--no-progress",
        *extra,
    ]  # fmt: skip


def items(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "items.jsonl").read_text(encoding="utf-8").splitlines()]


def test_a_question_longer_than_the_context_fails_alone_in_each_system(tmp_path, monkeypatch, tiny_tokenizer):
    context, long_question = too_long_for(long_agent(ScriptedBackend([], tiny_tokenizer)))
    serve(monkeypatch, *scripted_agents(tiny_tokenizer, max_context=context))
    data = write_items(tmp_path / "math.jsonl", [Q, long_question, Q])
    result = CliRunner().invoke(app, eval_cmd(data, tmp_path / "out", "long-only,longshort"))
    assert result.exit_code == 0, result.output
    rows = {(r["system"], r["id"]): r for r in items(tmp_path / "out")}
    assert len(rows) == 6  # every item of both systems recorded, the bad one included
    for system in ("long-only", "longshort"):
        bad = rows[(system, "math500-001")]
        assert bad["status"] == "backend_error" and "does not fit" in bad["error"] and not bad["correct"]
        assert all(rows[(system, i)]["status"] == "answered" for i in ("math500-000", "math500-002"))
    assert "2 item(s) ended in backend_error" in " ".join(result.output.split())
    summary = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [r["pass_at_1"] for r in summary["rows"]] == [pytest.approx(2 / 3)] * 2


def test_resume_retries_backend_errors(tmp_path, monkeypatch, tiny_tokenizer):
    """A transient failure (every call an error, like an HTTP 500) is re-run on the next run, not kept."""
    data = write_items(tmp_path / "math.jsonl", [Q, Q, Q])
    out = tmp_path / "out"
    failing = [ScriptedBackend([], tiny_tokenizer, fail_on=range(1000)) for _ in range(2)]
    serve(monkeypatch, long_agent(failing[0]), short_agent(failing[1]))
    first = CliRunner().invoke(app, eval_cmd(data, out, "short-only,longshort"))
    assert first.exit_code == 0, first.output
    assert [r["status"] for r in items(out)] == ["backend_error"] * 6

    long, short = scripted_agents(tiny_tokenizer)  # the server is healthy again
    serve(monkeypatch, long, short)
    second = CliRunner().invoke(app, eval_cmd(data, out, "short-only,longshort"))
    assert second.exit_code == 0, second.output
    assert len(long.backend.requests) == 3 and len(short.backend.requests) == 6  # 3 solo + 3 Long⊗Short turns
    assert len(items(out)) == 12  # appended: the later records replace the failed ones
    summary = json.loads((out / "results.json").read_text())
    assert {i["status"] for i in summary["items"]} == {"answered"} and len(summary["items"]) == 6
    assert [r["pass_at_1"] for r in summary["rows"]] == [1.0, 1.0]
    assert "re-run to retry them" in " ".join(first.output.split())  # the first run said what to do
    assert "6 backend_error record(s) retried" in " ".join(second.output.split())

    def boom(*a, **k):
        raise AssertionError("nothing is left to run")

    monkeypatch.setattr(runner, "_load_agents", boom)
    third = CliRunner().invoke(app, eval_cmd(data, out, "short-only,longshort"))
    assert third.exit_code == 0, third.output


def test_another_server_in_the_same_out_is_an_error_naming_base_url(tmp_path, monkeypatch, tiny_tokenizer):
    data = write_items(tmp_path / "math.jsonl", [Q])
    out = tmp_path / "out"
    serve(monkeypatch, *scripted_agents(tiny_tokenizer))
    served = ("--backend", "openai", "--base-url")
    first = CliRunner().invoke(app, eval_cmd(data, out, "short-only", *served, "http://server-a:8000/v1"))
    assert first.exit_code == 0, first.output
    assert json.loads((out / "run.json").read_text())["fingerprint"]["base_url"] == "http://server-a:8000/v1"

    other = CliRunner().invoke(app, eval_cmd(data, out, "short-only", *served, "http://server-b:8000/v1"))
    said = " ".join(other.output.split())
    assert other.exit_code == 2 and "different config" in said and "base_url" in said and "server-a" in said
    same = CliRunner().invoke(app, eval_cmd(data, out, "short-only", *served, "http://server-a:8000/v1/"))
    assert same.exit_code == 0, same.output  # a trailing slash is the same server

    run = json.loads((out / "run.json").read_text())  # a run.json written before the server was fingerprinted
    del run["fingerprint"]["base_url"]
    (out / "run.json").write_text(json.dumps(run))
    old = CliRunner().invoke(app, eval_cmd(data, out, "short-only", *served, "http://server-b:8000/v1"))
    assert old.exit_code == 2 and "base_url" in " ".join(old.output.split())  # the server comes from its config
    run["fingerprint"].pop("base_url", None)
    (out / "run.json").write_text(json.dumps(run))
    resumed = CliRunner().invoke(app, eval_cmd(data, out, "short-only", *served, "http://server-a:8000/v1"))
    assert resumed.exit_code == 0, resumed.output


def test_local_backends_ignore_base_url_in_the_fingerprint():
    cfg = runner.EvalConfig(benchmarks=["b"], systems=["long-only"], long_model="L", short_model="S")
    assert cfg.fingerprint({})["base_url"] is None
    cfg.base_url = "http://unused/v1"  # the hf backend never reads it
    assert cfg.fingerprint({})["base_url"] is None
    cfg.backend = "openai"
    assert cfg.fingerprint({})["base_url"] == "http://unused/v1"
