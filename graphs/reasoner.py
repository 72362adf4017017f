"""The Long⊗Short reasoner as a compiled LangGraph graph.

    START -> start -> long -> (short | finish);  short -> (long | finish);  finish -> END

The long agent always opens; the short agent either answers (``</answer>``, the episode ends) or
hands back (``</rethink>``). Every stop is a recorded status, never an exception, unless the
caller asks for backend errors to be raised (``raise_backend_errors=True``).
"""

from __future__ import annotations

import functools
import uuid
from typing import Any, Literal

from langchain_core.runnables import Runnable, RunnableConfig
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Checkpointer

from longshort.agents.base import GenerationResult
from longshort.agents.roles import Agent
from longshort.errors import BackendError
from longshort.graphs.state import ReasonerInput, ReasonerOutput, ReasonerState
from longshort.graphs.tracing import atraced_generate, light_node_traces, node_body, traced_generate, turn_view
from longshort.graphs.turn import TurnStep
from longshort.limits import MAX_TOKENS_PER_TURN, MAX_TOTAL_TOKENS, MAX_TURNS, Limits
from longshort.trace import Episode


def _validate_question(state: ReasonerState, long: Agent) -> dict[str, Any]:
    question = state.get("question")
    if not isinstance(question, str):
        raise TypeError(f"question must be a string, got {type(question).__name__}")
    if not question.strip():
        raise ValueError("question is empty")
    backend = long.backend
    if backend.token_level and backend.max_context is not None:
        n = len(long.prompt_ids(question))
        if n >= backend.max_context:
            raise ValueError(
                f"question does not fit: the long agent's prompt is {n} tokens, "
                f"its model's context is {backend.max_context}"
            )
    choices = state.get("choices")
    if choices is not None and (not isinstance(choices, str) or not choices.isalpha()):
        raise ValueError(f"choices must be letters such as 'ABCD', got {choices!r}")
    return {
        "id": state.get("id") or uuid.uuid4().hex,
        "turns": None,  # a new episode on this thread starts a new document
        "status": None,
        "answer": None,
        "error": None,
    }


def _finish(state: ReasonerState) -> dict[str, Any]:
    episode = episode_from_state(state)
    return {"tokens": episode.tokens.model_dump()}


def episode_from_state(state: dict[str, Any]) -> Episode:
    """The ``Episode`` of a finished run's output (or of a checkpointed state)."""
    fields = {k: v for k, v in state.items() if k in Episode.model_fields}
    fields.setdefault("status", "max_turns")
    return Episode.model_validate(fields)


def _turn_node(agent: Agent, limits: Limits, raise_backend_errors: bool) -> Runnable:
    def metadata(step: TurnStep) -> dict[str, Any]:
        return {
            "episode_id": step.state.get("id"),
            "turn": step.index,
            "attempt": step.attempt,
            "model": agent.backend.model_id,
            "prompt_tokens": len(step.request.prompt_ids or []) if step.request else 0,
        }

    def failed(e: BaseException) -> GenerationResult:
        if raise_backend_errors:
            raise BackendError(f"{agent.role} agent failed: {e}", agent=agent.role) from e
        return GenerationResult(finish_reason="error", error=f"{type(e).__name__}: {e}")

    def check(result: GenerationResult) -> GenerationResult:
        if raise_backend_errors and result.finish_reason == "error":
            raise BackendError(f"{agent.role} agent failed: {result.error}", agent=agent.role)
        return result

    def run(state: ReasonerState, config: RunnableConfig) -> dict[str, Any]:
        step = TurnStep(agent, dict(state), limits)
        request = step.first_request()
        while request is not None:
            try:
                view = functools.partial(turn_view, agent, step.state)
                result = check(traced_generate(agent.backend, request, config, agent.role, metadata(step), view=view))
            except BackendError:
                raise
            except Exception as e:  # a backend that raises instead of returning an error result
                result = failed(e)
            request = step.observe(result)
        return step.update()

    async def arun(state: ReasonerState, config: RunnableConfig) -> dict[str, Any]:
        step = TurnStep(agent, dict(state), limits)
        request = step.first_request()
        while request is not None:
            try:
                view = functools.partial(turn_view, agent, step.state)
                result = check(
                    await atraced_generate(agent.backend, request, config, agent.role, metadata(step), view=view)
                )
            except BackendError:
                raise
            except Exception as e:
                result = failed(e)
            request = step.observe(result)
        return step.update()

    return node_body(run, arun, name=agent.role)  # no run of its own inside LangGraph's node run


def _after_long(state: ReasonerState) -> Literal["short", "finish"]:
    return "finish" if state.get("status") else "short"


def _after_short(state: ReasonerState) -> Literal["long", "finish"]:
    return "finish" if state.get("status") else "long"


def build_reasoner(
    long: Agent,
    short: Agent,
    *,
    max_turns: int = MAX_TURNS,
    max_tokens_per_turn: int = MAX_TOKENS_PER_TURN,
    max_total_tokens: int = MAX_TOTAL_TOKENS,
    checkpointer: Checkpointer = None,
    raise_backend_errors: bool = False,
    name: str = "longshort",
) -> CompiledStateGraph:
    """Compile the two-agent reasoner.

    Input ``{"question": …}`` (optionally ``reference``, ``choices``, ``id``); output the
    ``Episode`` fields. Use ``episode_from_state(output)`` for the typed ``Episode``.

    An input the graph cannot start on (a question that is not a string, is blank, or is longer
    than the long model's context; bad ``choices``) raises ``TypeError``/``ValueError`` naming it.
    In a batch LangGraph's semantics apply: ``graph.abatch(inputs)`` raises for all inputs if one
    is bad, losing the others' episodes; ``graph.abatch(inputs, return_exceptions=True)`` returns
    that input's exception in its place and every other output as usual (what
    ``longshort.evals.systems.run_longshort`` does, recording it as a ``backend_error`` episode).
    """
    if long.role != "long" or short.role != "short":
        raise ValueError(f"build_reasoner(long, short) got roles ({long.role!r}, {short.role!r})")
    limits = Limits(max_turns, max_tokens_per_turn, max_total_tokens)
    graph = StateGraph(ReasonerState, input_schema=ReasonerInput, output_schema=ReasonerOutput)
    graph.add_node("start", lambda state: _validate_question(state, long))
    graph.add_node("long", _turn_node(long, limits, raise_backend_errors))
    graph.add_node("short", _turn_node(short, limits, raise_backend_errors))
    graph.add_node("finish", _finish)
    graph.add_edge(START, "start")
    graph.add_edge("start", "long")
    graph.add_conditional_edges("long", _after_long)
    graph.add_conditional_edges("short", _after_short)
    graph.add_edge("finish", END)
    return light_node_traces(graph).compile(checkpointer=checkpointer, name=name)
