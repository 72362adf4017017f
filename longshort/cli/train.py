"""``longshort train sft``: the cold-start SFT of one agent (PAPER.md §5; see training/coldstart/sft.py).

    longshort train sft --agent long                          # defaults: training/configs/sft/long.yaml
    longshort train sft --agent short --config my.yaml --lr 5e-5 --lora
    accelerate launch --config_file training/configs/accelerate/zero2.yaml -m longshort.cli train sft --agent long

Options given on the command line override the YAML; the YAML overrides the built-in defaults.
"""

from __future__ import annotations

import os
from enum import Enum
from pathlib import Path

import typer

from longshort.cli._console import console
from longshort.cli._console import fail as _fail
from longshort.training.analysis.importance import DEFAULT_METRIC

train_app = typer.Typer(no_args_is_help=True, help="Training: cold-start SFT of each agent.")


class AgentChoice(str, Enum):
    long = "long"
    short = "short"


def _explain(error) -> str:
    """A pydantic ValidationError as one line per bad field, with the value it got."""
    lines = []
    for e in error.errors():
        where = ".".join(str(part) for part in e["loc"])
        got = f" (got {e['input']!r})" if where else ""
        lines.append(f"{where or 'config'}: {e['msg'].removeprefix('Value error, ')}{got}")
    return "invalid SFT config: " + "; ".join(lines)


@train_app.command("sft")
def sft(
    agent: AgentChoice = typer.Option(..., "--agent", help="which agent to fine-tune on its own rows"),
    config: Path = typer.Option(None, "--config", help="YAML config (default: the shipped configs/sft/<agent>.yaml)"),
    data: str = typer.Option(None, "--data", help="save_to_disk folder, or one holding long/ and short/"),
    model: str = typer.Option(None, "--model", help="path or hub id (default: the shipped testbed checkpoint)"),
    out: str = typer.Option(None, "--out", help="where the model or adapter and sft_info.json go"),
    lora: bool = typer.Option(None, "--lora/--full", help="LoRA adapter, or all parameters (the paper)"),
    lr: float = typer.Option(None, "--lr", help="peak learning rate"),
    epochs: float = typer.Option(None, "--epochs"),
    max_steps: int = typer.Option(None, "--max-steps", help="optimizer steps (overrides --epochs); -1: epochs"),
    batch_size: int = typer.Option(None, "--batch-size", help="rows per device per step"),
    grad_accum: int = typer.Option(None, "--grad-accum"),
    max_length: int = typer.Option(None, "--max-length", help="longer rows are dropped (and counted)"),
    device: str = typer.Option(None, "--device", help="cpu forces the CPU (default: CUDA when available)"),
    seed: int = typer.Option(None, "--seed"),
) -> None:
    """Fine-tune one agent with TRL's SFTTrainer, loss on the target turn only."""
    from pydantic import ValidationError

    from longshort.training.coldstart.sft_config import SFTRunConfig, default_config_path

    path = config or default_config_path(agent.value)
    overrides = dict(data=data, model=model, out=out, lora=lora, lr=lr, epochs=epochs, max_steps=max_steps)
    overrides |= dict(batch_size=batch_size, grad_accum=grad_accum, max_length=max_length, device=device, seed=seed)
    try:
        run = SFTRunConfig.from_yaml(path, **overrides, agent=agent.value)
    except ValidationError as e:
        _fail(_explain(e))
    except (ValueError, FileNotFoundError) as e:
        _fail(str(e))
    if config is not None:
        import yaml

        written = (yaml.safe_load(config.read_text(encoding="utf-8")) or {}).get("agent")
        if written not in (None, agent.value):
            _fail(f"--agent {agent.value} but {config} is for agent {written!r}")

    from longshort.errors import LongShortError
    from longshort.training.coldstart.sft import train_sft

    try:
        out_dir = train_sft(run)
    except (LongShortError, ValueError, OSError) as e:  # bad data, no CUDA, a model path that does not load
        _fail(str(e))
    if os.environ.get("RANK", "0") == "0":  # under `accelerate launch`, one process reports
        import json

        info = json.loads((out_dir / "sft_info.json").read_text(encoding="utf-8"))
        keys = ("train_loss", "steps", "rows_used", "dropped_too_long", "dropped_no_target", "seconds", "world_size")
        console.print_json(data={k: info[k] for k in keys})
        console.print(f"saved {out_dir}")


@train_app.command("data")
def data_(
    analysis: Path = typer.Option(Path("runs/analysis"), "--analysis", help="analysis directory (chunks + rollouts)"),
    out: Path = typer.Option(Path("runs/coldstart/sft"), "--out", help="dialogues.jsonl, long/, short/, data.json"),
    source: str = typer.Option(DEFAULT_METRIC, "--source", help="paper, significance, or random (the ablation)"),
    rewriter: str = typer.Option("testbed", "--rewriter", help="testbed, or llm (with --llm-model)"),
    llm_model: str = typer.Option(None, "--llm-model"),
    llm_base_url: str = typer.Option(None, "--llm-base-url"),
    llm_api_key: str = typer.Option("EMPTY", "--llm-api-key", envvar="OPENAI_API_KEY"),
    retries: int = typer.Option(5, "--retries", min=1),
    long_tokenizer: str = typer.Option(None, "--long-tokenizer", help="default: the shipped testbed reasoner's"),
    short_tokenizer: str = typer.Option(None, "--short-tokenizer", help="default: the shipped testbed base's"),
    alpha: float = typer.Option(0.05, "--alpha", min=0.0, max=1.0),
    seed: int = typer.Option(0, "--seed", min=0),
) -> None:
    """Cold-start data: keep the selected thoughts long, rewrite the rest short, one SFT table per agent."""
    from transformers import AutoTokenizer

    from longshort.errors import LongShortError
    from longshort.shipped import default_model
    from longshort.training.coldstart.build import SOURCES, build_coldstart

    if source not in SOURCES:
        _fail(f"--source must be one of {', '.join(SOURCES)}")
    if rewriter == "testbed":
        import json

        from longshort.testbed.rewriter import TestbedRewriter
        from longshort.testbed.tasks import generate_problems

        made = (analysis / "chunk_report.json").exists() and json.loads((analysis / "chunk_report.json").read_text())
        if not made or not made.get("testbed"):
            _fail(f"{analysis} was not made by `longshort analyze chunk --testbed`: use --rewriter llm")
        t = made["testbed"]
        rewrite = TestbedRewriter(generate_problems(t["split"], t["n"], seed=t["seed"]), seed=t["seed"])
    elif rewriter == "llm":
        if not llm_model:
            _fail("--rewriter llm needs --llm-model (and --llm-base-url for a local OpenAI-compatible server)")
        from langchain_openai import ChatOpenAI

        from longshort.training.coldstart.compression import LLMRewriter

        chat = ChatOpenAI(model=llm_model, base_url=llm_base_url, api_key=llm_api_key, temperature=0.1, timeout=120)
        rewrite = LLMRewriter(chat, max_retries=retries)
    else:
        _fail("--rewriter must be testbed or llm")
    tokenizers = [
        AutoTokenizer.from_pretrained(t or default_model(role))
        for t, role in ((long_tokenizer, "long"), (short_tokenizer, "short"))
    ]
    try:
        report = build_coldstart(
            analysis,
            out,
            source=source,
            rewriter=rewrite,
            long_tokenizer=tokenizers[0],
            short_tokenizer=tokenizers[1],
            alpha=alpha,
            seed=seed,  # type: ignore[arg-type]
        )
    except (LongShortError, ValueError) as e:
        _fail(str(e))
    keys = ("source", "scored", "dialogues", "dropped", "rows", "kept_token_frac", "mean_turns")
    console.print_json(data={k: report[k] for k in keys})
