"""``ShipSFTConfig``: ``longshort testbed ship-sft``, a cold-start pair into the shipped assets (see ship.py).

longshort testbed ship-sft --long runs/coldstart/sft-long --short runs/coldstart/sft-short --metrics demo.json
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from longshort.config import option

__all__ = ["ShipRLConfig", "ShipSFTConfig"]


@dataclass
class ShipSFTConfig:
    """Ship a cold-start SFT pair (two LoRA adapters) in the assets, so `longshort demo` shows its row."""

    long: Path = option(help="the long agent's LoRA adapter (`train sft --agent long --lora`)")
    short: Path = option(help="the short agent's LoRA adapter (`train sft --agent short --lora`)")
    name: str = option("longshort-sft", help="the pair's folder under sft/ and its demo row")
    assets: Path | None = option(None, help="the assets folder (default: the installed package's)")
    metrics: Path | None = option(None, help="a JSON file (e.g. the demo.json with this row) recorded in the manifest")


@dataclass
class ShipRLConfig:
    """Ship the pair an RL run ended with (LoRA adapters stacked on a shipped cold-start pair) in the assets."""

    run: Path = option(help="the `longshort train rl` output folder (its rounds.json and rounds/<name>/final/)")
    name: str = option("longshort-rl", help="the pair's folder under sft/ and its demo row")
    on: str = option("longshort-sft", help="the shipped cold-start pair the run started from")
    assets: Path | None = option(None, help="the assets folder (default: the installed package's)")
