"""Per-agent SFT rows from Long⊗Short dialogues, in exactly the form the graph feeds each agent.

PAPER.md §5: one example per turn. D_long = (system_long ∥ q ∥ history → next long thought),
D_short = (system_short ∥ q ∥ history → next short thought). "Exactly the form" matters: the
graph feeds a token-level agent its chat prompt followed by the document's token ids
(``graphs.turn.view_ids``), and its turn ends at the role's stop string (no eos). Rows built any
other way (a chat template over the history, say) would train the agents on views they never see.

A row is ``{"input_ids", "completion_mask", ...provenance}``: what TRL's ``SFTTrainer`` takes as
pre-tokenized data with the loss on the completion only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from longshort.agents import Agent, ScriptedBackend
from longshort.graphs.turn import view_ids
from longshort.trace import Turn

if TYPE_CHECKING:
    import datasets


def _agent(role: str, tokenizer) -> Agent:
    # A token-level stand-in backend: the agent's prompt ids and encoding, no generation.
    return Agent(role, ScriptedBackend([], tokenizer))  # type: ignore[arg-type]


def dialogue_rows(dialogue: Any, long_tokenizer, short_tokenizer) -> dict[str, list[dict[str, Any]]]:
    """The rows of one dialogue for each agent: ``{"long": [...], "short": [...]}``.

    ``dialogue`` has ``problem_id``, ``question``, ``turns`` (role, text) and ``segments`` (the
    thought indices each turn covers), as ``training.compression.Dialogue`` does.
    """
    agents = {"long": _agent("long", long_tokenizer), "short": _agent("short", short_tokenizer)}
    fingerprints = {role: a.backend.tokenizer_fingerprint for role, a in agents.items()}
    history: list[Turn] = []
    rows: dict[str, list[dict[str, Any]]] = {"long": [], "short": []}
    segments = list(getattr(dialogue, "segments", []) or [])
    for index, (role, text) in enumerate(dialogue.turns):
        agent = agents[role]
        prompt = view_ids(agent, dialogue.question, history)
        target = agent.backend.encode(text)
        covered = segments[index].thoughts if index < len(segments) else []
        rows[role].append(
            {
                "input_ids": prompt + target,
                "completion_mask": [0] * len(prompt) + [1] * len(target),
                "problem_id": dialogue.problem_id,
                "turn": index,
                "thoughts": list(covered),
                "prompt_tokens": len(prompt),
                "completion_tokens": len(target),
            }
        )
        history.append(
            Turn(
                agent=role,
                text=text,
                token_ids=target,
                num_tokens=len(target),
                model_fingerprint=fingerprints[role],
            )
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
