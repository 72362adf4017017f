"""``longshort testbed train|build|measure|ship-sft``: the testbed's own models and shipped assets.

    longshort testbed build --out runs/testbed                   # the full recipe (GPU): see longshort/testbed/build.py
    longshort testbed measure --assets DIR                       # the testbed numbers of built assets
    longshort testbed ship-sft --long A --short B                # ship a cold-start pair in the assets
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from longshort.cli._console import console, csv_list
from longshort.cli._console import fail as _fail

testbed_app = typer.Typer(no_args_is_help=True, help="The testbed: train its small models, rebuild the shipped assets.")


@testbed_app.command("train")
def testbed_train(
    model: str = typer.Option(..., "--model", help="reasoner or base"),
    out: str = typer.Option("runs/testbed", "--out"),
    n_train: int = typer.Option(20000, "--n-train", min=1),
    n_ops: int = typer.Option(3, "--n-ops", min=1),
    steps: int = typer.Option(3000, "--steps", min=1),
    batch_size: int = typer.Option(128, "--batch-size", min=1),
    lr: float = typer.Option(1e-3, "--lr"),
    hidden_size: int = typer.Option(256, "--hidden-size", min=8),
    layers: int = typer.Option(4, "--layers", min=1),
    heads: int = typer.Option(4, "--heads", min=1),
    vocab_size: int = typer.Option(1024, "--vocab-size", min=300),
    max_positions: int = typer.Option(3072, "--max-positions", min=64),
    switches_per_problem: int = typer.Option(4, "--switches-per-problem", min=0),
    selections_per_problem: int = typer.Option(2, "--selections-per-problem", min=0),
    seed: int = typer.Option(0, "--seed", min=0),
    device: str = typer.Option(None, "--device"),
    max_seconds: float = typer.Option(None, "--max-seconds", help="Stop and save after this much training time."),
    init: str = typer.Option(None, "--init", help="Continue from this assets folder's model instead of from scratch."),
) -> None:
    """Train one testbed model from scratch (TRL SFTTrainer); see longshort/testbed/train.py."""
    from longshort.testbed.train import TestbedTrainConfig, train

    try:
        args = {k: v for k, v in locals().items() if k not in ("train", "TestbedTrainConfig")}
        config = TestbedTrainConfig(**args)
    except ValueError as e:
        _fail(str(e))
    try:
        console.print(f"saved {train(config)}")
    except ValueError as e:  # e.g. a row longer than --max-positions
        _fail(str(e))


@testbed_app.command("build")
def testbed_build(
    out: str = typer.Option("runs/testbed", "--out"),
    assets: Path = typer.Option(None, "--assets", help="Default: the installed package's assets/testbed."),
    n_train: int = typer.Option(20000, "--n-train", min=1),
    steps: int = typer.Option(3000, "--steps", min=1),
    batch_size: int = typer.Option(128, "--batch-size", min=1),
    lr: float = typer.Option(1e-3, "--lr"),
    hidden_size: int = typer.Option(256, "--hidden-size", min=8),
    layers: int = typer.Option(4, "--layers", min=1),
    vocab_size: int = typer.Option(1024, "--vocab-size", min=300),
    seed: int = typer.Option(0, "--seed", min=0),
    max_seconds: float = typer.Option(None, "--max-seconds", help="Per-model training time limit."),
    init: str = typer.Option(None, "--init", help="Continue from this assets folder's models instead of from scratch."),
    eval_n: int = typer.Option(500, "--eval-n", min=0, help="0: train only; `testbed measure` later."),
    results: Path = typer.Option(Path("results/testbed.json"), "--results"),
    models: str = typer.Option(
        "reasoner,base", "--models", help="Which to train; the others (and the tokenizer) are kept from --assets."
    ),
) -> None:
    """The full recipe (GPU): tokenizer, reasoner + base, measured numbers, assets + manifest."""
    from longshort.testbed.build import build
    from longshort.testbed.checkpoints import assets_dir
    from longshort.testbed.train import TestbedTrainConfig

    config = TestbedTrainConfig(
        model="reasoner",
        out=out,
        n_train=n_train,
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        hidden_size=hidden_size,
        layers=layers,
        vocab_size=vocab_size,
        seed=seed,
        max_seconds=max_seconds,
        init=init,
    )
    Path(out).mkdir(parents=True, exist_ok=True)
    try:
        result = build(config, assets or assets_dir(), eval_n=eval_n, results=results, models=tuple(csv_list(models)))
    except (ValueError, FileNotFoundError) as e:
        _fail(str(e))
    console.print_json(data=result["metrics"])


@testbed_app.command("measure")
def testbed_measure(
    assets: Path = typer.Option(..., "--assets", help="A testbed assets folder (from `testbed build`)."),
    eval_n: int = typer.Option(500, "--eval-n", min=1),
    eval_seed: int = typer.Option(0, "--eval-seed", min=0),
    results: Path = typer.Option(Path("results/testbed.json"), "--results"),
    device: str = typer.Option(None, "--device", help="Default: cuda if available."),
) -> None:
    """Measure the issue's numbers for built assets and write them into their manifest."""
    from longshort.testbed.build import measure

    try:
        result = measure(assets, eval_n=eval_n, eval_seed=eval_seed, results=results, device=device)
    except (ValueError, FileNotFoundError) as e:
        _fail(str(e))
    console.print_json(data={k: v for k, v in result["metrics"].items() if k != "rows"})


@testbed_app.command("ship-sft")
def testbed_ship_sft(
    long: Path = typer.Option(..., "--long", help="The long agent's LoRA adapter (`--agent long --lora`)."),
    short: Path = typer.Option(..., "--short", help="The short agent's LoRA adapter (`--agent short --lora`)."),
    name: str = typer.Option("longshort-sft", "--name", help="The pair's folder under sft/ and its demo row."),
    assets: Path = typer.Option(None, "--assets", help="Default: the installed package's assets/testbed."),
    metrics: Path = typer.Option(
        None, "--metrics", help="A JSON file (e.g. the demo.json with this row) recorded in the manifest."
    ),
) -> None:
    """Ship a cold-start SFT pair (two LoRA adapters) in the assets, so `longshort demo` shows its row."""
    from longshort.errors import ChecksumError
    from longshort.testbed.checkpoints import SIZE_LIMIT_BYTES, assets_dir
    from longshort.testbed.ship import ship_sft

    root = assets or assets_dir()
    command = " ".join(["longshort", *sys.argv[1:]]) if "ship-sft" in sys.argv else None
    try:
        ship_sft(long, short, name=name, assets=root, metrics=metrics, command=command)
    except (ChecksumError, ValueError, FileNotFoundError) as e:
        _fail(str(e))
    shipped = sum(p.stat().st_size for p in (root / "sft" / name).rglob("*") if p.is_file())
    total = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    console.print(
        f"shipped {name} in {root / 'sft' / name} ({shipped / 1e6:.2f} MB); "
        f"the assets are {total / 1e6:.2f} MB of {SIZE_LIMIT_BYTES / 1e6:.2f} MB; manifest updated"
    )
