"""Training, stage by stage (PAPER.md §1-6): what turns traces into better agents.

- ``longshort.training.analysis``: chunk long CoTs into thoughts, Monte Carlo rollouts from each
  prefix, the bounded importance metric, the report (``longshort analyze …``).
- ``longshort.training.coldstart``: keep the selected thoughts long, rewrite the rest short,
  per-agent SFT tables, TRL SFT of each agent (``longshort train data|sft``).
- ``longshort.training.samples``: one Episode as one agent's training sample (prompt ids, the
  document in its tokens, the mask of its own sampled tokens): what SFT and RL both train on.
- ``longshort.training.rl`` (next): multi-turn GRPO through the graph.

Training may use the eval graders (what is optimized is what is reported) but never the testbed:
problems, models and rewriters come in as arguments.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from longshort._lazy import lazy_getattr

if TYPE_CHECKING:
    from longshort.training.samples import AgentSample, episode_sample

_LAZY = {"AgentSample": "longshort.training.samples", "episode_sample": "longshort.training.samples"}
__all__ = ["AgentSample", "episode_sample"]

__getattr__ = lazy_getattr("longshort.training", _LAZY)
