"""VLLMBackend: the missing-vLLM path and the output mapping here; a real engine where installed."""

from __future__ import annotations

import importlib.util
from types import SimpleNamespace
from typing import Any

import pytest

from longshort.agents import vllm as vllm_backend
from longshort.agents.base import GenerationRequest
from longshort.agents.vllm import VLLMBackend, _chosen_logprobs, _finish_reason, is_vllm_available


def test_is_vllm_available_matches_find_spec():
    assert is_vllm_available() is (importlib.util.find_spec("vllm") is not None)


@pytest.mark.skipif(is_vllm_available(), reason="vLLM is installed here")
def test_vllm_is_not_available_here():
    assert is_vllm_available() is False


def test_constructing_without_vllm_raises_with_the_pip_hint(monkeypatch):
    monkeypatch.setattr(vllm_backend, "is_vllm_available", lambda: False)
    with pytest.raises(ImportError, match=r"vLLM is not installed: pip install 'longshort\[vllm\]'"):
        VLLMBackend("any/model")


def test_finish_reason_mapping():
    assert _finish_reason("length", None) == "length"
    assert _finish_reason("stop", "</answer>") == "stop"  # a stop string
    assert _finish_reason("stop", None) == "eos"  # the eos token
    assert _finish_reason("stop", 2) == "eos"  # a stop token id such as <|im_end|>
    assert _finish_reason("abort", None) == "cancelled"


def _lp(value: float) -> SimpleNamespace:
    return SimpleNamespace(logprob=value, rank=1, decoded_token=None)


def test_chosen_logprobs():
    assert _chosen_logprobs([5, 7], [{5: _lp(-0.5)}, {9: _lp(-0.1), 7: _lp(-2.0)}]) == [-0.5, -2.0]
    assert _chosen_logprobs([5], None) is None
    assert _chosen_logprobs([5, 7], [{5: _lp(-0.5)}]) is None  # length mismatch: no partial lists
    assert _chosen_logprobs([5], [{6: _lp(-0.5)}]) is None  # sampled token missing


class _StubLLM:
    """Stands in for ``vllm.LLM``: echoes each prompt's last id and records the call."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[Any], list[Any], dict[str, Any]]] = []

    def generate(self, prompts: list[Any], params: list[Any], **kw: Any) -> list[Any]:
        self.calls.append((prompts, params, kw))
        outputs = []
        for prompt in prompts:
            last = prompt["prompt_token_ids"][-1]
            completion = SimpleNamespace(
                text="<answer> ok </answer>\udc80",
                token_ids=(last, last + 1),
                logprobs=[{last: _lp(-0.25)}, {last + 1: _lp(-0.75)}],
                finish_reason="stop",
                stop_reason="</answer>",
            )
            outputs.append(SimpleNamespace(outputs=[completion]))
        return outputs


def test_generate_maps_requests_and_outputs(monkeypatch):
    backend = object.__new__(VLLMBackend)  # skip __init__: no engine needed for the mapping
    backend.llm = _StubLLM()
    monkeypatch.setattr(VLLMBackend, "_sampling_params", staticmethod(lambda r: ("params", r.max_new_tokens)))
    requests = [
        GenerationRequest(prompt_ids=[1, 10], max_new_tokens=4, stop=("</answer>",)),
        GenerationRequest(messages=[{"role": "user", "content": "hi"}], max_new_tokens=4),
        GenerationRequest(prompt_ids=[1, 20], max_new_tokens=6),
    ]
    a, b, c = backend.generate(requests)
    (prompts, params, kw), *_ = backend.llm.calls
    assert len(backend.llm.calls) == 1 and kw == {"use_tqdm": False}  # one batched call
    assert prompts == [{"prompt_token_ids": [1, 10]}, {"prompt_token_ids": [1, 20]}]
    assert params == [("params", 4), ("params", 6)]
    assert (a.token_ids, a.logprobs, a.num_tokens, a.finish_reason) == ([10, 11], [-0.25, -0.75], 2, "stop")
    assert a.text.startswith("<answer> ok </answer>\ufffd") and a.text.encode()  # clean_text: UTF-8 safe
    assert b.finish_reason == "error" and "prompt_ids" in b.error
    assert c.token_ids == [20, 21]


def test_engine_failure_becomes_error_results(monkeypatch):
    backend = object.__new__(VLLMBackend)
    backend.llm = SimpleNamespace(generate=lambda *a, **k: (_ for _ in ()).throw(RuntimeError("CUDA OOM")))
    monkeypatch.setattr(VLLMBackend, "_sampling_params", staticmethod(lambda r: None))
    results = backend.generate([GenerationRequest(prompt_ids=[1], max_new_tokens=2)] * 2)
    assert all(r.finish_reason == "error" and "CUDA OOM" in r.error for r in results)
    backend.close()
    backend.close()  # safe twice


def test_real_vllm_engine(tiny_qwen_dir):
    """Runs only where vLLM is installed (GPU machines): ids, logprobs and finish reasons for real."""
    pytest.importorskip("vllm")
    backend = VLLMBackend(
        str(tiny_qwen_dir), dtype="float32", enforce_eager=True, max_model_len=256, gpu_memory_utilization=0.2
    )
    try:
        assert backend.token_level and backend.max_context == 256
        prompt = backend.tokenizer.apply_chat_template(
            [{"role": "user", "content": "What is 12 * 34?"}], add_generation_prompt=True, tokenize=True
        )
        prompt_ids = list(prompt if isinstance(prompt, list) else prompt["input_ids"])
        greedy = GenerationRequest(prompt_ids=prompt_ids, max_new_tokens=8)
        sampled = GenerationRequest(prompt_ids=prompt_ids, max_new_tokens=8, temperature=1.0, seed=7)
        g1, g2, s1, s2 = backend.generate([greedy, greedy, sampled, sampled])
        for r in (g1, s1):
            assert r.error is None and 1 <= r.num_tokens == len(r.token_ids) <= 8
            assert r.logprobs is not None and len(r.logprobs) == r.num_tokens and max(r.logprobs) <= 0.0
            assert r.finish_reason in ("length", "eos")
        assert g1.token_ids == g2.token_ids and s1.token_ids == s2.token_ids  # greedy / per-request seed
    finally:
        backend.close()
