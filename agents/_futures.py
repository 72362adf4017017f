"""Waiting on a worker's futures without hanging on a worker that died.

Both local backends hand each request to a worker (a thread, or a child process) and wait on a
future per request. A worker that dies without resolving them would leave callers waiting forever,
so the wait wakes up every ``POLL_S`` seconds to ask ``alive`` (which raises if the worker is
gone), and a caller that stops waiting (an exception, a cancelled task) gives its rows back
through ``cancel``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")

#: how often a waiting caller checks that the worker is still alive
POLL_S = 0.25


def wait_all(
    futures: Sequence[concurrent.futures.Future[T]],
    alive: Callable[[], None],
    cancel: Callable[[Sequence[concurrent.futures.Future[T]]], None],
) -> list[T]:
    """Block until every future is done; their results in order (the first error is raised)."""
    try:
        pending = set(futures)
        while pending:
            _, pending = concurrent.futures.wait(pending, timeout=POLL_S)
            if pending:
                alive()
    finally:
        cancel(futures)  # a no-op for finished ones; frees the rows if we were interrupted
    return [f.result() for f in futures]


async def await_all(
    futures: Sequence[concurrent.futures.Future[T]],
    alive: Callable[[], None],
    cancel: Callable[[Sequence[concurrent.futures.Future[T]]], None],
) -> list[T]:
    """Like ``wait_all`` without blocking the event loop; cancelling the task frees the rows."""
    wrapped = [asyncio.wrap_future(f) for f in futures]
    try:
        pending: set[asyncio.Future[T]] = set(wrapped)
        while pending:
            _, pending = await asyncio.wait(pending, timeout=POLL_S)
            if pending:
                alive()
    except BaseException:
        cancel(futures)
        raise
    errors = [w.exception() for w in wrapped]  # retrieve all, so asyncio does not warn
    first = next((e for e in errors if e is not None), None)
    if first is not None:
        raise first
    return [w.result() for w in wrapped]
