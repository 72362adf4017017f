"""Train the testbed's two small models from scratch with TRL's ``SFTTrainer``.

    longshort testbed train --model reasoner --out runs/testbed            # the R1-Distill analogue
    longshort testbed train --model base --out runs/testbed                # the Qwen2.5 analogue

Both share one tokenizer (trained first, saved to ``OUT/tokenizer``) so the graph can pass token
ids between them unchanged. The reasoner learns long R1-style traces; the base learns one-shot
short solutions and concise continuations of any long prefix (switch traces). Loss is on the
completion only. Defaults are the GPU recipe (about 4M parameters, 3,000 steps of 128
sequences); ``--steps 20 --batch-size 4 --n-train 64`` is a CPU smoke run. ``OUT/<model>/config.yaml``
(``TestbedTrainConfig``, train_config.py) repeats a run: ``longshort testbed train --config FILE``.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from longshort.config import config_dict, save_config
from longshort.shipped import TRAIN_INFO, TRAIN_INFO_FILES, sha256_file
from longshort.testbed.tasks import generate_problems
from longshort.testbed.train_config import ModelKind, TestbedTrainConfig

__all__ = ["ModelKind", "TestbedTrainConfig", "load_or_train_tokenizer", "train"]


def _time_schedule(optimizer, seconds: float, warmup_steps: int):
    """Cosine decay over wall time (not steps), after a linear warm-up in steps."""
    import math

    from torch.optim.lr_scheduler import LambdaLR

    start: list[float] = []  # set at the first optimizer step, not while the trainer prepares data

    def factor(step: int) -> float:
        if step == 0:  # LambdaLR evaluates step 0 when it is built, before any training
            return 1.0 / warmup_steps
        if not start:
            start.append(time.perf_counter())
        done = min(1.0, (time.perf_counter() - start[0]) / seconds)
        return min(1.0, (step + 1) / warmup_steps) * 0.5 * (1 + math.cos(math.pi * done))

    return LambdaLR(optimizer, factor)


def _time_limit(seconds: float):
    """A TrainerCallback that ends training once ``seconds`` have passed (the model is still saved)."""
    from transformers import TrainerCallback

    class TimeLimit(TrainerCallback):
        start: float | None = None

        def on_step_begin(self, args, state, control, **kwargs):
            if self.start is None:
                self.start = time.perf_counter()
            return control

        def on_step_end(self, args, state, control, **kwargs):
            if self.start is not None and time.perf_counter() - self.start > seconds:
                control.should_training_stop = True
            return control

    return TimeLimit()


def load_or_train_tokenizer(config: TestbedTrainConfig, problems):
    from transformers import AutoTokenizer

    from longshort.testbed.data import build_tokenizer

    if config.init:  # a continued model keeps the token ids it learned
        return AutoTokenizer.from_pretrained(_init_dir(config))
    path = Path(config.out) / "tokenizer"
    if (path / "tokenizer.json").exists():
        return AutoTokenizer.from_pretrained(path)
    tokenizer = build_tokenizer(problems[:2000], vocab_size=config.vocab_size, seed=config.seed)
    tokenizer.save_pretrained(path)
    return tokenizer


def _init_dir(config: TestbedTrainConfig) -> Path:
    path = Path(config.init) / config.model
    if not (path / "model.safetensors").exists():
        raise FileNotFoundError(f"--init {config.init}: no {config.model} model at {path}")
    return path


def _init_record(config: TestbedTrainConfig) -> dict | None:
    """Where a continued model came from: the file's hash and the earlier run's own record."""
    if not config.init:
        return None
    path = _init_dir(config)
    earlier = path / "train_info.json"
    return {
        "path": str(path),
        "sha256": sha256_file(path / "model.safetensors"),
        "train_info": json.loads(earlier.read_text()) if earlier.exists() else None,
    }


def _file_digests(out: Path) -> dict[str, str]:
    """The sha256 of every file the run saved, so a copy of the folder can be verified wherever it is loaded.

    ``longshort.shipped.verify_checkpoint_dir`` checks them on every load by path; the record and
    ``config.yaml`` are left out (the record cannot hold its own hash, the config is not loaded).
    """
    skip = {TRAIN_INFO, "config.yaml"}
    return {p.name: sha256_file(p) for p in sorted(out.iterdir()) if p.is_file() and p.name not in skip}


def _load_init(config: TestbedTrainConfig):
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(_init_dir(config), dtype=torch.float32)


def train(config: TestbedTrainConfig) -> Path:
    """Train one testbed model and save it (fp16 safetensors + tokenizer) to OUT/<model>."""
    import torch
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from longshort.testbed.data import base_rows, reasoner_rows
    from longshort.testbed.model import make_model

    device = config.device or ("cuda" if torch.cuda.is_available() else "cpu")
    problems = generate_problems("train", config.n_train, seed=config.seed, n_ops=config.n_ops)
    tokenizer = load_or_train_tokenizer(config, problems)
    if config.model == "reasoner":
        rows = reasoner_rows(problems, tokenizer, config.seed)
    else:
        rows = base_rows(problems, tokenizer, config.seed, config.switches_per_problem, config.selections_per_problem)
    longest = max(len(r["input_ids"]) for r in rows)
    if longest > config.max_positions:
        raise ValueError(f"a training row has {longest} tokens > max_positions {config.max_positions}")
    init = _init_record(config)
    if init:
        model = _load_init(config)
    else:
        model = make_model(
            tokenizer,
            hidden_size=config.hidden_size,
            layers=config.layers,
            heads=config.heads,
            kv_heads=config.heads,
            max_positions=config.max_positions,
            seed=config.seed,
        )
    out = Path(config.out) / config.model
    args = SFTConfig(
        output_dir=str(out / "trainer"),
        max_steps=config.steps,
        per_device_train_batch_size=config.batch_size,
        learning_rate=config.lr,
        lr_scheduler_type="cosine",
        warmup_steps=max(1, config.steps // 20),
        weight_decay=0.1,
        max_grad_norm=1.0,
        bf16=device == "cuda",
        use_cpu=device == "cpu",
        logging_steps=max(1, config.steps // 20),
        save_strategy="no",
        report_to="none",
        max_length=config.max_positions,
        completion_only_loss=True,
        seed=config.seed,
        dataloader_num_workers=2 if device == "cuda" else 0,
    )
    optimizers = (None, None)
    if config.max_seconds:
        opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.1, betas=(0.9, 0.95))
        optimizers = (opt, _time_schedule(opt, config.max_seconds, warmup_steps=100))
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        optimizers=optimizers,
    )
    if config.max_seconds:
        trainer.add_callback(_time_limit(config.max_seconds))
    start = time.perf_counter()
    result = trainer.train()
    elapsed = time.perf_counter() - start
    model = trainer.model.to(torch.float16)
    shutil.rmtree(out / "trainer", ignore_errors=True)  # nothing is checkpointed mid-run; keep OUT clean
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    params = sum(p.numel() for p in model.parameters())
    info = {
        "config": config_dict(config),
        "train_loss": result.training_loss,
        "steps_done": trainer.state.global_step,
        "seconds": elapsed,
        "parameters": params,
        "rows": len(rows),
        "longest_row": longest,
        "device": device,
        "init": init,
        TRAIN_INFO_FILES: _file_digests(out),
    }
    (out / TRAIN_INFO).write_text(json.dumps(info, indent=2) + "\n")
    save_config(config, out / "config.yaml")  # `testbed train --config OUT/<model>/config.yaml` repeats the run
    return out
