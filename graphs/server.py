"""Graph factories for ``langgraph.json`` (``langgraph dev`` / LangGraph Platform).

Models come from the environment, so one deployment file serves any pair:
``LONGSHORT_LONG_MODEL``, ``LONGSHORT_SHORT_MODEL``, ``LONGSHORT_BACKEND`` (hf|openai|vllm,
default hf), ``LONGSHORT_BASE_URL`` (openai backend). Without ``LONGSHORT_LONG_MODEL`` the
shipped testbed pair (reasoner + base) is served, offline.
"""

from __future__ import annotations

import os

from langgraph.graph.state import CompiledStateGraph

from longshort.graphs.chat_app import build_chat_app
from longshort.graphs.reasoner import build_reasoner


def _agents():
    from longshort.agents.loading import load_agents

    return load_agents(  # no LONGSHORT_LONG_MODEL: the shipped testbed pair
        os.environ.get("LONGSHORT_LONG_MODEL") or None,
        os.environ.get("LONGSHORT_SHORT_MODEL") or None,
        backend=os.environ.get("LONGSHORT_BACKEND", "hf"),
        base_url=os.environ.get("LONGSHORT_BASE_URL"),
    )


def make_reasoner() -> CompiledStateGraph:
    return build_reasoner(*_agents())


def make_chat_app() -> CompiledStateGraph:
    return build_chat_app(make_reasoner())
