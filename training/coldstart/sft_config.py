"""``SFTRunConfig``: one cold-start SFT run (``longshort train sft``), a TRL ``SFTConfig``.

    config = load_config(SFTRunConfig, default_config_path("long"), {"learning_rate": 5e-5})
    save_config(config, "runs/coldstart/sft-long/config.yaml")      # what train_sft writes: it reproduces the run

Every trainer setting is TRL's own field (``learning_rate``, ``num_train_epochs``, ``max_steps``,
``per_device_train_batch_size``, ``gradient_accumulation_steps``, ``output_dir``, ``use_cpu``, …),
passed to ``SFTTrainer`` as is; the fields below add the agent, its data and starting model, and
LoRA, and set testbed defaults on a few of TRL's (cosine schedule, no checkpoints). The loss is on
the completion only, always: the rows carry a ``completion_mask``. With ``from_traces`` the rows
come from a trace store instead of ``data`` (rejection-sampling fine-tuning, from_traces.py;
``traces_*`` and ``allow_inexact`` select the episodes). The shipped
``training/configs/sft/{long,short}[-lora].yaml`` are the testbed runs; relative paths are relative
to the working directory the run starts in.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal

from trl import SFTConfig

from longshort.config import ConfigError, option

if TYPE_CHECKING:
    from longshort.training.coldstart.from_traces import TraceSelection

__all__ = ["AgentName", "SFTRunConfig", "default_config_path"]

AgentName = Literal["long", "short"]


def default_config_path(agent: AgentName) -> Path:
    """The shipped YAML of ``agent``'s testbed run (inside the installed package)."""
    return Path(__file__).resolve().parent.parent / "configs" / "sft" / f"{agent}.yaml"


@dataclass
class SFTRunConfig(SFTConfig):
    """Supervised fine-tuning of one agent on its own rows, loss on the completion only."""

    #: inherited TRL fields that get a command-line option (every other one is settable in YAML)
    cli_fields: ClassVar[tuple[str, ...]] = (
        "max_steps",
        "gradient_accumulation_steps",
        "weight_decay",
        "max_grad_norm",
        "activation_checkpointing",
        "use_cpu",
        "logging_steps",
        "save_steps",
        "report_to",
    )
    #: keys of the configs before they were TRL's (the error for an old YAML names the new key)
    renamed_keys: ClassVar[dict[str, str]] = {
        "lr": "learning_rate",
        "epochs": "num_train_epochs",
        "batch_size": "per_device_train_batch_size",
        "grad_accum": "gradient_accumulation_steps",
        "out": "output_dir",
        "warmup_ratio": "warmup_steps",
        "device": "use_cpu",
    }

    agent: AgentName = option(help="which agent's rows to train on: long or short", kw_only=True)
    data: str | None = option(
        None,
        help="a directory saved with Dataset.save_to_disk, or one holding long/ and short/ (the agent's is used); "
        "ignored with --from-traces",
    )
    from_traces: str | None = option(
        None,
        help="rejection-sampling fine-tuning: train on the agent's own turns of the correct, well-formed episodes "
        "of this SQLite trace store (training/coldstart/from_traces.py) instead of --data",
    )
    traces_source: str | None = option(None, help="with --from-traces: only rows of this source (rl, eval)")
    traces_max_tokens: int | None = option(
        None, help="with --from-traces: only episodes of at most this many tokens (both agents')"
    )
    traces_since: str | None = option(
        None, help="with --from-traces: only rows stored on or after this ISO date or date-time (local time)"
    )
    allow_inexact: bool = option(
        False, help="with --from-traces: also use rows the store marks token_exact: false (refused by default)"
    )
    model: str | None = option(
        None,
        help="path or hub id to start from; default: the shipped testbed reasoner (long) or base (short)",
    )
    lora: bool = option(False, help="train a LoRA adapter (the paper trains all parameters)")
    lora_r: int = option(16, help="LoRA rank")
    lora_alpha: int = option(32, help="LoRA scaling numerator (scale = alpha / r)")
    lora_dropout: float = option(0.05, help="dropout on the LoRA input")
    lora_target_modules: list[str] | str = option(
        "all-linear", help="module names to adapt (comma-separated), or 'all-linear' (every linear but the LM head)"
    )
    save_dtype: Literal["float16", "bfloat16", "float32"] = option(
        "float16", help="dtype of the saved full model (a LoRA adapter is saved as trained)"
    )
    # TRL's own fields, with this project's defaults
    output_dir: str = option(
        help="where the model (or adapter), tokenizer, sft_info.json and config.yaml are written", kw_only=True
    )
    learning_rate: float = option(1e-4, help="peak learning rate (cosine schedule after the warm-up)")
    num_train_epochs: float = option(3.0, help="passes over the rows (ignored when max_steps > 0)")
    per_device_train_batch_size: int = option(16, help="rows per device per forward pass")
    max_length: int | None = option(
        4096, help="rows longer than this (prompt + completion) are dropped, never truncated"
    )
    warmup_steps: float = option(0.05, help="warm-up: optimizer steps, or a fraction of them when < 1")
    lr_scheduler_type: str = option("cosine", help="TRL's learning-rate schedule (linear, cosine, constant, …)")
    save_strategy: str = option("no", help="checkpoints during training: no (only the final model), steps or epoch")
    seed: int = option(0, help="seed for the LoRA init and the data order")
    bf16: bool | None = option(None, help="bf16 autocast; default: on when training on CUDA")

    def trace_selection(self) -> TraceSelection:
        """The ``--from-traces`` selection of this run (``from_traces`` must be set)."""
        from longshort.training.coldstart.from_traces import TraceSelection

        if not self.from_traces:
            raise ConfigError("trace_selection needs from_traces (a trace store path)", key="from_traces")
        return TraceSelection(
            store=self.from_traces,
            source=self.traces_source,
            max_tokens=self.traces_max_tokens,
            since=self.traces_since,
            allow_inexact=self.allow_inexact,
        )

    def __post_init__(self) -> None:
        checks = [
            ("learning_rate", self.learning_rate > 0, "> 0"),
            ("num_train_epochs", self.num_train_epochs >= 0, ">= 0"),
            ("max_steps", self.max_steps != 0 and self.max_steps >= -1, ">= 1, or -1 to train for num_train_epochs"),
            ("per_device_train_batch_size", self.per_device_train_batch_size >= 1, ">= 1"),
            ("gradient_accumulation_steps", self.gradient_accumulation_steps >= 1, ">= 1"),
            ("max_length", self.max_length is not None and self.max_length >= 2, ">= 2"),
            ("warmup_steps", self.warmup_steps >= 0, ">= 0"),
            ("weight_decay", self.weight_decay >= 0, ">= 0"),
            ("seed", self.seed >= 0, ">= 0"),
            ("lora_r", self.lora_r >= 1, ">= 1"),
            ("lora_alpha", self.lora_alpha >= 1, ">= 1"),
            ("lora_dropout", 0 <= self.lora_dropout < 1, "in [0, 1)"),
        ]
        for name, ok, rule in checks:
            if not ok:
                raise ConfigError(f"{name} must be {rule}, got {getattr(self, name)!r}", key=name)
        if self.max_steps < 0 and self.num_train_epochs <= 0:
            message = f"num_train_epochs must be > 0 when max_steps is -1, got {self.num_train_epochs}"
            raise ConfigError(message, key="num_train_epochs")
        if not self.data and not self.from_traces:
            message = "give data (--data DIR) or from_traces (--from-traces STORE): no rows to train on"
            raise ConfigError(message, key="data")
        if self.from_traces:
            self.trace_selection()  # a bad --traces-since or --traces-max-tokens fails here, naming the option
        if isinstance(self.lora_target_modules, list) and not self.lora_target_modules:
            raise ConfigError(
                "lora_target_modules must name at least one module, or be 'all-linear'", key="lora_target_modules"
            )
        if self.completion_only_loss is False:
            raise ConfigError(
                "completion_only_loss must be true: each agent learns its own turns, not the prompt",
                key="completion_only_loss",
            )
        self.completion_only_loss = True
        if getattr(self, "activation_checkpointing", False) is None:  # transformers >= 5.2x's name (absent before);
            self.activation_checkpointing = self.gradient_checkpointing  # TRL's default sits on the old alias
        if self.bf16 is None:  # TRL's default is bf16 everywhere; on a CPU that is slow or unsupported
            import torch

            self.bf16 = not self.use_cpu and torch.cuda.is_available()
        super().__post_init__()
