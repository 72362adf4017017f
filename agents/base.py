"""The one backend interface every generator implements: a batch of requests in, results out.

Local backends take token-id prompts and return token ids and logprobs (token-exact traces);
chat backends take messages and return text. Errors never escape ``generate``: a request that
fails comes back as a result with ``finish_reason="error"`` so one bad request cannot sink a batch.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field, model_validator

from longshort.trace import FinishReason

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


class GenerationRequest(BaseModel):
    """One continuation to generate: a token-id prompt (local) or chat messages (remote)."""

    prompt_ids: list[int] | None = None
    messages: list[dict[str, str]] | None = None
    max_new_tokens: int = Field(..., ge=1)
    temperature: float = Field(0.0, ge=0.0, description="0 = greedy")
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: int | None = Field(None, description="per-request seed: the same seed gives the same sample in any batch")
    stop: tuple[str, ...] = Field((), description="stop strings; the matched one is kept in the text")

    @model_validator(mode="after")
    def _one_prompt(self) -> GenerationRequest:
        if (self.prompt_ids is None) == (self.messages is None):
            raise ValueError("give exactly one of prompt_ids or messages")
        return self


class GenerationResult(BaseModel):
    text: str = ""
    token_ids: list[int] = Field(default_factory=list)
    logprobs: list[float] | None = None
    num_tokens: int = 0
    finish_reason: FinishReason = "stop"
    error: str | None = None


class Backend(ABC):
    """A generator. Subclasses implement ``generate``; ``agenerate`` defaults to a worker thread."""

    #: a name recorded in every turn (path or hub id or served model name)
    model_id: str = ""
    #: the tokenizer for token-level backends, None for chat backends
    tokenizer: PreTrainedTokenizerBase | None = None
    #: the model's context length in tokens, when known
    max_context: int | None = None

    @property
    def token_level(self) -> bool:
        """True when prompts are token ids and results carry the generated ids."""
        return self.tokenizer is not None

    @abstractmethod
    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]: ...

    async def agenerate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        return await asyncio.to_thread(self.generate, requests)

    def encode(self, text: str) -> list[int]:
        if self.tokenizer is None:
            raise TypeError(f"{type(self).__name__} has no tokenizer")
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def count_tokens(self, text: str) -> int:
        return len(self.encode(text)) if self.tokenizer is not None else 0

    @cached_property
    def tokenizer_fingerprint(self) -> str | None:
        """Equal for backends whose tokenizers map text to ids identically (then ids are shared)."""
        if self.tokenizer is None:
            return None
        vocab = json.dumps(sorted(self.tokenizer.get_vocab().items()), ensure_ascii=False)
        return hashlib.sha256(vocab.encode()).hexdigest()

    def close(self) -> None:
        """Release workers and memory; safe to call twice."""
        return None

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
