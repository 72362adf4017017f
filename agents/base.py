"""The one backend interface every generator implements: a batch of requests in, results out.

Local backends take token-id prompts and return token ids and logprobs (token-exact traces);
chat backends take messages and return text. Errors never escape ``generate``: a request that
fails comes back as a result with ``finish_reason="error"`` so one bad request cannot sink a batch.

**Streaming.** A request may carry ``on_token``, a callable that receives the generated text piece
by piece while the request decodes (never half a character; the pieces concatenate to the result's
``text`` whenever the backend can guarantee it). It is excluded from serialisation (``model_dump``,
JSON), is called from whatever thread the backend decodes in (a worker thread, a
pipe reader), must be quick, and may not raise into the backend (a hook that raises is logged
once and dropped). A request without it costs nothing: backends decode text pieces only for
requests that carry a hook. :class:`TokenStream` and :class:`IncrementalDetokenizer` are the
helpers every backend uses to honour it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field, model_validator

from longshort.trace import FinishReason

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

#: receives each generated text piece of one request while it decodes
TokenHook = Callable[[str], None]


class GenerationRequest(BaseModel):
    """One continuation to generate: a token-id prompt (local) or chat messages (remote)."""

    prompt_ids: list[int] | None = None
    messages: list[dict[str, str]] | None = None
    max_new_tokens: int = Field(..., ge=1)
    temperature: float = Field(0.0, ge=0.0, description="0 = greedy")
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: int | None = Field(None, description="per-request seed: the same seed gives the same sample in any batch")
    stop: tuple[str, ...] = Field((), description="stop strings; the matched one is kept in the text")
    on_token: TokenHook | None = Field(
        None,
        exclude=True,
        repr=False,
        description="called with each generated text piece while decoding (see the module docstring)",
    )

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


class TokenStream:
    """One request's ``on_token`` hook, guarded: what was sent, each piece once, errors contained.

    ``send`` forwards a piece; ``finish(text)`` sends whatever of the final text was not sent yet
    (all of it for a backend that streams nothing), provided the pieces so far are its prefix.
    ``rewind`` is for a request that restarts from scratch (the worker retries it): the text
    already sent is not sent again while the new pieces repeat it.
    """

    __slots__ = ("_hook", "_sent", "_sent_chars", "_skip")

    def __init__(self, hook: TokenHook) -> None:
        self._hook: TokenHook | None = hook
        self._sent: list[str] = []
        self._sent_chars = 0
        self._skip = 0

    @classmethod
    def of(cls, request: GenerationRequest) -> TokenStream | None:
        return cls(request.on_token) if request.on_token is not None else None

    @property
    def sent(self) -> str:
        return "".join(self._sent)

    def send(self, piece: str) -> None:
        if not piece or self._hook is None:
            return
        if self._skip:
            drop = min(self._skip, len(piece))
            self._skip -= drop
            piece = piece[drop:]
            if not piece:
                return
        self._sent.append(piece)
        self._sent_chars += len(piece)
        try:
            self._hook(piece)
        except Exception:
            logger.exception("on_token hook raised: no more pieces are sent to it")
            self._hook = None

    def rewind(self) -> None:
        self._skip = self._sent_chars

    def finish(self, text: str) -> None:
        if self._hook is None or self._skip:
            return
        sent = self.sent
        if text.startswith(sent):
            self.send(text[len(sent) :])


class IncrementalDetokenizer(TokenStream):
    """Text pieces of a growing list of token ids, decoded in a short window (never the whole list).

    A piece is sent once the window's text grows and does not end in U+FFFD: a character that
    spans several tokens (bytes of UTF-8 split by byte-level BPE) is held back until complete, and
    the window keeps the previous token as context so word-initial spaces come out as in a full
    decode. Decoding is the backend's: ``skip_special_tokens=False`` (the protocol tags are
    special tokens and belong to the text).
    """

    __slots__ = ("_tokenizer", "_ids", "_prefix", "_read")

    def __init__(self, tokenizer: PreTrainedTokenizerBase, hook: TokenHook) -> None:
        super().__init__(hook)
        self._tokenizer = tokenizer
        self._ids: list[int] = []
        self._prefix = 0
        self._read = 0

    @classmethod
    def of(cls, request: GenerationRequest, tokenizer: PreTrainedTokenizerBase | None = None) -> TokenStream | None:
        if request.on_token is None:
            return None
        if tokenizer is None:
            return TokenStream(request.on_token)
        return cls(tokenizer, request.on_token)

    def push(self, token_id: int) -> None:
        ids = self._ids
        ids.append(token_id)
        decode = self._tokenizer.decode
        before = decode(ids[self._prefix : self._read], skip_special_tokens=False)
        after = decode(ids[self._prefix :], skip_special_tokens=False)
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self._prefix, self._read = self._read, len(ids)
            self.send(after[len(before) :])

    def rewind(self) -> None:
        super().rewind()
        self._ids, self._prefix, self._read = [], 0, 0


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
