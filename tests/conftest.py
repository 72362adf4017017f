"""Shared fixtures: tiny random-weight models of real architectures with an offline tokenizer.

They exercise the mechanics (batching, tags, token views), not quality.
"""

from __future__ import annotations

import pytest

from longshort.protocol import SYSTEM_PROMPTS

pytest_plugins = ["tests.serve_utils"]  # served_tiny_qwen: a real `transformers serve` on loopback

CORPUS = [
    SYSTEM_PROMPTS["long"],
    SYSTEM_PROMPTS["short"],
    "<think> First, 12 * 34 = 12 * 30 + 12 * 4 = 360 + 48 = 408. Let me check: 408 / 12 = 34. </think>",
    "<answer> 408 + 5 = 413. So the answer is \\boxed{413}. </answer>",
    "<answer> We need 17 * 23 first. </rethink>",
    "What is 12 * 34 + 5? Compute step by step. Wait, verify the product again.",
] * 20


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from longshort.training.testbed.tokenizer import train_tokenizer

    return train_tokenizer(CORPUS, vocab_size=400)


def _save(tmp_path_factory, tokenizer, arch: str, seed: int):
    from longshort.training.testbed.model import make_model

    path = tmp_path_factory.mktemp(f"tiny-{arch}-{seed}")
    model = make_model(tokenizer, arch=arch, seed=seed)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_qwen_dir(tmp_path_factory, tiny_tokenizer):
    """A saved tiny Qwen2ForCausalLM directory (model + tokenizer + chat template)."""
    return _save(tmp_path_factory, tiny_tokenizer, "qwen2", 0)


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory, tiny_tokenizer):
    return _save(tmp_path_factory, tiny_tokenizer, "llama", 1)
