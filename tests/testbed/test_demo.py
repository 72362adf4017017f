"""``longshort demo`` on the shipped checkpoints: the JSON contract, the plot, seeds, interruption."""

import json

import pytest
from typer.testing import CliRunner

from longshort.cli import app
from longshort.testbed.checkpoints import SIZE_LIMIT_BYTES, assets_dir, shipped_pairs, verify
from longshort.testbed.demo import SYSTEMS, run_demo

ROWS = {"system", "accuracy", "mean_tokens", "mean_tokens_long", "mean_tokens_short", "mean_turns", "well_formed", "n"}


def test_shipped_checkpoints_verify_and_fit_the_size_budget():
    manifest = verify()
    total = sum((assets_dir() / rel).stat().st_size for rel in manifest.files)
    assert total + (assets_dir() / "manifest.json").stat().st_size <= SIZE_LIMIT_BYTES == 20_000_000
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
    shipped = list(shipped_pairs())  # the package's shipped SFT pairs follow the four systems
    assert [r["system"] for r in data["rows"]] == ["long-only", "short-only", "longshort-prompt", "oracle", *shipped]
    for row in data["rows"]:
        assert set(row) >= ROWS and row["n"] == 3
        assert row["mean_tokens"] == pytest.approx(row["mean_tokens_long"] + row["mean_tokens_short"])
    rows = {r["system"]: r for r in data["rows"]}
    assert rows["long-only"]["mean_tokens_short"] == 0 and rows["short-only"]["mean_tokens_long"] == 0
    assert rows["long-only"]["mean_tokens"] > 4 * rows["short-only"]["mean_tokens"]
    assert (out / "demo.png").read_bytes()[:4] == b"\x89PNG"
    assert len((out / "episodes.jsonl").read_text().splitlines()) == (4 + len(shipped)) * 3
    assert "longshort-prompt" in printed


def test_other_seeds_draw_other_problems(demo_out):
    out, _ = demo_out
    first = {json.loads(line)["question"] for line in (out / "episodes.jsonl").read_text().splitlines()}
    from longshort.testbed.tasks import generate_problems

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


# --- SFT pairs shipped in the assets (`longshort testbed ship-sft`) get their row out of the box -----------------


@pytest.fixture(scope="module")
def sft_assets(tmp_path_factory):
    """A copy of the shipped checkpoints (no shipped pairs) with one pair: zero-initialised LoRA adapters."""
    import shutil

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from longshort.testbed.checkpoints import Manifest, save_manifest
    from longshort.testbed.ship import ship_sft

    tmp = tmp_path_factory.mktemp("sft-assets")
    root = shutil.copytree(assets_dir(), tmp / "testbed", ignore=shutil.ignore_patterns("sft"))
    manifest = Manifest.model_validate_json((root / "manifest.json").read_text())
    files = {rel: digest for rel, digest in manifest.files.items() if not rel.startswith("sft/")}
    save_manifest(root, manifest.model_copy(update={"files": files, "sft": {}}))
    for role, base in (("long", "reasoner"), ("short", "base")):
        model = AutoModelForCausalLM.from_pretrained(root / base, dtype=torch.float32)
        config = LoraConfig(task_type="CAUSAL_LM", r=4, lora_alpha=8, target_modules="all-linear")
        get_peft_model(model, config).save_pretrained(tmp / role)
        (tmp / role / "sft_info.json").write_text(json.dumps({"agent": role, "lora": True, "steps": 1}))
    ship_sft(tmp / "long", tmp / "short", assets=root)
    return root


def test_demo_shows_the_shipped_pair(sft_assets, tmp_path):
    out = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", "--n", "2", "--checkpoints", str(sft_assets), "--out", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads((out / "demo.json").read_text())
    assert [r["system"] for r in data["rows"]] == [*SYSTEMS, "longshort-sft"]
    row = data["rows"][-1]
    assert set(row) >= ROWS and row["n"] == 2 and row["mean_tokens_long"] > 0 and row["mean_tokens_short"] > 0
    assert row["well_formed"] == 1.0  # a zero adapter merged into the right bases is the prompt-only pair
    assert len((out / "episodes.jsonl").read_text().splitlines()) == 5 * 2
    assert "longshort-sft" in result.output
    assert data["config"]["pairs"] == {
        "longshort-sft": [str(sft_assets / "sft" / "longshort-sft" / r) for r in ("long", "short")]
    }


def test_pair_option_replaces_a_shipped_pair_and_the_flag_skips_them(sft_assets, tmp_path, monkeypatch):
    import longshort.evals.systems as systems
    import longshort.testbed.demo as demo
    from longshort.trace import Episode

    async def no_generation(*args, **kwargs):
        questions = next(a for a in args if isinstance(a, list))
        return [Episode(id=str(i), question=q, status="answered") for i, q in enumerate(questions)]

    seen = []

    def fake_pair(long_dir, short_dir, questions, golds, **kwargs):
        seen.append((str(long_dir), str(short_dir)))
        return [Episode(id=str(i), question=q, status="answered") for i, q in enumerate(questions)]

    monkeypatch.setattr(systems, "run_solo", no_generation)
    monkeypatch.setattr(systems, "run_longshort", no_generation)
    monkeypatch.setattr(demo, "_run_pair", fake_pair)
    shipped = tuple(str(sft_assets / "sft" / "longshort-sft" / r) for r in ("long", "short"))
    other = (str(tmp_path), str(tmp_path))

    def systems_of(*extra):
        seen.clear()
        out = tmp_path / "out"
        result = CliRunner().invoke(
            app, ["demo", "--n", "1", "--checkpoints", str(sft_assets), "--out", str(out), *extra]
        )
        assert result.exit_code == 0, result.output
        return [r["system"] for r in json.loads((out / "demo.json").read_text())["rows"]][len(SYSTEMS) :], list(seen)

    assert systems_of() == (["longshort-sft"], [shipped])
    assert systems_of("--pair", f"longshort-sft={tmp_path},{tmp_path}") == (["longshort-sft"], [other])
    assert systems_of("--pair", f"mine={tmp_path},{tmp_path}") == (["longshort-sft", "mine"], [shipped, other])
    assert systems_of("--no-shipped-pairs") == ([], [])
