"""A backend over any LangChain chat model: ``vllm serve``, ``transformers serve``, hosted APIs.

Chat backends serve *inference*, not token-exact training: results carry text, a token count and
a finish reason, never token ids or logprobs. Three choices make them agree with local backends:

* **Client-side stops.** OpenAI-style servers usually strip the matched stop string, but the short
  agent must know *which* of ``</rethink>`` / ``</answer>`` ended its turn. So by default no
  ``stop`` is sent; the returned text is cut with :func:`truncate_at_stop`, which keeps the tag.
  The price is that the server may generate past the tag up to ``max_new_tokens``.
* **Reasoning rebuilt.** Servers with a reasoning parser (``transformers serve`` for Qwen model
  types always; ``vllm serve --reasoning-parser``) move ``<think> … </think>`` out of ``content``
  into a non-standard ``reasoning_content``/``reasoning`` field. :func:`openai_backend` keeps that
  field and the backend puts ``<think>\\n…\\n</think>`` back in front of the content, so the long
  agent's turn parses. The rebuild is lossy (whitespace, text before ``<think>``), see
  ``tests/serve_utils.py`` for the server's behaviour.
* **Streaming on request.** A request with an ``on_token`` hook is sent with ``stream=True``
  (server-sent events through the chat model's ``stream``/``astream``; usage asked for when the
  model supports ``stream_usage``) and the hook gets the turn's text as it arrives: the same text
  the result will have (reasoning rebuilt, cut after the first stop string; nothing past it is
  sent, although the server may still generate it). Requests without a hook are not streamed.
* **Errors are results.** Connection refused, timeouts and HTTP errors come back as that request's
  ``finish_reason="error"`` result naming the server, never as an exception.
* **A deadline per request.** The client's ``timeout`` is per attempt and it retries, sleeping in
  between, so a server that accepts connections and never answers used to take a little more than
  ``timeout × attempts`` (184 s with the defaults), with nothing saying so. ``deadline`` bounds the
  wait for the server's answer over all attempts: the whole call for a request that is not
  streamed, the first chunk for a streamed one (after that each chunk gets ``timeout``, so a long
  generation is never cut). Past it the request is a ``DeadlineExceeded`` error result naming the
  deadline and the server. :func:`openai_backend` sets it to ``timeout × (max_retries + 1)``: every
  attempt keeps its full ``timeout``, and that is the worst case, exactly, for any settings.
  The async path cancels the request; the sync one stops waiting for it (its thread ends when the
  client's own timeouts end it, and whatever it receives after the deadline is dropped).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import math
import os
import threading
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from longshort.agents.base import Backend, GenerationRequest, GenerationResult, TokenStream
from longshort.protocol import THINK_CLOSE, THINK_OPEN, clean_text, truncate_at_stop
from longshort.trace import FinishReason

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel
    from langchain_core.messages import BaseMessage
    from transformers import PreTrainedTokenizerBase

#: Provider finish reasons that mean "ran out of tokens" (OpenAI, Anthropic, Gemini spellings).
_LENGTH_REASONS = frozenset({"length", "max_tokens", "MAX_TOKENS", "max_output_tokens"})
#: Attribute names under which chat models keep their endpoint (for error messages).
_URL_ATTRS = ("openai_api_base", "base_url", "api_base", "endpoint_url", "azure_endpoint")
_MAX_ERROR_CHARS = 300


def _message_parts(message: BaseMessage) -> tuple[str, str | None]:
    """The visible text of a chat reply and its separated reasoning, if the server split it off."""
    content = message.content
    reasoning: str | None = None
    if isinstance(content, str):
        text = content
    else:  # content blocks (LangChain v1 standard blocks or provider-native ones)
        texts: list[str] = []
        thoughts: list[str] = []
        for block in content:
            if isinstance(block, str):
                texts.append(block)
            elif isinstance(block, dict):
                if block.get("type") == "text":
                    texts.append(str(block.get("text", "")))
                elif block.get("type") in ("reasoning", "thinking"):
                    thoughts.append(str(block.get("reasoning") or block.get("thinking") or ""))
        text = "".join(texts)
        reasoning = "".join(thoughts) or None
    extra = message.additional_kwargs or {}
    for key in ("reasoning_content", "reasoning"):
        value = extra.get(key)
        if isinstance(value, str) and value:
            reasoning = value
            break
    return text, reasoning


def _finish_reason(message: BaseMessage) -> str | None:
    """The provider's finish reason from a reply's metadata, whatever the provider calls it."""
    meta = getattr(message, "response_metadata", None) or {}
    for key in ("finish_reason", "stop_reason", "done_reason"):
        value = meta.get(key)
        if isinstance(value, str):
            return value
    return None


class _StreamedText:
    """The text ``ChatModelBackend._finish`` will return, sent piece by piece as chunks arrive.

    Reasoning deltas (a server's reasoning parser) are rebuilt into ``<think>\\n…\\n</think>``
    followed by the content (its leading whitespace dropped), as ``_finish`` rebuilds them; text
    stops at the end of the first stop string. Whatever this cannot know before the end (a
    ``</think>`` closing a reasoning-only reply) is sent by ``TokenStream.finish``.
    """

    def __init__(self, stream: TokenStream, stops: tuple[str, ...], rebuild_reasoning: bool) -> None:
        self.stream = stream
        self.stops = tuple(s for s in stops if s)
        self.rebuild = rebuild_reasoning
        self.state = "start"  # -> "reasoning" (inside the rebuilt <think>) or "content"
        self.tail = ""  # the last characters sent, where a stop string may have begun
        self.stopped = False

    def feed(self, chunk: BaseMessage) -> None:
        content, reasoning = _message_parts(chunk)
        out = ""
        if reasoning and self.rebuild and self.state != "content":
            if self.state == "start":
                out, self.state = f"{THINK_OPEN}\n", "reasoning"
            out += reasoning
        if content:
            if self.state == "reasoning":
                content = content.lstrip()
                if content:
                    out += f"\n{THINK_CLOSE}\n\n{content}"
                    self.state = "content"
            else:
                out += content
                self.state = "content"
        self._send(out)

    def _send(self, piece: str) -> None:
        if self.stopped or not piece:
            return
        if self.stops:
            window = self.tail + piece
            kept, found = truncate_at_stop(window, self.stops)
            if found:
                self.stopped = True
                piece = kept[len(self.tail) :]
            self.tail = window[-max(len(s) for s in self.stops) :]
        self.stream.send(piece)


class DeadlineExceeded(TimeoutError):
    """The server did not answer a request within its deadline (every attempt counted)."""


class _Answer:
    """Whether a request's worker thread got an answer before the caller gave up waiting.

    The sync path waits on a worker thread that it cannot cancel. Once the caller has returned its
    deadline error, the worker must not reach the request's ``on_token`` hook any more, so the
    first chunk is taken only through ``arrived``, which refuses it after the caller gave up.
    """

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._state = "waiting"  # -> "answered" | "done" (the worker) or "abandoned" (the caller)

    def _set(self, state: str) -> bool:
        with self._cv:
            if self._state == "abandoned":
                return False
            self._state = state
            self._cv.notify_all()
            return True

    def arrived(self) -> bool:
        """The first chunk came; False when the caller already gave up (then drop it)."""
        return self._set("answered")

    def done(self) -> None:
        self._set("done")

    def wait(self, timeout: float) -> bool:
        """True once the worker has an answer or is done; False (and abandoned) after ``timeout``."""
        with self._cv:
            if self._cv.wait_for(lambda: self._state != "waiting", timeout):
                return True
            self._state = "abandoned"
            return False


def _base_url(chat_model: Any) -> str | None:
    for attr in _URL_ATTRS:
        value = getattr(chat_model, attr, None)
        if isinstance(value, str) and value:
            return value
    return None


class ChatModelBackend(Backend):
    """Generate with a LangChain ``BaseChatModel``; requests must carry ``messages``.

    ``tokenizer`` (optional) is only used to count tokens, so it is kept as ``count_tokenizer``:
    the Backend's ``tokenizer`` stays None and ``token_level`` stays False, because the server's
    text cannot be mapped back to the ids it sampled.

    ``finish_reason`` is ``"stop"`` when a stop string is in the (cut) text, ``"length"`` when the
    server says it ran out of tokens, else ``"eos"``. ``num_tokens`` is the server's
    ``usage.output_tokens`` (eos included), or the kept text counted with ``tokenizer`` when the
    text was cut client-side or the server gave no usage, else 0. With ``server_stops=True`` the
    server stops at the tag; ``transformers serve`` keeps it and vLLM names it in ``stop_reason``
    (restored here), but a server that strips it silently (OpenAI) makes such a turn look "eos".

    ``deadline`` (seconds, None or ``math.inf`` for none) bounds how long one request waits for the
    server to answer, retries included (the module docstring says how); the time a request waits
    for a ``max_concurrency`` slot does not count.
    """

    def __init__(
        self,
        chat_model: BaseChatModel,
        *,
        model_id: str | None = None,
        tokenizer: PreTrainedTokenizerBase | None = None,
        max_concurrency: int = 16,
        server_stops: bool = False,
        rebuild_reasoning: bool = True,
        deadline: float | None = None,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        if deadline is not None and not deadline > 0:
            raise ValueError(f"deadline must be > 0 seconds (or None for none), got {deadline}")
        #: the most one request waits for an answer, every attempt counted (None: the client's own bounds)
        self.deadline = None if deadline is None or math.isinf(deadline) else float(deadline)
        self.chat_model = chat_model
        self.model_id = model_id or str(
            getattr(chat_model, "model_name", None) or getattr(chat_model, "model", None) or type(chat_model).__name__
        )
        self.count_tokenizer = tokenizer
        self.max_concurrency = max_concurrency
        #: send ``stop`` to the server (saves tokens; the server may strip the tag, see ``_finish``)
        self.server_stops = server_stops
        #: put ``<think>…</think>`` back when the server split the reasoning off the content
        self.rebuild_reasoning = rebuild_reasoning
        self.base_url = _base_url(chat_model)

    # ----- token counting -----

    def count_tokens(self, text: str) -> int:
        if self.count_tokenizer is None:
            return 0
        return len(self.count_tokenizer.encode(text, add_special_tokens=False))

    # ----- one request -----

    def _invoke_kwargs(self, request: GenerationRequest) -> dict[str, Any]:
        """Per-request sampling settings, passed as invoke kwargs (ChatOpenAI sends them as-is)."""
        kwargs: dict[str, Any] = {
            "max_tokens": request.max_new_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p,
        }
        if request.seed is not None:
            kwargs["seed"] = request.seed
        if self.server_stops and request.stop:
            kwargs["stop"] = list(request.stop)
        return kwargs

    def _stream_kwargs(self, request: GenerationRequest) -> dict[str, Any]:
        kwargs = self._invoke_kwargs(request)
        if "stream_usage" in type(self.chat_model).model_fields:  # ChatOpenAI: ask for the usage chunk
            kwargs["stream_usage"] = True
        return kwargs

    def _check(self, request: GenerationRequest) -> GenerationResult | None:
        if request.messages is None:
            return GenerationResult(
                finish_reason="error",
                error=f"{type(self).__name__} needs messages, not prompt_ids (use a local backend)",
            )
        return None

    def _error(self, exc: BaseException) -> GenerationResult:
        where = f" from {self.base_url}" if self.base_url else ""
        detail = " ".join(str(exc).split()) or repr(exc)
        message = f"{type(exc).__name__}{where}: {detail}"
        if len(message) > _MAX_ERROR_CHARS:
            message = message[: _MAX_ERROR_CHARS - 3] + "..."
        return GenerationResult(finish_reason="error", error=message)

    def _finish(self, request: GenerationRequest, message: BaseMessage) -> GenerationResult:
        """Turn one reply into a result: rebuild reasoning, cut at the first stop, classify the end."""
        content, reasoning = _message_parts(message)
        server_reason = _finish_reason(message)
        hit_length = server_reason in _LENGTH_REASONS
        text = content
        if self.rebuild_reasoning and reasoning is not None:
            # The server hid whether </think> was emitted: assume it was unless generation ran out
            # of tokens with nothing after the reasoning.
            closed = bool(content.strip()) or not hit_length
            text = f"{THINK_OPEN}\n{reasoning}\n{THINK_CLOSE}" if closed else f"{THINK_OPEN}\n{reasoning}"
            if content:
                text += "\n\n" + content.lstrip()
        text = clean_text(text)
        kept, found = truncate_at_stop(text, request.stop)
        if not found and self.server_stops and request.stop:
            # vLLM strips the matched stop string but names it in ``stop_reason``; put it back.
            stop_reason = (getattr(message, "response_metadata", None) or {}).get("stop_reason")
            if isinstance(stop_reason, str) and stop_reason in request.stop:
                kept, found = kept + stop_reason, True
        finish: FinishReason
        if found:
            finish = "stop"
        elif hit_length:
            finish = "length"
        else:
            finish = "eos"
        usage = getattr(message, "usage_metadata", None) or {}
        output_tokens = usage.get("output_tokens")
        if self.count_tokenizer is not None and (kept != text or output_tokens is None):
            num_tokens = self.count_tokens(kept)
        elif output_tokens is not None:
            num_tokens = int(output_tokens)
        else:
            num_tokens = 0
        return GenerationResult(text=kept, num_tokens=num_tokens, finish_reason=finish)

    def _deadline_exceeded(self) -> DeadlineExceeded:
        return DeadlineExceeded(
            f"no answer within the {self.deadline:g} s deadline for the whole request "
            "(every attempt and the waits between them counted)"
        )

    def _one(self, request: GenerationRequest) -> GenerationResult:
        """One request; with a deadline it runs in a worker thread that the caller stops waiting for."""
        bad = self._check(request)
        if bad is not None:
            return bad
        if self.deadline is None:
            return self._one_now(request, None)
        answer = _Answer()
        box: list[GenerationResult] = []
        context = contextvars.copy_context()  # the caller's run config and tracing switches

        def work() -> None:
            box.append(context.run(self._one_now, request, answer))
            answer.done()

        worker = threading.Thread(target=work, name="chat-request", daemon=True)
        worker.start()
        if not answer.wait(self.deadline):
            return self._error(self._deadline_exceeded())
        worker.join()  # done, or streaming a reply whose first chunk came in time
        return box[0]

    def _one_now(self, request: GenerationRequest, answer: _Answer | None) -> GenerationResult:
        stream = TokenStream.of(request)
        try:
            if stream is None:
                message = self.chat_model.invoke(request.messages, **self._invoke_kwargs(request))
            else:
                text = _StreamedText(stream, request.stop, self.rebuild_reasoning)
                message = None
                chunks = self.chat_model.stream(request.messages, **self._stream_kwargs(request))
                try:
                    for chunk in chunks:
                        if message is None and answer is not None and not answer.arrived():
                            return self._error(self._deadline_exceeded())  # the caller has gone: no late pieces
                        text.feed(chunk)
                        message = chunk if message is None else message + chunk
                finally:
                    close = getattr(chunks, "close", None)
                    if close is not None:
                        close()
                if message is None:
                    raise RuntimeError("the stream ended without a chunk")
            return self._streamed(stream, self._finish(request, message))
        except Exception as exc:  # every failure is this request's result, never the batch's
            return self._error(exc)

    async def _aone(self, request: GenerationRequest, gate: asyncio.Semaphore) -> GenerationResult:
        bad = self._check(request)
        if bad is not None:
            return bad
        stream = TokenStream.of(request)
        try:
            async with gate:
                if stream is None:
                    message = await self._within_deadline(
                        self.chat_model.ainvoke(request.messages, **self._invoke_kwargs(request))
                    )
                else:
                    message = await self._astream(request, stream)
            return self._streamed(stream, self._finish(request, message))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return self._error(exc)

    async def _within_deadline(self, awaitable: Any) -> Any:
        """``await awaitable``, cancelled with ``DeadlineExceeded`` once ``deadline`` has passed.

        A task and ``asyncio.wait`` rather than ``wait_for``: the client's own timeout errors stay
        themselves, and only the deadline is reported as the deadline.
        """
        if self.deadline is None:
            return await awaitable
        task = asyncio.ensure_future(awaitable)
        try:
            done, _ = await asyncio.wait({task}, timeout=self.deadline)
        finally:
            if not task.done():  # the deadline passed, or our caller was cancelled: stop the request
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if not done:
            raise self._deadline_exceeded()
        return task.result()

    async def _astream(self, request: GenerationRequest, stream: TokenStream) -> BaseMessage:
        """A streamed reply; the deadline bounds the wait for its first chunk, not its length."""
        text = _StreamedText(stream, request.stop, self.rebuild_reasoning)
        chunks: AsyncIterator[BaseMessage] = aiter(
            self.chat_model.astream(request.messages, **self._stream_kwargs(request))
        )
        try:
            try:
                message = await self._within_deadline(chunks.__anext__())
            except StopAsyncIteration:
                raise RuntimeError("the stream ended without a chunk") from None
            text.feed(message)
            async for chunk in chunks:
                text.feed(chunk)
                message = message + chunk
            return message
        finally:
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()

    @staticmethod
    def _streamed(stream: TokenStream | None, result: GenerationResult) -> GenerationResult:
        if stream is not None:
            stream.finish(result.text)  # what only the end could tell (a closing </think>)
        return result

    # ----- batches -----

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        """Send the requests concurrently (at most ``max_concurrency`` in flight); order is kept."""
        if not requests:
            return []
        if len(requests) == 1:
            return [self._one(requests[0])]
        with ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(requests))) as pool:
            return list(pool.map(self._one, requests))

    async def agenerate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        """Like ``generate`` on the event loop, through the chat model's native async client."""
        gate = asyncio.Semaphore(self.max_concurrency)
        return list(await asyncio.gather(*(self._aone(r, gate) for r in requests)))


def _keep_server_fields(message: BaseMessage, choice: dict, payload: dict) -> None:
    """Copy what vLLM-style servers add to a choice (its message, or a streamed delta) onto ``message``:
    the reasoning text (``reasoning_content`` or ``reasoning``) and the matched ``stop_reason``."""
    for key in ("reasoning_content", "reasoning"):
        if isinstance(payload.get(key), str) and payload[key]:
            message.additional_kwargs["reasoning_content"] = payload[key]
            break
    if choice.get("stop_reason") is not None:
        message.response_metadata["stop_reason"] = choice["stop_reason"]


@functools.cache
def _reasoning_chat_openai() -> type:
    """``ChatOpenAI`` that keeps the non-standard ``reasoning_content``/``reasoning``/``stop_reason``.

    ``ChatOpenAI`` only parses official OpenAI fields, but vLLM and ``transformers serve`` put the
    ``<think>`` part of a reply into ``message.reasoning_content`` (vLLM >= 0.10: ``reasoning``)
    and vLLM names the matched stop string in ``choice.stop_reason``. This subclass copies them
    into ``additional_kwargs`` / ``response_metadata`` (what ``langchain-deepseek`` does too).
    """
    import openai
    from langchain_core.messages import AIMessage
    from langchain_openai import ChatOpenAI

    class ReasoningChatOpenAI(ChatOpenAI):
        def _create_chat_result(self, response: Any, generation_info: dict | None = None) -> Any:
            result = super()._create_chat_result(response, generation_info)
            if isinstance(response, openai.BaseModel):
                response = response.model_dump()
            choices = response.get("choices") if isinstance(response, dict) else None
            for generation, choice in zip(result.generations, choices or [], strict=False):
                message = generation.message
                if not isinstance(message, AIMessage) or not isinstance(choice, dict):
                    continue
                _keep_server_fields(message, choice, choice.get("message") or {})
            return result

        def _convert_chunk_to_generation_chunk(
            self, chunk: dict, default_chunk_class: type, base_generation_info: dict | None
        ) -> Any:
            generation = super()._convert_chunk_to_generation_chunk(chunk, default_chunk_class, base_generation_info)
            choices = chunk.get("choices") or []
            if generation is None or not choices or not isinstance(choices[0], dict):
                return generation
            choice, message = choices[0], generation.message
            _keep_server_fields(message, choice, choice.get("delta") or {})  # streamed reasoning deltas concatenate
            return generation

    return ReasoningChatOpenAI


def openai_backend(
    base_url: str,
    model: str,
    *,
    api_key: str | None = None,
    timeout: float = 60.0,
    max_retries: int = 2,
    tokenizer: PreTrainedTokenizerBase | None = None,
    max_concurrency: int = 16,
    server_stops: bool = False,
    extra_body: dict[str, Any] | None = None,
    deadline: float | None = None,
) -> ChatModelBackend:
    """A :class:`ChatModelBackend` on an OpenAI-compatible server (``vllm serve``, ``transformers serve``).

    ``base_url`` ends in ``/v1``. ``model`` must be the served name (for ``transformers serve``
    the exact path it was started with). ``timeout`` is per attempt and there are
    ``max_retries + 1`` attempts; ``deadline`` (default ``timeout × (max_retries + 1)``, 180 s with
    the defaults; ``math.inf`` for none) bounds them all together, backoff sleeps included, so a
    server that accepts connections and never answers fails in exactly that long, with an error
    result naming the deadline and ``base_url`` (a streamed request: until its first chunk, see
    the module docstring). ``extra_body`` is merged
    into every request body (e.g. ``{"generation_config": '{"do_sample": true}'}`` to make
    ``transformers serve`` sample a model whose generation config is greedy).
    """
    try:
        chat_cls = _reasoning_chat_openai()
    except ImportError as exc:
        raise ImportError("openai_backend needs langchain-openai: pip install 'longshort[serve]'") from exc
    import httpx
    import openai

    key = api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY"
    kwargs: dict[str, Any] = {}
    if extra_body:
        kwargs["extra_body"] = extra_body
    # ChatOpenAI shares one pooled async httpx client per (base_url, timeout) across the process;
    # pooled connections belong to the event loop that opened them, so a second ``asyncio.run``
    # fails with "Event loop is closed". An async client that keeps no idle connections works
    # from any loop (the sync path keeps its pool).
    async_client = openai.DefaultAsyncHttpxClient(
        limits=httpx.Limits(max_connections=max(100, max_concurrency), max_keepalive_connections=0)
    )
    chat_model = chat_cls(
        base_url=base_url,
        model=model,
        api_key=key,
        timeout=timeout,
        max_retries=max_retries,
        http_async_client=async_client,
        **kwargs,
    )
    return ChatModelBackend(
        chat_model,
        model_id=model,
        tokenizer=tokenizer,
        max_concurrency=max_concurrency,
        server_stops=server_stops,
        deadline=timeout * (max_retries + 1) if deadline is None else deadline,
    )
