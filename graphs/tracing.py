"""Each agent turn as a LangChain chat-model run: LangSmith keeps it, ``stream_mode="messages"`` streams it.

**Turn runs.** Every attempt of a turn is one ``llm`` run named ``{agent}_turn``, started with
``on_chat_model_start`` so that it is a chat-model run to every handler:

* inputs: the agent's view as messages: its system prompt, the question and, for a token-level
  agent, the document so far as the assistant message it continues (with the opening tag a
  repair prefilled); a chat agent's view is its request's messages;
* metadata: ``agent``, ``episode_id``, ``turn``, ``attempt``, ``model``, ``prompt_tokens`` (the
  view's length in tokens), ``forced_ids``/``forced_text`` when a repair prefilled the opening tag
  (they lead the turn's ids in the Episode), ``tokenizer_fingerprint``; when it ends,
  ``completion_tokens`` and ``finish_reason``; the tags ``longshort`` and ``agent:{agent}``;
* tokens: each decoded text piece goes to ``on_llm_new_token`` as an ``AIMessageChunk`` while the
  backend decodes (the request's ``on_token`` hook; see ``longshort.agents.base``), so LangGraph's
  ``stream_mode="messages"`` yields them with the run's metadata (``agent``, ``turn``,
  ``episode_id``, ``langgraph_node``…). Pieces are decoded only when a handler listens for
  them (a tracer alone does not: it keeps only the first token's time), so a graph run without
  callbacks (RL rollouts, evaluation) pays nothing;
* outputs: an ``LLMResult`` whose ``ChatGeneration`` holds ``AIMessage(text,
  usage_metadata=…, response_metadata={"finish_reason", "model_name", "token_ids",
  "logprobs", "logprobs_dtype"})``, plus ``usage_metadata`` at the top of the outputs. Logprobs
  that are float32 values (those of the local backends) are written as their shortest float32
  decimals (``logprobs_dtype: "float32"``; cast back through float32 they are bit-exact). A
  failed request ends its run with ``on_llm_error``.

**The token payload** (``token_ids`` and ``logprobs`` in the message's ``response_metadata``) is
what lets an export of a project's runs rebuild each Episode token-exactly
(:func:`turns_from_runs`, :func:`episodes_from_runs`). It is on by default for token-level
backends and off for chat backends (which have no ids). ``LONGSHORT_TRACE_TOKENS=1`` / ``=0``
forces it on / off; a run's ``config["configurable"]["trace_tokens"]`` (true/false) wins over
the environment.

**Inner runs.** A backend that calls LangChain itself (``ChatModelBackend`` and its
``ChatOpenAI``) runs with no ambient callbacks and LangSmith tracing off: the turn run is the
trace of that call, and its tokens are not streamed twice.

**Node runs.** LangGraph traces every node as a chain run whose inputs are the whole state, so
each run repeated the ``turns`` list (ids and logprobs included). :func:`light_node_traces` gives
every node a ``TracePolicy`` (LangGraph >= 1.2) that records the state without ``turns`` (their
count instead) and a node's new turns without their text, ids and logprobs (its turn runs hold
those), and stops tracing the routing functions (their input was the whole state too). The
root graph run is LangGraph's and keeps its whole output (the Episode once).
"""

from __future__ import annotations

import asyncio
import contextvars
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from langchain_core.callbacks import AsyncCallbackHandler, BaseCallbackHandler
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, convert_to_messages
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, LLMResult
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.runnables.config import (
    ensure_config,
    get_async_callback_manager_for_config,
    get_callback_manager_for_config,
    merge_configs,
    var_child_runnable_config,
)
from langchain_core.tracers.base import AsyncBaseTracer, BaseTracer

from longshort.agents.base import GenerationRequest, GenerationResult
from longshort.protocol import parse_turn
from longshort.trace import Episode, Turn, document_text

if TYPE_CHECKING:
    from langgraph.graph import StateGraph

    from longshort.agents.base import Backend
    from longshort.agents.roles import Agent

__all__ = [
    "TRACE_TOKENS_ENV",
    "atraced_generate",
    "episodes_from_runs",
    "light_node_traces",
    "node_body",
    "trace_tokens",
    "traced_generate",
    "turn_view",
    "turns_from_runs",
]

#: the environment switch of the token payload: 1/true/on or 0/false/off (unset: per backend)
TRACE_TOKENS_ENV = "LONGSHORT_TRACE_TOKENS"
#: the ``configurable`` key that sets the token payload for one run (wins over the environment)
TRACE_TOKENS_KEY = "trace_tokens"

View = Sequence[Mapping[str, str]] | Callable[[], Sequence[Mapping[str, str]]] | None
_DONE = object()
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


# ----------------------------------------------------------------------------------------------
# what a turn run records


def trace_tokens(backend: Backend, config: RunnableConfig | None = None) -> bool:
    """Whether turn runs carry token ids and logprobs (see the module docstring)."""
    value = ((config or {}).get("configurable") or {}).get(TRACE_TOKENS_KEY)
    if value is None:
        value = os.environ.get(TRACE_TOKENS_ENV)
    if isinstance(value, str):
        value = value.strip().lower()
        value = True if value in _TRUE else False if value in _FALSE else None
    return backend.token_level if value is None else bool(value)


def turn_view(agent: Agent, state: Mapping[str, Any]) -> list[dict[str, str]]:
    """The agent's view as messages: system prompt, question, and the document it continues."""
    question, turns = state["question"], list(state.get("turns") or [])
    if not agent.backend.token_level:
        return agent.view_messages(question, document_text(turns))
    messages = agent.prompt_messages(question)
    document = document_text(turns)
    if document:
        messages.append({"role": "assistant", "content": document})
    return messages


def _turn_config(config: RunnableConfig | None, agent: str, metadata: dict[str, Any]) -> RunnableConfig:
    return merge_configs(config, {"tags": [f"agent:{agent}", "longshort"], "metadata": {"agent": agent, **metadata}})


def _forced(backend: Backend, request: GenerationRequest, metadata: dict[str, Any]) -> list[int]:
    """Ids a repair prefilled after the view (``prompt_tokens`` is the view's length)."""
    n = metadata.get("prompt_tokens")
    if not metadata.get("attempt") or request.prompt_ids is None or not isinstance(n, int):
        return []
    return list(request.prompt_ids[n:])


def _start_metadata(backend: Backend, request: GenerationRequest, metadata: dict[str, Any], tokens: bool) -> dict:
    extra: dict[str, Any] = {}
    forced = _forced(backend, request, metadata)
    if forced:
        extra["forced_ids"] = forced
        extra["forced_text"] = backend.tokenizer.decode(forced, skip_special_tokens=False)
    if tokens and backend.token_level:
        extra["tokenizer_fingerprint"] = backend.tokenizer_fingerprint
    return extra


def _messages(backend: Backend, request: GenerationRequest, view: View, forced_text: str | None) -> list[BaseMessage]:
    if request.messages is not None:
        dicts = list(request.messages)
    elif view is not None:
        dicts = [dict(m) for m in (view() if callable(view) else view)]
        if forced_text:  # the model continues the document with the prefilled tag
            if dicts and dicts[-1].get("role") == "assistant":
                dicts[-1]["content"] += forced_text
            else:
                dicts.append({"role": "assistant", "content": forced_text})
    else:  # no view given: the prompt as the model's tokenizer renders it
        text = backend.tokenizer.decode(request.prompt_ids or [], skip_special_tokens=False)
        dicts = [{"role": "user", "content": text}]
    return convert_to_messages(dicts)


def _invocation_params(backend: Backend, request: GenerationRequest) -> dict[str, Any]:
    return {
        "model": backend.model_id,
        "backend": type(backend).__name__,
        "max_new_tokens": request.max_new_tokens,
        "temperature": request.temperature,
        "top_p": request.top_p,
        "seed": request.seed,
        "stop": list(request.stop),
    }


def _usage(request: GenerationRequest, result: GenerationResult) -> dict[str, int]:
    prompt = len(request.prompt_ids or [])
    return {"input_tokens": prompt, "output_tokens": result.num_tokens, "total_tokens": prompt + result.num_tokens}


def _short_logprobs(logprobs: list[float] | None) -> tuple[list[float] | None, bool]:
    """Logprobs as the shortest decimals of their float32 values, when they are all float32 values.

    Local backends compute logprobs in float32, so each is a float32 value held in a double; its
    shortest float32 decimal (about 10 characters instead of 20) names it exactly. The flag
    says so, and :func:`turns_from_runs` casts back through float32: bit-exact, a third fewer bytes.
    """
    if not logprobs:
        return logprobs, False
    import numpy as np

    values = np.asarray(logprobs, dtype=np.float32)
    if not np.array_equal(values.astype(np.float64), np.asarray(logprobs, dtype=np.float64)):
        return logprobs, False  # not float32 values: kept as they are
    return [float(str(v)) for v in values], True


def _float32(values: list[float]) -> list[float]:
    import numpy as np

    return np.asarray(values, dtype=np.float32).astype(np.float64).tolist()


def _llm_result(backend: Backend, request: GenerationRequest, result: GenerationResult, message_id: str, tokens: bool):
    meta: dict[str, Any] = {"finish_reason": result.finish_reason, "model_name": backend.model_id}
    if tokens:
        meta["token_ids"] = result.token_ids
        meta["logprobs"], short = _short_logprobs(result.logprobs)
        if short:
            meta["logprobs_dtype"] = "float32"
    message = AIMessage(
        content=result.text, id=message_id, usage_metadata=_usage(request, result), response_metadata=meta
    )
    return LLMResult(generations=[[ChatGeneration(message=message)]], llm_output={"model_name": backend.model_id})


def _tracer_runs(run_manager: Any) -> list[Any]:
    """The run objects the tracers among ``run_manager``'s handlers keep for it."""
    runs = []
    for handler in run_manager.handlers:
        if isinstance(handler, BaseTracer | AsyncBaseTracer):
            run = handler.run_map.get(str(run_manager.run_id))
            if run is not None:
                runs.append(run)
    return runs


def _annotate(run_manager: Any, request: GenerationRequest, result: GenerationResult) -> None:
    """End-of-turn facts in the run's metadata, and the usage at the top of its outputs."""
    for run in _tracer_runs(run_manager):
        run.extra.setdefault("metadata", {}).update(
            completion_tokens=result.num_tokens, finish_reason=result.finish_reason
        )
        if result.error:
            run.extra["metadata"]["error"] = result.error
        run.outputs = {**(run.outputs or {}), "usage_metadata": _usage(request, result)}
        # the view was sent when the run started: LangChainTracer re-sends the inputs with the
        # run's end unless this flag says they were already there
        run.extra["inputs_is_truthy"] = True


def _listens(manager: Any) -> bool:
    """Does any handler want the pieces? Streaming handlers do; tracers keep only the first's time."""
    for handler in manager.handlers:
        if getattr(handler, "ignore_llm", False):
            continue
        if hasattr(handler, "tap_output_iter"):  # LangGraph's messages mode, astream_events, astream_log
            return True
        if isinstance(handler, BaseTracer | AsyncBaseTracer):
            continue
        method = type(handler).on_llm_new_token
        if method not in (BaseCallbackHandler.on_llm_new_token, AsyncCallbackHandler.on_llm_new_token):
            return True
    return False


def _chunk(piece: str, message_id: str) -> ChatGenerationChunk:
    return ChatGenerationChunk(message=AIMessageChunk(content=piece, id=message_id))


class _Pieces:
    """What was streamed of one attempt, so that the end can send the rest (or all of it)."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    def rest(self, text: str) -> str:
        sent = "".join(self.parts)
        return text[len(sent) :] if text.startswith(sent) else ""


# ----------------------------------------------------------------------------------------------
# running the backend quietly (no ambient callbacks, no LangSmith tracing of inner runs)


def _quiet_call(fn: Callable[[], Any]) -> Any:
    from langsmith.run_helpers import tracing_context

    def call() -> Any:
        var_child_runnable_config.set(None)
        with tracing_context(enabled=False):
            return fn()

    return contextvars.copy_context().run(call)


async def _aquiet_call(fn: Callable[[], Any]) -> Any:
    """Await ``fn()`` in its own task, whose context has no ambient callbacks and no tracing."""
    from langsmith.run_helpers import tracing_context

    var_child_runnable_config.set(None)  # this task's copy of the context only
    with tracing_context(enabled=False):
        return await fn()


# ----------------------------------------------------------------------------------------------
# the turn run


def _turn_start(manager, backend, request, config, agent, metadata, view) -> tuple[bool, list, dict[str, Any]]:
    """What a turn run starts with, sync or async: whether it carries the token payload, the agent's
    view as messages and the other ``on_chat_model_start`` arguments; the start metadata goes onto
    ``manager``."""
    tokens = trace_tokens(backend, config)
    extra = _start_metadata(backend, request, metadata, tokens)
    manager.add_metadata(extra)
    messages = _messages(backend, request, view, extra.get("forced_text"))
    kwargs = {"name": f"{agent}_turn", "invocation_params": _invocation_params(backend, request)}
    return tokens, messages, kwargs


def traced_generate(
    backend: Backend,
    request: GenerationRequest,
    config: RunnableConfig | None,
    agent: str,
    metadata: dict[str, Any],
    *,
    view: View = None,
) -> GenerationResult:
    """Generate one request as a chat-model run of ``agent`` (see the module docstring)."""
    manager = get_callback_manager_for_config(_turn_config(config, agent, metadata))
    if not manager.handlers:  # nobody records or listens: no run, no pieces
        return backend.generate([request])[0]
    tokens, messages, start = _turn_start(manager, backend, request, config, agent, metadata, view)
    run = manager.on_chat_model_start(None, [messages], **start)[0]
    message_id = f"lc_run--{run.run_id}"
    pieces = _Pieces()
    if _listens(manager):

        def on_token(piece: str) -> None:  # called in the backend's decoding thread
            pieces.parts.append(piece)
            run.on_llm_new_token(piece, chunk=_chunk(piece, message_id))

        request = request.model_copy(update={"on_token": on_token})
    try:
        result = _quiet_call(lambda: backend.generate([request])[0])
    except BaseException as e:
        run.on_llm_error(e)
        raise
    _annotate(run, request, result)
    if result.finish_reason == "error":
        run.on_llm_error(RuntimeError(result.error or "backend error"))
        return result
    if request.on_token is not None and (rest := pieces.rest(result.text)):
        run.on_llm_new_token(rest, chunk=_chunk(rest, message_id))  # a backend that does not stream
    run.on_llm_end(_llm_result(backend, request, result, message_id, tokens))
    return result


async def atraced_generate(
    backend: Backend,
    request: GenerationRequest,
    config: RunnableConfig | None,
    agent: str,
    metadata: dict[str, Any],
    *,
    view: View = None,
) -> GenerationResult:
    """``traced_generate`` on the event loop: pieces reach the handlers while the backend decodes.

    The backend calls the hook from its own thread; each piece is handed to the loop
    (``call_soon_threadsafe``) and forwarded to the async run manager in order, as it comes.
    """
    manager = get_async_callback_manager_for_config(_turn_config(config, agent, metadata))
    if not manager.handlers:
        return (await backend.agenerate([request]))[0]
    tokens, messages, start = _turn_start(manager, backend, request, config, agent, metadata, view)
    run = (await manager.on_chat_model_start(None, [messages], **start))[0]
    message_id = f"lc_run--{run.run_id}"
    pieces = _Pieces()
    queue: asyncio.Queue[Any] = asyncio.Queue()
    if _listens(manager):
        loop = asyncio.get_running_loop()

        def on_token(piece: str) -> None:  # any thread
            try:
                loop.call_soon_threadsafe(queue.put_nowait, piece)
            except RuntimeError:  # the loop is gone (the caller stopped waiting): nobody to tell
                pass

        request = request.model_copy(update={"on_token": on_token})
    sent = request

    async def generate() -> GenerationResult:
        return (await backend.agenerate([sent]))[0]

    task = asyncio.ensure_future(_aquiet_call(generate))
    task.add_done_callback(lambda _: queue.put_nowait(_DONE))
    try:
        while (piece := await queue.get()) is not _DONE:
            pieces.parts.append(piece)
            await run.on_llm_new_token(piece, chunk=_chunk(piece, message_id))
        result = task.result()
    except BaseException as e:
        task.cancel()
        await run.on_llm_error(e)
        raise
    _annotate(run, request, result)
    if result.finish_reason == "error":
        await run.on_llm_error(RuntimeError(result.error or "backend error"))
        return result
    if request.on_token is not None and (rest := pieces.rest(result.text)):
        await run.on_llm_new_token(rest, chunk=_chunk(rest, message_id))
    await run.on_llm_end(_llm_result(backend, request, result, message_id, tokens))
    return result


# ----------------------------------------------------------------------------------------------
# node runs


class node_body(Runnable):  # noqa: N801 - used like a function: node_body(run, arun, name=...)
    """A graph node's body with no run of its own: LangGraph's node run already is its run.

    (A ``RunnableLambda`` node is traced twice: LangGraph's node run, then the lambda's own run
    inside it, each with the whole state as inputs.) ``func(state, config)`` runs for ``invoke``,
    ``afunc(state, config)`` for ``ainvoke``; the config is the node's, so the runs the body
    starts (the turn runs) are children of the node run.
    """

    def __init__(self, func: Callable[..., Any], afunc: Callable[..., Any], *, name: str) -> None:
        self.func, self.afunc, self.name = func, afunc, name

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        return self.func(input, ensure_config(config))

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        return await self.afunc(input, ensure_config(config))


_HEAVY_TURN_FIELDS = {"text", "token_ids", "logprobs"}


def _turn_summary(turn: Any) -> Any:
    if isinstance(turn, Turn):
        return turn.model_dump(mode="json", exclude=_HEAVY_TURN_FIELDS)
    if isinstance(turn, Mapping):
        return {k: v for k, v in turn.items() if k not in _HEAVY_TURN_FIELDS}
    return turn


def _light_inputs(value: Any) -> Any:
    """A node's input state as traced: everything but ``turns``, which becomes their count."""
    if not isinstance(value, Mapping) or "turns" not in value:
        return value
    out = {k: v for k, v in value.items() if k != "turns"}
    out["num_turns"] = len(value["turns"] or [])
    return out


def _light_outputs(value: Any) -> Any:
    """A node's update as traced: its new turns without text, ids and logprobs (the turn runs have them)."""
    if not isinstance(value, Mapping) or not value.get("turns"):
        return value
    return {**value, "turns": [_turn_summary(t) for t in value["turns"]]}


def light_node_traces(builder: StateGraph) -> StateGraph:
    """Before ``compile``: node runs record only what they add, routing functions are not traced.

    Nodes that have a ``trace_policy`` already keep theirs. Without ``langgraph.types.TracePolicy``
    (LangGraph < 1.2) the nodes are left as they are.
    """
    try:
        from langgraph.types import TracePolicy
    except ImportError:
        return builder
    policy = TracePolicy(process_inputs=_light_inputs, process_outputs=_light_outputs)
    for spec in builder.nodes.values():
        if getattr(spec, "trace_policy", "missing") is None:
            spec.trace_policy = policy
    for branches in builder.branches.values():
        for branch in branches.values():
            if getattr(branch.path, "trace", None) is True:  # LangGraph's RunnableCallable of the function
                branch.path.trace = False
    return builder


# ----------------------------------------------------------------------------------------------
# rebuilding episodes from exported runs


def _get(run: Any, key: str) -> Any:
    return run.get(key) if isinstance(run, Mapping) else getattr(run, key, None)


def _metadata(run: Any) -> dict[str, Any]:
    extra = _get(run, "extra") or {}
    return dict(extra.get("metadata") or {})


def _message_fields(run: Any) -> dict[str, Any]:
    """The generated message's fields (``content``, ``response_metadata``, ``usage_metadata``)."""
    outputs = _get(run, "outputs") or {}
    try:
        message = outputs["generations"][0][0]["message"]
    except (KeyError, IndexError, TypeError):
        return {}
    if isinstance(message, BaseMessage):
        return message.model_dump()
    return dict(message.get("kwargs", message))


def _time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and value:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    return None


def _is_turn_run(run: Any) -> bool:
    meta = _metadata(run)
    return _get(run, "run_type") == "llm" and {"agent", "episode_id", "turn", "attempt"} <= meta.keys()


def turns_from_runs(runs: Iterable[Any]) -> dict[str, list[Turn]]:
    """Each episode's turns, rebuilt from its turn runs (dicts of an export, or ``Run`` objects).

    Per turn the last attempt is kept, its ids preceded by the ids a repair prefilled (as the
    graph does); earlier attempts count as discarded tokens. Token ids and logprobs are there
    when the runs were recorded with the token payload; ``kind`` and ``error`` are parsed again.
    """
    attempts: dict[tuple[str, int], list[Any]] = {}
    for run in runs:
        if _is_turn_run(run) and not _get(run, "error"):
            meta = _metadata(run)
            attempts.setdefault((str(meta["episode_id"]), int(meta["turn"])), []).append(run)
    episodes: dict[str, list[Turn]] = {}
    for (episode_id, _), group in sorted(attempts.items()):
        group.sort(key=lambda r: _metadata(r)["attempt"])
        last, meta = group[-1], _metadata(group[-1])
        fields = _message_fields(last)
        response = fields.get("response_metadata") or {}
        forced = list(meta.get("forced_ids") or [])
        ids, logprobs = response.get("token_ids"), response.get("logprobs")
        if logprobs and response.get("logprobs_dtype") == "float32":
            logprobs = _float32(logprobs)
        text = (meta.get("forced_text") or "") + str(fields.get("content") or "")
        usage = fields.get("usage_metadata") or {}
        parsed = parse_turn(meta["agent"], text)
        start, end = _time(_get(group[0], "start_time")), _time(_get(last, "end_time"))
        turn = Turn(
            agent=meta["agent"],
            text=text,
            token_ids=forced + list(ids or []),
            logprobs=None if logprobs is None else [0.0] * len(forced) + list(logprobs),
            num_tokens=int(usage.get("output_tokens") or 0) + len(forced),
            prompt_tokens=int(meta.get("prompt_tokens") or 0),
            finish_reason=meta.get("finish_reason") or response.get("finish_reason") or "stop",
            kind=parsed.kind,
            error=parsed.error,
            attempts=len(group),
            discarded_tokens=sum(int(_metadata(r).get("completion_tokens") or 0) for r in group[:-1]),
            forced_tokens=len(forced),
            wall_time=(end - start).total_seconds() if start and end else 0.0,
            model_id=str(meta.get("model") or ""),
            model_fingerprint=meta.get("tokenizer_fingerprint"),
        )
        episodes.setdefault(episode_id, []).append(turn)
    return episodes


def episodes_from_runs(runs: Iterable[Any]) -> list[Episode]:
    """Episodes rebuilt from an export: turns from the turn runs (:func:`turns_from_runs`).

    The question is the first turn's user message; the reference, status, answer and error come
    from the graph's root run when the export has it (its outputs hold the episode's ``id``), else
    the answer is parsed from the last turn and the status is ``answered`` or ``max_turns``.
    """
    runs = list(runs)
    roots: dict[str, Mapping[str, Any]] = {}
    views: dict[str, str] = {}
    for run in runs:
        outputs = _get(run, "outputs") or {}
        if _get(run, "parent_run_id") is None and isinstance(outputs, Mapping) and outputs.get("id"):
            roots[str(outputs["id"])] = outputs
        if _is_turn_run(run) and _metadata(run)["turn"] == 0:
            messages = (_get(run, "inputs") or {}).get("messages") or [[]]
            for message in messages[0]:
                fields = message.get("kwargs", message) if isinstance(message, Mapping) else {}
                if fields.get("type") == "human" or message.get("id", [""])[-1:] == ["HumanMessage"]:
                    views[str(_metadata(run)["episode_id"])] = str(fields.get("content", ""))
                    break
    episodes = []
    for episode_id, turns in turns_from_runs(runs).items():
        root = roots.get(episode_id, {})
        last = parse_turn(turns[-1].agent, turns[-1].text) if turns else None
        answer = root.get("answer", last.answer if last is not None and last.kind == "answer" else None)
        episodes.append(
            Episode(
                id=episode_id,
                question=root.get("question") or views.get(episode_id, ""),
                reference=root.get("reference"),
                answer=answer,
                status=root.get("status") or ("answered" if answer is not None else "max_turns"),
                error=root.get("error"),
                turns=turns,
            )
        )
    return episodes
