"""The benchmark scripts run end to end at a toy size and write their results (no timing asserted)."""

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[2]


def _run(module: str, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True, timeout=240, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_throughput_bench(tmp_path):
    out = tmp_path / "t.json"
    args = ["--n", "1,2", "--repeats", "2", "--hidden", "32", "--layers", "1", "--max-tokens-per-turn", "8"]
    _run("bench.throughput", *args, "--max-total-tokens", "16", "--baselines", "generate", "--out", str(out))
    rows = json.loads(out.read_text())["rows"]
    assert [r["n"] for r in rows] == [1, 2] and all(len(r["ratios"]) == 2 for r in rows)
    assert all(min(r["ratios"]) <= r["ratio"] <= max(r["ratios"]) for r in rows)
    assert all(r["ratio_process"] > 0 and r["ratio_thread"] > 0 for r in rows)  # both worker kinds ran
    assert all(r["graph_process"]["generated_tokens"] == r["graph"]["generated_tokens"] for r in rows)
    for r in rows:  # the raw baseline generates exactly the tokens the episodes kept, to the longest row
        assert r["raw"]["generated_tokens"] == r["graph"]["generated_tokens"] > 0
        assert r["raw"]["parts"][0]["decode_steps"] <= 16
        assert r["raw_mean_length"]["generated_tokens"] > 0 and r["ratio_mean_length"] > 0
        assert r["best_baseline"] == "generate" and r["ratio_best"] == r["ratio_vs_generate"] == r["ratio"]
        assert r["graph_process"]["decode_steps"] > 0 and r["graph_thread"]["decode_steps_per_s"] > 0


def test_throughput_bench_baseline_arms(tmp_path):
    """Every arm is measured or skipped with a reason; the fastest one that ran is the ratio's reference."""
    out = tmp_path / "b.json"
    args = ["--n", "2", "--repeats", "1", "--hidden", "32", "--layers", "1", "--max-tokens-per-turn", "8"]
    args += ["--max-total-tokens", "16", "--workers", "thread", "--device", "cpu", "--profile"]
    stdout = _run("bench.throughput", *args, "--baselines", "generate,static,continuous", "--out", str(out))
    result = json.loads(out.read_text())
    arms = ["generate", "static", "continuous"]
    assert result["baselines"]["requested"] == arms
    assert set(result["baselines"]["ran"]) | set(result["baselines"]["skipped"]) == set(arms)
    assert result["runtime"]["torch"] and result["runtime"]["transformers"] and result["runtime"]["device"]
    [row] = result["rows"]
    ran = {}
    for arm, key in zip(arms, ["raw", "static", "continuous"], strict=True):
        summary = row["baselines"][arm]
        if "skipped" in summary:  # skipped: a reason, printed, and no rate
            assert summary["skipped"] and arm not in result["baselines"]["ran"] and summary["skipped"] in stdout
            assert row[key] == {"skipped": summary["skipped"]}
            continue
        assert summary["tokens_per_s"] > 0 and row[key]["tokens_per_s"] > 0 and arm in result["baselines"]["ran"]
        assert row[key]["generated_tokens"] == row["graph"]["generated_tokens"]  # the same lengths, forced
        assert row["ratio_vs_" + arm] == row["graph"]["tokens_per_s"] / summary["tokens_per_s"]
        ran[arm] = summary["tokens_per_s"]
    assert "generate" in ran  # plain generate runs everywhere
    assert row["best_baseline"] == max(ran, key=ran.get)
    assert row["ratio_best"] == row["graph"]["tokens_per_s"] / ran[row["best_baseline"]]
    if "continuous" in ran:
        assert row["continuous"]["parts"][0]["forced_lengths"] is True
    assert row["summary"]["decode_steps_per_s"]["graph_thread"] > 0
    assert row["summary"]["decode_steps_per_s"]["generate"] > 0
    prof = row["profile"]["thread"]
    assert prof["decode_steps"] > 0 and prof["host_ms_per_step"] > 0 and "absent" in prof["cuda"]


def test_throughput_bench_records_an_arm_that_fails(monkeypatch):
    """An arm that raises is a skip with its reason (and is not retried); the others still give ratio_best."""
    import bench.throughput as bench

    graph = {
        "tokens_per_s": 100.0,
        "decode_steps_per_s": 10.0,
        "per_episode": [{"long": 3, "short": 1, "total": 4}] * 2,
    }
    monkeypatch.setattr(bench, "run_graph", lambda *a: dict(graph))
    monkeypatch.setattr(bench, "long_agent", lambda backend, **kw: backend)
    calls = []

    def run_arm(arm, shares, qs, warm_qs, args):
        calls.append(arm)
        if arm == "static":
            raise RuntimeError("no C++ compiler")
        return {"tokens_per_s": {"generate": 50.0, "continuous": 80.0}[arm], "generated_tokens": 8, "wall_s": 1.0}

    monkeypatch.setattr(bench, "_run_arm", run_arm)
    monkeypatch.setattr(bench, "run_raw", lambda *a: {"tokens_per_s": 40.0, "generated_tokens": 8, "wall_s": 1.0})
    backend, skipped, arms = object(), {}, ("generate", "static", "continuous")
    args = SimpleNamespace(max_batch_size=256, temperature=1.0)
    trials = [bench.one_trial({"thread": (backend,) * 2}, backend, backend, ["q"] * 2, args, arms, skipped)]
    trials.append(bench.one_trial({"thread": (backend,) * 2}, backend, backend, ["q"] * 2, args, arms, skipped))
    assert calls == ["generate", "static", "continuous", "generate", "continuous"]  # not retried
    assert skipped["static"] == "failed at N=2: RuntimeError: no C++ compiler"
    assert all(t["static"] == {"skipped": skipped["static"]} for t in trials)
    row = {"n": 2, **trials[0]}
    bench.summarize(row, trials, ["thread"], arms)
    assert row["baselines"]["static"] == {"skipped": skipped["static"]}
    assert row["best_baseline"] == "continuous" and row["ratio_best"] == 100.0 / 80.0 == row["ratio_best_thread"]
    assert row["ratio"] == 2.0 and "ratio_vs_static" not in row


def test_throughput_bench_cuda_graphs_needs_the_engine_keyword(monkeypatch, capsys):
    import pytest

    import bench.throughput as bench

    class OldBackend:
        def __init__(self, model, *, max_batch_size=256, device=None): ...

    monkeypatch.setattr(bench, "TransformersBackend", OldBackend)
    monkeypatch.setattr("sys.argv", ["throughput", "--cuda-graphs", "both"])
    with pytest.raises(SystemExit) as exit_info:
        bench.main()
    assert exit_info.value.code == 2 and "no cuda_graphs keyword" in capsys.readouterr().err


def test_rollout_sharing_bench(tmp_path):
    out = tmp_path / "s.json"
    stdout = _run("bench.rollout_sharing", "--problems", "1", "--n", "2", "--max-new-tokens", "16", "--out", str(out))
    result = json.loads(out.read_text())
    assert result["identical_outcomes"] is True and "identical outcomes: True" in stdout
    assert result["shared"]["shared_prefill_rows"] > 0 and result["unshared"]["shared_prefill_rows"] == 0


def test_rollout_sharing_bench_on_a_random_model_of_another_size(tmp_path):
    out = tmp_path / "r.json"
    # hidden 128 (2 heads), 2 layers, 1 KV head (grouped-query attention, as in Qwen2.5-7B), FFN 256
    args = ["--random-size", "128,2,1,256", "--problems", "1", "--n", "2", "--max-new-tokens", "4", "--out", str(out)]
    _run("bench.rollout_sharing", *args)
    result = json.loads(out.read_text())
    assert result["identical_outcomes"] is True and result["config"]["random_size"] == "128,2,1,256"
    assert result["shared"]["generated_tokens"] > 0 and result["shared"]["statuses"] == {"ok": result["shared"]["jobs"]}
    assert result["model_parameters"] > 0
