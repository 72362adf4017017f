"""``ShipSFTConfig``: ``longshort testbed ship-sft``, a cold-start pair into the shipped assets (see ship.py).

longshort testbed ship-sft --long runs/coldstart/sft-long --short runs/coldstart/sft-short --metrics demo.json
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from longshort.config import option

__all__ = ["ShipSFTConfig"]


@dataclass
class ShipSFTConfig:
    """Ship a cold-start SFT pair (two LoRA adapters) in the assets, so `longshort demo` shows its row."""

    long: Path = option(help="the long agent's LoRA adapter (`train sft --agent long --lora`)")
    short: Path = option(help="the short agent's LoRA adapter (`train sft --agent short --lora`)")
    name: str = option("longshort-sft", help="the pair's folder under sft/ and its demo row")
    assets: Path | None = option(None, help="the assets folder (default: the installed package's)")
    metrics: Path | None = option(None, help="a JSON file (e.g. the demo.json with this row) recorded in the manifest")
