"""Rejection-sampling fine-tuning data: a trace store -> one agent's SFT rows (``train sft --from-traces``).

RFT keeps the episodes the pair already got right and trains each agent on its own part of them,
with the same SFT machinery as the cold start. The selection is strict because every kept row is
imitated verbatim:

- correct: the stored ``em`` reward is 1 when the row has one; else the episode's answer is graded
  against its gold (``Episode.reference``) with the graders evaluation reports with; a row with
  neither cannot be judged and is dropped (counted), never guessed;
- well formed: RL's format reward is 1 for the agent's own turns (``training.rl.rewards.format_reward``
  over ``training.rl.rollout.episode_columns``: answered, every own turn parsed on its first attempt)
  and every turn of the episode parsed (``evals.report.well_formed``), so no row teaches a repair;
- token-exact: a row the store marks ``token_exact: false`` is refused unless ``allow_inexact``,
  and an episode whose own turns lack ``token_ids`` or came from another tokenizer cannot be a
  sample of what the agent sampled;
- optional filters on the row's source, the episode's total tokens and when it was stored;
- one episode per question (the one with the fewest tokens: RFT should also teach brevity).

A row is the agent's whole episode sample (``training.samples.episode_sample``, as RL trains on):
``input_ids`` = its prompt ∥ the document in its tokens, ``completion_mask`` = 1 on the tokens it
sampled itself and 0 on the prompt, the partner's turns and forced tokens, so TRL's
``completion_only_loss`` puts the loss on the agent's own tokens only. Every dropped row is
counted by reason (``SelectionReport``); an empty selection is a ``TraceSelectionError`` saying
how many rows were read and why each was dropped, raised before any model is loaded.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from longshort.agents import Agent, ScriptedBackend
from longshort.config import ConfigError
from longshort.errors import LongShortError
from longshort.evals.grading import grade_answer
from longshort.evals.report import well_formed as all_turns_parsed
from longshort.protocol import Role
from longshort.store import StoredEpisode, TraceStore
from longshort.training.rl.rewards import format_reward
from longshort.training.rl.rollout import episode_columns
from longshort.training.samples import AgentSample, episode_sample

if TYPE_CHECKING:
    from datasets import Dataset

__all__ = [
    "DROP_REASONS",
    "SelectionReport",
    "TraceSelection",
    "TraceSelectionError",
    "select_samples",
    "trace_rows",
]

#: why a stored row is not used, in the order the checks run (a row counts under its first failure)
DROP_REASONS = (
    "other_source",  # its source is not --traces-source
    "before_since",  # stored before --traces-since
    "inexact",  # the store marks it token_exact: false (and --allow-inexact is off)
    "unknown_correctness",  # no em reward and no gold answer to grade against
    "incorrect",  # em != 1, or its answer grades wrong
    "not_answered",  # the episode did not end on a final answer
    "no_own_turns",  # the agent never spoke in it
    "malformed",  # a turn failed to parse, or an own turn needed a repair
    "too_many_tokens",  # more total tokens than --traces-max-tokens
    "tokenizer_mismatch",  # its own turns were generated with another tokenizer than the trained model's
    "no_token_ids",  # episode_sample refused it: an own turn without token ids (a chat backend's)
    "duplicate_question",  # another kept episode of the same question has fewer tokens
)


class TraceSelectionError(LongShortError):
    """No stored episode is usable for the agent (raised before any model is loaded)."""

    def __init__(self, message: str, *, path: str | Path, report: SelectionReport) -> None:
        super().__init__(message)
        self.path = str(path)
        self.report = report


@dataclass(frozen=True)
class TraceSelection:
    """Which stored episodes RFT may learn from (``SFTRunConfig.trace_selection`` builds it from the run's options)."""

    store: str
    source: str | None = None
    max_tokens: int | None = None
    since: str | None = None
    allow_inexact: bool = False

    def __post_init__(self) -> None:
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ConfigError(f"traces_max_tokens must be >= 1, got {self.max_tokens}", key="traces_max_tokens")
        self.since_timestamp()  # a bad date fails when the selection is made, not after reading the store

    def since_timestamp(self) -> float | None:
        """``since`` as a Unix time (an ISO date or date-time; one without a zone is read as local time)."""
        if self.since is None:
            return None
        try:
            when = datetime.fromisoformat(self.since)  # a bare date is its midnight
        except ValueError:
            raise ConfigError(
                f"traces_since must be an ISO date or date-time (2026-12-01, 2026-12-01T09:30), got {self.since!r}",
                key="traces_since",
            ) from None
        return when.timestamp()


@dataclass
class SelectionReport:
    """What the selection read, kept and dropped (by reason): recorded in ``sft_info.json`` as ``traces``."""

    store: str
    agent: Role
    read: int = 0
    selected: int = 0
    dropped: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        reasons = {reason: self.dropped[reason] for reason in DROP_REASONS if self.dropped[reason]}
        counts = {"read": self.read, "selected": self.selected, "dropped": reasons}
        return {"store": self.store, "agent": self.agent, **counts}

    def summary(self) -> str:
        """One line: read, selected, and each reason's count (the reasons that dropped nothing are left out)."""
        reasons = ", ".join(f"{reason} {n}" for reason, n in self.as_dict()["dropped"].items()) or "none"
        return f"read {self.read} stored episodes, selected {self.selected}; dropped: {reasons}"


def correctness(row: StoredEpisode) -> bool | None:
    """Is the row's episode correct? Its ``em`` reward if stored, else its answer graded vs its gold; None: unknown."""
    em = row.rewards.get("em")
    if em is not None:
        return em == 1.0
    gold = row.episode.reference or getattr(row, "reference", None)
    if not gold:
        return None
    return grade_answer(row.episode.answer, gold).correct


def _well_formed(row: StoredEpisode, role: Role) -> str | None:
    """None when the episode is well formed for ``role``, else the drop reason."""
    episode = row.episode
    if episode.status != "answered":
        return "not_answered"
    if not any(t.agent == role for t in episode.turns):
        return "no_own_turns"
    columns = episode_columns(episode, role)
    own_ok = format_reward([None], well_formed=[columns["well_formed"]], status=[columns["status"]])[0] == 1.0
    return None if own_ok and all_turns_parsed(episode) else "malformed"


def _drop_reason(
    row: StoredEpisode, role: Role, selection: TraceSelection, since: float | None, fingerprint: str | None
) -> str | None:
    """The first check ``row`` fails for ``role`` (``DROP_REASONS`` order), or None when it is selected.

    ``fingerprint`` is the trained model's tokenizer's: own turns sampled with another tokenizer
    carry ids that mean other tokens to it.
    """
    if selection.source is not None and row.source != selection.source:
        return "other_source"
    if since is not None and row.created < since:
        return "before_since"
    exact = getattr(row, "token_exact", None)  # the store's provenance column, once it has one
    if exact is False and not selection.allow_inexact:
        return "inexact"
    correct = correctness(row)
    if correct is None:
        return "unknown_correctness"
    if not correct:
        return "incorrect"
    reason = _well_formed(row, role)
    if reason is not None:
        return reason
    if selection.max_tokens is not None and row.episode.tokens.total > selection.max_tokens:
        return "too_many_tokens"
    own = [t for t in row.episode.turns if t.agent == role and t.token_ids]
    if any(t.model_fingerprint not in (None, fingerprint) for t in own):
        return "tokenizer_mismatch"
    return None


def select_samples(
    rows: Iterable[StoredEpisode], agent: Agent, selection: TraceSelection
) -> tuple[list[AgentSample], SelectionReport]:
    """``agent``'s samples of the selected rows, one per question, and the counts of what was dropped.

    ``agent`` must be token-level (its tokenizer is the trained model's): its samples are built by
    ``episode_sample``, which raises for an episode whose own turns have no token ids; such rows
    count as ``no_token_ids``.
    """
    report = SelectionReport(store=selection.store, agent=agent.role)
    since = selection.since_timestamp()
    fingerprint = agent.backend.tokenizer_fingerprint  # hashes the whole vocabulary: once, not per row
    best: dict[str, tuple[tuple[int, int, int], AgentSample]] = {}
    for order, row in enumerate(rows):
        report.read += 1
        reason = _drop_reason(row, agent.role, selection, since, fingerprint)
        if reason is None:
            try:
                sample = episode_sample(row.episode, agent)
            except ValueError:
                reason = "no_token_ids"
        if reason is not None:
            report.dropped[reason] += 1
            continue
        episode = row.episode
        own_tokens = sum(t.num_tokens for t in episode.turns if t.agent == agent.role)
        key = (episode.tokens.total, own_tokens, order)  # fewest tokens wins; ties: the first stored
        kept = best.get(episode.question)
        if kept is not None:
            report.dropped["duplicate_question"] += 1
        if kept is None or key < kept[0]:
            best[episode.question] = (key, sample)
    samples = [sample for _, sample in sorted(best.values(), key=lambda kept: kept[0][2])]
    report.selected = len(samples)
    return samples, report


def sample_row(sample: AgentSample) -> dict[str, Any]:
    """One SFT row: prompt ∥ completion, the loss mask 0 on the prompt and the sample's own mask after it."""
    return {
        "input_ids": sample.prompt_ids + sample.completion_ids,
        "completion_mask": [0] * len(sample.prompt_ids) + sample.mask,
        "episode_id": sample.episode_id,
        "prompt_tokens": len(sample.prompt_ids),
        "completion_tokens": len(sample.completion_ids),
    }


def trace_rows(selection: TraceSelection, role: Role, tokenizer: Any) -> tuple[Dataset, SelectionReport]:
    """The SFT rows of ``role`` from ``selection.store`` in ``tokenizer``'s ids (the trained model's).

    Raises ``TraceSelectionError`` (naming the store and the counts by reason) when the store is
    missing or nothing is selected.
    """
    from datasets import Dataset

    path = Path(selection.store)
    if not path.is_file():
        raise TraceSelectionError(
            f"from_traces: no trace store at {path} (a SQLite file written by TraceStore)",
            path=path,
            report=SelectionReport(store=str(path), agent=role),
        )
    agent = Agent(role, ScriptedBackend([], tokenizer))  # token-level stand-in: the model's prompt ids, no generation
    with TraceStore(path) as store:
        samples, report = select_samples(store.rows(), agent, selection)
    if not samples:
        raise TraceSelectionError(
            f"from_traces: no episode of {path} is usable for the {role} agent: {report.summary()}",
            path=path,
            report=report,
        )
    return Dataset.from_list([sample_row(s) for s in samples]), report
