"""Fixtures of the shipped-assets tests: two tiny checkpoints, LoRA adapters of them, an assets folder."""

import pytest

from longshort.testbed.checkpoints import write_manifest


@pytest.fixture(scope="module")
def tiny_checkpoints(tmp_path_factory, tiny_qwen_dir, tiny_tokenizer):
    """Two different tiny Qwen2 checkpoints standing in for the shipped reasoner and base."""
    import shutil

    from longshort.testbed.model import make_model

    root = tmp_path_factory.mktemp("tiny-checkpoints")
    shutil.copytree(tiny_qwen_dir, root / "reasoner")
    make_model(tiny_tokenizer, seed=1).save_pretrained(root / "base")
    tiny_tokenizer.save_pretrained(root / "base")
    return root


def _make_adapter(base_dir, out, agent: str, tokenizer, **info) -> None:
    """A LoRA adapter as `train sft --lora` leaves it (fp32 weights, tokenizer, README, sft_info.json), not zero."""
    import json

    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype="float32")
    config = LoraConfig(task_type="CAUSAL_LM", r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False)
    get_peft_model(model, config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    info = {"agent": agent, "lora": True, "steps": 1, "train_loss": 2.5, "config": {"lora_r": 4, "lr": 1e-3}, **info}
    (out / "sft_info.json").write_text(json.dumps(info))


@pytest.fixture(scope="module")
def adapters(tmp_path_factory, tiny_checkpoints, tiny_tokenizer):
    root = tmp_path_factory.mktemp("adapters")
    _make_adapter(tiny_checkpoints / "reasoner", root / "long", "long", tiny_tokenizer)
    _make_adapter(tiny_checkpoints / "base", root / "short", "short", tiny_tokenizer)
    return root


@pytest.fixture
def sft_assets(tmp_path, tiny_checkpoints):
    """A temp assets folder holding the two tiny checkpoints and a manifest, as `testbed build` writes it."""
    import shutil

    root = tmp_path / "testbed"
    for name in ("reasoner", "base"):
        shutil.copytree(tiny_checkpoints / name, root / name)
    write_manifest(root, command="longshort testbed build --seed 3", seed=3, metrics={"long_only_accuracy": 0.9})
    return root
