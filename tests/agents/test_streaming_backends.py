"""The per-request ``on_token`` hook: every backend streams a request's text, and pays nothing without one."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from langchain_core.language_models import GenericFakeChatModel

from longshort.agents import ScriptedBackend, TransformersBackend
from longshort.agents.base import GenerationRequest, IncrementalDetokenizer, TokenStream
from longshort.agents.chat import ChatModelBackend, openai_backend
from longshort.agents.process import ProcessBackend
from longshort.agents.vllm import VLLMBackend
from longshort.protocol import STOP_STRINGS

UNICODE = "Ünïcode ✓ 12 * 34 = 408 🙂 <think> ok </think> ß"


class Pieces(list):
    """A hook that records each piece and the thread it came from."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: set[str] = set()

    def __call__(self, piece: str) -> None:
        self.append(piece)
        self.threads.add(threading.current_thread().name)

    @property
    def text(self) -> str:
        return "".join(self)


# ---------------------------------------------------------------- incremental detokenization


def test_incremental_detokenizer_never_splits_a_character(tiny_tokenizer):
    ids = tiny_tokenizer.encode(UNICODE, add_special_tokens=False)
    assert any(len(tiny_tokenizer.encode(c, add_special_tokens=False)) > 1 for c in "✓🙂")  # multi-token chars
    pieces = Pieces()
    stream = IncrementalDetokenizer(tiny_tokenizer, pieces)
    for i in ids:
        stream.push(i)
    full = tiny_tokenizer.decode(ids, skip_special_tokens=False)
    stream.finish(full)
    assert pieces.text == full == UNICODE
    assert len(pieces) > 10 and not any("\ufffd" in p for p in pieces)
    assert "🙂" in pieces and "✓" in pieces  # each arrives whole, once its last byte is decoded


def test_rewound_stream_does_not_repeat_itself(tiny_tokenizer):
    ids = tiny_tokenizer.encode("<think> 12 * 34 = 408 </think>", add_special_tokens=False)
    pieces = Pieces()
    stream = IncrementalDetokenizer(tiny_tokenizer, pieces)
    for i in ids[:4]:
        stream.push(i)
    stream.rewind()  # the worker restarts the request: the same ids come again
    for i in ids:
        stream.push(i)
    stream.finish(tiny_tokenizer.decode(ids))
    assert pieces.text == tiny_tokenizer.decode(ids)


def test_a_hook_that_raises_is_dropped_not_raised():
    calls = []

    def bad(piece: str) -> None:
        calls.append(piece)
        raise RuntimeError("listener bug")

    stream = TokenStream(bad)
    stream.send("a")
    stream.send("b")
    stream.finish("abc")
    assert calls == ["a"]


def test_the_hook_is_not_serialised():
    request = GenerationRequest(prompt_ids=[1], max_new_tokens=2, on_token=print)
    assert "on_token" not in request.model_dump() and "on_token" not in request.model_dump_json()
    assert GenerationRequest.model_validate(request.model_dump()).on_token is None


# ---------------------------------------------------------------- transformers backend


@pytest.fixture(scope="module")
def hf(tiny_qwen_dir: Path) -> Iterator[TransformersBackend]:
    with TransformersBackend(tiny_qwen_dir, device="cpu", max_batch_size=8) as backend:
        yield backend


def _req(hook=None, n: int = 48, temperature: float = 1.0, prompt: list[int] | None = None) -> GenerationRequest:
    """A sampled (seeded) request the tiny random model answers with ``n`` tokens (no early eos)."""
    return GenerationRequest(
        prompt_ids=prompt or [5, 6, 7, 8], max_new_tokens=n, temperature=temperature, seed=1, on_token=hook
    )


def test_hf_streams_only_the_rows_that_ask_and_changes_no_result(hf):
    plain = hf.generate([_req(), _req(prompt=[9, 10, 11])])
    pieces = Pieces()
    hooked = hf.generate([_req(pieces), _req(prompt=[9, 10, 11])])
    assert [r.token_ids for r in hooked] == [r.token_ids for r in plain]  # same samples, hook or not
    assert pieces.text == hooked[0].text and len(pieces) > 5
    assert pieces.threads == {"TransformersBackend-worker"}  # from the decode loop, as tokens come


def test_hf_without_a_hook_decodes_no_text_pieces(hf, monkeypatch):
    def boom(self, token_id):
        raise AssertionError("decoded a piece nobody asked for")

    monkeypatch.setattr(IncrementalDetokenizer, "push", boom)
    (result,) = hf.generate([_req()])
    assert result.num_tokens > 0


def test_hf_async_pieces_arrive_while_the_request_decodes(hf):
    steps_at_piece: list[int] = []

    def hook(piece: str) -> None:
        steps_at_piece.append(hf.stats["decode_steps"])

    async def main():
        start = hf.stats["decode_steps"]
        (result,) = await hf.agenerate([_req(hook, n=64, temperature=0.0)])
        return start, result

    start, result = asyncio.run(main())
    assert result.num_tokens == 64
    assert len(steps_at_piece) > 3
    # the first piece came after a step or two, long before the last decode step
    assert steps_at_piece[0] - start <= 2 < hf.stats["decode_steps"] - start


# ---------------------------------------------------------------- process backend


def test_process_backend_forwards_pieces_through_the_pipe(tiny_qwen_dir):
    with TransformersBackend(tiny_qwen_dir, device="cpu") as local:
        (expected,) = local.generate([_req()])
    pieces = Pieces()
    with ProcessBackend(tiny_qwen_dir, num_threads=1, device="cpu") as child:
        (result,) = child.generate([_req(pieces)])
        (quiet,) = child.generate([_req()])
    assert result.token_ids == expected.token_ids == quiet.token_ids
    assert pieces.text == result.text and len(pieces) > 5
    assert pieces.threads == {"ProcessBackend-reader"}  # the parent's reader: one piece message per piece


# ---------------------------------------------------------------- scripted and vLLM fallbacks


def test_scripted_streams_token_by_token_with_a_tokenizer_and_whole_without(tiny_tokenizer):
    pieces = Pieces()
    (result,) = ScriptedBackend([UNICODE], tiny_tokenizer).generate([_req(pieces, n=200)])
    assert pieces.text == result.text == UNICODE and len(pieces) > 10
    whole = Pieces()
    chat = ScriptedBackend(["<answer> \\boxed{4} </answer>"])
    chat.generate([GenerationRequest(messages=[{"role": "user", "content": "q"}], max_new_tokens=20, on_token=whole)])
    assert whole == ["<answer> \\boxed{4} </answer>"]


def test_vllm_offline_engine_sends_each_result_as_one_piece(monkeypatch):
    completion = SimpleNamespace(
        text="<answer> ok </answer>", token_ids=(7, 8), logprobs=None, finish_reason="stop", stop_reason="</answer>"
    )
    backend = object.__new__(VLLMBackend)
    backend.llm = SimpleNamespace(generate=lambda prompts, params, **kw: [SimpleNamespace(outputs=[completion])])
    monkeypatch.setattr(VLLMBackend, "_sampling_params", staticmethod(lambda r: None))
    pieces = Pieces()
    backend.generate([GenerationRequest(prompt_ids=[1], max_new_tokens=4, on_token=pieces)])
    assert pieces == ["<answer> ok </answer>"]


# ---------------------------------------------------------------- chat backends


MESSAGES = [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}]


class FakeOpenAI:
    """A loopback ``/v1/chat/completions``: SSE when asked to stream, one JSON reply otherwise.

    The streamed reply holds its second half back until the client has shown it a first piece
    (``gate``), so a client that only delivers pieces at the end would make it wait ``hold_s``.
    """

    def __init__(self, reasoning: list[str], content: list[str], hold_s: float = 10.0) -> None:
        self.reasoning, self.content, self.hold_s = reasoning, content, hold_s
        self.gate = threading.Event()
        self.held: list[bool] = []  # per streamed reply: did the client show a piece before the end?
        self.bodies: list[dict[str, Any]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.bodies.append(body)
                if body.get("stream"):
                    self._stream(body)
                else:
                    self._json({
                        "id": "c", "object": "chat.completion", "created": 0, "model": "m",
                        "choices": [{"index": 0, "finish_reason": "stop", "message": {
                            "role": "assistant", "content": "".join(fake.content),
                            "reasoning_content": "".join(fake.reasoning) or None}}],
                        "usage": {"prompt_tokens": 3, "completion_tokens": 9, "total_tokens": 12},
                    })  # fmt: skip

            def _json(self, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _event(self, payload: dict | str) -> None:
                data = payload if isinstance(payload, str) else json.dumps(payload)
                self.wfile.write(f"data: {data}\n\n".encode())
                self.wfile.flush()

            def _delta(self, delta: dict, finish: str | None = None) -> None:
                self._event({
                    "id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m",
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                })  # fmt: skip

            def _stream(self, body: dict) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                deltas = [{"reasoning_content": r} for r in fake.reasoning] + [{"content": c} for c in fake.content]
                half = len(deltas) // 2
                for d in deltas[:half]:
                    self._delta(d)
                fake.held.append(fake.gate.wait(fake.hold_s))
                for d in deltas[half:]:
                    self._delta(d)
                self._delta({}, "stop")
                if (body.get("stream_options") or {}).get("include_usage"):
                    self._event({"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m",
                                 "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 9,
                                                          "total_tokens": 12}})  # fmt: skip
                self._event("[DONE]")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI(["First ", "12 * 34 ", "= 408."], ["\n\n", "<answer> ", "\\boxed{408} ", "</answer>", " tail"])
    yield fake
    fake.close()


def _gated(server: FakeOpenAI) -> Pieces:
    """A recording hook that lets the server finish once it has seen a piece."""

    class Gated(Pieces):
        def __call__(self, piece: str) -> None:
            super().__call__(piece)
            server.gate.set()

    return Gated()


def test_openai_backend_streams_rebuilt_reasoning_up_to_the_stop(server):
    backend = openai_backend(server.url, "m", timeout=10, max_retries=0)
    expected = "<think>\nFirst 12 * 34 = 408.\n</think>\n\n<answer> \\boxed{408} </answer>"
    (plain,) = backend.generate([GenerationRequest(messages=MESSAGES, max_new_tokens=20, stop=STOP_STRINGS["short"])])
    assert not server.bodies[-1].get("stream") and plain.text == expected  # no hook: not streamed

    pieces = _gated(server)
    request = GenerationRequest(messages=MESSAGES, max_new_tokens=20, stop=STOP_STRINGS["short"], on_token=pieces)
    (streamed,) = backend.generate([request])
    assert server.bodies[-1]["stream"] is True and server.bodies[-1]["stream_options"] == {"include_usage": True}
    assert server.held == [True]  # the first piece reached the hook while the server was still sending
    assert streamed.text == plain.text == expected
    assert "".join(pieces) == expected and " tail" not in "".join(pieces)  # nothing past the stop
    assert (streamed.finish_reason, streamed.num_tokens) == ("stop", 9)  # usage from the stream's last chunk


def test_openai_backend_streams_on_the_event_loop(server):
    backend = openai_backend(server.url, "m", timeout=10, max_retries=0)
    pieces = _gated(server)
    request = GenerationRequest(messages=MESSAGES, max_new_tokens=20, stop=STOP_STRINGS["short"], on_token=pieces)
    (result,) = asyncio.run(backend.agenerate([request]))
    assert server.held == [True] and "".join(pieces) == result.text and result.text.endswith("</answer>")


def test_any_langchain_chat_model_streams_through_its_stream_method():
    backend = ChatModelBackend(GenericFakeChatModel(messages=iter(["<answer> 17 * 23 </rethink> then more"])))
    pieces = Pieces()
    (result,) = backend.generate(
        [GenerationRequest(messages=MESSAGES, max_new_tokens=20, stop=STOP_STRINGS["short"], on_token=pieces)]
    )
    assert result.text == "<answer> 17 * 23 </rethink>" == "".join(pieces) and len(pieces) > 2
