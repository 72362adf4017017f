"""Cold-start SFT (PAPER.md §5): each agent is fine-tuned on its own rows, next-token loss on the target turn only.

    longshort train sft --agent long                                   # testbed defaults: configs/sft/long.yaml
    longshort train sft --agent short --data runs/coldstart/sft --output-dir runs/coldstart/sft-short --lora
    longshort train sft --config runs/coldstart/sft-short/config.yaml   # a run again (each run writes its config)
    longshort train sft --agent long --from-traces runs/rl/traces.sqlite --output-dir runs/rft-long  # RFT
    accelerate launch --config_file training/configs/accelerate/zero2.yaml -m longshort.cli \\
        train sft --agent long --model deepseek-ai/DeepSeek-R1-Distill-Qwen-7B --data DIR --output-dir DIR

(``zero3.yaml`` shards the parameters too; ``ddp.yaml`` replicates them; set ``num_processes`` in
the file to the number of GPUs.) The same code runs in one process and under ``accelerate launch``:
every process trains, only the main one writes.

The config (``SFTRunConfig``, sft_config.py) is a TRL ``SFTConfig`` and goes to ``SFTTrainer`` as its
``args``, unchanged: every TRL setting is set in the YAML or on the command line.

Rows come from ``training/coldstart/sft_data.py`` (or, with ``--from-traces STORE``, from a trace
store: ``training/coldstart/from_traces.py``, rejection-sampling fine-tuning on the agent's own
turns of correct, well-formed episodes): ``input_ids`` (prompt ∥ target turn) and
``completion_mask`` (1 on the target), plus provenance columns, which are dropped here. TRL's
``SFTTrainer`` turns the mask into labels (-100 on the prompt) with ``completion_only_loss=True``.
Rows longer than ``max_length`` are dropped and counted, never truncated: a truncated row would
teach a turn without its end. Rows without a target token are dropped too (they carry no loss).

Departures from the paper: the paper trains all parameters; ``--lora`` trains an adapter instead
(for a quick run on one GPU). With bf16 on, full fine-tuning keeps fp32 weights under bf16 autocast
(pure-bf16 AdamW loses updates smaller than the weights' bf16 spacing); under DeepSpeed the model
is loaded in bf16 since DeepSpeed keeps the fp32 master copy, and with LoRA the frozen base is bf16.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from longshort.errors import LongShortError
from longshort.training.coldstart.sft_config import SFTRunConfig

if TYPE_CHECKING:
    from datasets import Dataset

logger = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("input_ids", "completion_mask")


class SFTDataError(LongShortError):
    """The SFT rows are missing, empty or malformed (raised before any model is loaded)."""

    def __init__(self, message: str, *, path: str | Path) -> None:
        super().__init__(message)
        self.path = str(path)


def data_dir(config: SFTRunConfig) -> Path:
    """``data/<agent>`` when ``data`` holds per-agent subfolders, else ``data`` itself."""
    root = Path(config.data)
    if not root.is_dir():
        raise SFTDataError(f"SFT data directory {root} not found (expected a Dataset.save_to_disk folder)", path=root)
    if (root / config.agent).is_dir():
        return root / config.agent
    other = "short" if config.agent == "long" else "long"
    if (root / other).is_dir():
        raise SFTDataError(
            f"{root} has {other}/ but no {config.agent}/: no rows for the {config.agent} agent", path=root
        )
    return root


def model_path(config: SFTRunConfig) -> str:
    """The model to start from: ``config.model``, else the shipped testbed reasoner (long) or base (short)."""
    if config.model:
        return config.model
    from longshort.shipped import default_model

    return str(default_model(config.agent))


def _disk_rows(config: SFTRunConfig) -> tuple[Dataset, Path]:
    """The agent's table saved under ``config.data``, its required columns checked."""
    from datasets import Dataset, DatasetDict, load_from_disk

    path = data_dir(config)
    empty = f"{path} has no rows: nothing to train the {config.agent} agent on"
    state = path / "state.json"
    if state.is_file() and json.loads(state.read_text(encoding="utf-8")).get("_data_files") == []:
        raise SFTDataError(empty, path=path)  # an empty table saved to disk does not load back (datasets 5.2)
    try:
        ds = load_from_disk(str(path))
    except FileNotFoundError as e:
        raise SFTDataError(f"{path} is not a saved dataset ({e})", path=path) from None
    if isinstance(ds, DatasetDict):
        split = next((s for s in (config.agent, "train") if s in ds), None)
        if split is None:
            raise SFTDataError(f"{path} holds splits {sorted(ds)}; expected '{config.agent}' or 'train'", path=path)
        ds = ds[split]
    assert isinstance(ds, Dataset)
    missing = [c for c in REQUIRED_COLUMNS if c not in ds.column_names]
    if missing:
        raise SFTDataError(f"{path} lacks column(s) {missing}; it has {ds.column_names}", path=path)
    if len(ds) == 0:
        raise SFTDataError(empty, path=path)
    return ds, path


def _trace_rows(config: SFTRunConfig) -> tuple[Dataset, Path, dict[str, Any]]:
    """RFT rows from ``config.from_traces`` in the starting model's tokens, and the selection's counts.

    The tokenizer is the starting model's (the trained ids must be its ids); loading it is cheap,
    and the model itself still loads only after the rows are known to be usable.
    """
    from transformers import AutoTokenizer

    from longshort.training.coldstart.from_traces import trace_rows

    tokenizer = AutoTokenizer.from_pretrained(model_path(config))
    ds, report = trace_rows(config.trace_selection(), config.agent, tokenizer)
    if os.environ.get("RANK", "0") == "0":
        logger.info("%s (%s agent): %s", config.from_traces, config.agent, report.summary())
    return ds, Path(str(config.from_traces)), report.as_dict()


def load_rows(config: SFTRunConfig) -> tuple[Dataset, dict[str, Any]]:
    """The agent's trainable rows (``input_ids`` and ``completion_mask`` only) and counts of what was dropped.

    From ``config.data`` (the cold start), or with ``config.from_traces`` from a trace store (RFT:
    ``stats["traces"]`` holds what the selection read and dropped); either way the same length and
    target checks follow.
    """
    traces: dict[str, Any] | None = None
    if config.from_traces:
        ds, path, traces = _trace_rows(config)
    else:
        ds, path = _disk_rows(config)
    ds = ds.select_columns(list(REQUIRED_COLUMNS))
    keep: list[int] = []
    stats: dict[str, Any] = {
        "rows": len(ds),
        "dropped_too_long": 0,
        "dropped_no_target": 0,
        "longest_kept": 0,
        "target_tokens": 0,
    }
    if traces is not None:
        stats["traces"] = traces
    index = 0
    for batch in ds.iter(batch_size=1024):
        for ids, mask in zip(batch["input_ids"], batch["completion_mask"], strict=True):
            if len(ids) != len(mask):
                raise SFTDataError(
                    f"{path} row {index}: input_ids has {len(ids)} tokens but completion_mask {len(mask)}", path=path
                )
            targets = sum(1 for m in mask if m)
            if len(ids) > config.max_length:
                stats["dropped_too_long"] += 1
            elif targets == 0:
                stats["dropped_no_target"] += 1
            else:
                keep.append(index)
                stats["longest_kept"] = max(stats["longest_kept"], len(ids))
                stats["target_tokens"] += targets
            index += 1
    stats["rows_used"] = len(keep)
    if not keep:
        raise SFTDataError(
            f"no usable row in {path}: {stats['dropped_too_long']} longer than max_length {config.max_length}, "
            f"{stats['dropped_no_target']} without a target token",
            path=path,
        )
    if (stats["dropped_too_long"] or stats["dropped_no_target"]) and os.environ.get("RANK", "0") == "0":
        dropped = stats["dropped_too_long"] + stats["dropped_no_target"]
        logger.warning(
            "%s: dropped %d of %d rows: %d longer than max_length %d, %d without a target token",
            path,
            dropped,
            len(ds),
            stats["dropped_too_long"],
            config.max_length,
            stats["dropped_no_target"],
        )
    # in memory: TRL's preparation then never writes cache files into the data folder
    return ds.select(keep).flatten_indices(keep_in_memory=True), stats


def build_trainer(config: SFTRunConfig):
    """The ``SFTTrainer`` for ``config`` (its ``args``) and the row counts; the data is checked before the model loads.

    The config is built before the model (the CLI builds it): under ZeRO-3 that makes ``from_pretrained``
    shard the weights as they load.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTTrainer

    rows, stats = load_rows(config)
    deepspeed = config.deepspeed_plugin is not None
    dtype = torch.bfloat16 if config.bf16 and (deepspeed or config.lora) else torch.float32
    path = model_path(config)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    peft_config = None
    if config.lora:
        from peft import LoraConfig

        peft_config = LoraConfig(
            task_type="CAUSAL_LM",
            r=config.lora_r,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            target_modules=config.lora_target_modules,
        )
    trainer = SFTTrainer(
        model=model, args=config, train_dataset=rows, processing_class=tokenizer, peft_config=peft_config
    )
    stats["model"] = path
    stats["load_dtype"] = str(dtype).removeprefix("torch.")
    return trainer, stats


def _save_full(trainer, out: Path, dtype_name: str) -> None:
    """The whole model in ``dtype_name`` (safetensors) + tokenizer; a collective under DeepSpeed, written once."""
    import torch

    acc = trainer.accelerator
    state = acc.get_state_dict(trainer.deepspeed if trainer.is_deepspeed_enabled else trainer.model)
    if not trainer.is_world_process_zero():
        return
    dtype = getattr(torch, dtype_name)
    cast: dict[int, torch.Tensor] = {}  # by data pointer: tied weights stay one tensor, saved once
    for key, value in state.items():
        if value.is_floating_point():
            state[key] = cast.setdefault(value.data_ptr(), value.to(dtype))
    model = acc.unwrap_model(trainer.model)
    model.save_pretrained(out, state_dict=state, safe_serialization=True)
    model.config.dtype = dtype_name  # save_pretrained wrote the live model's dtype; from_pretrained reads this one
    model.config.save_pretrained(out)
    trainer.processing_class.save_pretrained(out)


def train_sft(config: SFTRunConfig) -> Path:
    """Train one agent and save it to ``config.output_dir``: a full model in ``save_dtype``, or a LoRA adapter.

    ``sft_info.json`` records the config, loss, steps, rows used and dropped, time and device, and the
    sha256 of the starting weights (``base_sha256``, for a local single-file model; `testbed ship-sft` checks it);
    ``config.yaml`` is the config as it was given (``train sft --config`` repeats the run).
    """
    from longshort.config import config_dict, save_config
    from longshort.provenance import run_metadata, write_json_atomic

    recorded = config_dict(config)  # before the trainer: what was asked for
    trainer, stats = build_trainer(config)
    out = Path(config.output_dir)
    start = time.perf_counter()
    result = trainer.train()
    seconds = time.perf_counter() - start
    if config.lora:
        trainer.save_model(str(out))  # adapter_model.safetensors + adapter_config.json + tokenizer
    else:
        _save_full(trainer, out, config.save_dtype)
    if trainer.is_world_process_zero():
        (out / "training_args.bin").unlink(missing_ok=True)  # sft_info.json has the config
        info: dict[str, Any] = {
            **run_metadata(**recorded),
            "agent": config.agent,
            "model": stats["model"],
            "base_sha256": _weights_sha256(stats.pop("model")),
            "data": str(config.from_traces) if config.from_traces else str(data_dir(config)),
            "train_loss": result.training_loss,
            "steps": trainer.state.global_step,
            **stats,
            "seconds": seconds,
            "lora": config.lora,
            "saved_dtype": "adapter" if config.lora else config.save_dtype,
            "train_device": str(trainer.args.device),
            "world_size": trainer.args.world_size,
            "bf16": trainer.args.bf16,
        }
        write_json_atomic(info, out / "sft_info.json")
        save_config(recorded, out / "config.yaml")
    trainer.accelerator.wait_for_everyone()
    return out


def _weights_sha256(model: str, max_bytes: int = 2**30) -> str | None:
    """sha256 of a local single-file ``model.safetensors`` (up to 1 GiB), else None.

    ``longshort testbed ship-sft`` checks it to know which shipped checkpoint an adapter was trained from.
    """
    from longshort.shipped import sha256_file

    weights = Path(model) / "model.safetensors"
    if not weights.is_file() or weights.stat().st_size > max_bytes:
        return None
    return sha256_file(weights)
