"""``longshort train sft|data``: the cold start of PAPER.md §5 (see training/coldstart/); ``train rl`` is in rl.py.

    longshort train data --analysis runs/coldstart/analysis --out runs/coldstart/sft --source paper
    longshort train sft --agent long                                  # defaults: training/configs/sft/long.yaml
    longshort train sft --agent short --config my.yaml --learning-rate 5e-5 --lora
    longshort train sft --config runs/coldstart/sft-long/config.yaml  # a run again: each run writes its config
    longshort train sft --agent long --from-traces runs/rl/traces.sqlite --output-dir runs/rft-long  # RFT
    accelerate launch --config_file training/configs/accelerate/zero2.yaml -m longshort.cli train sft --agent long

Each command is ``main(config)``; its options are the config's fields (``SFTRunConfig``: the fields it
declares plus its ``cli_fields``; every other TRL field is set in the YAML). Options given on the
command line override the YAML; the YAML overrides the built-in defaults. ``sft`` imports trl to
build its options, so it is built only when it is asked for (``TrainGroup``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import typer

from longshort.cli._console import console
from longshort.cli._console import fail as _fail
from longshort.cli._options import LazyGroup, add_config_command, lazy_command
from longshort.training.coldstart.build_config import ColdstartDataConfig

__all__ = ["data_main", "sft_main", "train_app"]


def sft_main(config) -> None:
    """Fine-tune one agent (``SFTRunConfig``) and print what the run did."""
    from longshort.training.coldstart.sft import train_sft

    out_dir = train_sft(config)
    if os.environ.get("RANK", "0") == "0":  # under `accelerate launch`, one process reports
        import json

        info = json.loads((out_dir / "sft_info.json").read_text(encoding="utf-8"))
        keys = ("train_loss", "steps", "rows_used", "dropped_too_long", "dropped_no_target", "seconds", "world_size")
        summary = {k: info[k] for k in keys}
        if "traces" in info:  # --from-traces: what the selection read, kept and dropped (by reason)
            summary["traces"] = {k: info["traces"][k] for k in ("read", "selected", "dropped")}
        console.print_json(data=summary)
        console.print(f"saved {out_dir}")


def _sft_config_file(path: Path | None, given: dict[str, Any]) -> Path | None:
    """Without --config, the shipped YAML of --agent; with one, --agent must not contradict it."""
    from longshort.config import ConfigError, read_yaml
    from longshort.training.coldstart.sft_config import default_config_path

    agent = given.get("agent")
    if path is None:
        if agent is None:
            raise ConfigError(
                "give --agent long|short (its shipped YAML is the default), or --config FILE", key="agent"
            )
        return default_config_path(agent)
    written = read_yaml(path).get("agent")
    if agent is not None and written not in (None, agent):
        raise ConfigError(f"--agent {agent} but {path} is for agent {written!r}", key="agent")
    return path


def _sft_config() -> type:
    from longshort.training.coldstart.sft_config import SFTRunConfig

    return SFTRunConfig


def _sft_command():
    return lazy_command(
        "sft",
        _sft_config,
        sft_main,
        help="Fine-tune one agent with TRL's SFTTrainer, loss on the target turn only "
        "(--from-traces STORE: on its own turns of the store's correct, well-formed episodes).",
        config_file=_sft_config_file,
    )


def data_main(config: ColdstartDataConfig) -> None:
    """Build the cold-start dialogues and SFT tables of ``config`` (its config.yaml beside them)."""
    from transformers import AutoTokenizer

    from longshort.config import config_dict, save_config
    from longshort.shipped import default_model
    from longshort.training.coldstart.build import build_coldstart

    if config.rewriter == "testbed":
        import json

        from longshort.testbed.rewriter import TestbedRewriter
        from longshort.testbed.tasks import generate_problems

        report_path = config.analysis / "chunk_report.json"
        made = report_path.exists() and json.loads(report_path.read_text())
        if not made or not made.get("testbed"):
            _fail(f"{config.analysis} was not made by `longshort analyze chunk --testbed`: use --rewriter llm")
        t = made["testbed"]
        rewrite = TestbedRewriter(generate_problems(t["split"], t["n"], seed=t["seed"]), seed=t["seed"])
    else:
        from langchain_openai import ChatOpenAI

        from longshort.training.coldstart.compression import LLMRewriter

        chat = ChatOpenAI(
            model=config.llm_model,
            base_url=config.llm_base_url,
            api_key=config.llm_api_key,
            temperature=0.1,
            timeout=120,
        )
        rewrite = LLMRewriter(chat, max_retries=config.retries)
    tokenizers = [
        AutoTokenizer.from_pretrained(t or default_model(role))
        for t, role in ((config.long_tokenizer, "long"), (config.short_tokenizer, "short"))
    ]
    report = build_coldstart(
        config.analysis,
        config.out,
        source=config.source,
        rewriter=rewrite,
        long_tokenizer=tokenizers[0],
        short_tokenizer=tokenizers[1],
        alpha=config.alpha,
        seed=config.seed,
        config=config_dict(config),
    )
    save_config(config, config.out / "config.yaml")
    keys = ("source", "scored", "dialogues", "dropped", "rows", "kept_token_frac", "mean_turns")
    console.print_json(data={k: report[k] for k in keys})


def _rl_command():
    from longshort.cli.rl import rl_command

    return rl_command()


class TrainGroup(LazyGroup):
    """``train``: ``sft`` and ``rl`` are built on first use (their options come from TRL configs)."""

    lazy = {"sft": _sft_command, "rl": _rl_command}


train_app = typer.Typer(
    cls=TrainGroup, no_args_is_help=True, help="Training: cold-start data, SFT of each agent, multi-turn RL."
)
add_config_command(train_app, "data", ColdstartDataConfig, data_main)
