"""The configuration of one cold-start SFT run (``longshort train sft``), readable from and writable to YAML.

    config = SFTRunConfig.from_yaml("training/configs/sft/long.yaml", lr=5e-5)  # None overrides are ignored
    config.to_yaml("runs/coldstart/sft-long.yaml")                                # reproduces the run

The shipped ``training/configs/sft/{long,short}.yaml`` are the testbed defaults; relative paths in a
config are relative to the working directory the run starts in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

AgentName = Literal["long", "short"]


def default_config_path(agent: AgentName) -> Path:
    """The shipped YAML of ``agent``'s testbed run (inside the installed package)."""
    return Path(__file__).resolve().parent.parent / "configs" / "sft" / f"{agent}.yaml"


class SFTRunConfig(BaseModel):
    """Supervised fine-tuning of one agent on its own rows, loss on the completion only."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    agent: AgentName = Field(description="which agent's rows to train on: long or short")
    model: str | None = Field(
        default=None,
        description="path or hub id to start from; default: the shipped testbed checkpoint "
        "(reasoner for long, base for short)",
    )
    data: str = Field(
        description="a directory saved with Dataset.save_to_disk, or one holding long/ and short/ (the agent's is used)"
    )
    out: str = Field(description="where the model (or adapter), tokenizer and sft_info.json are written")
    lora: bool = Field(default=False, description="train a LoRA adapter instead of all parameters")
    lora_r: int = Field(default=16, ge=1, description="LoRA rank")
    lora_alpha: int = Field(default=32, ge=1, description="LoRA scaling numerator (scale = alpha / r)")
    lora_dropout: float = Field(default=0.05, ge=0.0, lt=1.0, description="dropout on the LoRA input")
    lora_target_modules: list[str] | str = Field(
        default="all-linear", description="module names to adapt, or 'all-linear' (every linear but the LM head)"
    )
    lr: float = Field(default=1e-4, gt=0.0, description="peak learning rate (cosine schedule after warm-up)")
    epochs: float = Field(default=3, ge=0.0, description="passes over the rows (ignored when max_steps > 0)")
    max_steps: int = Field(default=-1, ge=-1, description="optimizer steps; -1: run for `epochs`")
    batch_size: int = Field(default=16, ge=1, description="rows per device per forward pass")
    grad_accum: int = Field(default=1, ge=1, description="forward passes per optimizer step")
    max_length: int = Field(
        default=4096, ge=2, description="rows longer than this (prompt + completion) are dropped, never truncated"
    )
    warmup_ratio: float = Field(default=0.05, ge=0.0, lt=1.0, description="fraction of the steps spent warming up")
    weight_decay: float = Field(default=0.0, ge=0.0, description="AdamW weight decay")
    gradient_checkpointing: bool = Field(
        default=True, description="recompute activations in the backward pass (less memory, ~30% slower)"
    )
    seed: int = Field(default=0, ge=0, description="seed for LoRA init and data order")
    bf16: bool | None = Field(default=None, description="bf16 autocast; None: on when training on CUDA")
    device: str | None = Field(default=None, description="cpu forces the CPU; None or cuda: CUDA when available")
    save_dtype: Literal["float16", "bfloat16", "float32"] = Field(
        default="float16", description="dtype of the saved full model (a LoRA adapter is saved as trained)"
    )

    @model_validator(mode="after")
    def _check(self) -> SFTRunConfig:
        if self.max_steps == 0:
            raise ValueError("max_steps must be >= 1, or -1 to train for `epochs`; got 0")
        if self.max_steps < 0 and self.epochs <= 0:
            raise ValueError(f"epochs must be > 0 when max_steps is -1, got {self.epochs}")
        if self.device not in (None, "cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda' (or unset), got {self.device!r}")
        if isinstance(self.lora_target_modules, list) and not self.lora_target_modules:
            raise ValueError("lora_target_modules must name at least one module, or be 'all-linear'")
        return self

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> SFTRunConfig:
        """The config in ``path``, with every override that is not None applied on top."""
        import yaml

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} not found")
        try:
            values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise ValueError(f"{path} is not valid YAML: {e}") from None
        if not isinstance(values, dict):
            raise ValueError(f"{path} must hold a mapping of config fields, got a {type(values).__name__}")
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def to_yaml(self, path: str | Path) -> Path:
        """Write every field (defaults included), so the file alone reproduces the run."""
        import yaml

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(self.model_dump(), sort_keys=False), encoding="utf-8")
        return path
