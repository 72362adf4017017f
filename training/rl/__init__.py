"""Synergizing multi-turn RL (PAPER.md §6): both agents trained with TRL's GRPO on the graph's own episodes.

    rollout   TRL ``rollout_func``: the compiled reasoner runs the batch, the trained agent on the
              trainer's weights, its partner frozen; each episode is one completion (env_mask = own tokens)
    rewards   EM (eval graders), format, Kimi length within groups, µ's schedule
    config    ``RLConfig(GRPOConfig)``: the round schedule, SFT references, reward weights, LoRA
    trainer   ``LongShortGRPOTrainer`` and ``train_rl``: the schedule L1 → L2 → S1 → …, checkpoints,
              ``rounds.json``, the trace store, resume

``longshort train rl`` runs it; ``training/configs/rl/testbed.yaml`` is the testbed recipe.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from longshort._lazy import lazy_getattr

if TYPE_CHECKING:
    from longshort.training.rl.config import RLConfig, parse_schedule
    from longshort.training.rl.rewards import em_reward, format_reward, kimi_length, length_reward
    from longshort.training.rl.rollout import GraphRollout
    from longshort.training.rl.trainer import LongShortGRPOTrainer, train_rl

_LAZY = {
    "RLConfig": "longshort.training.rl.config",
    "parse_schedule": "longshort.training.rl.config",
    "em_reward": "longshort.training.rl.rewards",
    "format_reward": "longshort.training.rl.rewards",
    "kimi_length": "longshort.training.rl.rewards",
    "length_reward": "longshort.training.rl.rewards",
    "GraphRollout": "longshort.training.rl.rollout",
    "LongShortGRPOTrainer": "longshort.training.rl.trainer",
    "train_rl": "longshort.training.rl.trainer",
}
__all__ = [
    "GraphRollout",
    "LongShortGRPOTrainer",
    "RLConfig",
    "em_reward",
    "format_reward",
    "kimi_length",
    "length_reward",
    "parse_schedule",
    "train_rl",
]

__getattr__ = lazy_getattr("longshort.training.rl", _LAZY)
