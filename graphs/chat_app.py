"""Embedding: the reasoner as one node of a chat app whose state is ``messages``.

The wrapper maps the last human message to ``question`` and the episode back to an AI message
(the final answer, with the whole episode in ``response_metadata`` for callers that want it).
"""

from __future__ import annotations

from typing import Any

from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.runnables import RunnableConfig, RunnableLambda
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Checkpointer

from longshort.graphs.reasoner import episode_from_state
from longshort.trace import Episode


def last_question(messages: list) -> str:
    for message in reversed(messages):
        if isinstance(message, HumanMessage):
            return message.text if hasattr(message, "text") else str(message.content)
    raise ValueError("the conversation has no human message to answer")


def answer_message(episode: Episode) -> AIMessage:
    if episode.answer is not None:
        content = f"The answer is {episode.answer}."
    else:
        content = f"No final answer ({episode.status}{': ' + episode.error if episode.error else ''})."
    meta: dict[str, Any] = {"episode": episode.model_dump(mode="json", exclude={"turns"}), "turns": len(episode.turns)}
    return AIMessage(content=content, response_metadata=meta)


def build_chat_app(reasoner: CompiledStateGraph, *, checkpointer: Checkpointer = None) -> CompiledStateGraph:
    """A ``MessagesState`` graph: human question in, the reasoner's answer out as an AI message.

    A ``checkpointer`` keeps the conversation per thread; give it ``serde=checkpoint_serde()``
    (``longshort.graphs.serde``) so that longshort's types are restored without LangGraph's
    "unregistered type" warning, e.g. ``InMemorySaver(serde=checkpoint_serde())``.
    """

    def to_reasoner(state: MessagesState) -> dict[str, Any]:
        return {"question": last_question(state["messages"])}

    def reason(state: MessagesState, config: RunnableConfig) -> dict[str, Any]:
        out = reasoner.invoke(to_reasoner(state), config)
        return {"messages": [answer_message(episode_from_state(out))]}

    async def areason(state: MessagesState, config: RunnableConfig) -> dict[str, Any]:
        out = await reasoner.ainvoke(to_reasoner(state), config)
        return {"messages": [answer_message(episode_from_state(out))]}

    graph = StateGraph(MessagesState)
    graph.add_node("reasoner", RunnableLambda(reason, afunc=areason, name="reasoner"))
    graph.add_edge(START, "reasoner")
    graph.add_edge("reasoner", END)
    return graph.compile(checkpointer=checkpointer, name="longshort_chat")
