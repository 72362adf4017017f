"""Agents (a role plus a backend) and the generation backends.

Heavy backends are imported lazily: ``from longshort.agents import TransformersBackend`` loads
torch only then.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from longshort._lazy import lazy_getattr
from longshort.agents.base import Backend, GenerationRequest, GenerationResult
from longshort.agents.roles import Agent, long_agent, short_agent
from longshort.agents.scripted import ScriptedBackend

if TYPE_CHECKING:
    from longshort.agents.chat import ChatModelBackend, openai_backend
    from longshort.agents.hf import TransformersBackend
    from longshort.agents.loading import load_agents, load_backend
    from longshort.agents.process import ProcessBackend
    from longshort.agents.vllm import VLLMBackend, is_vllm_available

_LAZY = {
    "TransformersBackend": "longshort.agents.hf",
    "ProcessBackend": "longshort.agents.process",
    "ChatModelBackend": "longshort.agents.chat",
    "openai_backend": "longshort.agents.chat",
    "VLLMBackend": "longshort.agents.vllm",
    "is_vllm_available": "longshort.agents.vllm",
    "load_agents": "longshort.agents.loading",
    "load_backend": "longshort.agents.loading",
}

__all__ = [
    "Agent",
    "Backend",
    "ChatModelBackend",
    "GenerationRequest",
    "GenerationResult",
    "ProcessBackend",
    "ScriptedBackend",
    "TransformersBackend",
    "VLLMBackend",
    "is_vllm_available",
    "load_agents",
    "load_backend",
    "long_agent",
    "openai_backend",
    "short_agent",
]


__getattr__ = lazy_getattr("longshort.agents", _LAZY)
