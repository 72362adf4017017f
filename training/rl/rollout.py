"""Rollouts through the graph: TRL's ``rollout_func`` that runs the compiled reasoner on a batch.

The trained agent generates with the trainer's current weights (a ``TransformersBackend``
adopting the trainer's model in this process); its partner is frozen, on its own backend (a
child process on GPU, so the two decode loops do not share an interpreter lock). Each episode
becomes one completion for the trained agent through ``training.samples.episode_sample``:
prompt ids = its system prompt + question through its chat template, completion ids = the whole
document in its tokens, ``env_mask`` = 1 on its own sampled tokens, 0 on the partner's turns and
on forced tokens. The trained agent's ids are never re-tokenized (asserted per turn).

TRL hands ``rollout_func`` the prompts already repeated ``num_generations`` times, in order
(DESIGN.md, pitfalls); one completion per entry comes back, in the same order (asserted), so
TRL's groups (``rewards.view(-1, G)``) are the G episodes of one question.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from longshort._async import run_sync
from longshort.agents.roles import Agent
from longshort.errors import BackendError
from longshort.graphs import build_reasoner, episode_from_state
from longshort.limits import MAX_TOKENS_PER_TURN, MAX_TOTAL_TOKENS
from longshort.protocol import Role
from longshort.trace import Episode
from longshort.training.samples import episode_sample

if TYPE_CHECKING:
    from longshort.agents.base import Backend

logger = logging.getLogger(__name__)

__all__ = ["GraphRollout", "RolloutBatch", "episode_columns"]

#: statuses that end an episode past its budget rather than on a stop tag
OVER_BUDGET = ("token_budget", "max_turns")


class RolloutBatch:
    """What one ``rollout_func`` call produced, kept for the trainer (rewards, trace store)."""

    def __init__(self, episodes: list[Episode], step: int) -> None:
        self.episodes = episodes
        self.step = step


def episode_columns(episode: Episode, role: Role) -> dict[str, Any]:
    """The reward and logging columns of one episode for the trained ``role``."""
    own = [t for t in episode.turns if t.agent == role]
    # a repaired turn parsed only after its opening tag was forced: its own output was not well formed
    well_formed = bool(own) and all(t.error is None and t.kind is not None and t.attempts == 1 for t in own)
    return {
        "predicted": episode.answer,
        "status": episode.status,
        "well_formed": well_formed,
        "tokens_long": episode.tokens.long,
        "tokens_short": episode.tokens.short,
        "tokens_total": episode.tokens.total,
        "turns": len(episode.turns),
        "episode_id": episode.id,
    }


class GraphRollout:
    """``rollout_func(prompts, trainer) -> dict`` for ``GRPOTrainer``, one episode per prompt entry.

    ``partner`` is the frozen agent (its own backend); ``role`` is the trained agent's role. The
    trained agent's backend is built on first use around the trainer's model and told that the
    weights changed before every later rollout. ``answers`` maps a question to its gold answer
    (the episode's reference); ``limits`` are the graph's turn and token limits.
    """

    def __init__(
        self,
        role: Role,
        partner: Agent,
        *,
        tokenizer: Any,
        temperature: float,
        top_p: float = 1.0,
        seed: int = 0,
        max_turns: int = 8,
        max_tokens_per_turn: int = MAX_TOKENS_PER_TURN,
        max_total_tokens: int = MAX_TOTAL_TOKENS,
        mask_over_budget: bool = False,
        partner_retries: int = 2,
        max_batch_size: int = 256,
    ) -> None:
        if partner.role == role:
            raise ValueError(f"the partner must play the other role, got {partner.role!r} for both")
        self.role, self.partner, self.tokenizer = role, partner, tokenizer
        self.temperature, self.top_p, self.seed = temperature, top_p, seed
        self.limits = dict(
            max_turns=max_turns, max_tokens_per_turn=max_tokens_per_turn, max_total_tokens=max_total_tokens
        )
        self.mask_over_budget = mask_over_budget
        self.partner_retries = partner_retries
        self.max_batch_size = max_batch_size
        self.backend: Backend | None = None
        self.last: RolloutBatch | None = None
        self.calls, self._call_step = 0, -1

    def _trained_backend(self, model) -> Backend:
        from longshort.agents.hf import TransformersBackend

        if self.backend is None or getattr(self.backend, "model", None) is not model:
            if self.backend is not None:
                self.backend.close()
            self.backend = TransformersBackend(model, self.tokenizer, max_batch_size=self.max_batch_size)
        else:
            self.backend.weights_changed()  # an optimizer step happened since the last rollout
        return self.backend

    def episodes(
        self, questions: Sequence[str], answers: Sequence[str | None], model, *, step: int, tag: str = ""
    ) -> list[Episode]:
        """Run the graph once per question with the trained agent on ``model`` (ids ``s<tag>-<i>``)."""
        # a new draw every call, reproducible from (seed, step): a resumed run redraws what it redoes
        agent = Agent(self.role, self._trained_backend(model), temperature=self.temperature, top_p=self.top_p)
        agent.seed = self.seed * 1_000_003 + step
        long, short = (agent, self.partner) if self.role == "long" else (self.partner, agent)
        graph = build_reasoner(long, short, **self.limits)
        inputs = [
            {"question": q, "reference": a, "id": f"s{tag or step}-{i}"}
            for i, (q, a) in enumerate(zip(questions, answers, strict=True))
        ]
        for attempt in range(self.partner_retries + 1):
            outs = run_sync(graph.abatch(inputs))
            episodes = [episode_from_state(o) for o in outs]
            dead = [e for e in episodes if e.status == "backend_error" and _failed_role(e) == self.partner.role]
            if not dead:
                return episodes
            logger.warning(
                "partner backend failed on %d episode(s) (attempt %d): %s", len(dead), attempt + 1, dead[0].error
            )
        raise BackendError(
            f"the frozen {self.partner.role} partner failed on {len(dead)} of {len(episodes)} episodes after "
            f"{self.partner_retries + 1} attempts (last: {dead[0].error}); resume the run from its last checkpoint",
            agent=self.partner.role,
        )

    def __call__(self, prompts: list[str], trainer) -> dict[str, list]:
        model = trainer.accelerator.unwrap_model(trainer.model)
        was_training = model.training
        model.eval()
        step = trainer.state.global_step
        self.calls = self.calls + 1 if self._call_step == step else 0  # several calls per step (accumulation)
        self._call_step = step
        try:
            answers = _answers_for(prompts, trainer)
            rank = trainer.accelerator.process_index  # each process runs its own slice of the batch
            seed_step = (step * 1000 + self.calls) * 64 + rank
            episodes = self.episodes(prompts, answers, model, step=seed_step, tag=f"{step}.{self.calls}.r{rank}")
        finally:
            if was_training:
                model.train()  # TRL takes the eval branch of its loss and logging otherwise
        out = self.completions(episodes)
        self.last = RolloutBatch(episodes, trainer.state.global_step)
        self._log(trainer, episodes)
        return out

    def completions(self, episodes: list[Episode]) -> dict[str, list]:
        """TRL's rollout dict: one completion per episode, in order, plus the reward columns."""
        agent = Agent(self.role, self.backend)
        out: dict[str, list] = {"prompt_ids": [], "completion_ids": [], "logprobs": [], "env_mask": []}
        for episode in episodes:
            sample = episode_sample(episode, agent)
            for turn, (start, end) in zip(episode.turns, sample.turn_spans, strict=True):
                if turn.agent == self.role and sample.completion_ids[start:end] != turn.token_ids:
                    raise AssertionError(f"episode {episode.id}: the {self.role} agent's turn was re-tokenized")
            ids, mask, logprobs = sample.completion_ids, sample.mask, sample.logprobs
            if self.mask_over_budget and episode.status in OVER_BUDGET:
                mask = [0] * len(mask)
            if not ids:  # nothing was generated (a backend error on the first turn): one pad, no loss
                ids, mask, logprobs = [self.tokenizer.pad_token_id or 0], [0], [0.0]
            out["prompt_ids"].append(sample.prompt_ids)
            out["completion_ids"].append(ids)
            out["logprobs"].append(logprobs)
            out["env_mask"].append(mask)
            for key, value in episode_columns(episode, self.role).items():
                out.setdefault(key, []).append(value)
        if len(out["completion_ids"]) != len(episodes):
            raise AssertionError(f"{len(out['completion_ids'])} completions for {len(episodes)} prompts")
        return out

    def _log(self, trainer, episodes: list[Episode]) -> None:
        metrics = trainer._metrics["train"]
        n = max(1, len(episodes))
        for role in ("long", "short"):
            metrics[f"agents/{role}/tokens"].append(sum(getattr(e.tokens, role) for e in episodes) / n)
            metrics[f"agents/{role}/turns"].append(sum(t.agent == role for e in episodes for t in e.turns) / n)
        metrics["episodes/answered"].append(sum(e.status == "answered" for e in episodes) / n)

    def close(self) -> None:
        if self.backend is not None:
            self.backend.close()
            self.backend = None


def _failed_role(episode: Episode) -> str | None:
    errored = [t for t in episode.turns if t.finish_reason == "error"]
    return errored[-1].agent if errored else None


def _answers_for(prompts: list[str], trainer) -> list[str | None]:
    """The gold answers of the batch's prompts (the trainer's dataset maps question -> answer)."""
    table = getattr(trainer, "answers_by_question", None) or {}
    return [table.get(p) for p in prompts]
