"""LangChain fake chat models for the LLM-backed steps (chunker, rewriter): recorded and dead."""

from __future__ import annotations

from typing import Any

from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import BaseMessage


class RecordingChat(FakeListChatModel):
    """FakeListChatModel (cycles through ``responses``) that keeps every message list it was sent."""

    seen: list[list[BaseMessage]] = []

    def _call(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> str:
        self.seen.append(list(messages))
        return super()._call(messages, *args, **kwargs)


class DeadChat(FakeListChatModel):
    """A chat model whose server is gone: every call raises."""

    calls: int = 0

    def _call(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> str:
        self.calls += 1
        raise ConnectionError("connection refused on :8000")
