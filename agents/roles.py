"""An agent is a role (system prompt, tags, parser) plus a backend and its sampling settings."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

from longshort.agents.base import Backend
from longshort.protocol import OPEN_TAG, STOP_STRINGS, SYSTEM_PROMPTS, Role

#: questions whose prompt ids an agent keeps (an eval's batch of episodes in flight, with room)
_PROMPT_CACHE_SIZE = 4096

#: How a chat backend (no token-level continuation) is shown the shared transcript.
HISTORY_TEMPLATE = "{question}\n\nThe transcript so far:\n{document}\n\nContinue with your next turn."


@dataclass
class Agent:
    """One side of the Long⊗Short pair.

    ``view_ids`` / ``view_messages`` build exactly what the agent sees: its own system prompt, the
    question, and the shared document so far. For token-level backends the view is the chat
    template's prompt followed by the document's token ids, so it only ever grows by appending.
    """

    role: Role
    backend: Backend
    system_prompt: str = ""
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    #: the chat prompt's ids per question (one render of the template per question, not per turn)
    _prompts: dict[str, tuple[int, ...]] = field(default_factory=dict, init=False, repr=False, compare=False)
    _prompts_for: Any = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.role not in ("long", "short"):
            raise ValueError(f"role must be 'long' or 'short', got {self.role!r}")
        if not self.system_prompt:
            self.system_prompt = SYSTEM_PROMPTS[self.role]

    @property
    def stop(self) -> tuple[str, ...]:
        return STOP_STRINGS[self.role]

    @property
    def open_tag(self) -> str:
        return OPEN_TAG[self.role]

    def prompt_messages(self, question: str) -> list[dict[str, str]]:
        return [{"role": "system", "content": self.system_prompt}, {"role": "user", "content": question}]

    def prompt_ids(self, question: str) -> list[int]:
        """System prompt + question through the model's chat template, ready for the assistant."""
        tokenizer = self.backend.tokenizer
        if tokenizer is None:
            raise TypeError("prompt_ids needs a token-level backend")
        key = (tokenizer, self.system_prompt)
        if self._prompts_for is None or self._prompts_for[0] is not tokenizer or self._prompts_for[1] != key[1]:
            self._prompts.clear()  # another tokenizer or system prompt: nothing cached applies
            self._prompts_for = key
        ids = self._prompts.get(question)
        if ids is None:
            ids = tuple(chat_prompt_ids(tokenizer, self.prompt_messages(question)))
            if len(self._prompts) >= _PROMPT_CACHE_SIZE:
                with contextlib.suppress(RuntimeError, StopIteration):  # another thread got there first
                    self._prompts.pop(next(iter(self._prompts)), None)
            self._prompts[question] = ids
        return list(ids)

    def view_messages(self, question: str, document: str) -> list[dict[str, str]]:
        """The chat-backend view: the transcript rendered into the user message."""
        if not document:
            return self.prompt_messages(question)
        user = HISTORY_TEMPLATE.format(question=question, document=document)
        return [{"role": "system", "content": self.system_prompt}, {"role": "user", "content": user}]


def chat_prompt_ids(tokenizer, messages: list[dict[str, str]]) -> list[int]:
    """Messages through the chat template, ending where the assistant starts writing.

    Trainers use this too, so training views and the graph's views are the same ids.
    """
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    if not isinstance(ids, list):  # transformers 5 returns a BatchEncoding-like mapping
        ids = ids["input_ids"]
    return list(ids)


def long_agent(backend: Backend, **kwargs) -> Agent:
    return Agent("long", backend, **kwargs)


def short_agent(backend: Backend, **kwargs) -> Agent:
    return Agent("short", backend, **kwargs)
