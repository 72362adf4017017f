"""The reasoner's budgets and their one default, shared by every entry point.

``solve``, ``eval``, the demo, ``build_reasoner``, the server factories and RL all start from
these numbers, so an episode measured in one place is the same episode in another. The per-turn
cap is as large as the shipped testbed models' context (2,048 positions): a long first thought of
the untrained reasoner (up to ~1,900 tokens on held-out problems) is never cut by it. The total
budget is also what a solo system (long-only, short-only) gets for its single turn.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_TURNS = 8
MAX_TOKENS_PER_TURN = 2048
MAX_TOTAL_TOKENS = 4096


@dataclass(frozen=True)
class Limits:
    """An episode's budgets: turns, tokens per turn (the cap), tokens in all (every attempt counts)."""

    max_turns: int = MAX_TURNS
    max_tokens_per_turn: int = MAX_TOKENS_PER_TURN
    max_total_tokens: int = MAX_TOTAL_TOKENS

    def __post_init__(self) -> None:
        for name in ("max_turns", "max_tokens_per_turn", "max_total_tokens"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
