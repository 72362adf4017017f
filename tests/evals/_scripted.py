"""Scripted agents for the eval tests: they always solve ``Q``, and refuse a prompt their context cannot hold."""

from __future__ import annotations

from longshort.agents import Agent, GenerationRequest, GenerationResult, ScriptedBackend, long_agent, short_agent

Q = "What is 12 * 34 + 5?"
THINK = "<think> 12 * 34 = 408 </think>"
ANSWER = "<answer> 408 + 5 = \\boxed{413} </answer>"


class ContextBackend(ScriptedBackend):
    """A scripted backend that refuses a prompt its context cannot hold, as ``TransformersBackend`` does."""

    def _one(self, request: GenerationRequest) -> GenerationResult:
        n = len(request.prompt_ids or [])
        if self.max_context is not None and n >= self.max_context:
            return GenerationResult(
                finish_reason="error", error=f"prompt of {n} tokens does not fit: max_context is {self.max_context}"
            )
        return super()._one(request)


def scripted_agents(tokenizer, *, max_context: int | None = None) -> tuple[Agent, Agent]:
    """Agents that always solve Q: long thinks (and, alone, answers), short answers."""
    long = long_agent(ContextBackend(lambda r: f"{THINK} {ANSWER}", tokenizer, max_context=max_context))
    short = short_agent(ContextBackend(lambda r: ANSWER, tokenizer, max_context=max_context))
    return long, short


def too_long_for(agent: Agent, question: str = Q) -> tuple[int, str]:
    """A context that holds ``question``'s episodes, and a question that does not fit in it."""
    context = len(agent.prompt_ids(question)) + 200
    long_question = question
    while len(agent.prompt_ids(long_question)) < context:
        long_question += " " + question
    return context, long_question
