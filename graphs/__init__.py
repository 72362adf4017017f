"""The Long⊗Short reasoner as a LangGraph graph."""

from longshort.graphs.reasoner import build_reasoner, episode_from_state
from longshort.graphs.state import ReasonerInput, ReasonerOutput, ReasonerState

__all__ = ["ReasonerInput", "ReasonerOutput", "ReasonerState", "build_reasoner", "episode_from_state"]
