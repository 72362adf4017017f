"""``longshort demo`` on the shipped checkpoints: the JSON contract, the plot, seeds, interruption."""

import json

import pytest
from typer.testing import CliRunner

from longshort.cli import app
from longshort.evals.demo import run_demo
from longshort.training.testbed.checkpoints import assets_dir, verify

ROWS = {"system", "accuracy", "mean_tokens", "mean_tokens_long", "mean_tokens_short", "mean_turns", "well_formed", "n"}


def test_shipped_checkpoints_verify_and_fit_the_size_budget():
    manifest = verify()
    total = sum((assets_dir() / rel).stat().st_size for rel in manifest.files)
    assert total <= 20 * 1024 * 1024
    assert {"reasoner/model.safetensors", "base/model.safetensors"} <= set(manifest.files)
    assert manifest.metrics["eval_n"] >= 500 and "long_only_accuracy" in manifest.metrics
    assert manifest.command.startswith("longshort testbed build")


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    result = CliRunner().invoke(app, ["demo", "--n", "3", "--seed", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out, result.output


def test_demo_json_contract(demo_out):
    out, printed = demo_out
    data = json.loads((out / "demo.json").read_text())
    assert data["n"] == 3 and data["seed"] == 1
    assert [r["system"] for r in data["rows"]] == ["long-only", "short-only", "longshort-prompt", "oracle"]
    for row in data["rows"]:
        assert set(row) >= ROWS and row["n"] == 3
        assert row["mean_tokens"] == pytest.approx(row["mean_tokens_long"] + row["mean_tokens_short"])
    rows = {r["system"]: r for r in data["rows"]}
    assert rows["long-only"]["mean_tokens_short"] == 0 and rows["short-only"]["mean_tokens_long"] == 0
    assert rows["long-only"]["mean_tokens"] > 4 * rows["short-only"]["mean_tokens"]
    assert (out / "demo.png").read_bytes()[:4] == b"\x89PNG"
    assert len((out / "episodes.jsonl").read_text().splitlines()) == 4 * 3
    assert "longshort-prompt" in printed


def test_other_seeds_draw_other_problems(demo_out):
    out, _ = demo_out
    first = {json.loads(line)["question"] for line in (out / "episodes.jsonl").read_text().splitlines()}
    from longshort.training.testbed.tasks import generate_problems

    assert {p.question for p in generate_problems("test", 3, seed=1)} == first
    assert not first & {p.question for p in generate_problems("test", 3, seed=2)}


def test_bad_arguments_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="seed must be >= 0"):
        run_demo(n=1, seed=-1, out=tmp_path)
    result = CliRunner().invoke(app, ["demo", "--n", "0"])
    assert result.exit_code == 2


def test_interrupted_demo_leaves_nothing(tmp_path, monkeypatch):
    import longshort.evals.systems as systems

    async def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(systems, "run_longshort", interrupted)
    out = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", "--n", "1", "--out", str(out)])
    assert result.exit_code == 130 and "nothing was written" in result.output
    assert not out.exists() or not any(out.iterdir())


def test_corrupted_checkpoint_is_named(tmp_path):
    import shutil

    root = tmp_path / "testbed"
    shutil.copytree(assets_dir(), root)
    with open(root / "reasoner" / "config.json", "a") as f:
        f.write(" ")
    from longshort.errors import ChecksumError

    with pytest.raises(ChecksumError, match="reasoner/config.json"):
        run_demo(n=1, out=tmp_path / "out", checkpoints=root)
