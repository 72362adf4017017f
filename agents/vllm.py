"""A token-level backend on vLLM's offline engine (``vllm.LLM``): ids in, ids + logprobs out.

**Untested on the development machine** (vLLM cannot be installed there: no GPU); only the
missing-vLLM path is tested, and ``tests/agents/test_vllm.py`` has a real test that runs where
vLLM is installed. The calls were checked against the vLLM docs and source (v0.10 – main):

* ``LLM(model, tokenizer=..., **engine_kwargs)``; ``LLM.generate(prompts, sampling_params, *,
  use_tqdm=...)`` takes one ``SamplingParams`` per prompt and returns one ``RequestOutput`` per
  prompt, in order. vLLM's scheduler batches and interleaves them itself, so the whole list goes
  in one call.
* Token prompts are ``TokensPrompt`` TypedDicts, i.e. ``{"prompt_token_ids": [...]}``
  (``vllm.inputs.TokensPrompt``, also exported as ``vllm.TokensPrompt``); a plain dict is the
  same object at runtime and avoids the import path, which moved between releases.
* ``RequestOutput.outputs[0]`` is a ``CompletionOutput`` with ``text``, ``token_ids``,
  ``logprobs`` (per generated position a ``dict[token_id, Logprob]``, or the list-compatible
  ``FlatLogprobs``; with ``SamplingParams(logprobs=0)`` only the sampled token's entry), and
  ``finish_reason`` (``"stop"`` / ``"length"`` / ``"abort"``) with ``stop_reason`` (the matched
  stop *string*, a stop token id, or None for eos).
* ``include_stop_str_in_output=True`` keeps the matched tag in ``text`` so the short agent knows
  which tag ended its turn. ``token_ids`` hold every sampled id, so when a stop string ends inside
  a token the ids decode to slightly more than ``text``.
* Logprobs are those of vLLM's ``logprobs_mode`` (default ``"raw_logprobs"``: before temperature
  / top-p); pass ``logprobs_mode="processed_logprobs"`` in ``engine_kwargs`` for the sampling
  distribution.
* ``LLM.generate`` returns whole results, so a request's ``on_token`` hook gets its text as one
  piece when the call returns (token-by-token streaming needs vLLM's ``AsyncLLMEngine`` or
  ``vllm serve`` behind the OpenAI backend, which streams).
* ``llm.get_tokenizer()`` gives the HF tokenizer; the context length is
  ``llm.llm_engine.model_config.max_model_len`` (read defensively: engine internals move).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from longshort.agents.base import Backend, GenerationRequest, GenerationResult, TokenStream
from longshort.protocol import clean_text
from longshort.trace import FinishReason

if TYPE_CHECKING:
    from vllm import LLM, SamplingParams

_INSTALL_HINT = "vLLM is not installed: pip install 'longshort[vllm]'"


def is_vllm_available() -> bool:
    """True when ``vllm`` can be imported (checked without importing it: the import is slow)."""
    return importlib.util.find_spec("vllm") is not None


def _chosen_logprobs(token_ids: Sequence[int], logprobs: Any) -> list[float] | None:
    """The sampled token's logprob at each position, or None when vLLM returned none."""
    if logprobs is None or len(logprobs) != len(token_ids):
        return None
    values: list[float] = []
    for token_id, position in zip(token_ids, logprobs, strict=True):
        entry = position.get(token_id) if position is not None else None
        if entry is None:
            return None
        values.append(float(entry.logprob))
    return values


def _finish_reason(finish_reason: str | None, stop_reason: int | str | None) -> FinishReason:
    """Map vLLM's (finish_reason, stop_reason) to ours: a stop *string* is "stop", eos is "eos"."""
    if finish_reason == "length":
        return "length"
    if finish_reason == "abort":
        return "cancelled"
    if isinstance(stop_reason, str):
        return "stop"
    return "eos"  # stop_reason None (eos) or an int (a stop token id such as <|im_end|>)


class VLLMBackend(Backend):
    """Token-exact generation with ``vllm.LLM`` (engine options go through ``engine_kwargs``)."""

    def __init__(self, model: str, *, tokenizer: str | None = None, **engine_kwargs: Any) -> None:
        if not is_vllm_available():
            raise ImportError(_INSTALL_HINT)
        import vllm

        self.model_id = model
        self.llm: LLM = vllm.LLM(model, tokenizer=tokenizer, **engine_kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        engine = getattr(self.llm, "llm_engine", None)
        model_config = getattr(engine, "model_config", None) or getattr(self.llm, "model_config", None)
        max_len = getattr(model_config, "max_model_len", None)
        self.max_context = int(max_len) if max_len is not None else None

    @staticmethod
    def _sampling_params(request: GenerationRequest) -> SamplingParams:
        import vllm

        return vllm.SamplingParams(
            max_tokens=request.max_new_tokens,
            temperature=request.temperature,
            top_p=request.top_p,
            seed=request.seed,
            stop=list(request.stop),
            include_stop_str_in_output=True,
            logprobs=0,
        )

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        """One ``LLM.generate`` call for all token-id requests; bad requests become error results."""
        results: list[GenerationResult | None] = [None] * len(requests)
        prompts: list[dict[str, list[int]]] = []
        params: list[SamplingParams] = []
        index: list[int] = []
        for i, request in enumerate(requests):
            if request.prompt_ids is None:
                results[i] = GenerationResult(
                    finish_reason="error",
                    error="VLLMBackend needs prompt_ids (token-level), got chat messages",
                )
                continue
            try:
                params.append(self._sampling_params(request))
            except Exception as exc:  # invalid settings for vLLM: this request only
                results[i] = GenerationResult(finish_reason="error", error=f"{type(exc).__name__}: {exc}")
                continue
            prompts.append({"prompt_token_ids": list(request.prompt_ids)})
            index.append(i)
        if prompts:
            try:
                outputs = self.llm.generate(prompts, params, use_tqdm=False)  # type: ignore[arg-type]
            except Exception as exc:  # engine failure: every request of the call failed
                error = f"vLLM generate failed: {type(exc).__name__}: {exc}"
                for i in index:
                    results[i] = GenerationResult(finish_reason="error", error=error)
            else:
                for i, output in zip(index, outputs, strict=True):
                    results[i] = self._result(output)
                    stream = TokenStream.of(requests[i])
                    if stream is not None:  # the offline engine returns whole results: one piece each
                        stream.finish(results[i].text)
        return [r if r is not None else GenerationResult(finish_reason="error", error="no output") for r in results]

    @staticmethod
    def _result(output: Any) -> GenerationResult:
        completion = output.outputs[0]
        token_ids = [int(t) for t in completion.token_ids]
        return GenerationResult(
            text=clean_text(completion.text),
            token_ids=token_ids,
            logprobs=_chosen_logprobs(token_ids, completion.logprobs),
            num_tokens=len(token_ids),
            finish_reason=_finish_reason(completion.finish_reason, completion.stop_reason),
        )

    def close(self) -> None:
        """Drop the engine so its GPU memory can be freed; safe to call twice."""
        llm = self.__dict__.pop("llm", None)
        if llm is not None:
            del llm
            try:
                import gc

                import torch

                gc.collect()
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            except Exception:
                pass
