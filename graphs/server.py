"""Graph factories for ``langgraph.json`` (``langgraph dev`` / LangGraph Platform).

Two assistants, ``longshort`` (:func:`make_reasoner`, input ``{"question": …}``) and
``longshort_chat`` (:func:`make_chat_app`, input ``{"messages": […]}``), share one pair of loaded
agents.

Models come from the environment, so one deployment file serves any pair:

``LONGSHORT_LONG_MODEL``, ``LONGSHORT_SHORT_MODEL``
    The long and short models (names, folders, hub ids; see ``longshort.agents.loading``).
    Without ``LONGSHORT_LONG_MODEL`` the shipped testbed pair (reasoner + base) is served, offline.
``LONGSHORT_BACKEND``
    hf (default) | openai | vllm.
``LONGSHORT_BASE_URL``
    The server of the openai backend.
``LONGSHORT_MAX_TURNS``, ``LONGSHORT_MAX_TOKENS_PER_TURN``, ``LONGSHORT_MAX_TOTAL_TOKENS``
    The reasoner's budgets (unset: ``build_reasoner``'s defaults). An assistant or a run can
    override them with ``config={"configurable": {"max_turns": …, "max_tokens_per_turn": …,
    "max_total_tokens": …}}``; the models themselves are chosen only by the environment.
``LONGSHORT_LOAD_LOG``
    A file to which each model load appends one JSON line (``{"event": "load", "role", "model",
    "backend", "pid", "seconds"}``), for checking from outside how often a process loads.
``LONGSHORT_PRELOAD``
    ``0`` turns off the background load at server start (below).
``LONGSHORT_TRACES``
    A trace store (SQLite, ``longshort.store``) to which every finished episode is appended
    (run ``server``, source ``server``, the models and budgets as provenance), so that what the
    deployment served can be retrained on. The reasoner graph carries an :class:`EpisodeRecorder`
    callback in its config: LangGraph merges it into every run, the chat assistant's included
    (its reasoner is this graph).

The factories are ``async`` and never block the event loop. The server calls them for every
request (runs, schema and state reads), so the agents are loaded once per process and per model
configuration, in a worker thread (``asyncio.to_thread``), under a lock that makes concurrent
first requests wait for the one load instead of starting their own; later calls return the cached
graphs at once. Each load is also logged (logger ``longshort.graphs.server``, level INFO).

When langgraph-api loads this file by its path (as ``langgraph.json`` says), it starts loading the
environment's pair at once in a background thread, so that the first request usually finds the
models ready; importing ``longshort.graphs.server`` loads nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.runnables import RunnableConfig
from langgraph.graph.state import CompiledStateGraph

from longshort.agents.roles import Agent
from longshort.graphs.chat_app import build_chat_app
from longshort.graphs.reasoner import build_reasoner

logger = logging.getLogger("longshort.graphs.server")

LIMITS = ("max_turns", "max_tokens_per_turn", "max_total_tokens")


class ModelConfig(NamedTuple):
    """What identifies a loaded pair: the environment's model settings."""

    long_model: str | None
    short_model: str | None
    backend: str
    base_url: str | None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> ModelConfig:
        return cls(
            environ.get("LONGSHORT_LONG_MODEL") or None,  # None: the shipped testbed pair
            environ.get("LONGSHORT_SHORT_MODEL") or None,
            environ.get("LONGSHORT_BACKEND") or "hf",
            environ.get("LONGSHORT_BASE_URL") or None,
        )


_lock = threading.Lock()  # a thread lock, not an asyncio one: waiters wait in their worker thread
_agents: dict[ModelConfig, tuple[Agent, Agent]] = {}
_graphs: dict[tuple[str, ModelConfig, tuple[tuple[str, int], ...], str | None], CompiledStateGraph] = {}
_stores: dict[str, Any] = {}  # one TraceStore per path and process (its connection is thread-safe)
_stores_lock = threading.Lock()  # not _lock: that one is held for a whole model load


class EpisodeRecorder(BaseCallbackHandler):
    """Appends the episode of each finished run of the graph whose config carries it.

    A callback rather than a node, so the graph (its nodes, its schema, what the server shows) is
    the one ``build_reasoner`` built. The handler is inherited by the graph's child runs; a run is
    this graph's own when its parent is not one of the runs the handler has seen start (the root
    run, or the reasoner's run inside the chat graph). A failed append is logged and the served
    run is unaffected.
    """

    def __init__(self, path: str, *, long_model: str, short_model: str, settings: Mapping[str, Any]) -> None:
        self.path, self.long_model, self.short_model = path, long_model, short_model
        self.settings = dict(settings)
        self._lock = threading.Lock()
        self._open: set[UUID] = set()
        self._roots: set[UUID] = set()

    def on_chain_start(
        self, serialized: Any, inputs: Any, *, run_id: UUID, parent_run_id: UUID | None = None, **kw: Any
    ):
        with self._lock:
            if parent_run_id is None or parent_run_id not in self._open:
                self._roots.add(run_id)
            self._open.add(run_id)

    def on_chain_error(self, error: BaseException, *, run_id: UUID, **kw: Any) -> None:
        with self._lock:
            self._open.discard(run_id)
            self._roots.discard(run_id)

    def on_chain_end(self, outputs: Any, *, run_id: UUID, **kw: Any) -> None:
        with self._lock:
            self._open.discard(run_id)
            if run_id not in self._roots:
                return
            self._roots.discard(run_id)
        if isinstance(outputs, Mapping) and outputs.get("id") and outputs.get("status"):
            self.record(outputs)

    def record(self, state: Mapping[str, Any]) -> None:
        from longshort.graphs.reasoner import episode_from_state

        try:
            store = _store(self.path)
            store.append(
                [episode_from_state(dict(state))],
                run="server",
                source="server",
                command="langgraph server (longshort.graphs.server)",
                long_model=self.long_model,
                short_model=self.short_model,
                config=self.settings,
            )
        except Exception:
            logger.exception("appending an episode to the trace store %s failed", self.path)


def _store(path: str) -> Any:
    from longshort.store import TraceStore

    with _stores_lock:
        if path not in _stores:
            _stores[path] = TraceStore(path)
        return _stores[path]


def traces_path(environ: Mapping[str, str] = os.environ) -> str | None:
    """``LONGSHORT_TRACES`` as an absolute path (None: episodes are not stored)."""
    value = environ.get("LONGSHORT_TRACES")
    return str(Path(value).expanduser().resolve()) if value else None


def _log_load(role: str, agent: Agent, config: ModelConfig, seconds: float) -> None:
    logger.info("loaded the %s model %s (%s backend) in %.1fs", role, agent.backend.model_id, config.backend, seconds)
    path = os.environ.get("LONGSHORT_LOAD_LOG")
    if path:
        line = {
            "event": "load",
            "role": role,
            "model": agent.backend.model_id,
            "backend": config.backend,
            "pid": os.getpid(),
            "seconds": round(seconds, 3),
        }
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")


def load_cached(config: ModelConfig) -> tuple[Agent, Agent]:
    """The pair for ``config``, loaded on the first call only (blocking: call it in a thread)."""
    with _lock:
        if config not in _agents:
            from longshort.agents.loading import load_agents

            start = time.perf_counter()
            long, short = load_agents(
                config.long_model, config.short_model, backend=config.backend, base_url=config.base_url
            )
            assert long is not None and short is not None
            seconds = time.perf_counter() - start
            _log_load("long", long, config, seconds)
            if short.backend is not long.backend:  # one model playing both roles is one load
                _log_load("short", short, config, seconds)
            _agents[config] = (long, short)
        return _agents[config]


async def shared_agents(config: ModelConfig | None = None) -> tuple[Agent, Agent]:
    """The pair of ``config`` (default: the environment's), without blocking the event loop."""
    config = config or ModelConfig.from_env()
    cached = _agents.get(config)
    if cached is not None:
        return cached
    return await asyncio.to_thread(load_cached, config)


_preloading: set[ModelConfig] = set()


def preload(config: ModelConfig | None = None) -> None:
    """Start loading the pair of ``config`` (default: the environment's) in a background thread.

    Idempotent; a failure is logged and the first request that needs the pair tries again.
    """
    config = config or ModelConfig.from_env()
    with _lock:
        if config in _agents or config in _preloading:
            return
        _preloading.add(config)

    def run() -> None:
        try:
            load_cached(config)
        except Exception:
            logger.exception("preloading the models failed; the first request will try again")

    threading.Thread(target=run, name="longshort-preload", daemon=True).start()


def _positive_int(name: str, value: Any) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = 0
    if isinstance(value, bool) or number < 1 or (isinstance(value, float) and value != number):
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return number


def limits(config: RunnableConfig | None = None) -> dict[str, int]:
    """The reasoner's budgets: ``LONGSHORT_MAX_*`` env vars, overridden by ``configurable`` keys."""
    out: dict[str, int] = {}
    for name in LIMITS:
        value = os.environ.get(f"LONGSHORT_{name.upper()}")
        if value:
            out[name] = _positive_int(f"LONGSHORT_{name.upper()}", value)
    configurable = (config or {}).get("configurable") or {}
    for name in LIMITS:
        if configurable.get(name) is not None:
            out[name] = _positive_int(name, configurable[name])
    return out


async def make_reasoner(config: RunnableConfig) -> CompiledStateGraph:
    """The ``longshort`` assistant: the two-agent reasoner (input ``{"question": …}``)."""
    models, budgets, traces = ModelConfig.from_env(), limits(config), traces_path()
    key = ("reasoner", models, tuple(sorted(budgets.items())), traces)
    if key not in _graphs:
        long, short = await shared_agents(models)
        graph = build_reasoner(long, short, **budgets)
        if traces is not None:
            long_id, short_id = long.backend.model_id, short.backend.model_id
            settings = {"models": models._asdict(), "limits": budgets}
            recorder = EpisodeRecorder(traces, long_model=long_id, short_model=short_id, settings=settings)
            graph = graph.with_config(callbacks=[recorder])
        _graphs.setdefault(key, graph)
    return _graphs[key]


async def make_chat_app(config: RunnableConfig) -> CompiledStateGraph:
    """The ``longshort_chat`` assistant: the reasoner inside a ``MessagesState`` chat graph."""
    models, budgets = ModelConfig.from_env(), limits(config)
    key = ("chat", models, tuple(sorted(budgets.items())), traces_path())
    if key not in _graphs:
        reasoner = await make_reasoner(config)
        _graphs.setdefault(key, build_chat_app(reasoner))
    return _graphs[key]


if __name__ != "longshort.graphs.server":
    # Loaded by file path (langgraph.json's "./graphs/server.py:…"): langgraph-api executes the
    # file afresh for each graph it names, so each would get its own cache. Serve the installed
    # module's factories instead: one cache per process, shared by both assistants.
    from longshort.graphs.server import make_chat_app, make_reasoner  # noqa: E402, F401, F811
    from longshort.graphs.server import preload as _preload  # noqa: E402

    if os.environ.get("LONGSHORT_PRELOAD", "1") != "0":
        _preload()
