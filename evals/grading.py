"""Answer grading shared by evaluation and RL rewards: math-verify, bounded in time, safe in threads.

math-verify 0.9 bounds ``parse``/``verify`` with ``signal.alarm``, which only works in the main
thread: LangGraph runs sync nodes in a thread pool, so there it raises ``ValueError``. We pass
``parsing_timeout=None`` / ``timeout_seconds=None`` and bound the work ourselves by running it in a
small pool of long-lived worker *processes* (plain ``subprocess`` children speaking JSON lines):

- A stuck sympy call (``\\boxed{9^{9^{9^{9}}}}`` never finishes) is killed, not abandoned. A
  thread we merely stop waiting for would keep burning a core and holding the GIL for the rest of
  the run; a process is ended with SIGKILL and replaced.
- ``subprocess`` (fork + exec) is safe to start from any thread, unlike ``multiprocessing``'s
  fork, and unlike its spawn it never re-imports the caller's ``__main__`` script.
- Workers import math-verify once and are reused, so a call costs a round trip (~1 ms), not an
  interpreter start. Starting a worker does not count against ``timeout_s``.

The testbed grades thousands of integer answers: when both sides are plain integers they are
compared directly, without a worker.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import re
import select
import subprocess
import sys
import threading
import time
import unicodedata
from typing import Any, Literal

from pydantic import BaseModel

Reason = Literal["correct", "wrong", "no_answer", "timeout", "unparsable_gold"]

#: Worker processes at most (callers beyond that wait for a free one).
POOL_SIZE = max(2, min(4, os.cpu_count() or 2))
#: Seconds a new worker may take to import math-verify before we give up on it.
STARTUP_TIMEOUT_S = 120.0

_INT = re.compile(r"[+-]?\d+")
_WRAPPED = re.compile(r"^(?:\$(.*)\$|\\boxed\s*\{(.*)\})$", re.DOTALL)


class Verdict(BaseModel):
    """The grade of one answer, and why (``extracted`` is what was read from the prediction)."""

    correct: bool
    extracted: str | None = None
    reason: Reason


def _plain_int(text: str) -> str | None:
    """``text`` as a canonical integer (sign, no leading zeros) if it is one, inside ``$…$`` or ``\\boxed{…}``.

    Kept as a digit string, never ``int()``: Python refuses to convert more than 4,300 digits, and a
    model may well box a 5,000-digit number; grading must give it a verdict, not raise.
    """
    text = text.strip()
    match = _WRAPPED.match(text)
    if match:
        text = (match.group(1) if match.group(1) is not None else match.group(2)).strip()
    if not _INT.fullmatch(text):
        return None
    sign = "-" if text[0] == "-" else ""
    digits = text.lstrip("+-")
    if not digits.isascii():  # other scripts' digits ("٤٢"), which int() would read too
        digits = "".join(str(unicodedata.decimal(c)) for c in digits)
    digits = digits.lstrip("0")
    return sign + digits if digits else "0"


def _as_latex(text: str, *, boxed: bool) -> str:
    """Give math-verify a delimiter it recognises unless the text already has one.

    An escaped dollar (``\\$18.90``, MATH500's currency answers) is a unit, not a math delimiter:
    it is dropped first, else math-verify reads the gold as unparsable.
    """
    text = text.replace("\\$", "")
    if "\\boxed" in text or "$" in text or "\\(" in text or "\\[" in text:
        return text
    return f"\\boxed{{{text}}}" if boxed else f"${text}$"


@functools.lru_cache(maxsize=4096)
def _parse_gold(gold: str) -> list:
    """Each gold answer is parsed once per worker (a benchmark is graded many times per run)."""
    from math_verify import parse

    return parse(_as_latex(gold, boxed=False), parsing_timeout=None)


def grade_here(predicted: str, gold: str) -> dict[str, Any]:
    """Grade with math-verify in this process, without any time bound (the worker's body)."""
    from math_verify import parse, verify

    gold_parsed = _parse_gold(gold)
    if not gold_parsed:
        return {"reason": "unparsable_gold", "extracted": None}
    pred_parsed = parse(_as_latex(predicted, boxed=True), parsing_timeout=None)
    if not pred_parsed:
        return {"reason": "no_answer", "extracted": None}
    extracted = next((x for x in pred_parsed if isinstance(x, str)), str(pred_parsed[0]))
    correct = verify(gold_parsed, pred_parsed, timeout_seconds=None)
    return {"reason": "correct" if correct else "wrong", "extracted": extracted}


def _serve() -> None:
    """Worker main loop: one JSON request per stdin line, one JSON reply per line."""
    import logging

    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything a library prints goes to stderr, never into the protocol
    logging.getLogger("math_verify").setLevel(logging.ERROR)  # "timeout is disabled": we know
    import math_verify  # noqa: F401  (import once, before saying ready)

    protocol.write('{"ready": true}\n')
    for line in sys.stdin:
        request = json.loads(line)
        try:
            reply = grade_here(request["pred"], request["gold"])
        except Exception as e:  # a grader bug must not kill the worker
            reply = {"reason": "wrong", "extracted": None, "error": f"{type(e).__name__}: {e}"}
        protocol.write(json.dumps(reply) + "\n")


_BOOT = "from longshort.evals.grading import _serve; _serve()"


class _Worker:
    """One grading process; used by one thread at a time."""

    def __init__(self) -> None:
        env = dict(os.environ)
        # The child must import longshort exactly as we did (editable install or a source tree).
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _BOOT], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, bufsize=0
        )
        self._buffer = b""
        try:
            ready = self._read(time.monotonic() + STARTUP_TIMEOUT_S)
        except EOFError:
            ready = None
        if not ready:
            self.close()
            raise RuntimeError(f"grading worker did not start within {STARTUP_TIMEOUT_S} s (see its stderr)")

    def ask(self, request: dict[str, Any], timeout_s: float) -> dict[str, Any] | None:
        """The reply, or None if it did not come within ``timeout_s`` (EOFError if the worker died)."""
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write((json.dumps(request) + "\n").encode())
        except (BrokenPipeError, OSError) as e:
            raise EOFError("grading worker is gone") from e
        return self._read(time.monotonic() + timeout_s)

    def _read(self, deadline: float) -> dict[str, Any] | None:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            readable, _, _ = select.select([fd], [], [], left)
            if readable:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    raise EOFError("grading worker exited")
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()


class _Pool:
    """Idle workers plus a cap on how many run at once; a worker that times out is killed."""

    def __init__(self, size: int) -> None:
        self.pid = os.getpid()
        self._slots = threading.BoundedSemaphore(size)
        self._idle: list[_Worker] = []
        self._lock = threading.Lock()

    def ask(self, request: dict[str, Any], timeout_s: float) -> dict[str, Any] | None:
        with self._slots:
            with self._lock:
                worker = self._idle.pop() if self._idle else None
            reply = None
            for attempt in range(2):  # an idle worker may have died (OOM killer …): retry on a new one
                worker = worker or _Worker()
                try:
                    reply = worker.ask(request, timeout_s)
                    break
                except EOFError:
                    worker.close()
                    worker = None
                    if attempt:
                        raise RuntimeError("grading worker died twice in a row") from None
            if reply is None:  # stuck: kill it rather than let it burn a core
                worker.close()
                return None
            with self._lock:
                self._idle.append(worker)
            return reply

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.close()


_pool: _Pool | None = None
_pool_lock = threading.Lock()


def _get_pool() -> _Pool:
    global _pool
    with _pool_lock:
        if _pool is None or _pool.pid != os.getpid():  # a forked child must not share our pipes
            _pool = _Pool(POOL_SIZE)
        return _pool


@atexit.register
def _shutdown() -> None:
    if _pool is not None and _pool.pid == os.getpid():
        _pool.close()


def grade_answer(predicted: str | None, gold: str, *, timeout_s: float = 5.0) -> Verdict:
    """Is ``predicted`` mathematically equal to ``gold``? Safe to call from any thread.

    ``predicted`` is an extracted answer (``"888"``, ``"\\frac{1}{2}"``) or a text holding
    ``\\boxed{}``/``$…$``; a bare expression is read as if boxed. ``gold`` is read as LaTeX.
    ``None``, blank or unreadable predictions are ``no_answer``; a grading that takes longer than
    ``timeout_s`` is ``timeout`` (and counts as wrong).
    """
    if predicted is None or not predicted.strip():
        return Verdict(correct=False, extracted=None, reason="no_answer")
    if not gold.strip():
        return Verdict(correct=False, extracted=None, reason="unparsable_gold")
    p, g = _plain_int(predicted), _plain_int(gold)
    if p is not None and g is not None:
        return Verdict(correct=p == g, extracted=p, reason="correct" if p == g else "wrong")
    reply = _get_pool().ask({"pred": predicted, "gold": gold}, timeout_s)
    if reply is None:
        return Verdict(correct=False, extracted=None, reason="timeout")
    return Verdict(correct=reply["reason"] == "correct", extracted=reply["extracted"], reason=reply["reason"])
