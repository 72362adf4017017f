"""``longshort testbed train|build|measure|ship-sft|ship-rl``: the testbed's own models and shipped assets.

    longshort testbed train --model reasoner --out runs/testbed  # one model: see longshort/testbed/train.py
    longshort testbed build --out runs/testbed  # the full recipe (GPU): see longshort/testbed/build.py
    longshort testbed measure --assets DIR  # the testbed numbers of built assets
    longshort testbed ship-sft --long A --short B  # ship a cold-start pair in the assets
    longshort testbed ship-rl --run runs/rl        # ship what an RL run ended with (stacked adapters)

Each command is ``main(config)`` with options generated from its config (longshort/testbed/*_config.py);
``testbed build`` takes every ``testbed train`` field (``TestbedBuildConfig(TestbedTrainConfig)``).
``train`` and ``build`` write ``config.yaml`` beside their outputs: ``--config`` repeats the run.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from longshort.cli._console import console
from longshort.cli._options import add_config_command
from longshort.testbed.build_config import TestbedBuildConfig
from longshort.testbed.measure_config import MeasureConfig
from longshort.testbed.ship_config import ShipRLConfig, ShipSFTConfig
from longshort.testbed.train_config import TestbedTrainConfig

__all__ = ["build_main", "measure_main", "ship_rl_main", "ship_sft_main", "testbed_app", "train_main"]

testbed_app = typer.Typer(no_args_is_help=True, help="The testbed: train its small models, rebuild the shipped assets.")


def train_main(config: TestbedTrainConfig) -> None:
    """Train one testbed model from scratch (TRL SFTTrainer); see longshort/testbed/train.py."""
    from longshort.testbed.train import train

    console.print(f"saved {train(config)}")


def build_main(config: TestbedBuildConfig) -> None:
    """The full recipe (GPU): tokenizer, reasoner + base, measured numbers, assets + manifest."""
    from longshort.testbed.build import build

    console.print_json(data=build(config)["metrics"])


def measure_main(config: MeasureConfig) -> None:
    """Measure the issue's numbers for built assets and write them into their manifest."""
    from longshort.config import config_dict
    from longshort.testbed.build import measure

    result = measure(
        config.assets,
        eval_n=config.eval_n,
        eval_seed=config.eval_seed,
        results=config.results,
        device=config.device,
        config=config_dict(config),
    )
    console.print_json(data={k: v for k, v in result["metrics"].items() if k != "rows"})


def _shipped(root: Path, name: str) -> None:
    from longshort.testbed.checkpoints import SIZE_LIMIT_BYTES

    shipped = sum(p.stat().st_size for p in (root / "sft" / name).rglob("*") if p.is_file())
    total = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    console.print(
        f"shipped {name} in {root / 'sft' / name} ({shipped / 1e6:.2f} MB); "
        f"the assets are {total / 1e6:.2f} MB of {SIZE_LIMIT_BYTES / 1e6:.2f} MB; manifest updated"
    )


def _command(verb: str) -> str | None:
    return " ".join(["longshort", *sys.argv[1:]]) if verb in sys.argv else None


def ship_sft_main(config: ShipSFTConfig) -> None:
    """Ship a cold-start SFT pair (two LoRA adapters) in the assets, so `longshort demo` shows its row."""
    from longshort.testbed.checkpoints import assets_dir
    from longshort.testbed.ship import ship_sft

    root = config.assets or assets_dir()
    ship_sft(
        config.long, config.short, name=config.name, assets=root, metrics=config.metrics, command=_command("ship-sft")
    )
    _shipped(root, config.name)


def ship_rl_main(config: ShipRLConfig) -> None:
    """Ship the pair an RL run ended with in the assets, so `longshort demo` shows its row."""
    from longshort.testbed.checkpoints import assets_dir
    from longshort.testbed.ship import ship_rl

    root = config.assets or assets_dir()
    ship_rl(config.run, name=config.name, on=config.on, assets=root, command=_command("ship-rl"))
    _shipped(root, config.name)


add_config_command(testbed_app, "train", TestbedTrainConfig, train_main)
add_config_command(testbed_app, "build", TestbedBuildConfig, build_main)
add_config_command(testbed_app, "measure", MeasureConfig, measure_main)
add_config_command(testbed_app, "ship-sft", ShipSFTConfig, ship_sft_main)
add_config_command(testbed_app, "ship-rl", ShipRLConfig, ship_rl_main)
