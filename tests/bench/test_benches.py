"""The benchmark scripts run end to end at a toy size and write their results (no timing asserted)."""

import json
import subprocess
import sys
from pathlib import Path

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
    _run("bench.throughput", *args, "--max-total-tokens", "16", "--out", str(out))
    rows = json.loads(out.read_text())["rows"]
    assert [r["n"] for r in rows] == [1, 2] and all(len(r["ratios"]) == 2 for r in rows)
    assert all(min(r["ratios"]) <= r["ratio"] <= max(r["ratios"]) for r in rows)
    assert all(r["ratio_process"] > 0 and r["ratio_thread"] > 0 for r in rows)  # both worker kinds ran
    assert all(r["graph_process"]["generated_tokens"] == r["graph"]["generated_tokens"] for r in rows)
    for r in rows:  # the raw baseline generates exactly the tokens the episodes kept, to the longest row
        assert r["raw"]["generated_tokens"] == r["graph"]["generated_tokens"] > 0
        assert r["raw"]["parts"][0]["decode_steps"] <= 16
        assert r["raw_mean_length"]["generated_tokens"] > 0 and r["ratio_mean_length"] > 0


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
