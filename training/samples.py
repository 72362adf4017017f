"""One Episode → one agent's training sample: the single place SFT, RL and retraining cut traces.

An episode is one growing document, and each agent's view at turn k is its view at turn k-1 plus
the token ids since (``graphs.turn.view_ids``). So the whole episode is one sample per agent:
prompt = the agent's system prompt + question through its chat template, completion = the
document in that agent's tokens, mask = 1 on the tokens the agent sampled itself, 0 on the
partner's turns and on tokens that were forced into its turns (a repair's prefilled opening
tag). Building the completion turn by turn with the graph's own ``document_ids`` keeps it
identical to what the agent was fed and gives each turn's span, so a caller can also cut
per-turn rows (prompt + completion[:start] → completion[start:end]).
"""

from __future__ import annotations

from pydantic import BaseModel, Field, model_validator

from longshort.agents import Agent
from longshort.graphs.turn import document_ids
from longshort.protocol import Role
from longshort.trace import Episode

__all__ = ["AgentSample", "episode_sample"]


class AgentSample(BaseModel):
    """One agent's view of one episode as a training row (all ids in that agent's tokenizer)."""

    episode_id: str
    agent: Role
    prompt_ids: list[int] = Field(description="system prompt + question through the agent's chat template")
    completion_ids: list[int] = Field(description="the whole document, turn after turn")
    mask: list[int] = Field(description="1 on the agent's own sampled tokens, 0 on the partner's and forced ones")
    logprobs: list[float] = Field(
        description="the sampling logprob of each completion token; 0.0 where masked out or unknown"
    )
    turn_spans: list[tuple[int, int]] = Field(description="(start, end) of each turn inside completion_ids")

    @model_validator(mode="after")
    def _aligned(self) -> AgentSample:
        n = len(self.completion_ids)
        if len(self.mask) != n or len(self.logprobs) != n:
            raise ValueError(f"mask ({len(self.mask)}) and logprobs ({len(self.logprobs)}) must have {n} entries")
        return self

    @property
    def num_trained(self) -> int:
        """How many completion tokens carry loss (the agent's own sampled tokens)."""
        return sum(self.mask)


def episode_sample(episode: Episode, agent: Agent) -> AgentSample:
    """``agent``'s training sample of ``episode`` (its own turns are those of ``agent.role``).

    Raises ``ValueError`` for an agent whose backend is not token-level (chat backends see the
    document re-rendered in the user message, so their episodes are not token-exact samples) and
    for an episode in which one of the agent's own turns has text but no ``token_ids`` (generated
    by a chat backend: what was sampled is unknown). An episode where the agent never spoke gives a
    sample whose mask is all 0.
    """
    if not agent.backend.token_level:
        raise ValueError(
            f"episode_sample needs a token-level agent; the {agent.role} agent's backend "
            f"{type(agent.backend).__name__} has no tokenizer"
        )
    for index, turn in enumerate(episode.turns):
        if turn.agent == agent.role and not turn.token_ids and (turn.text or turn.num_tokens):
            raise ValueError(
                f"episode {episode.id!r}: {agent.role} turn {index} has no token_ids (a chat backend's turn?), "
                "so it cannot be a token-exact training sample"
            )
    completion: list[int] = []
    mask: list[int] = []
    logprobs: list[float] = []
    spans: list[tuple[int, int]] = []
    for turn in episode.turns:
        ids = document_ids(agent, [turn])  # the document is built segment by segment: same ids
        start = len(completion)
        completion.extend(ids)
        spans.append((start, len(completion)))
        if turn.agent != agent.role:
            mask.extend([0] * len(ids))
            logprobs.extend([0.0] * len(ids))
            continue
        forced = min(turn.forced_tokens, len(ids))
        mask.extend([0] * forced + [1] * (len(ids) - forced))
        known = turn.logprobs if turn.logprobs is not None and len(turn.logprobs) == len(ids) else None
        logprobs.extend([0.0] * forced + (list(known[forced:]) if known is not None else [0.0] * (len(ids) - forced)))
    return AgentSample(
        episode_id=episode.id,
        agent=agent.role,
        prompt_ids=agent.prompt_ids(episode.question),
        completion_ids=completion,
        mask=mask,
        logprobs=logprobs,
        turn_spans=spans,
    )
