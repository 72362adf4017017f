"""longshort: efficient LLM reasoning with two cooperating models (Long⊗Short).

The public API is re-exported lazily, so ``import longshort`` stays light (no torch, no
transformers) until a backend is actually used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from longshort._lazy import lazy_getattr

__version__ = "0.1.0"

if TYPE_CHECKING:
    from longshort.agents import Agent, ScriptedBackend, TransformersBackend, long_agent, short_agent
    from longshort.graphs import build_reasoner, episode_from_state
    from longshort.trace import Episode, Turn

_LAZY = {
    "Episode": "longshort.trace",
    "Turn": "longshort.trace",
    "Agent": "longshort.agents",
    "long_agent": "longshort.agents",
    "short_agent": "longshort.agents",
    "ScriptedBackend": "longshort.agents",
    "TransformersBackend": "longshort.agents",
    "build_reasoner": "longshort.graphs",
    "episode_from_state": "longshort.graphs",
}
__all__ = [
    "Agent",
    "Episode",
    "ScriptedBackend",
    "TransformersBackend",
    "Turn",
    "build_reasoner",
    "episode_from_state",
    "long_agent",
    "short_agent",
]


__getattr__ = lazy_getattr("longshort", _LAZY)
