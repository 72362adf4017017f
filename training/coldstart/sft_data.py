"""Per-agent SFT rows from Long⊗Short dialogues, in exactly the form the graph feeds each agent.

PAPER.md §5: one example per turn. D_long = (system_long ∥ q ∥ history → next long thought),
D_short = (system_short ∥ q ∥ history → next short thought). "Exactly the form" matters: the
graph feeds a token-level agent its chat prompt followed by the document's token ids
(``graphs.turn.view_ids``; each row is cut from ``training.samples.episode_sample``),
and its turn ends at the role's stop string (no eos). Rows built any
other way (a chat template over the history, say) would train the agents on views they never see.

A row is ``{"input_ids", "completion_mask", ...provenance}``: what TRL's ``SFTTrainer`` takes as
pre-tokenized data with the loss on the completion only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from longshort.agents import Agent, ScriptedBackend
from longshort.trace import Episode, Turn
from longshort.training.samples import episode_sample

if TYPE_CHECKING:
    import datasets


def _agent(role: str, tokenizer) -> Agent:
    # A token-level stand-in backend: the agent's prompt ids and encoding, no generation.
    return Agent(role, ScriptedBackend([], tokenizer))  # type: ignore[arg-type]


def dialogue_episode(dialogue: Any, agents: dict[str, Agent]) -> Episode:
    """A dialogue as the Episode the graph would have recorded: each turn in its author's tokens."""
    turns = []
    for role, text in dialogue.turns:
        ids = agents[role].backend.encode(text)
        fingerprint = agents[role].backend.tokenizer_fingerprint
        turns.append(Turn(agent=role, text=text, token_ids=ids, num_tokens=len(ids), model_fingerprint=fingerprint))
    return Episode(id=str(dialogue.problem_id), question=dialogue.question, status="answered", turns=turns)


def dialogue_rows(dialogue: Any, long_tokenizer, short_tokenizer) -> dict[str, list[dict[str, Any]]]:
    """The rows of one dialogue for each agent: ``{"long": [...], "short": [...]}``.

    ``dialogue`` has ``problem_id``, ``question``, ``turns`` (role, text) and ``segments`` (the
    thought indices each turn covers), as ``training.coldstart.compression.Dialogue`` does. Each
    agent's rows are cut from its one training sample of the dialogue (``training.samples``): row k
    is the sample's prompt and document up to the end of the agent's turn k, loss on that turn.
    """
    agents = {"long": _agent("long", long_tokenizer), "short": _agent("short", short_tokenizer)}
    episode = dialogue_episode(dialogue, agents)
    segments = list(getattr(dialogue, "segments", []) or [])
    rows: dict[str, list[dict[str, Any]]] = {"long": [], "short": []}
    for role, agent in agents.items():
        sample = episode_sample(episode, agent)
        for index, (turn, (start, end)) in enumerate(zip(episode.turns, sample.turn_spans, strict=True)):
            if turn.agent != role:
                continue
            prompt = sample.prompt_ids + sample.completion_ids[:start]
            covered = segments[index].thoughts if index < len(segments) else []
            rows[role].append(
                {
                    "input_ids": prompt + sample.completion_ids[start:end],
                    "completion_mask": [0] * len(prompt) + sample.mask[start:end],
                    "problem_id": dialogue.problem_id,
                    "turn": index,
                    "thoughts": list(covered),
                    "prompt_tokens": len(prompt),
                    "completion_tokens": end - start,
                }
            )
    return rows


def sft_tables(dialogues: Sequence[Any], long_tokenizer, short_tokenizer) -> dict[str, datasets.Dataset]:
    """``{"long": Dataset, "short": Dataset}`` over all dialogues (empty tables keep their columns)."""
    from datasets import Dataset

    rows: dict[str, list[dict[str, Any]]] = {"long": [], "short": []}
    for dialogue in dialogues:
        for role, more in dialogue_rows(dialogue, long_tokenizer, short_tokenizer).items():
            rows[role] += more
    columns = ("input_ids", "completion_mask", "problem_id", "turn", "thoughts", "prompt_tokens", "completion_tokens")
    return {
        role: Dataset.from_list(r) if r else Dataset.from_dict({c: [] for c in columns}) for role, r in rows.items()
    }
