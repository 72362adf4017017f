"""The systems under test: long-only, short-only and Long⊗Short, each producing Episodes.

Solo systems are one agent generating a whole solution in one turn (the paper's baselines:
R1-Distill alone, Qwen2.5 alone); Long⊗Short is the graph. All three take the same problems and
return ``Episode`` objects, so grading and reporting never care which system produced them.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Literal

from longshort.agents.base import GenerationRequest, GenerationResult
from longshort.agents.roles import Agent
from longshort.graphs import build_reasoner, episode_from_state
from longshort.limits import MAX_TOKENS_PER_TURN, MAX_TOTAL_TOKENS, MAX_TURNS
from longshort.protocol import ANSWER_CLOSE, THINK_CLOSE, extract_answer, parse_turn
from longshort.trace import Episode, Turn

SystemName = Literal["long-only", "short-only", "longshort"]


def solo_request(agent: Agent, question: str, *, max_new_tokens: int, seed: int | None = None) -> GenerationRequest:
    """One agent alone: its view with an empty document, generating through to ``</answer>``."""
    backend = agent.backend
    prompt = (
        {"prompt_ids": agent.prompt_ids(question)}
        if backend.token_level
        else {"messages": agent.prompt_messages(question)}
    )
    return GenerationRequest(
        **prompt,
        max_new_tokens=max_new_tokens,
        temperature=agent.temperature,
        top_p=agent.top_p,
        seed=seed,
        stop=(ANSWER_CLOSE,),
    )


def solo_parse_error(role: str, text: str) -> str | None:
    """Why a solo solution breaks the protocol's format, or None (long: think then answer)."""
    if role == "long":
        head, sep, tail = text.partition(THINK_CLOSE)
        if not sep:
            return "no </think>"
        return parse_turn("long", head + sep).error or parse_turn("short", tail).error
    return parse_turn("short", text).error


def solo_episode(
    agent: Agent, question: str, result: GenerationResult, *, reference: str | None = None, prompt_tokens: int = 0
) -> Episode:
    turn = Turn(
        agent=agent.role,
        text=result.text,
        token_ids=result.token_ids,
        logprobs=result.logprobs,
        num_tokens=result.num_tokens,
        prompt_tokens=prompt_tokens,
        finish_reason=result.finish_reason,
        model_id=agent.backend.model_id,
    )
    if result.finish_reason == "error":
        turn.error = result.error
        status, error = "backend_error", result.error
    else:
        turn.error = solo_parse_error(agent.role, result.text)
        status = "token_budget" if result.finish_reason == "length" else ("malformed" if turn.error else "answered")
        error = turn.error
    return Episode(
        id=uuid.uuid4().hex,
        question=question,
        reference=reference,
        answer=extract_answer(result.text) if status != "backend_error" else None,
        status=status,
        error=error,
        turns=[turn],
    )


async def run_solo(
    agent: Agent,
    questions: Sequence[str],
    *,
    references: Sequence[str | None] | None = None,
    max_new_tokens: int = MAX_TOTAL_TOKENS,
    seed: int | None = None,
) -> list[Episode]:
    """All questions in one batched call (the backend batches them).

    Backends return a request they refuse (a prompt longer than the context, an HTTP error) as an
    error result, so each such item is its own ``backend_error`` episode and the batch survives.
    """
    requests = [solo_request(agent, q, max_new_tokens=max_new_tokens, seed=seed) for q in questions]
    results = await agent.backend.agenerate(requests)
    refs = references or [None] * len(questions)
    return [
        solo_episode(agent, q, r, reference=ref, prompt_tokens=len(req.prompt_ids or []))
        for q, r, ref, req in zip(questions, results, refs, requests, strict=True)
    ]


def failed_episode(question: object, error: Exception, *, reference: str | None = None) -> Episode:
    """The record of an item that could not run at all (a question the graph rejects, one longer
    than the model's context): ``backend_error`` with the error text, as long-only records a
    request its backend refuses, so one bad item never takes its batch down and a resume retries it.
    """
    return Episode(
        id=uuid.uuid4().hex,
        question=question if isinstance(question, str) else repr(question),
        reference=reference,
        status="backend_error",
        error=f"{type(error).__name__}: {error}",
    )


async def run_longshort(
    long: Agent,
    short: Agent,
    questions: Sequence[str],
    *,
    references: Sequence[str | None] | None = None,
    max_turns: int = MAX_TURNS,
    max_tokens_per_turn: int = MAX_TOKENS_PER_TURN,
    max_total_tokens: int = MAX_TOTAL_TOKENS,
) -> list[Episode]:
    """Every question through the graph, concurrently; an input it rejects is recorded, not raised."""
    graph = build_reasoner(
        long, short, max_turns=max_turns, max_tokens_per_turn=max_tokens_per_turn, max_total_tokens=max_total_tokens
    )
    refs = references or [None] * len(questions)
    inputs = [{"question": q, "reference": ref} for q, ref in zip(questions, refs, strict=True)]
    # One input the graph rejects (an empty question, one longer than the context) must not raise
    # for the batch: with return_exceptions its exception comes back in its place, recorded below.
    outs = await graph.abatch(inputs, return_exceptions=True)
    return [
        failed_episode(q, out, reference=ref) if isinstance(out, Exception) else episode_from_state(out)
        for q, ref, out in zip(questions, refs, outs, strict=True)
    ]
