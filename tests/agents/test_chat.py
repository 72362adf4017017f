"""ChatModelBackend: unit tests on LangChain fake chat models, then a real ``transformers serve``.

The fakes pin down the client-side logic (stop truncation, finish reasons, token counts, errors,
reasoning rebuild) with deterministic text. Everything about the wire goes to a real server
running the tiny random Qwen2 model; ``logit_bias`` (sent through ``extra_body``) makes that
random model emit a chosen protocol tag, so its output is deterministic too.
"""

from __future__ import annotations

import asyncio
import json
import math
import socket
import sys
import time
import urllib.request
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest
from langchain_core.language_models import BaseChatModel, GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from longshort.agents.base import GenerationRequest
from longshort.agents.chat import ChatModelBackend, _reasoning_chat_openai, openai_backend
from longshort.protocol import ANSWER_CLOSE, RETHINK_CLOSE, STOP_STRINGS, THINK_CLOSE, THINK_OPEN, parse_turn

if TYPE_CHECKING:
    from tests.serve_utils import ServedModel

# The served_tiny_qwen fixture. Import tests.serve_utils only through this (not at module level)
# so pytest loads it as a plugin first and rewrites its asserts.
pytest_plugins = ["tests.serve_utils"]

MESSAGES = [
    {"role": "system", "content": "You are the second assistant."},
    {"role": "user", "content": "2+2?"},
]
SHORT = STOP_STRINGS["short"]
LONG = STOP_STRINGS["long"]


def req(max_new_tokens: int = 8, stop: tuple[str, ...] = SHORT, **kw: Any) -> GenerationRequest:
    return GenerationRequest(messages=MESSAGES, max_new_tokens=max_new_tokens, stop=stop, **kw)


def fake(*replies: str | AIMessage) -> GenericFakeChatModel:
    return GenericFakeChatModel(messages=iter(replies))


class RecordingChat(BaseChatModel):
    """Replies with fixed messages (cycled) and records the kwargs of every call."""

    replies: list[AIMessage]
    calls: list[dict[str, Any]] = []
    fail_on: str | None = None

    @property
    def _llm_type(self) -> str:
        return "recording"

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager=None, **kw):
        self.calls.append({"stop": stop, **kw})
        if self.fail_on is not None and self.fail_on in str(messages[-1].content):
            raise ConnectionError("boom")
        reply = self.replies[(len(self.calls) - 1) % len(self.replies)]
        return ChatResult(generations=[ChatGeneration(message=reply)])


# ---------------------------------------------------------------- client-side logic (fakes)


def test_truncation_keeps_the_tag_that_ended_the_turn():
    backend = ChatModelBackend(fake("<answer> 17 * 23 </rethink> then </answer>", "<answer> \\boxed{4} </answer> x"))
    first, second = backend.generate([req(), req()])  # two requests run concurrently: order is kept
    texts = {first.text, second.text}
    assert texts == {"<answer> 17 * 23 </rethink>", "<answer> \\boxed{4} </answer>"}
    assert first.finish_reason == second.finish_reason == "stop"
    kinds = {parse_turn("short", r.text).kind for r in (first, second)}
    assert kinds == {"rethink", "answer"}


def test_finish_reasons_without_a_stop_string():
    length = AIMessage(content="<answer> 4", response_metadata={"finish_reason": "length"})
    eos = AIMessage(content="<answer> 4", response_metadata={"finish_reason": "stop"})
    backend = ChatModelBackend(RecordingChat(replies=[length, eos]), max_concurrency=1)
    assert [r.finish_reason for r in backend.generate([req(), req()])] == ["length", "eos"]
    # a stop string wins even when the server also ran out of tokens
    cut = AIMessage(content="<answer> 4 </answer> more", response_metadata={"finish_reason": "length"})
    (result,) = ChatModelBackend(RecordingChat(replies=[cut])).generate([req()])
    assert (result.text, result.finish_reason) == ("<answer> 4 </answer>", "stop")


def test_token_counts(tiny_tokenizer):
    usage = {"input_tokens": 5, "output_tokens": 9, "total_tokens": 14}
    whole = AIMessage(content="<answer> 4", usage_metadata=usage)
    cut = AIMessage(content="<answer> 4 </answer> and more text", usage_metadata=usage)
    bare = AIMessage(content="<answer> 4 </answer>")
    plain = ChatModelBackend(RecordingChat(replies=[whole, cut, bare]), max_concurrency=1)
    assert [r.num_tokens for r in plain.generate([req(), req(), req()])] == [9, 9, 0]
    counted = ChatModelBackend(RecordingChat(replies=[whole, cut, bare]), tokenizer=tiny_tokenizer, max_concurrency=1)
    results = counted.generate([req(), req(), req()])
    expected = len(tiny_tokenizer.encode("<answer> 4 </answer>", add_special_tokens=False))
    assert [r.num_tokens for r in results] == [9, expected, expected]  # usage unless cut or absent
    assert counted.tokenizer is None and not counted.token_level  # text-only backend
    assert counted.count_tokens("<answer> 4 </answer>") == expected
    assert plain.count_tokens("<answer>") == 0
    assert all(r.token_ids == [] and r.logprobs is None for r in results)


def test_sampling_settings_are_sent_per_request_and_stop_only_on_request():
    chat = RecordingChat(replies=[AIMessage(content="<answer> 4 </answer>")], calls=[])
    ChatModelBackend(chat, max_concurrency=1).generate([req(7, temperature=0.5, top_p=0.9, seed=3), req(2)])
    assert chat.calls[0] == {"stop": None, "max_tokens": 7, "temperature": 0.5, "top_p": 0.9, "seed": 3}
    assert chat.calls[1] == {"stop": None, "max_tokens": 2, "temperature": 0.0, "top_p": 1.0}
    chat.calls.clear()
    ChatModelBackend(chat, server_stops=True).generate([req()])
    assert chat.calls[0]["stop"] == list(SHORT)


def test_server_stops_puts_back_a_stripped_stop_string():
    stripped = AIMessage(
        content="<answer> 4 ", response_metadata={"finish_reason": "stop", "stop_reason": RETHINK_CLOSE}
    )
    (result,) = ChatModelBackend(RecordingChat(replies=[stripped]), server_stops=True).generate([req()])
    assert (result.text, result.finish_reason) == ("<answer> 4 </rethink>", "stop")


def test_reasoning_split_off_by_the_server_is_rebuilt():
    closed = AIMessage(content="", additional_kwargs={"reasoning_content": "12 * 34 = 408."})
    closed.response_metadata = {"finish_reason": "stop"}
    unclosed = AIMessage(content="", additional_kwargs={"reasoning_content": "12 * 34 ="})
    unclosed.response_metadata = {"finish_reason": "length"}
    blocks = AIMessage(content=[{"type": "reasoning", "reasoning": "r"}, {"type": "text", "text": "tail"}])
    backend = ChatModelBackend(RecordingChat(replies=[closed, unclosed, blocks]), max_concurrency=1)
    a, b, c = backend.generate([req(stop=LONG), req(stop=LONG), req(stop=())])
    assert a.text == f"{THINK_OPEN}\n12 * 34 = 408.\n{THINK_CLOSE}" and a.finish_reason == "stop"
    assert parse_turn("long", a.text).content == "12 * 34 = 408."
    assert b.text == f"{THINK_OPEN}\n12 * 34 =" and b.finish_reason == "length"
    assert c.text == f"{THINK_OPEN}\nr\n{THINK_CLOSE}\n\ntail"
    raw = ChatModelBackend(RecordingChat(replies=[closed]), rebuild_reasoning=False).generate([req(stop=LONG)])
    assert raw[0].text == "" and raw[0].finish_reason == "eos"


def test_errors_become_results_and_never_sink_the_batch():
    chat = RecordingChat(replies=[AIMessage(content="<answer> 4 </answer>")], fail_on="BAD", calls=[])
    bad = GenerationRequest(messages=[{"role": "user", "content": "BAD"}], max_new_tokens=4)
    ids_only = GenerationRequest(prompt_ids=[1, 2, 3], max_new_tokens=4)
    results = ChatModelBackend(chat).generate([req(), bad, ids_only, req()])
    assert [r.finish_reason for r in results] == ["stop", "error", "error", "stop"]
    assert "ConnectionError" in results[1].error and "boom" in results[1].error
    assert "messages" in results[2].error
    assert ChatModelBackend(chat).generate([]) == []


def test_agenerate_with_a_fake():
    backend = ChatModelBackend(fake("<answer> a </answer>", "<answer> b </rethink>"), max_concurrency=1)
    results = asyncio.run(backend.agenerate([req(), req()]))
    assert sorted(r.text for r in results) == ["<answer> a </answer>", "<answer> b </rethink>"]
    assert asyncio.run(backend.agenerate([GenerationRequest(prompt_ids=[1], max_new_tokens=1)]))[0].error


def test_openai_backend_without_langchain_openai(monkeypatch):
    monkeypatch.setitem(sys.modules, "langchain_openai", None)
    _reasoning_chat_openai.cache_clear()
    try:
        with pytest.raises(ImportError, match=r"pip install 'longshort\[serve\]'"):
            openai_backend("http://127.0.0.1:1/v1", "m")
    finally:
        _reasoning_chat_openai.cache_clear()


def test_openai_backend_api_key_and_model_id(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    backend = openai_backend("http://127.0.0.1:1/v1", "served-name")
    assert backend.model_id == "served-name" and backend.base_url == "http://127.0.0.1:1/v1"
    assert backend.chat_model.openai_api_key.get_secret_value() == "EMPTY"
    monkeypatch.setenv("OPENAI_API_KEY", "from-env")
    assert openai_backend("http://127.0.0.1:1/v1", "m").chat_model.openai_api_key.get_secret_value() == "from-env"


# ---------------------------------------------------------------- unreachable servers


def test_dead_server_gives_an_error_result_quickly():
    from tests.serve_utils import free_port

    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    backend = openai_backend(url, "m", timeout=2, max_retries=1)
    start = time.monotonic()
    results = backend.generate([req(), req()])
    aresults = asyncio.run(backend.agenerate([req()]))
    assert time.monotonic() - start < 10
    for result in [*results, *aresults]:
        assert result.finish_reason == "error" and url in result.error


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A socket that accepts connections and never answers: a hung server."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1"


def test_hung_server_is_bounded_by_timeout_and_retries(silent_server):
    backend = openai_backend(silent_server, "m", timeout=1, max_retries=1, deadline=math.inf)  # the client alone
    start = time.monotonic()
    (result,) = backend.generate([req()])
    assert time.monotonic() - start < 8  # 2 attempts x 1 s + backoff
    assert result.finish_reason == "error" and "Timeout" in result.error and silent_server in result.error


def _timed(call) -> tuple[list, float]:
    start = time.monotonic()
    results = call()
    return results, time.monotonic() - start


@pytest.mark.parametrize("streamed", [False, True], ids=["plain", "streamed"])
def test_hung_server_fails_at_the_deadline_with_an_error_naming_it(silent_server, streamed):
    """6 attempts x 1 s (+ backoff) would take 8 s or more: the 1.5 s deadline ends every path sooner."""
    backend = openai_backend(silent_server, "m", timeout=1, max_retries=5, deadline=1.5)
    pieces: list[str] = []
    request = req(on_token=pieces.append) if streamed else req()
    for call in (lambda: backend.generate([request, request]), lambda: asyncio.run(backend.agenerate([request]))):
        results, took = _timed(call)
        assert 1.4 < took < 4, took
        for result in results:
            assert result.finish_reason == "error" and "DeadlineExceeded" in result.error
            assert "1.5 s deadline" in result.error and silent_server in result.error
    assert pieces == []


def test_the_default_deadline_is_every_attempts_timeout(silent_server):
    backend = openai_backend(silent_server, "m", timeout=0.4, max_retries=2)
    assert backend.deadline == pytest.approx(1.2)
    (result,), took = _timed(lambda: backend.generate([req()]))
    assert took < 3 and "1.2 s deadline" in result.error and silent_server in result.error
    assert openai_backend(silent_server, "m").deadline == 180.0  # 60 s x 3 attempts, said in --timeout's help
    assert openai_backend(silent_server, "m", deadline=math.inf).deadline is None
    with pytest.raises(ValueError, match="deadline must be > 0"):
        ChatModelBackend(fake("x"), deadline=0)


class SlowChat(BaseChatModel):
    """Answers after ``first`` seconds, then streams ``chunks`` pieces ``every`` seconds apart."""

    first: float = 0.0
    every: float = 0.0
    chunks: int = 4

    @property
    def _llm_type(self) -> str:
        return "slow"

    def _pieces(self) -> list[str]:
        return ["<answer> "] + ["x "] * (self.chunks - 2) + ["</answer>"]

    def _generate(self, messages, stop=None, run_manager=None, **kw):
        time.sleep(self.first + self.every * self.chunks)
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content="".join(self._pieces())))])

    async def _agenerate(self, messages, stop=None, run_manager=None, **kw):
        await asyncio.sleep(self.first + self.every * self.chunks)
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content="".join(self._pieces())))])

    def _stream(self, messages, stop=None, run_manager=None, **kw):
        from langchain_core.messages import AIMessageChunk
        from langchain_core.outputs import ChatGenerationChunk

        time.sleep(self.first)
        for piece in self._pieces():
            yield ChatGenerationChunk(message=AIMessageChunk(content=piece))
            time.sleep(self.every)

    async def _astream(self, messages, stop=None, run_manager=None, **kw):
        from langchain_core.messages import AIMessageChunk
        from langchain_core.outputs import ChatGenerationChunk

        await asyncio.sleep(self.first)
        for piece in self._pieces():
            yield ChatGenerationChunk(message=AIMessageChunk(content=piece))
            await asyncio.sleep(self.every)


def test_the_deadline_bounds_the_wait_for_an_answer_not_a_long_stream():
    """A stream that starts in time may run past the deadline; a reply that starts late may not."""
    streaming = ChatModelBackend(SlowChat(every=0.15, chunks=6), deadline=0.5)  # 0.9 s in all
    pieces: list[str] = []
    (sync,) = streaming.generate([req(on_token=pieces.append)])
    (async_,) = asyncio.run(streaming.agenerate([req(on_token=pieces.append)]))
    assert sync.text == async_.text == "<answer> x x x x </answer>" and sync.finish_reason == "stop"
    assert "".join(pieces) == sync.text * 2

    late = ChatModelBackend(SlowChat(first=0.8), deadline=0.3)
    pieces.clear()
    for request in (req(), req(on_token=pieces.append)):
        (result,), took = _timed(lambda r=request: late.generate([r]))
        (aresult,), atook = _timed(lambda r=request: asyncio.run(late.agenerate([r])))
        assert took < 0.7 and atook < 0.7, (took, atook)
        for r in (result, aresult):
            assert r.finish_reason == "error" and "0.3 s deadline" in r.error
    time.sleep(1.0)  # the abandoned sync worker gets its first chunk now: it must not reach the hook
    assert pieces == []


# ---------------------------------------------------------------- a real transformers serve


def _raw_chat(served: ServedModel, **body: Any) -> dict[str, Any]:
    payload = {"model": served.model, "messages": MESSAGES, **body}
    request = urllib.request.Request(
        f"{served.base_url}/chat/completions",
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def _bias(tokenizer, token: str) -> dict[str, dict[str, float]]:
    """``extra_body`` that makes the tiny model emit ``token`` at every step (float values!)."""
    return {"logit_bias": {str(tokenizer.convert_tokens_to_ids(token)): 100.0}}


def test_transformers_serve_facts(served_tiny_qwen, tiny_tokenizer):
    """The facts documented in tests/serve_utils.py, checked against the live server."""
    prompt = tiny_tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=True)
    prompt_ids = prompt if isinstance(prompt, list) else prompt["input_ids"]
    out = _raw_chat(served_tiny_qwen, max_tokens=3, **_bias(tiny_tokenizer, ANSWER_CLOSE))
    assert out["usage"]["prompt_tokens"] == len(prompt_ids)  # the model dir's chat template
    assert out["choices"][0]["message"]["content"] == ANSWER_CLOSE * 3  # non-special tags kept
    assert out["choices"][0]["finish_reason"] == "length"
    out = _raw_chat(served_tiny_qwen, max_tokens=3, stop=[ANSWER_CLOSE], **_bias(tiny_tokenizer, ANSWER_CLOSE))
    assert out["choices"][0]["message"]["content"] == ANSWER_CLOSE  # stop honoured, tag kept
    assert out["choices"][0]["finish_reason"] == "stop"
    out = _raw_chat(served_tiny_qwen, max_tokens=3, **_bias(tiny_tokenizer, "<|im_end|>"))
    assert out["choices"][0]["message"].get("content", "") == ""  # special tokens skipped
    assert out["choices"][0]["finish_reason"] == "stop" and out["usage"]["completion_tokens"] == 1  # eos
    out = _raw_chat(served_tiny_qwen, max_tokens=3, **_bias(tiny_tokenizer, THINK_OPEN))
    assert out["choices"][0]["message"]["reasoning_content"] == THINK_OPEN * 2  # split off content


def test_served_generation_through_openai_backend(served_tiny_qwen, tiny_tokenizer):
    url, model = served_tiny_qwen.base_url, served_tiny_qwen.model
    greedy = openai_backend(url, model, timeout=30)
    rethink = openai_backend(url, model, timeout=30, extra_body=_bias(tiny_tokenizer, RETHINK_CLOSE))
    counted = openai_backend(
        url, model, timeout=30, tokenizer=tiny_tokenizer, extra_body=_bias(tiny_tokenizer, "</answer>")
    )
    eos = openai_backend(url, model, timeout=30, extra_body=_bias(tiny_tokenizer, "<|im_end|>"))
    thinking = openai_backend(url, model, timeout=30, extra_body=_bias(tiny_tokenizer, THINK_OPEN))
    server_stop = openai_backend(
        url, model, timeout=30, server_stops=True, extra_body=_bias(tiny_tokenizer, "</answer>")
    )

    (r,) = greedy.generate([req(5)])
    assert r.error is None and r.finish_reason == "length" and r.num_tokens == 5  # max_tokens honoured
    (r,) = rethink.generate([req(6)])
    assert (r.text, r.finish_reason, r.num_tokens) == (RETHINK_CLOSE, "stop", 6)  # cut client-side
    (r,) = counted.generate([req(6)])
    assert (r.text, r.finish_reason, r.num_tokens) == (ANSWER_CLOSE, "stop", 1)  # kept text counted
    (r,) = eos.generate([req(6)])
    assert (r.text, r.finish_reason, r.num_tokens) == ("", "eos", 1)
    (r,) = thinking.generate([req(4, stop=LONG)])
    assert (r.text, r.finish_reason) == (f"{THINK_OPEN}\n{THINK_OPEN * 3}", "length")  # rebuilt, unclosed
    (r,) = server_stop.generate([req(6)])
    assert (r.text, r.finish_reason, r.num_tokens) == (ANSWER_CLOSE, "stop", 1)  # the server stopped


def test_served_concurrent_generate_and_agenerate(served_tiny_qwen):
    backend = openai_backend(served_tiny_qwen.base_url, served_tiny_qwen.model, timeout=30, max_concurrency=4)
    requests = [req(n) for n in (1, 2, 3, 4)]
    results = backend.generate(requests)
    assert [(r.error, r.num_tokens, r.finish_reason) for r in results] == [(None, n, "length") for n in (1, 2, 3, 4)]
    for _ in range(2):  # a fresh event loop each time, as in scripts and notebooks
        aresults = asyncio.run(backend.agenerate(requests))
        assert [(r.error, r.num_tokens) for r in aresults] == [(None, n) for n in (1, 2, 3, 4)]
    (wrong,) = openai_backend(served_tiny_qwen.base_url, "not-the-served-model", timeout=30).generate([req(2)])
    assert wrong.finish_reason == "error" and "400" in wrong.error and served_tiny_qwen.base_url in wrong.error


def test_serve_model_reports_a_server_that_dies(tmp_path):
    from tests.serve_utils import serve_model

    start = time.monotonic()
    with pytest.raises(RuntimeError, match="exited with"):
        with serve_model(tmp_path / "no-model", startup_timeout=60):
            pass
    assert time.monotonic() - start < 30


def test_the_deadline_is_said_where_timeout_is_described():
    from typer.testing import CliRunner

    from longshort.cli import app

    for command in ("solve", "eval"):
        result = CliRunner().invoke(app, [command, "--help"])
        assert result.exit_code == 0, result.output
        text = " ".join(result.output.replace("│", " ").split())
        assert "3 attempts and fails after 3 x this in all (180 s by default)" in text, (command, text)
