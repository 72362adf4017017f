"""Cold-start SFT (``longshort train sft``) on the CPU with a tiny Qwen2: it learns, saves, fails early and clearly."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from longshort.cli import app
from longshort.config import ConfigError, config_dict, load_config, save_config
from longshort.training.coldstart.sft_config import SFTRunConfig, default_config_path

ROOT = Path(__file__).resolve().parents[3]
MAX_LENGTH = 48


def _row(tokenizer, i: int, *, pad: int = 0, target: bool = True) -> dict:
    prompt = tokenizer.encode(f"What is {i} * 34 + 5? Compute step by step." + " Wait," * pad, add_special_tokens=False)
    completion = tokenizer.encode(f"<answer> {i * 34 + 5} </answer>", add_special_tokens=False)
    mask = [0] * len(prompt) + [int(target)] * len(completion)
    return {"input_ids": prompt + completion, "completion_mask": mask, "problem_id": f"p{i}", "turn": 1}


@pytest.fixture(scope="module")
def sft_data(tmp_path_factory, tiny_qwen_dir):
    """data/long: 16 good rows, one too long, one without a target; data/short: 4 rows."""
    from datasets import Dataset
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_qwen_dir)
    root = tmp_path_factory.mktemp("sft-data")
    rows = [_row(tokenizer, i) for i in range(16)]
    rows += [_row(tokenizer, 99, pad=40), _row(tokenizer, 98, target=False)]
    assert max(len(r["input_ids"]) for r in rows[:16]) <= MAX_LENGTH < len(rows[16]["input_ids"])
    Dataset.from_list(rows).save_to_disk(str(root / "long"))
    Dataset.from_list([_row(tokenizer, i) for i in range(4)]).save_to_disk(str(root / "short"))
    return root


def _args(data, model, out, *extra: str) -> list[str]:
    args = ["train", "sft", "--agent", "long", "--data", str(data), "--model", str(model), "--output-dir", str(out)]
    args += ["--per-device-train-batch-size", "4", "--max-length", str(MAX_LENGTH), "--learning-rate", "1e-3"]
    return [*args, "--use-cpu", *extra]


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, sft_data, tiny_qwen_dir):
    out = tmp_path_factory.mktemp("sft-full") / "long"
    result = CliRunner().invoke(app, _args(sft_data, tiny_qwen_dir, out, "--max-steps", "3"))
    assert result.exit_code == 0, result.output
    return out


def test_full_sft_changes_the_weights_and_saves_fp16(full_run, sft_data, tiny_qwen_dir):
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    info = json.loads((full_run / "sft_info.json").read_text())
    assert math.isfinite(info["train_loss"]) and info["steps"] == 3 and info["lora"] is False
    assert (info["rows"], info["rows_used"], info["dropped_too_long"], info["dropped_no_target"]) == (18, 16, 1, 1)
    assert info["data"].endswith("long") and info["config"]["max_length"] == MAX_LENGTH
    assert not list(sft_data.rglob("cache-*")), "training wrote into the data folder"
    with safe_open(full_run / "model.safetensors", "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}
    assert not (full_run / "training_args.bin").exists()
    again = load_config(SFTRunConfig, full_run / "config.yaml")  # the run's own record reproduces its config
    assert (again.max_steps, again.learning_rate, again.max_length, again.use_cpu) == (3, 1e-3, MAX_LENGTH, True)
    assert config_dict(again) == info["config"]
    model = AutoModelForCausalLM.from_pretrained(full_run)
    assert model.dtype == torch.float16
    base = AutoModelForCausalLM.from_pretrained(tiny_qwen_dir).state_dict()
    changed = [n for n, p in model.named_parameters() if not torch.allclose(p.float(), base[n].float(), atol=1e-4)]
    assert changed, "no parameter moved during training"


def test_loss_is_on_the_completion_only(sft_data, tiny_qwen_dir, tmp_path):
    """The batches the trainer sees carry labels only on target tokens: -100 on every prompt position."""
    from datasets import load_from_disk

    from longshort.training.coldstart.sft import build_trainer

    paths = dict(data=str(sft_data), model=str(tiny_qwen_dir), output_dir=str(tmp_path))
    config = SFTRunConfig(agent="long", **paths, max_length=MAX_LENGTH, use_cpu=True)
    trainer, stats = build_trainer(config)
    assert stats["rows_used"] == 16
    assert trainer.train_dataset.column_names == ["input_ids", "labels"]  # provenance columns are gone
    masks = {tuple(r["input_ids"]): r["completion_mask"] for r in load_from_disk(str(sft_data / "long"))}
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    columns = (batch[k].tolist() for k in ("input_ids", "attention_mask", "labels"))
    for ids, attention, labels in zip(*columns, strict=True):
        n = sum(attention)
        mask = masks[tuple(ids[:n])] + [0] * (len(ids) - n)  # padding is never a target
        assert [label != -100 for label in labels] == [bool(m) for m in mask]
        assert 0 < sum(mask) < n


def test_lora_saves_an_adapter_that_loads_on_the_base(sft_data, tiny_qwen_dir, tmp_path):
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from longshort.agents.loading import load_trained

    out = tmp_path / "lora"
    result = CliRunner().invoke(app, _args(sft_data, tiny_qwen_dir, out, "--max-steps", "2", "--lora"))
    assert result.exit_code == 0, result.output
    assert (out / "adapter_config.json").exists() and (out / "adapter_model.safetensors").exists()
    assert not (out / "model.safetensors").exists()
    assert json.loads((out / "sft_info.json").read_text())["lora"] is True
    adapter = load_file(out / "adapter_model.safetensors")
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in adapter.items())  # B starts at zero
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_qwen_dir), out)
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        merged = load_trained(out)(ids).logits
        assert torch.allclose(model(ids).logits, merged, atol=1e-4)


def _save(path: Path, rows: dict) -> Path:
    from datasets import Dataset

    Dataset.from_dict(rows).save_to_disk(str(path))
    return path


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p / "missing", "not found"),
        (lambda p: _save(p / "empty", {"input_ids": [], "completion_mask": []}), "no rows"),
        (lambda p: _save(p / "cols", {"input_ids": [[1, 2]], "labels": [[1, 2]]}), "completion_mask"),
        (lambda p: _save(p / "long", {"input_ids": [[1] * 60], "completion_mask": [[1] * 60]}), "longer than"),
        (lambda p: _save(p / "ragged", {"input_ids": [[1, 2, 3]], "completion_mask": [[0, 1]]}), "row 0"),
        (lambda p: (p / "notdata").mkdir() or p / "notdata", "not a saved dataset"),
        (lambda p: _save(p / "d" / "short", {"input_ids": [[1]], "completion_mask": [[1]]}).parent, "no long/"),
    ],
)
def test_bad_data_fails_before_any_model_loads(tmp_path, monkeypatch, make, message):
    import transformers

    def boom(*args, **kwargs):
        raise AssertionError("a model was loaded before the data was checked")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", boom)
    result = CliRunner().invoke(app, _args(make(tmp_path), tmp_path / "no-model", tmp_path / "out"))
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--learning-rate", "-1"], "learning_rate must be > 0"),
        (["--max-steps", "0"], "max_steps must be >= 1"),
        (["--lora-dropout", "1.5"], "lora_dropout must be in [0, 1)"),
        (["--logging-steps", "0"], "logging_steps"),  # TRL's own check, still named
    ],
)
def test_bad_options_are_clear_errors(tmp_path, extra, message):
    result = CliRunner().invoke(app, _args(tmp_path, tmp_path, tmp_path / "out", *extra))
    assert result.exit_code == 2 and message in " ".join(result.output.split()), result.output
    assert "Traceback" not in result.output


def test_yaml_round_trip_and_override_precedence(tmp_path):
    from dataclasses import replace

    config = SFTRunConfig(
        agent="short", data="d", output_dir="o", lora=True, lora_target_modules=["q_proj"], learning_rate=3e-5
    )
    path = save_config(config, tmp_path / "run.yaml")
    assert load_config(SFTRunConfig, path) == config
    assert load_config(SFTRunConfig, path, {"num_train_epochs": 1.5}) == replace(config, num_train_epochs=1.5)
    for agent in ("long", "short"):
        shipped = load_config(SFTRunConfig, default_config_path(agent))
        assert shipped.agent == agent and shipped.output_dir == f"runs/coldstart/sft-{agent}"
        assert shipped.max_length == 3072 and shipped.lr_scheduler_type == "cosine" and shipped.completion_only_loss
    (tmp_path / "bad.yaml").write_text("agent: long\nlearning_rate: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(SFTRunConfig, tmp_path / "bad.yaml")
    (tmp_path / "old.yaml").write_text("agent: long\ndata: d\noutput_dir: o\nlr: 1\n")  # a key from before
    with pytest.raises(ConfigError, match="unknown key 'lr' for SFTRunConfig; did you mean learning_rate") as e:
        load_config(SFTRunConfig, tmp_path / "old.yaml")
    assert e.value.key == "lr"
    (tmp_path / "trl.yaml").write_text("agent: long\ndata: d\noutput_dir: o\nadam_beta2: 0.95\noptim: adafactor\n")
    trl = load_config(SFTRunConfig, tmp_path / "trl.yaml")  # any inherited TRL field, through YAML
    assert trl.adam_beta2 == 0.95 and trl.optim == "adafactor"
    assert load_config(SFTRunConfig, save_config(trl, tmp_path / "trl-again.yaml")) == trl
    with pytest.raises(ConfigError, match="completion_only_loss must be true"):
        SFTRunConfig(agent="long", data="d", output_dir="o", completion_only_loss=False)


def _fake_train(seen: list):
    def fake_train(config):
        seen.append(config)
        out = Path(config.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        keys = ("train_loss", "steps", "rows_used", "dropped_too_long", "dropped_no_target", "seconds", "world_size")
        (out / "sft_info.json").write_text(json.dumps(dict.fromkeys(keys, 0)))
        save_config(config, out / "config.yaml")
        return out

    return fake_train


def test_cli_options_override_the_yaml(tmp_path, monkeypatch):
    import longshort.training.coldstart.sft as sft

    seen: list[SFTRunConfig] = []
    monkeypatch.setattr(sft, "train_sft", _fake_train(seen))
    yaml_config = SFTRunConfig(
        agent="long", data="yaml-data", output_dir=str(tmp_path / "o"), learning_rate=0.5, per_device_train_batch_size=3
    )
    save_config(yaml_config, tmp_path / "c.yaml")
    runner = CliRunner()
    args = [
        "train",
        "sft",
        "--agent",
        "long",
        "--config",
        str(tmp_path / "c.yaml"),
        "--learning-rate",
        "0.01",
        "--lora",
    ]
    assert runner.invoke(app, args).exit_code == 0
    # the option given wins; the YAML's values win over the defaults (batch size 3, not 16)
    got = seen[-1]
    assert (got.learning_rate, got.per_device_train_batch_size, got.data, got.lora) == (0.01, 3, "yaml-data", True)
    # --config alone (no --agent): the file says which agent; its saved config.yaml gives the same config back
    assert runner.invoke(app, ["train", "sft", "--config", str(tmp_path / "o" / "config.yaml")]).exit_code == 0
    assert seen[-1] == got
    mismatch = runner.invoke(app, ["train", "sft", "--agent", "short", "--config", str(tmp_path / "c.yaml")])
    assert mismatch.exit_code == 2 and "agent" in mismatch.output
    nothing = runner.invoke(app, ["train", "sft"])
    assert nothing.exit_code == 2 and "--agent" in nothing.output
    monkeypatch.chdir(tmp_path)  # the shipped defaults write under runs/
    assert runner.invoke(app, ["train", "sft", "--agent", "short", "--num-train-epochs", "1"]).exit_code == 0
    assert (seen[-1].output_dir, seen[-1].num_train_epochs, seen[-1].learning_rate) == (
        "runs/coldstart/sft-short",
        1.0,
        1e-4,
    )


@pytest.mark.parametrize(
    "text, message",
    [
        ("learning_rat: 0.1\n", "unknown key 'learning_rat' for SFTRunConfig; did you mean learning_rate?"),
        ("max_steps: ten\n", "max_steps must be int, got 'ten' (str)"),
        ("lora: maybe\n", "lora must be bool, got 'maybe' (str)"),
        ("save_dtype: int8\n", "save_dtype must be one of 'float16', 'bfloat16', 'float32', got 'int8'"),
    ],
)
def test_bad_yaml_is_an_error_naming_key_and_type(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text("agent: long\ndata: d\noutput_dir: o\n" + text)
    result = CliRunner().invoke(app, ["train", "sft", "--config", str(path)])
    assert result.exit_code == 2, result.output
    said = " ".join(result.stderr.split())
    assert f"{path}: {message}" in said and "Traceback" not in result.output


def test_configs_ship_in_the_wheel():
    tomllib = pytest.importorskip("tomllib")
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "configs/**/*.yaml" in data["longshort.training"]
    shipped = {p.relative_to(ROOT / "training").as_posix() for p in (ROOT / "training" / "configs").rglob("*.yaml")}
    assert {"configs/sft/long.yaml", "configs/accelerate/zero3.yaml"} <= shipped


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_one_step_under_accelerate_launch_with_two_processes(sft_data, tiny_qwen_dir, tmp_path):
    """Two CPU processes (gloo): both train, the main one alone writes and reports.

    ``accelerate launch --cpu`` starts one process unless MPI is set up, so this uses the
    multi-GPU launcher (torchrun), which falls back to gloo on CPUs.
    """
    out = tmp_path / "ddp"
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    launch += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    launch += ["--main_process_port", str(_free_port()), "-m", "longshort.cli"]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    args = _args(sft_data, tiny_qwen_dir, out, "--max-steps", "1")
    result = subprocess.run([*launch, *args], capture_output=True, text=True, env=env, timeout=180, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (result.stdout + result.stderr).count(f"saved {out}") == 1
    info = json.loads((out / "sft_info.json").read_text())
    assert info["world_size"] == 2 and info["steps"] == 1
    assert sorted(p.name for p in out.glob("*.safetensors")) == ["model.safetensors"]


def test_lora_yamls_are_the_shipped_pairs_settings():
    """The LoRA YAMLs reproduce the shipped longshort-sft adapters (what sft_info.json recorded)."""
    import json

    from longshort.testbed.checkpoints import shipped_pairs

    pairs = shipped_pairs()
    if "longshort-sft" not in pairs:
        pytest.skip("no shipped longshort-sft pair")
    # field -> its key in an sft_info.json written before SFTRunConfig took TRL's names
    keys = {k: k for k in ("lora", "lora_r", "lora_alpha", "lora_dropout", "lora_target_modules", "max_length")}
    keys |= {"learning_rate": "lr", "num_train_epochs": "epochs", "per_device_train_batch_size": "batch_size"}
    keys |= {"gradient_accumulation_steps": "grad_accum", "warmup_steps": "warmup_ratio", "seed": "seed"}
    for agent, folder in zip(("long", "short"), pairs["longshort-sft"], strict=True):
        config = load_config(SFTRunConfig, default_config_path(agent).with_name(f"{agent}-lora.yaml"))
        recorded = json.loads((folder / "sft_info.json").read_text())["config"]
        assert config.agent == agent
        assert {k: getattr(config, k) for k in keys} == {
            k: recorded.get(old, recorded.get(k)) for k, old in keys.items()
        }
