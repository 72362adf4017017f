"""``longshort testbed train`` on the CPU with a tiny config: it learns, saves, and loads back."""

import json
import math

import pytest
import torch
from typer.testing import CliRunner

from longshort.cli import app


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("testbed")
    args = ["testbed", "train", "--model", "base", "--out", str(out), "--n-train", "8", "--steps", "4"]
    args += ["--batch-size", "2", "--hidden-size", "32", "--layers", "1", "--heads", "2", "--vocab-size", "700"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return out


def test_training_changes_the_weights_and_saves_a_loadable_model(trained):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from longshort.testbed.model import make_model

    info = json.loads((trained / "base" / "train_info.json").read_text())
    assert math.isfinite(info["train_loss"]) and info["steps_done"] == 4
    model = AutoModelForCausalLM.from_pretrained(trained / "base")
    assert model.dtype == torch.float16  # shipped in half precision
    tokenizer = AutoTokenizer.from_pretrained(trained / "tokenizer")
    init = make_model(tokenizer, hidden_size=32, layers=1, heads=2, kv_heads=2, max_positions=3072, seed=0)
    changed = [
        name
        for name, p in model.named_parameters()
        if not torch.allclose(p.float(), init.state_dict()[name].float(), atol=1e-3)
    ]
    assert changed, "no parameter moved during training"
    assert not (trained / "base" / "trainer").exists()


def test_the_run_records_its_config_and_config_yaml_reproduces_it(trained):
    from longshort.config import load_config
    from longshort.testbed.train_config import TestbedTrainConfig

    info = json.loads((trained / "base" / "train_info.json").read_text())
    again = load_config(TestbedTrainConfig, trained / "base" / "config.yaml")
    assert again == TestbedTrainConfig(**info["config"])
    assert (again.model, again.steps, again.hidden_size, again.vocab_size) == ("base", 4, 32, 700)


def test_bad_config_is_a_clear_error(tmp_path):
    result = CliRunner().invoke(app, ["testbed", "train", "--model", "teacher", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "reasoner" in result.output


def test_build_can_retrain_one_model_and_keep_the_other(tmp_path):
    """`testbed build --models base` keeps the shipped reasoner and tokenizer, retrains the base."""
    import shutil

    from longshort.testbed.checkpoints import assets_dir, sha256_file, verify

    assets = tmp_path / "assets"
    shutil.copytree(assets_dir(), assets)
    before = {k: sha256_file(assets / k / "model.safetensors") for k in ("reasoner", "base")}
    args = ["testbed", "build", "--models", "base", "--out", str(tmp_path / "run"), "--assets", str(assets)]
    args += ["--n-train", "8", "--steps", "2", "--batch-size", "2", "--hidden-size", "32", "--layers", "1"]
    args += ["--eval-n", "2", "--results", str(tmp_path / "testbed.json")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    manifest = verify(assets)
    assert sha256_file(assets / "reasoner" / "model.safetensors") == before["reasoner"]
    assert sha256_file(assets / "base" / "model.safetensors") != before["base"]
    assert (assets / "base" / "tokenizer.json").read_bytes() == (assets / "reasoner" / "tokenizer.json").read_bytes()
    assert manifest.metrics["eval_n"] == 2
    results = json.loads((tmp_path / "testbed.json").read_text())
    assert results["config"]["models"] == ["base"] and results["config"]["n_ops"] == 3  # the build's own config
    assert (tmp_path / "run" / "config.yaml").exists() and (tmp_path / "run" / "train-base.yaml").exists()
    assert not (tmp_path / "run" / "train-reasoner.yaml").exists()

    bad = CliRunner().invoke(app, ["testbed", "build", "--models", "teacher", "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "subset" in bad.output


def test_init_continues_from_a_checkpoint_and_records_the_chain(tmp_path):
    """`--init` starts from the shipped weights (not random ones) and keeps the earlier run's record."""
    from safetensors.torch import load_file

    from longshort.testbed.checkpoints import assets_dir, sha256_file

    args = ["testbed", "train", "--model", "reasoner", "--out", str(tmp_path), "--n-train", "4", "--steps", "1"]
    args += ["--batch-size", "1", "--lr", "1e-9", "--init", str(assets_dir()), "--seed", "1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    info = json.loads((tmp_path / "reasoner" / "train_info.json").read_text())
    shipped = assets_dir() / "reasoner"
    assert info["init"]["sha256"] == sha256_file(shipped / "model.safetensors")
    assert info["init"]["train_info"] == json.loads((shipped / "train_info.json").read_text())
    before, after = load_file(shipped / "model.safetensors"), load_file(tmp_path / "reasoner" / "model.safetensors")
    # one step at lr 1e-9 from the shipped weights stays on them; a random init would not
    assert all(torch.allclose(before[k].float(), after[k].float(), atol=1e-2) for k in before)

    missing = CliRunner().invoke(app, [*args[:-4], "--init", str(tmp_path / "nowhere")])
    assert missing.exit_code != 0


def test_measure_writes_the_numbers_into_an_unmeasured_manifest(tmp_path):
    import shutil

    from longshort.testbed.checkpoints import assets_dir, verify, write_manifest

    assets = tmp_path / "assets"
    shutil.copytree(assets_dir(), assets)
    write_manifest(assets, command="longshort testbed build --eval-n 0", seed=0, metrics={"train_seconds": 1.0})
    args = ["testbed", "measure", "--assets", str(assets), "--eval-n", "2", "--device", "cpu"]
    result = CliRunner().invoke(app, [*args, "--results", str(tmp_path / "testbed.json")])
    assert result.exit_code == 0, result.output
    manifest = verify(assets)
    assert manifest.metrics["eval_n"] == 2 and manifest.metrics["train_seconds"] == 1.0
    assert "long_only_accuracy" in json.loads((tmp_path / "testbed.json").read_text())["metrics"]
    assert CliRunner().invoke(app, ["testbed", "measure", "--assets", str(tmp_path)]).exit_code != 0
