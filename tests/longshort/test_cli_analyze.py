"""`longshort analyze chunk|rollout|score|report` end to end on the shipped testbed base (CPU, tiny N)."""

import json

from typer.testing import CliRunner

from longshort.cli import app

runner = CliRunner()


def _ok(args):
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return result


def test_testbed_analysis_then_cold_start_end_to_end(tmp_path):
    d = tmp_path / "analysis"
    _ok(["analyze", "chunk", "--testbed", "--n", "2", "--out", str(d)])
    chunks = [json.loads(line) for line in (d / "chunks.jsonl").read_text().splitlines()]
    assert len(chunks) == 2 and all(c["needed"] and any(c["needed"]) for c in chunks)
    assert len((d / "thoughts.jsonl").read_text().splitlines()) == sum(len(c["thoughts"]) for c in chunks)

    common = ["--dir", str(d), "--max-new-tokens", "48", "--device", "cpu"]
    _ok(["analyze", "rollout", *common, "--n-rollouts", "2"])
    n_prefixes = sum(len(c["thoughts"]) + 1 for c in chunks)
    assert len((d / "rollouts.jsonl").read_text().splitlines()) == n_prefixes
    _ok(["analyze", "rollout", *common, "--n-rollouts", "2"])  # resumed: nothing left to do
    runs = [json.loads(line) for line in (d / "rollout_runs.jsonl").read_text().splitlines()]
    assert runs[-1]["skipped_done"] == n_prefixes and runs[-1]["continuations"] == 0

    _ok(["analyze", "score", "--dir", str(d)])
    assert len((d / "scores.jsonl").read_text().splitlines()) == 2
    _ok(["analyze", "report", *common])
    result = json.loads((d / "analysis.json").read_text())
    assert result["config"]["max_new_tokens"] == 48 and result["config"]["metric"] == "paper"
    for step in ("chunk", "rollout", "score", "report"):  # each step's record: --config DIR/<step>_config.yaml
        assert (d / f"{step}_config.yaml").exists()
    assert json.loads((d / "chunk_report.json").read_text())["config"]["testbed"] is True
    for key in ("auroc", "auroc_paper", "auroc_significance", "random_auroc", "selection_precision"):
        assert key in result
    assert 0 < result["kept_token_frac"] < 1 and result["n_problems"] == 2
    assert (d / "accuracy_by_prefix.png").stat().st_size > 0 and (d / "auroc_vs_n.png").exists()

    # the cold start goes on from here: dialogues and SFT tables, then one SFT step of each agent
    for source in ("significance", "random"):
        data = tmp_path / "coldstart" / source
        _ok(["train", "data", "--analysis", str(d), "--out", str(data), "--source", source])
        info = json.loads((data / "data.json").read_text())
        assert info["config"]["source"] == source and "llm_api_key" not in info["config"]  # no secret recorded
        assert (data / "config.yaml").exists()
        assert info["dialogues"] == 2 and info["rows"]["long"] >= 2 and info["rows"]["short"] >= 2
    for agent in ("long", "short"):
        out = tmp_path / f"sft-{agent}"
        args = ["train", "sft", "--agent", agent, "--data", str(tmp_path / "coldstart" / "significance")]
        _ok([*args, "--output-dir", str(out), "--max-steps", "1", "--per-device-train-batch-size", "2", "--use-cpu"])
        assert (out / "model.safetensors").exists() and (out / "sft_info.json").exists()
    # and the demo gains the fine-tuned pair's row
    pair = f"longshort-sft={tmp_path / 'sft-long'},{tmp_path / 'sft-short'}"
    _ok(["demo", "--n", "2", "--out", str(tmp_path / "demo"), "--pair", pair])
    rows = {r["system"]: r for r in json.loads((tmp_path / "demo" / "demo.json").read_text())["rows"]}
    assert rows["longshort-sft"]["n"] == 2 and "long-only" in rows
    wrong = runner.invoke(app, ["demo", "--n", "2", "--pair", "nodirs"])
    assert wrong.exit_code == 2 and "NAME=LONG_DIR,SHORT_DIR" in wrong.output
    bad = runner.invoke(app, ["train", "data", "--analysis", str(tmp_path), "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "analyze chunk --testbed" in bad.output


def test_chunk_counts_bad_rows(tmp_path):
    src = tmp_path / "responses.jsonl"
    rows = [
        {"id": "ok", "question": "Q1", "answer": "3", "response": "First, 1 + 2.\n\nWait, check: 3.\n\nSo \\boxed{3}"},
        {"id": "empty", "question": "Q2", "answer": "1", "response": "   "},
        {"id": "noq", "answer": "1", "response": "x"},
        {"id": "nogold", "question": "Q3", "response": "one paragraph only"},
    ]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "a"
    _ok(["analyze", "chunk", "--input", str(src), "--out", str(out)])
    report = json.loads((out / "chunk_report.json").read_text())
    assert report["problems"] == 2
    assert report["skipped"] == {"empty_response": 1, "no_question": 1, "no_gold_answer": 1}
    first = json.loads((out / "chunks.jsonl").read_text().splitlines()[0])
    assert first["thoughts"][0] == "First, 1 + 2.\n\nWait, check: 3."  # the self-check joins its thought

    bad = runner.invoke(app, ["analyze", "chunk", "--input", str(tmp_path / "missing.jsonl"), "--out", str(out)])
    assert bad.exit_code == 2 and "not found" in bad.output
    both = runner.invoke(app, ["analyze", "chunk", "--testbed", "--input", str(src)])
    assert both.exit_code == 2 and "exactly one" in both.output
    nothing = runner.invoke(app, ["analyze", "rollout", "--dir", str(tmp_path / "nope")])
    assert nothing.exit_code == 2 and "analyze chunk" in nothing.output
