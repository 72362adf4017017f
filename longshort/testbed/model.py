"""Small causal LMs of real architectures (Qwen2, Llama), built from a config, trained from scratch."""

from __future__ import annotations

from typing import Literal

Architecture = Literal["qwen2", "llama"]


def make_model(
    tokenizer,
    *,
    arch: Architecture = "qwen2",
    hidden_size: int = 64,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    max_positions: int = 2048,
    seed: int = 0,
    intermediate_size: int | None = None,
):
    """A randomly initialised model sized for ``tokenizer``; eos/pad ids wired to the tokenizer.

    It is built on torch's current default device and dtype, so a caller can build a large random
    model directly on a GPU in bf16 (``with torch.device("cuda")`` and ``torch.set_default_dtype``).
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    if hidden_size % heads:
        raise ValueError(f"hidden_size {hidden_size} must be divisible by heads {heads}")
    cls_config, cls_model = {"qwen2": (Qwen2Config, Qwen2ForCausalLM), "llama": (LlamaConfig, LlamaForCausalLM)}[arch]
    config = cls_config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or hidden_size * 4,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=max_positions,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(seed)
    model = cls_model(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model
