"""``longshort train rl``: synergizing multi-turn RL of both agents (PAPER.md §6; see training/rl/trainer.py).

    longshort train rl --config training/configs/rl/testbed.yaml                 # the testbed recipe, one GPU
    longshort train rl --config my.yaml --schedule L1,S1 --max-steps 20   # options override the YAML
    accelerate launch --config_file training/configs/accelerate/ddp.yaml -m longshort.cli train rl --config …

The CLI's part is the data: ``data: testbed`` is the testbed's train split (and its held-out test
split for the per-round measurement); anything else is a local file or a hub dataset with a
question (or problem / prompt) column and an answer column.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from longshort.cli._console import say

__all__ = ["default_config_path", "load_problems", "main", "rl_command"]

QUESTION_COLUMNS = ("prompt", "question", "problem")


def load_problems(config) -> tuple[Any, list[tuple[str, str]]]:
    """The training table (``prompt``, ``answer``) and the held-out ``(question, answer)`` pairs."""
    if config.data == "testbed":
        from longshort.testbed.sources import rl_problems

        return rl_problems(config.data_n, config.eval_n, seed=config.seed)
    from datasets import load_dataset

    path = Path(config.data)
    if path.is_file():
        kind = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}.get(path.suffix)
        if kind is None:
            raise ValueError(f"data: {path} must be .jsonl, .json, .csv or .parquet")
        table = load_dataset(kind, data_files=str(path), split="train")
    else:
        table = load_dataset(config.data, split="train")
    column = next((c for c in QUESTION_COLUMNS if c in table.column_names), None)
    if column is None or "answer" not in table.column_names:
        raise ValueError(f"data: {config.data} needs a question/problem/prompt column and an answer column")
    rows = [{"prompt": r[column], "answer": str(r["answer"])} for r in table]
    if len(rows) < config.data_n + config.eval_n:
        raise ValueError(f"data: {config.data} has {len(rows)} rows, fewer than data_n + eval_n")
    from datasets import Dataset

    train = Dataset.from_list(rows[: config.data_n])
    held_out = [(r["prompt"], r["answer"]) for r in rows[-config.eval_n :]]
    return train, held_out


def main(config) -> list[dict]:
    """Run (or resume) the schedule of ``config`` and print the per-round table."""
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    from longshort.training.rl.trainer import train_rl

    train, held_out = load_problems(config)
    rounds = train_rl(config, train, held_out, say=say)
    if os.environ.get("RANK", "0") == "0":
        print_rounds(rounds)
    return rounds


def print_rounds(rounds: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Long⊗Short RL, per round (held-out, greedy)")
    for col in ("round", "accuracy", "tokens", "long", "short", "turns", "well-formed", "steps"):
        table.add_column(col, justify="left" if col == "round" else "right")
    for r in rounds:
        table.add_row(
            r["round"],
            f"{100 * r['accuracy']:.1f}%",
            f"{r['mean_tokens']:.0f}",
            f"{r['mean_tokens_long']:.0f}",
            f"{r['mean_tokens_short']:.0f}",
            f"{r['mean_turns']:.2f}",
            f"{100 * r['well_formed']:.0f}%",
            str(r.get("steps") or "—"),
        )
    Console().print(table)


def default_config_path() -> Path:
    """The shipped testbed recipe (inside the installed package)."""
    import longshort.training

    return Path(longshort.training.__file__).resolve().parent / "configs" / "rl" / "testbed.yaml"


def rl_command():
    """``train rl`` with options generated from ``RLConfig`` (built on first use: it imports trl)."""
    from longshort.cli._options import lazy_command

    def config_class() -> type:
        from longshort.training.rl.config import RLConfig

        return RLConfig

    return lazy_command(
        "rl",
        config_class,
        main,
        help="Alternating GRPO of the long and short agents through the reasoner graph (resumable: re-run it).",
        config_file=lambda path, given: path or default_config_path(),
    )
