"""A ``TransformersBackend`` in a child process, so that two models decode without sharing a GIL.

Why a process: a small model, or any model on a fast GPU, is host-bound: a decode step costs a
few milliseconds of Python and kernel launches, and the GPU waits. Two in-process backends (the
long and the short agent's models) then take turns on the interpreter lock, so their decode
loops run one after the other instead of side by side, and the short agent's small, staggered
turns cost almost as many host steps as the long agent's big batch. In its own process each
worker has a core to itself (vLLM runs its engine core in a separate process for the same reason).

The parent keeps only the tokenizer (agents build their views with it); requests and results cross
a pipe as plain dicts. A request's ``on_token`` hook stays in the parent: the child streams that
request's text pieces back through the pipe (``piece`` messages, before its result) and the
parent's reader thread calls the hook; requests without a hook send no pieces. Everything else is
the in-process backend's behaviour: batching across callers, continuous admission, the prefix
cache, per-request seeds, bad requests failing alone, cancellation freeing a row. A dead child
fails every pending request at once.

    backend = ProcessBackend("path/or/hub-id", device="cuda", max_batch_size=256)

The child is started with ``spawn`` (CUDA and threads rule out ``fork``), so a script that makes a
``ProcessBackend`` at import time needs the usual ``if __name__ == "__main__":`` guard.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import multiprocessing as mp
import os
import threading
from collections.abc import Sequence
from typing import Any

from longshort.agents._futures import await_all, wait_all
from longshort.agents.base import Backend, GenerationRequest, GenerationResult, TokenStream


class ProcessBackend(Backend):
    """A ``TransformersBackend`` served from a spawned child process (same arguments).

    ``num_threads`` sets the child's torch intra-op threads (useful on CPU, where two children
    would otherwise each claim every core). ``start_timeout_s`` bounds loading the model.
    """

    def __init__(
        self,
        model: str | os.PathLike[str],
        tokenizer: str | os.PathLike[str] | None = None,
        *,
        num_threads: int | None = None,
        start_timeout_s: float = 600.0,
        **backend_kwargs: Any,
    ) -> None:
        from longshort.agents._hf_load import _load_tokenizer

        if not isinstance(model, (str, os.PathLike)):
            raise TypeError("ProcessBackend loads the model in the child: pass a path or hub id, not an instance")
        self.model_id = os.fspath(model)
        self.tokenizer = _load_tokenizer(
            tokenizer if tokenizer is not None else model,
            revision=backend_kwargs.get("revision"),
            trust_remote_code=backend_kwargs.get("trust_remote_code", False),
        )
        self._pending: dict[int, concurrent.futures.Future[GenerationResult]] = {}
        self._streams: dict[int, TokenStream] = {}  # jobs whose request has an on_token hook
        self._replies: dict[int, concurrent.futures.Future[Any]] = {}
        self._ids = itertools.count()
        self._lock = threading.Lock()  # guards the pipe's send side and the two maps
        self._dead: str | None = None
        self._closed = False
        ctx = mp.get_context("spawn")  # fork is unsafe with CUDA and with threads
        self._conn, child_conn = ctx.Pipe(duplex=True)
        args = (child_conn, self.model_id, os.fspath(tokenizer) if tokenizer is not None else None)
        self._process = ctx.Process(
            target=_child_main, args=(*args, num_threads, backend_kwargs), name="ProcessBackend", daemon=True
        )
        self._process.start()
        child_conn.close()
        self._reader = threading.Thread(target=self._read_loop, name="ProcessBackend-reader", daemon=True)
        ready = self._request("ready", timeout=start_timeout_s, send=False)
        if "error" in ready:
            self._abort(ready["error"])
            raise _rebuild_error(ready)
        self.max_context = ready["max_context"]
        self.device = ready["device"]
        self.eos_token_ids = tuple(ready["eos_token_ids"])
        self._reader.start()

    # ------------------------------------------------------------------ public API

    @property
    def stats(self) -> dict[str, int]:
        """The child backend's counters (see ``TransformersBackend.stats``)."""
        return self._request("stats", timeout=30.0)

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        return wait_all(self._submit(requests), self._check_alive, self._cancel)

    async def agenerate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        return await await_all(self._submit(requests), self._check_alive, self._cancel)

    def close(self, timeout: float = 30.0) -> None:
        """Stop the child (politely, then by force); pending callers get a RuntimeError."""
        if self._closed:
            return
        self._closed = True
        try:
            with self._lock:
                self._conn.send(("close", None, None))
        except (OSError, ValueError, BrokenPipeError):
            pass
        self._process.join(timeout)
        self._shutdown("ProcessBackend was closed")

    def __del__(self) -> None:
        try:
            self.close(timeout=1.0)
        except Exception:
            pass

    # ------------------------------------------------------------------ parent side

    def _check_alive(self) -> None:
        if self._dead is not None:
            raise RuntimeError(f"ProcessBackend child is not running ({self._dead})")
        if not self._process.is_alive():
            self._shutdown(f"child process exited with code {self._process.exitcode}")
            raise RuntimeError(f"ProcessBackend child is not running ({self._dead})")

    def _submit(self, requests: Sequence[GenerationRequest]) -> list[concurrent.futures.Future[GenerationResult]]:
        if self._closed:
            raise RuntimeError("ProcessBackend is closed")
        self._check_alive()
        futures, payload = [], []
        with self._lock:
            for request in requests:
                job = next(self._ids)
                future: concurrent.futures.Future[GenerationResult] = concurrent.futures.Future()
                self._pending[job] = future
                futures.append(future)
                stream = TokenStream.of(request)
                if stream is not None:
                    self._streams[job] = stream
                payload.append((job, request.model_dump(), stream is not None))
            self._send("gen", None, payload)
        return futures

    def _cancel(self, futures: Sequence[concurrent.futures.Future[GenerationResult]]) -> None:
        """Tell the child to drop the rows of callers that stopped waiting (finished ones are ignored)."""
        mine = {id(f) for f in futures if not f.done()}
        if not mine:
            return
        with self._lock:
            jobs = [j for j, f in self._pending.items() if id(f) in mine]
            for job in jobs:
                self._pending.pop(job).cancel()
                self._streams.pop(job, None)
            if jobs and self._dead is None:
                try:
                    self._send("cancel", None, jobs)
                except RuntimeError:
                    pass

    def _request(self, kind: str, *, timeout: float, send: bool = True) -> Any:
        """A control message answered by one reply (``ready`` is sent by the child unasked)."""
        if not send:  # the reader is not running yet: read the reply here
            if not self._conn.poll(timeout):
                self._abort(f"no reply to {kind!r} within {timeout:.0f}s")
                raise TimeoutError(f"ProcessBackend: the child did not get ready within {timeout:.0f}s")
            try:
                _, _, reply = self._conn.recv()
            except (EOFError, OSError) as e:
                self._abort(f"child died while starting: {e!r}")
                raise RuntimeError(
                    f"ProcessBackend child exited while loading {self.model_id!r} (code {self._process.exitcode})"
                ) from e
            return reply
        self._check_alive()
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        with self._lock:
            rid = next(self._ids)
            self._replies[rid] = future
            self._send(kind, rid, None)
        return future.result(timeout=timeout)

    def _send(self, kind: str, rid: int | None, payload: Any) -> None:
        try:
            self._conn.send((kind, rid, payload))
        except (OSError, ValueError) as e:  # the pipe is gone: the child died
            raise RuntimeError(f"ProcessBackend child is not reachable: {e!r}") from e

    def _read_loop(self) -> None:
        reason = "child process ended"
        try:
            while True:
                kind, rid, payload = self._conn.recv()
                if kind == "piece":
                    stream = self._streams.get(rid)
                    if stream is not None:
                        stream.send(payload)  # guarded: a hook that raises is dropped, not the reader
                elif kind == "result":
                    with self._lock:
                        future = self._pending.pop(rid, None)
                        stream = self._streams.pop(rid, None)
                    if stream is not None and payload.get("finish_reason") != "error":
                        stream.finish(payload.get("text", ""))
                    if future is not None and not future.done():
                        result = GenerationResult.model_validate(payload)
                        try:
                            future.set_result(result)
                        except concurrent.futures.InvalidStateError:
                            pass
                else:
                    with self._lock:
                        reply = self._replies.pop(rid, None)
                    if reply is not None:
                        reply.set_result(payload)
        except (EOFError, OSError) as e:
            reason = f"child process ended ({type(e).__name__})"
        except Exception as e:  # a malformed message must not strand callers
            reason = f"reader failed: {e!r}"
        self._shutdown(reason)

    def _abort(self, reason: str) -> None:
        """A start that failed: stop the child for good."""
        self._closed = True
        self._shutdown(reason)

    def _shutdown(self, reason: str) -> None:
        """Mark the child dead and fail everything that waits on it (idempotent)."""
        with self._lock:
            if self._dead is None:
                self._dead = reason
            pending, self._pending = list(self._pending.values()), {}
            self._streams = {}
            replies, self._replies = list(self._replies.values()), {}
        for future in [*pending, *replies]:
            if not future.done():
                try:
                    future.set_exception(RuntimeError(f"ProcessBackend child is not running ({reason})"))
                except concurrent.futures.InvalidStateError:
                    pass
        if self._process.is_alive() and self._closed:
            self._process.terminate()
            self._process.join(5.0)
        try:
            self._conn.close()
        except OSError:
            pass


def _rebuild_error(reply: dict[str, str]) -> Exception:
    """The child's load error as the same exception type the in-process backend raises."""
    kinds = {"FileNotFoundError": FileNotFoundError, "ValueError": ValueError, "TypeError": TypeError}
    return kinds.get(reply.get("type", ""), RuntimeError)(reply["error"])


# ----------------------------------------------------------------------------------------------
# child side


def _child_request(job: int, fields: dict, streams: bool, send) -> GenerationRequest:
    """A request rebuilt in the child; one the parent streams sends its pieces back as ``piece`` messages."""
    request = GenerationRequest.model_validate(fields)
    if streams:
        request.on_token = lambda piece: send("piece", job, piece)
    return request


def _child_main(conn, model: str, tokenizer: str | None, num_threads: int | None, kwargs: dict) -> None:
    """Load the backend, answer ``ready``, then serve the parent's messages until ``close`` or EOF."""
    import torch

    from longshort.agents.hf import TransformersBackend

    if num_threads is not None:
        torch.set_num_threads(num_threads)
    send_lock = threading.Lock()

    def send(kind: str, rid: int | None, payload: Any) -> None:
        with send_lock:
            try:
                conn.send((kind, rid, payload))
            except (OSError, ValueError):  # the parent is gone; the recv loop will see EOF
                pass

    try:
        backend = TransformersBackend(model, tokenizer, **kwargs)
    except Exception as e:
        send("ready", None, {"error": str(e), "type": type(e).__name__})
        return
    send(
        "ready",
        None,
        {
            "max_context": backend.max_context,
            "device": str(backend.device),
            "eos_token_ids": list(backend.eos_token_ids),
        },
    )
    futures: dict[int, concurrent.futures.Future[GenerationResult]] = {}

    def reply(job: int, future: concurrent.futures.Future[GenerationResult]) -> None:
        futures.pop(job, None)
        if future.cancelled():
            return  # the parent stopped waiting and already resolved its side
        error = future.exception()
        result = GenerationResult(finish_reason="error", error=str(error)) if error else future.result()
        send("result", job, result.model_dump())

    try:
        while True:
            try:
                kind, rid, payload = conn.recv()
            except (EOFError, OSError):
                return
            if kind == "gen":
                jobs = [job for job, *_ in payload]
                try:
                    requests = [_child_request(job, r, streams, send) for job, r, streams in payload]
                    items = backend.submit(requests)
                except Exception as e:  # a closed or dead worker: answer every job, never strand one
                    items = [GenerationResult(finish_reason="error", error=f"{type(e).__name__}: {e}")] * len(jobs)
                for job, item in zip(jobs, items, strict=True):
                    if isinstance(item, GenerationResult):
                        send("result", job, item.model_dump())
                    else:
                        futures[job] = item
                        item.add_done_callback(lambda f, job=job: reply(job, f))
            elif kind == "cancel":
                for job in payload:
                    future = futures.pop(job, None)
                    if future is not None:
                        future.cancel()
            elif kind == "stats":
                send("reply", rid, backend.stats)
            elif kind == "close":
                return
    finally:
        backend.close()
