"""``longshort eval``: the results contract, AES, resume without recomputation, config guards."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from longshort.cli import app
from longshort.evals import runner
from longshort.evals.runner import aes

BENCH = Path(__file__).resolve().parents[3] / "shared" / "data" / "benchmarks"
needs_data = pytest.mark.skipif(not (BENCH / "math500.jsonl").exists(), reason="no local benchmark copies")


def test_aes_hand_computed():
    # Same accuracy, half the tokens: 1 * (1000 - 500) / 1000 + 3 * 0 = 0.5.
    assert aes(0.5, 500, 0.5, 1000) == pytest.approx(0.5)
    # Accuracy up 0.4 -> 0.5 (+25 %), tokens 1000 -> 800: 0.2 + 3 * 0.25 = 0.95.
    assert aes(0.5, 800, 0.4, 1000) == pytest.approx(0.95)
    # Accuracy down 0.5 -> 0.4 (-20 %), tokens 1000 -> 500: 0.5 - 5 * 0.2 = -0.5.
    assert aes(0.4, 500, 0.5, 1000) == pytest.approx(-0.5)
    # More tokens than the baseline is a negative efficiency term: (1000 - 1500) / 1000 = -0.5.
    assert aes(0.5, 1500, 0.5, 1000) == pytest.approx(-0.5)
    assert aes(0.5, 1000, 0.5, 1000) == 0
    # Baseline accuracy 0 (or no tokens): the relative change is undefined -> None.
    assert aes(0.3, 100, 0.0, 1000) is None
    assert aes(0.3, 100, 0.5, 0) is None


def _cmd(out, *extra):
    return [
        "eval", "--benchmark", "math500", "--data", str(BENCH / "math500.jsonl"), "--limit", "2",
        "--system", "short-only,longshort", "--max-tokens-per-turn", "64", "--max-total-tokens", "128",
        "--out", str(out), "--no-progress", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    result = CliRunner().invoke(app, _cmd(out))
    assert result.exit_code == 0, result.output
    return out


@needs_data
def test_results_contract(first_run):
    out = first_run
    data = json.loads((out / "results.json").read_text())
    keys = {"benchmark", "system", "pass_at_1", "mean_tokens", "mean_tokens_long", "mean_tokens_short",
            "well_formed", "mean_turns", "aes", "n", "k"}  # fmt: skip
    assert [(r["benchmark"], r["system"]) for r in data["rows"]] == [
        ("math500", "short-only"),
        ("math500", "longshort"),
    ]
    for row in data["rows"]:
        assert set(row) == keys and row["n"] == 2 and row["k"] == 1
        assert 0 <= row["pass_at_1"] <= 1 and row["aes"] is None  # no long-only -> no baseline
        assert row["mean_tokens"] == pytest.approx(row["mean_tokens_long"] + row["mean_tokens_short"])
        assert row["mean_tokens"] <= 128
    short = data["rows"][0]
    assert short["mean_tokens_long"] == 0
    assert len(data["items"]) == 4 and {i["id"] for i in data["items"]} == {"math500-000", "math500-001"}
    for item in data["items"]:
        assert {"status", "answer", "tokens", "correct", "extracted", "reason", "episode_id", "sample"} <= set(item)
    assert data["config"]["max_total_tokens"] == 128 and data["config_hash"]
    lines = (out / "items.jsonl").read_text().splitlines()
    assert len(lines) == 4
    run = json.loads((out / "run.json").read_text())
    assert run["config_hash"] == data["config_hash"]
    assert run["config"]["systems"] == ["short-only", "longshort"] and "api_key" not in run["config"]
    assert set(data["config"]["benchmark_hashes"]) == {"math500"} and data["config"]["limit"] == 2
    from longshort.config import config_dict, load_config
    from longshort.evals.eval_config import EvalConfig

    assert config_dict(load_config(EvalConfig, out / "config.yaml")) == run["config"]  # --config reproduces the run
    md = (out / "results.md").read_text()
    assert "| short-only |" in md and "| longshort |" in md and "math500 Pass@1" in md
    assert (out / "results.png").read_bytes()[:4] == b"\x89PNG"
    from longshort.store import TraceStore

    with TraceStore(out / "traces.sqlite") as store:  # every episode, whole, with its EM
        rows = list(store.rows())
    assert sorted(r.episode.id for r in rows) == sorted(i["episode_id"] for i in data["items"])
    assert {r.run for r in rows} == {"eval/math500/short-only", "eval/math500/longshort"}
    by_id = {i["episode_id"]: i for i in data["items"]}
    assert all(r.source == "eval" and r.rewards["em"] == float(by_id[r.episode.id]["correct"]) for r in rows)


@needs_data
def test_resume_does_not_recompute(first_run, tmp_path, monkeypatch):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(first_run, out)
    before = json.loads((out / "results.json").read_text())

    def boom(*a, **k):
        raise AssertionError("generation called for finished items")

    monkeypatch.setattr(runner.systems, "run_solo", boom)
    monkeypatch.setattr(runner.systems, "run_longshort", boom)
    monkeypatch.setattr(runner, "_load_agents", boom)
    result = CliRunner().invoke(app, _cmd(out))
    assert result.exit_code == 0, result.output
    after = json.loads((out / "results.json").read_text())
    assert after["rows"] == before["rows"] and after["items"] == before["items"]
    assert len((out / "items.jsonl").read_text().splitlines()) == 4


@needs_data
def test_offset_selects_a_slice_that_a_shard_resumes(first_run, tmp_path, monkeypatch):
    """--offset 1 --limit 1 is the second problem alone: its records are already in the run, so nothing runs."""
    import shutil

    out = tmp_path / "shard"
    shutil.copytree(first_run, out)
    ids = [i["id"] for i in json.loads((out / "results.json").read_text())["items"]]
    monkeypatch.setattr(runner, "_load_agents", lambda *a, **k: (_ for _ in ()).throw(AssertionError("ran")))
    result = CliRunner().invoke(app, [*_cmd(out), "--offset", "1", "--limit", "1"])
    assert result.exit_code == 0, result.output
    items = json.loads((out / "results.json").read_text())["items"]
    assert {i["id"] for i in items} == {ids[-1]} != {ids[0]} and len(items) == 2  # two systems, one problem
    result = CliRunner().invoke(app, [*_cmd(out), "--offset", "-1"])
    assert result.exit_code == 2 and "offset must be >= 0" in result.output


@needs_data
def test_truncated_last_line_is_rerun(first_run, tmp_path, monkeypatch):
    import shutil

    out = tmp_path / "torn"
    shutil.copytree(first_run, out)
    lines = (out / "items.jsonl").read_text().splitlines(keepends=True)
    # systems finish in any order: make a Long⊗Short item the one being written when the run was killed
    last = max(i for i, line in enumerate(lines) if json.loads(line)["system"] == "longshort")
    lines.append(lines.pop(last))
    torn = json.loads(lines[-1])
    (out / "items.jsonl").write_text("".join(lines[:-1]) + lines[-1][:40])  # killed mid-write
    calls = []
    real = runner.systems.run_longshort

    async def spy(long, short, questions, **kw):
        calls.append(list(questions))
        return await real(long, short, questions, **kw)

    monkeypatch.setattr(runner.systems, "run_longshort", spy)
    result = CliRunner().invoke(app, _cmd(out))
    assert result.exit_code == 0, result.output
    assert torn["system"] == "longshort" and len(calls) == 1 and len(calls[0]) == 1  # only the torn one
    rows = [json.loads(x) for x in (out / "items.jsonl").read_text().splitlines()]
    assert len(rows) == 4
    assert {(r["system"], r["id"]) for r in rows} == {(i["system"], i["id"]) for i in map(json.loads, lines)}


@needs_data
def test_changed_config_in_same_dir_is_an_error(first_run, tmp_path):
    import shutil

    out = tmp_path / "other"
    shutil.copytree(first_run, out)
    result = CliRunner().invoke(app, [*_cmd(out), "--max-total-tokens", "256"])
    said = " ".join(result.output.split())
    assert result.exit_code == 2 and "different config" in said and "max_total_tokens" in said


def test_bad_requests_are_clear_errors(tmp_path):
    r = CliRunner().invoke(app, ["eval", "--benchmark", "math500", "-k", "4", "--out", str(tmp_path)])
    assert r.exit_code == 2 and "--temperature > 0" in r.output
    r = CliRunner().invoke(app, ["eval", "--benchmark", "math500,aime24", "--data", "x.jsonl", "--out", str(tmp_path)])
    assert r.exit_code == 2 and "exactly one --benchmark" in r.output
    r = CliRunner().invoke(app, ["eval", "--benchmark", "math500", "--system", "both", "--out", str(tmp_path)])
    assert r.exit_code == 2 and "unknown system" in r.output
    r = CliRunner().invoke(
        app,
        ["eval", "--benchmark", "math500", "--system", "short-only", "--baseline", "long-only", "--out", str(tmp_path)],
    )
    assert r.exit_code == 2 and "--baseline" in r.output


def test_config_checks_name_the_field():
    from longshort.config import ConfigError

    base = dict(benchmarks=["b"], systems=["long-only"], long_model="L", short_model="S", out=Path("."))
    for extra, key in (
        ({"k": 2}, "temperature"),
        ({"systems": ["both"]}, "systems"),
        ({"batch_size": 0}, "batch_size"),
    ):
        with pytest.raises(ConfigError) as e:
            runner.EvalConfig(**{**base, **extra})
        assert e.value.key == key
    with pytest.raises(ConfigError, match="needs --long-model") as e:
        runner.EvalConfig(benchmarks=["b"], backend="openai")
    assert e.value.key == "long_model"
    assert runner.EvalConfig(**base).baseline == "long-only"  # the default baseline, when it runs


def test_summary_rows_use_the_baseline():
    cfg = runner.EvalConfig(
        benchmarks=["b"], systems=["long-only", "longshort"], long_model="L", short_model="S", out=Path("."),
        baseline="long-only",
    )  # fmt: skip

    def rec(system, correct, total):
        return {"benchmark": "b", "system": system, "correct": correct, "well_formed": True, "turns": 2,
                "tokens": {"long": total, "short": 0, "total": total}}  # fmt: skip

    records = [rec("long-only", True, 1000), rec("long-only", False, 1000), rec("longshort", True, 500),
               rec("longshort", False, 500)]  # fmt: skip
    rows = runner.summarize_rows(records, cfg, {"b": 2})
    assert rows[0]["aes"] == 0 and rows[1]["aes"] == pytest.approx(0.5) and rows[1]["pass_at_1"] == 0.5
    assert "| longshort | 50.0 |" in runner.markdown_table(rows, cfg)


def test_eval_on_the_testbed_with_the_shipped_pair(tmp_path):
    import json

    from typer.testing import CliRunner

    from longshort.cli import app

    out = tmp_path / "tb"
    args = ["eval", "--benchmark", "testbed", "--limit", "2", "--system", "short-only,longshort"]
    result = CliRunner().invoke(app, [*args, "--no-progress", "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = {r["system"]: r for r in json.loads((out / "results.json").read_text())["rows"]}
    assert rows["longshort"]["n"] == 2 and rows["longshort"]["mean_turns"] >= 2
    assert rows["longshort"]["mean_tokens_long"] > 10 * rows["short-only"]["mean_tokens"] / 2
    assert 0.0 <= rows["longshort"]["pass_at_1"] <= 1.0
