"""A backend that replays scripted turns through a real tokenizer.

It is for tests and docs what LangChain's fake chat models are for theirs: deterministic routing,
bad-output and budget cases without a model. It honours ``max_new_tokens`` and ``stop`` like a
real backend and records every request, so tests can check exactly what each agent was shown.
A request's ``on_token`` hook gets the text token by token (incrementally detokenized, as the
transformers backend does) with a tokenizer, and the whole text as one piece without one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from longshort.agents.base import Backend, GenerationRequest, GenerationResult, IncrementalDetokenizer, TokenStream
from longshort.protocol import clean_text, truncate_at_stop

Script = Sequence[str] | Callable[[GenerationRequest], str]


class ScriptedBackend(Backend):
    """Answer the i-th request with ``script[i]`` (or ``script(request)``).

    ``tokenizer=None`` makes it a chat-style backend (messages in, text out); ``fail_on`` lists
    call indices that come back as backend errors.
    """

    def __init__(
        self,
        script: Script,
        tokenizer=None,
        *,
        model_id: str = "scripted",
        max_context: int | None = None,
        fail_on: Sequence[int] = (),
    ) -> None:
        self.script = script
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.max_context = max_context
        self.fail_on = set(fail_on)
        self.requests: list[GenerationRequest] = []
        self._lock = threading.Lock()

    def _next_text(self, request: GenerationRequest) -> tuple[int, str | None]:
        with self._lock:
            index = len(self.requests)
            self.requests.append(request)
        if callable(self.script):
            return index, self.script(request)
        return index, self.script[index] if index < len(self.script) else None

    def _one(self, request: GenerationRequest) -> GenerationResult:
        index, text = self._next_text(request)
        if index in self.fail_on:
            return GenerationResult(finish_reason="error", error=f"scripted failure on call {index}")
        if text is None:
            return GenerationResult(finish_reason="error", error=f"script exhausted at call {index}")
        text, stopped = truncate_at_stop(text, request.stop)
        finish = "stop" if stopped else "eos"
        if self.tokenizer is None:
            words = text.split(" ")
            if len(words) > request.max_new_tokens:
                text, finish = " ".join(words[: request.max_new_tokens]), "length"
            text = clean_text(text)
            stream = TokenStream.of(request)
            if stream is not None:
                stream.finish(text)
            return GenerationResult(text=text, num_tokens=len(text.split()), finish_reason=finish)
        ids = self.encode(text)
        if len(ids) > request.max_new_tokens:
            ids, finish = ids[: request.max_new_tokens], "length"
        text = clean_text(self.tokenizer.decode(ids))
        if request.on_token is not None:
            pieces = IncrementalDetokenizer(self.tokenizer, request.on_token)
            for token_id in ids:
                pieces.push(token_id)
            pieces.finish(text)
        return GenerationResult(
            text=text,
            token_ids=ids,
            logprobs=[0.0] * len(ids),
            num_tokens=len(ids),
            finish_reason=finish,
        )

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        return [self._one(r) for r in requests]
