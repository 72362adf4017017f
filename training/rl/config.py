"""``RLConfig``: one synergizing multi-turn RL run (``longshort train rl``), a TRL ``GRPOConfig``.

Every GRPO setting is TRL's own (``learning_rate``, ``num_generations``, ``beta``, ``max_steps``
per round, ``report_to``, …); the fields below add the round schedule, the two agents' starting
(SFT) models, the reward weights and the µ schedule, the graph's limits, and LoRA.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import ClassVar

from trl import GRPOConfig

from longshort.limits import MAX_TOKENS_PER_TURN, MAX_TOTAL_TOKENS, MAX_TURNS

__all__ = ["RLConfig", "parse_schedule"]

_PHASE = re.compile(r"^([LS])(\d+)$")


def parse_schedule(schedule: str) -> list[tuple[str, str, int]]:
    """``"L1,L2,S1"`` -> ``[("L1", "long", 1), ("L2", "long", 2), ("S1", "short", 1)]``.

    Each agent's rounds must count 1, 2, 3… in order (a round starts from that agent's previous one).
    """
    phases: list[tuple[str, str, int]] = []
    seen = {"long": 0, "short": 0}
    for raw in schedule.split(","):
        name = raw.strip().upper()
        m = _PHASE.match(name)
        if not m:
            raise ValueError(f"schedule: {raw.strip()!r} is not a round such as L1 or S2 (got {schedule!r})")
        role = "long" if m.group(1) == "L" else "short"
        k = int(m.group(2))
        if k != seen[role] + 1:
            raise ValueError(f"schedule: {name} follows {m.group(1)}{seen[role]}; {role} rounds count 1, 2, … in order")
        seen[role] = k
        phases.append((name, role, k))
    if not phases:
        raise ValueError("schedule must name at least one round, e.g. L1,S1")
    return phases


@dataclass
class RLConfig(GRPOConfig):
    """Alternating GRPO of the long and short agents through the reasoner graph (PAPER.md §6)."""

    #: inherited TRL fields that get a command-line option (all others are settable through YAML)
    cli_fields: ClassVar[tuple[str, ...]] = (
        "output_dir",
        "learning_rate",
        "max_steps",
        "num_generations",
        "per_device_train_batch_size",
        "gradient_accumulation_steps",
        "temperature",
        "beta",
        "seed",
        "bf16",
        "logging_steps",
        "save_steps",
        "report_to",
        "use_cpu",
    )

    schedule: str = field(
        default="L1,L2,S1,L3,S2,L4",
        metadata={"help": "the rounds in order: L<k> trains the long agent (short frozen), S<k> the reverse"},
    )
    long_model: str | None = field(
        default=None,
        metadata={
            "help": "the long agent's SFT model (a full model dir, hub id, or LoRA adapter dir); the KL reference "
            "of every long round; default: the shipped longshort-sft pair's long adapter"
        },
    )
    short_model: str | None = field(
        default=None,
        metadata={"help": "the short agent's SFT model, as long_model; default: the shipped pair's short adapter"},
    )
    data: str = field(
        default="testbed",
        metadata={
            "help": "training problems: 'testbed' (its train split), a JSONL/CSV/Parquet file, or a hub dataset "
            "with question/problem and answer columns"
        },
    )
    data_n: int = field(default=2000, metadata={"help": "training problems to use (the first N)"})
    eval_n: int = field(default=200, metadata={"help": "held-out problems measured greedily after every round"})
    em_weight: float = field(default=1.0, metadata={"help": "η: weight of the exact-match reward"})
    format_weight: float = field(default=0.5, metadata={"help": "λ: weight of the format reward"})
    length_weight: float = field(default=0.5, metadata={"help": "µ's final value: weight of the Kimi length reward"})
    length_warmup_steps: int = field(
        default=10, metadata={"help": "µ is 0 for this many optimizer steps of each round (accuracy first)"}
    )
    length_ramp_steps: int = field(default=20, metadata={"help": "then µ rises linearly to length_weight over these"})
    partner_temperature: float = field(
        default=0.0, metadata={"help": "sampling temperature of the frozen partner (0: greedy, a fixed environment)"}
    )
    max_turns: int = field(default=MAX_TURNS, metadata={"help": "graph limit: turns per episode"})
    max_tokens_per_turn: int = field(
        default=MAX_TOKENS_PER_TURN, metadata={"help": "graph limit: the per-turn cap (a cut turn ends as turn_cap)"}
    )
    max_total_tokens: int = field(
        default=MAX_TOTAL_TOKENS, metadata={"help": "graph limit: tokens per episode, both agents, every attempt"}
    )
    mask_over_budget: bool = field(
        default=False,
        metadata={
            "help": "give episodes that ran out of turns or tokens no loss (default: they train, with EM 0 and "
            "format 0, so over-long episodes are pushed down); answered episodes are never masked"
        },
    )
    lora: bool = field(default=True, metadata={"help": "train a LoRA adapter on the SFT model (else all parameters)"})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling numerator (scale = alpha / r)"})
    lora_target_modules: str = field(default="all-linear", metadata={"help": "modules to adapt, or all-linear"})
    partner_backend: str | None = field(
        default=None,
        metadata={"help": "hf (a thread) or hf-process (a child process); default: hf-process on CUDA, hf on CPU"},
    )
    store: str | None = field(
        default=None,
        metadata={"help": "the trace store (SQLite) every episode is appended to; default OUT/traces.sqlite"},
    )

    def __post_init__(self) -> None:
        # TRL derives each of these from the other; a saved config records what was given (config_dict)
        self.init_values = {n: getattr(self, n) for n in ("generation_batch_size", "steps_per_generation")}
        super().__post_init__()
        parse_schedule(self.schedule)
        if self.mask_truncated_completions:
            raise ValueError(
                "mask_truncated_completions must be false: it zeroes every completion whose last id is not EOS, "
                "i.e. every episode that ends on a stop tag; use mask_over_budget to drop over-budget episodes"
            )
        if self.generation_batch_size % self.num_generations:
            raise ValueError(
                f"generation_batch_size ({self.generation_batch_size}) must be a multiple of num_generations "
                f"({self.num_generations}): each question's group of completions stays together"
            )
        for name in ("data_n", "eval_n", "max_turns", "max_tokens_per_turn", "max_total_tokens", "lora_r"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("length_warmup_steps", "length_ramp_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.partner_backend not in (None, "hf", "hf-process"):
            raise ValueError(f"partner_backend must be hf or hf-process, got {self.partner_backend!r}")
        if self.use_vllm:
            from longshort.agents.vllm import is_vllm_available

            if not is_vllm_available():
                raise ImportError("use_vllm needs vLLM: pip install 'longshort[vllm]' (and a running `trl vllm-serve`)")
