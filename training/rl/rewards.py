"""The synergy rewards of PAPER.md §6: r = η·EM + λ·Format + µ·Length, as plain batched functions.

Each reward has TRL's signature, ``(completions, answer, **columns) -> list[float | None]``, and
reads the columns the graph rollout adds to every completion (``training/rl/rollout.py``): the
episode's final ``predicted`` answer, its ``status``, whether the trained agent's turns were all
``well_formed``, and the token counts. EM grades through ``longshort.evals.grading`` (the graders
evaluation reports with), so what is optimized is what is reported.

The length reward is Kimi k1.5's, within each group of ``G`` completions of one question:
λ = 0.5 - (len - min) / (max - min); a correct completion gets λ, a wrong one min(0, λ); a group
whose lengths are all equal gets 0. It needs the whole group, and under several processes a
group can straddle ranks, so the trainer computes it after gathering (``kimi_length``);
``length_reward`` is the placeholder that names its column and weight. Length is the episode's
total tokens (both agents): the cost the method cuts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from longshort.evals.grading import grade_answer

__all__ = ["REWARD_NAMES", "em_reward", "format_reward", "kimi_length", "length_reward", "length_weight_at"]

REWARD_NAMES = ("em", "format", "length")


def em_reward(
    completions: Sequence[Any], answer: Sequence[str], predicted: Sequence[str | None], **_: Any
) -> list[float]:
    """1.0 when the episode's final answer grades equal to the gold one, else 0.0."""
    return [float(grade_answer(p, g).correct) for p, g in zip(predicted, answer, strict=True)]


def format_reward(
    completions: Sequence[Any], well_formed: Sequence[bool], status: Sequence[str], **_: Any
) -> list[float]:
    """1.0 when every turn of the trained agent matched its tag pattern and the episode ended with ``</answer>``."""
    return [float(ok and s == "answered") for ok, s in zip(well_formed, status, strict=True)]


def length_reward(completions: Sequence[Any], **_: Any) -> list[float | None]:
    """A placeholder column: the trainer fills it with ``kimi_length`` over each gathered group."""
    return [None] * len(completions)


def kimi_length(lengths: Sequence[float], correct: Sequence[bool], group_size: int) -> list[float]:
    """Kimi k1.5's length reward over consecutive groups of ``group_size`` (lengths in tokens)."""
    if group_size < 1 or len(lengths) % group_size:
        raise ValueError(f"{len(lengths)} completions do not split into groups of {group_size}")
    if len(correct) != len(lengths):
        raise ValueError(f"{len(correct)} correctness flags for {len(lengths)} lengths")
    out: list[float] = []
    for start in range(0, len(lengths), group_size):
        group = lengths[start : start + group_size]
        lo, hi = min(group), max(group)
        for n, ok in zip(group, correct[start : start + group_size], strict=True):
            lam = 0.0 if hi == lo else 0.5 - (n - lo) / (hi - lo)
            out.append(lam if ok else min(0.0, lam))
    return out


def length_weight_at(step: int, *, weight: float, warmup_steps: int, ramp_steps: int) -> float:
    """µ at optimizer step ``step``: 0 for ``warmup_steps``, then linear up to ``weight`` over ``ramp_steps``."""
    if step < warmup_steps:
        return 0.0
    if ramp_steps <= 0:
        return weight
    return weight * min(1.0, (step - warmup_steps + 1) / ramp_steps)


# TRL names a reward's column and metric (``rewards/<name>/mean``) after the function's __name__.
for _fn, _name in zip((em_reward, format_reward, length_reward), REWARD_NAMES, strict=True):
    _fn.__name__ = _name
