"""TransformersBackend serving a model that is being trained (what the RL trainer needs).

An adopted model keeps its mode, device, dtype and gradients; ``weights_changed()`` stops stale
prefix-cache KV from ever being served; logprobs are those of the distribution sampled from.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import torch

from longshort.agents._kv import PrefixStore
from longshort.agents.base import GenerationRequest, GenerationResult
from longshort.agents.hf import TransformersBackend


def _model(path: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)


def _greedy(backend: TransformersBackend, prompt: list[int], n: int = 12) -> GenerationResult:
    return backend.generate([GenerationRequest(prompt_ids=prompt, max_new_tokens=n)])[0]


# ----------------------------------------------------------------------------------------------
# adopting a live model


def test_adopted_model_keeps_its_train_mode_and_gradients(tiny_qwen_dir: Path, tiny_tokenizer) -> None:
    model = _model(tiny_qwen_dir)
    model.train()
    seen: list[tuple[bool, bool]] = []  # (grad enabled, inference mode) inside the worker's forwards
    hook = model.register_forward_hook(
        lambda *_: seen.append((torch.is_grad_enabled(), torch.is_inference_mode_enabled()))
    )
    with TransformersBackend(model, tiny_tokenizer) as backend:
        result = _greedy(backend, backend.encode("What is 12 * 34 + 5?"))
        assert result.error is None and result.num_tokens == 12
        assert backend.model is model
    hook.remove()
    assert seen and all(s == (False, False) for s in seen)  # no_grad, not inference tensors
    assert torch.is_grad_enabled()  # the caller's thread is untouched
    assert model.training and all(m.training for m in model.modules())
    assert all(p.requires_grad and p.grad is None for p in model.parameters())
    # the model trains as before: nothing the backend did leaked into its state
    ids = torch.tensor([tiny_tokenizer.encode("What is 12 * 34 + 5?")])
    model(input_ids=ids, labels=ids).loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_adopted_model_is_never_moved_or_cast(tiny_qwen_dir: Path, tiny_tokenizer) -> None:
    model = _model(tiny_qwen_dir)
    model.eval()
    with pytest.raises(ValueError, match=r"bf16.*bfloat16.*float32"):
        TransformersBackend(model, tiny_tokenizer, dtype="bf16")
    with pytest.raises(ValueError, match=r"'cuda'.*cpu"):
        TransformersBackend(model, tiny_tokenizer, device="cuda")
    assert next(model.parameters()).dtype == torch.float32 and not model.training
    with TransformersBackend(model, tiny_tokenizer, device="cpu", dtype="fp32") as backend:  # the same: fine
        assert backend.device.type == "cpu"
        _greedy(backend, backend.encode("So"), 3)
    assert not model.training  # eval stays eval too: the mode is the caller's


def test_model_loaded_from_a_path_is_put_in_eval_mode(tiny_qwen_dir: Path) -> None:
    with TransformersBackend(tiny_qwen_dir, device="cpu") as backend:
        assert backend.model is not None and not backend.model.training
        assert backend.device.type == "cpu"


# ----------------------------------------------------------------------------------------------
# weights_changed


def test_weights_changed_stops_stale_prefix_kv(tiny_qwen_dir: Path, tiny_tokenizer) -> None:
    model = _model(tiny_qwen_dir).eval()
    backend = TransformersBackend(model, tiny_tokenizer)
    stale = TransformersBackend(model, tiny_tokenizer)  # a control that is never told
    plain = TransformersBackend(model, tiny_tokenizer, prefix_cache_tokens=0)
    try:
        prompt = list(range(5, 45))
        for b in (backend, stale):  # two turns of one agent: the second extends the first
            first = _greedy(b, prompt)
            follow = prompt + first.token_ids + [7, 8, 9]
            second = _greedy(b, follow)
            assert b.stats["prefix_hits"] == 1  # it hit the prefix cache
        turn3 = follow + second.token_ids + [10, 11]  # the next turn extends the cached one
        before = _greedy(plain, turn3)  # what it gives with the old weights

        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():  # an optimizer step, in place: the stored KV is now stale
            for layer in model.model.layers:
                proj = layer.self_attn.v_proj.weight
                proj.add_(torch.randn(proj.shape, generator=generator) * 0.2)
        backend.weights_changed()
        assert backend.weights_version == 1

        after = _greedy(backend, turn3)
        assert backend.stats["prefix_hits"] == 1  # the old KV was not served
        assert after.token_ids != before.token_ids
        with TransformersBackend(model, tiny_tokenizer) as fresh:
            expected = _greedy(fresh, turn3)
        assert after.token_ids == expected.token_ids
        assert after.logprobs == pytest.approx(expected.logprobs, abs=1e-5)
        # without the call the stale KV is served, and it shows in what the model computes
        served = _greedy(stale, turn3)
        assert stale.stats["prefix_hits"] == 2
        assert served.logprobs != pytest.approx(expected.logprobs, abs=1e-3)
        # KV computed after the change is cached and reused again
        turn4 = turn3 + after.token_ids + [12]
        assert _greedy(backend, turn4).token_ids == _greedy(plain, turn4).token_ids
        assert backend.stats["prefix_hits"] == 2
    finally:
        for b in (backend, stale, plain):
            b.close()


def test_a_batch_running_across_weights_changed_does_not_store_its_kv(tiny_qwen_dir: Path) -> None:
    """The race: a row prefilled with the old weights finishes after the call; its KV is not kept."""
    with TransformersBackend(tiny_qwen_dir, device="cpu") as backend:
        prompt = backend.encode("What is 12 * 34 + 5?")
        carrier = GenerationRequest(prompt_ids=prompt, max_new_tokens=300)

        async def scenario() -> GenerationResult:
            task = asyncio.create_task(backend.agenerate([carrier]))
            while backend.stats["decode_steps"] < 5:  # it is decoding with the old weights
                await asyncio.sleep(0.001)
            backend.weights_changed()
            return (await task)[0]

        long = asyncio.run(asyncio.wait_for(scenario(), 60))
        assert long.finish_reason == "length"
        hits = backend.stats["prefix_hits"]
        _greedy(backend, prompt + long.token_ids + [7, 8], 3)
        assert backend.stats["prefix_hits"] == hits  # nothing of the old version was stored


def test_prefix_store_never_serves_or_keeps_an_older_version() -> None:
    kv = [(torch.zeros(1, 3, 2), torch.zeros(1, 3, 2))]
    store = PrefixStore(100)
    store.put((1, 2, 3), kv, version=0)
    assert store.longest_prefix([1, 2, 3, 4], version=0) is not None
    assert store.longest_prefix([1, 2, 3, 4], version=1) is None  # newer weights: dropped
    assert store.tokens == 0 and not store.entries
    store.put((1, 2, 3), kv, version=0)  # a batch that ran with the old weights, finishing late
    assert not store.entries
    store.put((1, 2, 3), kv, version=1)
    assert store.longest_prefix([1, 2, 3, 4], version=1) is not None
    assert store.longest_prefix([1, 2, 3, 4], version=0) is None  # an old reader gets nothing either


# ----------------------------------------------------------------------------------------------
# logprobs of the distribution sampled from


def _reference_logprobs(model, prompt: list[int], result: GenerationResult, temperature: float) -> torch.Tensor:
    """log_softmax(logits / T) of a fresh full forward in fp32 (T = 1 for greedy)."""
    ids = torch.tensor([prompt + result.token_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].float()
    rows = logits[len(prompt) - 1 : len(prompt) - 1 + result.num_tokens]
    scaled = rows / (temperature if temperature > 0 else 1.0)
    return torch.log_softmax(scaled, dim=-1).gather(1, torch.tensor(result.token_ids)[:, None]).squeeze(1)


@pytest.mark.parametrize("temperature", [0.7, 1.0, 0.0])
def test_logprobs_match_a_fresh_forward(tiny_qwen_dir: Path, temperature: float) -> None:
    with TransformersBackend(tiny_qwen_dir, device="cpu", dtype="fp32") as backend:
        prompt = backend.encode("What is 12 * 34 + 5?")
        request = GenerationRequest(prompt_ids=prompt, max_new_tokens=24, temperature=temperature, seed=5)
        result = backend.generate([request])[0]
        assert result.num_tokens > 0 and len(result.logprobs or []) == result.num_tokens
        expected = _reference_logprobs(backend.model, prompt, result, temperature)
        assert torch.allclose(torch.tensor(result.logprobs), expected, rtol=0, atol=1e-4)
        if temperature not in (0.0, 1.0):  # and not those of the unscaled logits
            assert not torch.allclose(
                torch.tensor(result.logprobs), _reference_logprobs(backend.model, prompt, result, 1.0), atol=1e-3
            )


def test_logprobs_in_a_batch_with_mixed_temperatures(tiny_qwen_dir: Path) -> None:
    temps = [0.7, 0.0, 1.0, 0.7, 0.0, 1.3]
    texts = ["What is 12 * 34 + 5?", "So", "<think> First", "Let me check: 408 / 12", "Wait", "<answer> 408"]
    with TransformersBackend(tiny_qwen_dir, device="cpu", dtype="fp32") as backend:
        requests = [
            GenerationRequest(prompt_ids=backend.encode(t), max_new_tokens=10 + 4 * i, temperature=T, seed=i)
            for i, (t, T) in enumerate(zip(texts, temps, strict=True))
        ]
        results = backend.generate(requests)  # one batch: left padding, per-row temperatures
        for request, result, T in zip(requests, results, temps, strict=True):
            assert result.error is None and result.num_tokens > 0
            expected = _reference_logprobs(backend.model, request.prompt_ids, result, T)
            assert torch.allclose(torch.tensor(result.logprobs), expected, rtol=0, atol=1e-4), T


def test_an_adopted_peft_model_keeps_only_the_last_logits_and_generates_as_merged(tiny_qwen_dir: Path, tiny_tokenizer):
    """A LoRA model being trained (RL) is served with ``logits_to_keep`` (its forward hides it in **kwargs)."""
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(
        _model(tiny_qwen_dir), LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False)
    )
    peft_model.eval()
    merged = get_peft_model(_model(tiny_qwen_dir), LoraConfig(r=4, target_modules="all-linear"))
    merged.load_state_dict(peft_model.state_dict())
    merged = merged.merge_and_unload().eval()
    prompt = tiny_tokenizer.encode("What is 12 * 34?", add_special_tokens=False)
    with (
        TransformersBackend(peft_model, tiny_tokenizer) as adopted,
        TransformersBackend(merged, tiny_tokenizer) as plain,
    ):
        assert adopted._logits_to_keep and plain._logits_to_keep
        a, b = _greedy(adopted, prompt), _greedy(plain, prompt)
    assert a.token_ids == b.token_ids
    assert max(abs(x - y) for x, y in zip(a.logprobs, b.logprobs, strict=True)) < 1e-4
