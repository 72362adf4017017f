"""One agent turn as a small state machine: build the view, generate, parse, repair once.

It holds no I/O, so the sync and async graph nodes share every rule and differ only in how
they await the backend.
"""

from __future__ import annotations

import time
import zlib
from dataclasses import dataclass, field
from typing import Any

from longshort.agents.base import GenerationRequest, GenerationResult
from longshort.agents.roles import Agent
from longshort.limits import Limits
from longshort.protocol import ParsedTurn, parse_turn
from longshort.trace import EpisodeStatus, Turn, document_text

__all__ = ["Limits", "TurnStep", "document_ids", "turn_seed", "view_ids"]


def document_ids(agent: Agent, turns: list[Turn]) -> list[int]:
    """The shared document as ``agent``'s tokenizer sees it.

    Segments the agent generated (or a partner with an identical tokenizer generated) are reused
    as ids; other text is encoded once per segment. Segment by segment, so the view only grows.
    """
    ids: list[int] = []
    mine = agent.backend.tokenizer_fingerprint
    for turn in turns:
        reuse = turn.token_ids and (turn.agent == agent.role or turn.model_fingerprint == mine)
        ids.extend(turn.token_ids if reuse else agent.backend.encode(turn.text))
    return ids


def view_ids(agent: Agent, question: str, turns: list[Turn]) -> list[int]:
    """Exactly what a token-level agent is fed: its chat prompt, then the document's ids."""
    return agent.prompt_ids(question) + document_ids(agent, turns)


def turn_seed(agent: Agent, episode_id: str, index: int, attempt: int) -> int | None:
    """Different for every episode, turn and attempt, reproducible from the agent's seed."""
    if agent.seed is None:
        return None
    return zlib.crc32(f"{agent.seed}:{episode_id}:{index}:{attempt}".encode()) & 0x7FFFFFFF


@dataclass
class TurnStep:
    """Plans the requests of one turn and turns the results into a state update."""

    agent: Agent
    state: dict[str, Any]
    limits: Limits
    attempt: int = 0
    started: float = field(default_factory=time.perf_counter)
    status: EpisodeStatus | None = None
    error: str | None = None
    request: GenerationRequest | None = None
    result: GenerationResult | None = None
    parsed: ParsedTurn | None = None
    _view: list[int] | None = None
    _budget_capped: bool = False
    _prefill: list[int] = field(default_factory=list)
    _discarded: int = 0  # tokens of attempts thrown away: they were generated, so they count

    @property
    def turns(self) -> list[Turn]:
        return list(self.state.get("turns") or [])

    @property
    def index(self) -> int:
        return len(self.turns)

    def first_request(self) -> GenerationRequest | None:
        """The request to send, or None when the turn cannot start (status is then set)."""
        used = sum(t.num_tokens + t.discarded_tokens for t in self.turns)
        remaining = self.limits.max_total_tokens - used
        if remaining <= 0:
            self.status, self.error = "token_budget", f"{used} tokens used of {self.limits.max_total_tokens}"
            return None
        max_new = min(self.limits.max_tokens_per_turn, remaining)
        self._budget_capped = max_new < self.limits.max_tokens_per_turn
        backend = self.agent.backend
        if backend.token_level:
            self._view = view_ids(self.agent, self.state["question"], self.turns)
            if backend.max_context is not None:
                room = backend.max_context - len(self._view)
                if room <= 0:
                    self.status = "token_budget"
                    self.error = (
                        f"{self.agent.role} view of {len(self._view)} tokens fills the context ({backend.max_context})"
                    )
                    return None
                if room < max_new:
                    max_new, self._budget_capped = room, True
            prompt: dict[str, Any] = {"prompt_ids": self._view}
        else:
            prompt = {"messages": self.agent.view_messages(self.state["question"], document_text(self.turns))}
        self.request = GenerationRequest(
            **prompt,
            max_new_tokens=max_new,
            temperature=self.agent.temperature,
            top_p=self.agent.top_p,
            seed=turn_seed(self.agent, self.state.get("id", ""), self.index, 0),
            stop=self.agent.stop,
        )
        return self.request

    def repair_request(self) -> GenerationRequest:
        """One retry: prefill the role's opening tag (token level) or resample (chat)."""
        assert self.request is not None
        self.attempt += 1
        seed = turn_seed(self.agent, self.state.get("id", ""), self.index, self.attempt)
        update: dict[str, Any] = {"seed": seed}
        if self.request.prompt_ids is not None:
            self._prefill = self.agent.backend.encode(self.agent.open_tag)
            update["prompt_ids"] = self.request.prompt_ids + self._prefill
            update["max_new_tokens"] = max(1, self.request.max_new_tokens - len(self._prefill))
        else:
            update["temperature"] = max(self.agent.temperature, 0.7)
        return self.request.model_copy(update=update)

    def observe(self, result: GenerationResult) -> GenerationRequest | None:
        """Record a result; return the repair request if one more attempt is due."""
        prefill = self._prefill
        if prefill:
            result = result.model_copy(
                update={
                    "token_ids": prefill + result.token_ids,
                    "text": self.agent.backend.tokenizer.decode(prefill) + result.text,
                    "logprobs": None if result.logprobs is None else [0.0] * len(prefill) + result.logprobs,
                    "num_tokens": result.num_tokens + len(prefill),
                }
            )
        self.result = result
        if result.finish_reason == "error":
            return None
        parsed = parse_turn(self.agent.role, result.text, choices=self.state.get("choices"))
        self.parsed = parsed
        if parsed.ok or self.attempt >= 1:
            return None
        if result.finish_reason == "length":
            return None  # cut by the per-turn cap or the budget, not a bad turn: retrying cannot help
        self._discarded += result.num_tokens or len(result.token_ids)
        return self.repair_request()

    def update(self) -> dict[str, Any]:
        """The state update for this turn (a new Turn, and a status when the episode ends)."""
        if self.status is not None:  # the turn never started
            return {"status": self.status, "error": self.error}
        result = self.result
        backend = self.agent.backend
        turn = Turn(
            agent=self.agent.role,
            text=result.text,
            token_ids=result.token_ids,
            logprobs=result.logprobs,
            num_tokens=result.num_tokens or (len(result.token_ids) if result.token_ids else 0),
            prompt_tokens=len(self._view) if self._view is not None else 0,
            finish_reason=result.finish_reason,
            attempts=self.attempt + 1,
            discarded_tokens=self._discarded,
            forced_tokens=len(self._prefill),  # observe() put them in front of the sampled ids
            wall_time=time.perf_counter() - self.started,
            model_id=backend.model_id,
            model_fingerprint=backend.tokenizer_fingerprint,
        )
        out: dict[str, Any] = {"turns": [turn]}
        if result.finish_reason == "error":
            turn.error = result.error or "backend error"
            out.update(status="backend_error", error=f"{self.agent.role} turn {self.index}: {turn.error}")
            return out
        parsed = self.parsed
        turn.kind, turn.error = parsed.kind, parsed.error
        if not parsed.ok:
            where = f"{self.agent.role} turn {self.index}"
            if result.finish_reason == "length" and self._budget_capped:
                used = sum(t.num_tokens + t.discarded_tokens for t in self.turns) + turn.num_tokens
                out.update(status="token_budget", error=f"{where}: out of budget ({used} tokens generated)")
            elif result.finish_reason == "length":
                cap = self.limits.max_tokens_per_turn
                out.update(status="turn_cap", error=f"{where}: cut at the per-turn cap ({cap} tokens) before its tag")
            else:
                out.update(status="malformed", error=f"{where}: {parsed.error}")
        elif parsed.kind == "answer":
            out.update(status="answered", answer=parsed.answer)
        elif self.index + 1 >= self.limits.max_turns:
            out.update(status="max_turns", error=f"no final answer after {self.limits.max_turns} turns")
        return out
