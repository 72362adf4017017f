"""Start and stop a real ``transformers serve`` (OpenAI-compatible) server for tests.

``serve_model(model_dir)`` runs ``python -m transformers.cli.transformers serve <dir> --host
127.0.0.1 --port <free port>`` in its own process group, waits (bounded) until a real
``POST /v1/chat/completions`` answers, yields a :class:`ServedModel` and always kills the whole
process group on exit. ``served_tiny_qwen`` is the session fixture over the tiny Qwen2 directory.
Register it with ``pytest_plugins = ["tests.serve_utils"]`` (or import it in a conftest).

Facts about ``transformers serve`` (transformers 5.23, checked by hand against the tiny model and
re-checked in ``tests/agents/test_chat.py::test_transformers_serve_facts``):

* Startup: the positional model is preloaded before uvicorn listens; with the tiny model the
  first chat completion works ~5 s after launch on 2 CPU cores. ``GET /health`` answers
  ``{"status": "ok"}``; ``GET /v1/models`` returns 500 without a hub cache (not used here).
* The server is *pinned* to the positional model: a request must send ``model`` equal to that
  exact string (the path as given on the command line) or omit it, else HTTP 400. Unknown body
  fields give HTTP 422 (so vLLM-only extras such as ``include_stop_str_in_output`` cannot be sent).
* The chat template of the model directory is used (``usage.prompt_tokens`` equals
  ``len(tokenizer.apply_chat_template(messages, add_generation_prompt=True))``).
* ``max_tokens`` / ``max_completion_tokens`` are honoured (default at least 1024 when absent).
  ``usage.completion_tokens`` counts every generated token, the eos token included.
* ``finish_reason`` is ``"length"`` iff ``completion_tokens >= max_tokens``, else ``"stop"``
  for *both* eos and a stop string: the server cannot tell them apart for you.
* ``stop`` is honoured (mapped to ``GenerationConfig.stop_strings``) and the matched stop string
  is **kept** in the returned text (unlike vLLM's default, which strips it). The cut is at token
  granularity: the whole last token is returned, even if the stop string ends inside it.
* ``temperature`` only matters when sampling is already on in the model's
  ``generation_config.json`` (``do_sample=true``): the server sets ``do_sample=False`` for
  ``temperature == 0`` but never sets it to True. A model without ``do_sample`` (the tiny test
  models) is always greedy. A ``generation_config`` body field (a JSON string such as
  ``'{"do_sample": true}'``) replaces the model's generation config and turns sampling on.
* ``seed`` calls ``torch.manual_seed`` process-wide when the request is handled; generation runs
  one request at a time on a single inference thread (concurrent requests queue), so a seeded
  sample is reproducible only when requests do not overlap.
* ``logit_bias`` works only with float values (``{"403": 100.0}``); an int value is HTTP 500.
* Decoding skips special tokens (``<|im_end|>``, ``<|endoftext|>`` vanish) and keeps added
  non-special tokens, so ``<answer>``, ``</answer>``, ``</rethink>``, ``</think>`` come back.
* **Reasoning split (qwen2/qwen3 model types):** the server applies a response parser that moves
  ``<think> … </think>`` out of ``content`` into a non-standard ``message.reasoning_content``
  (stripped; text before ``<think>`` is lost; an unclosed ``<think>`` also lands there).
  ``ChatOpenAI`` drops that field, so ``agents.chat.openai_backend`` uses a subclass that keeps
  it and ``ChatModelBackend`` rebuilds ``<think>\\n…\\n</think>`` in front of the content.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

#: Environment that keeps the server off the network: only local model directories load.
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}


@dataclass(frozen=True)
class ServedModel:
    """A running server: what a client needs (``base_url`` ends in ``/v1``; ``model`` must be sent)."""

    base_url: str
    model: str
    log_path: Path

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (the OS picks it; tiny race window before reuse)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _chat_ok(base_url: str, model: str, timeout: float) -> bool:
    """True once a real one-token chat completion succeeds (the readiness signal we trust)."""
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    request = urllib.request.Request(
        f"{base_url}/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status == 200 and "choices" in json.loads(response.read())
    except (OSError, ValueError):  # refused / reset / timeout / HTTP error / bad JSON
        return False


def _kill_group(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """SIGTERM the whole process group, then SIGKILL whatever is left after ``grace`` seconds."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=grace)


@contextmanager
def serve_model(
    model_dir: str | os.PathLike[str],
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    startup_timeout: float = 120.0,
    extra_args: tuple[str, ...] = (),
) -> Iterator[ServedModel]:
    """Run ``transformers serve`` on a local model directory for the duration of the block.

    Raises ``RuntimeError`` (with the server log tail) when the server exits early or is not
    answering chat completions within ``startup_timeout`` seconds.
    """
    model = str(model_dir)
    port = port or free_port(host)
    base_url = f"http://{host}:{port}/v1"
    log_file = tempfile.NamedTemporaryFile(prefix="transformers-serve-", suffix=".log", delete=False)
    log_path = Path(log_file.name)
    cmd = [
        sys.executable,
        "-m",
        "transformers.cli.transformers",
        "serve",
        model,
        "--host",
        host,
        "--port",
        str(port),
        "--log-level",
        "warning",
        *extra_args,
    ]
    env = {**os.environ, **OFFLINE_ENV, "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.Popen(
        cmd,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )
    served = ServedModel(base_url=base_url, model=model, log_path=log_path)
    try:
        deadline = time.monotonic() + startup_timeout
        while not _chat_ok(base_url, model, timeout=10.0):
            if proc.poll() is not None:
                raise RuntimeError(f"transformers serve exited with {proc.returncode}:\n{served.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"transformers serve not ready after {startup_timeout:.0f}s:\n{served.log_tail()}")
            time.sleep(0.25)
        yield served
    finally:
        _kill_group(proc)
        log_file.close()
        log_path.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def served_tiny_qwen(tiny_qwen_dir) -> Iterator[ServedModel]:
    """The tiny random Qwen2 model behind a real ``transformers serve``, for the whole session."""
    with serve_model(tiny_qwen_dir) as served:
        yield served


@pytest.fixture(scope="session")
def served_protocol_model(protocol_model_dir) -> Iterator[ServedModel]:
    """The tiny model trained to follow the protocol, behind a real ``transformers serve``."""
    with serve_model(protocol_model_dir) as served:
        yield served
