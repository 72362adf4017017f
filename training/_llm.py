"""One loop for asking an instruction LLM for JSON: validate the reply, feed the error back, retry.

The chunker (paper §1) and the rewriter (paper §5) both ask a chat model for JSON in a fixed
contract and must survive bad replies and dead servers; they differ only in the prompt, the
validator and what they do after the last failure.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel
    from langchain_core.messages import BaseMessage

T = TypeVar("T")


def ask_until_valid(
    chat_model: BaseChatModel,
    prompt: str,
    validate: Callable[[str], T],
    retry_prompt: Callable[[str], str],
    *,
    max_retries: int,
    invalid: type[Exception],
) -> tuple[T | None, int, str]:
    """``(value, attempts, last_error)``; ``value`` is None when every attempt failed.

    ``validate`` raises ``invalid`` with a message the model can act on; that message goes back to
    the model through ``retry_prompt``. An exception from the model itself (a dead server) is one
    failed attempt, never a crashed run.
    """
    from langchain_core.messages import AIMessage, HumanMessage

    messages: list[BaseMessage] = [HumanMessage(prompt)]
    error = ""
    for attempt in range(1, max_retries + 1):
        try:
            reply = chat_model.invoke(messages)
        except Exception as exc:
            error = f"chat model failed: {type(exc).__name__}: {exc}"
            continue
        text = reply.text if isinstance(reply, AIMessage) else str(getattr(reply, "content", reply))
        try:
            return validate(text), attempt, ""
        except invalid as exc:
            error = str(exc)
        messages += [AIMessage(text), HumanMessage(retry_prompt(error))]
    return None, max_retries, error


class ChatStep:
    """A pipeline step backed by a chat model that answers in JSON (see ``ask_until_valid``)."""

    def __init__(self, chat_model: BaseChatModel, *, max_retries: int = 5) -> None:
        if max_retries < 1:
            raise ValueError(f"max_retries must be >= 1, got {max_retries}")
        self.chat_model = chat_model
        self.max_retries = max_retries
