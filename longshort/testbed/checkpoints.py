"""The testbed's shipped assets: the manifest schema, writing it, and the shipped SFT pairs.

``longshort/assets/testbed/{reasoner,base}/`` hold half-precision safetensors, the tokenizer and
the configs; ``manifest.json`` records every file's sha256, the command and seed that produced
them, and the accuracies measured. Finding and verifying those files is core
(``longshort.shipped``: every layer needs the default model); what the manifest says about how
they were built, and the shipped pairs, is the testbed's.

Cold-start SFT'd agents ship as LoRA adapters under ``sft/<name>/{long,short}/``
(``longshort testbed ship-sft``, ``longshort/testbed/ship.py``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from longshort.shipped import (
    MANIFEST,
    MODELS,
    ROLE_BASE,
    SFT_DIR,
    CheckpointName,
    assets_dir,
    checkpoint,
    pair_member,
    sha256_file,
    shipped_base,
    verify_files,
)

__all__ = [
    "MODELS",
    "ROLE_BASE",
    "SFT_DIR",
    "SIZE_LIMIT_BYTES",
    "CheckpointName",
    "Manifest",
    "ShippedAgent",
    "ShippedPair",
    "assets_dir",
    "checkpoint",
    "save_manifest",
    "sha256_file",
    "shipped_base",
    "shipped_pairs",
    "verify",
    "weights_file",
    "write_manifest",
]

#: everything under the assets folder ships in the wheel; it must stay under this (20 MB, decimal)
SIZE_LIMIT_BYTES = 20_000_000


class ShippedAgent(BaseModel):
    """One agent of a shipped pair: a LoRA adapter on a shipped checkpoint or on another shipped adapter."""

    base: str = Field(
        description="what the adapter is merged into: a shipped checkpoint ('reasoner', 'base') or a shipped "
        "adapter ('sft/<pair>/<role>': an RL round stacked on its cold-start adapter)"
    )
    base_sha256: str = Field(description="sha256 of the base's weights file when the adapter shipped")
    path: str | None = Field(
        None,
        description="the agent's adapter folder when it is another pair's ('sft/<pair>/<role>': an agent RL "
        "left untrained ships no copy); None: sft/<this pair>/<role>",
    )
    info: dict[str, Any] = Field(default_factory=dict, description="a summary of the adapter's training record")


class ShippedPair(BaseModel):
    """A Long⊗Short pair shipped under ``sft/<name>/``: how it was shipped and what it measured."""

    command: str
    created: str = ""
    metrics: dict[str, Any] = Field(default_factory=dict, description="from `ship-sft --metrics`, if given")
    long: ShippedAgent
    short: ShippedAgent


class Manifest(BaseModel):
    files: dict[str, str] = Field(description="path relative to the assets dir -> sha256")
    command: str
    seed: int
    metrics: dict[str, Any] = Field(default_factory=dict)
    created: str = ""
    git_commit: str | None = None
    device: str = ""
    sft: dict[str, ShippedPair] = Field(
        default_factory=dict, description="shipped SFT pairs by name; their files are under sft/<name>/"
    )


def write_manifest(root: Path, *, command: str, seed: int, metrics: dict[str, Any], **extra: Any) -> Manifest:
    files = {
        str(p.relative_to(root)): sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file() and p.name != MANIFEST
    }
    return save_manifest(root, Manifest(files=files, command=command, seed=seed, metrics=metrics, **extra))


def weights_file(base: str) -> str:
    """The file (relative to the assets) whose sha256 pins a shipped base: a checkpoint's or an adapter's weights."""
    return f"{base}/model.safetensors" if base in MODELS else f"{base}/adapter_model.safetensors"


def save_manifest(root: Path, manifest: Manifest) -> Manifest:
    """Write ``root/manifest.json`` atomically (a manifest without SFT pairs has no ``sft`` key)."""
    text = manifest.model_dump_json(indent=2, exclude=None if manifest.sft else {"sft"}) + "\n"
    tmp = root / f"{MANIFEST}.tmp"
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, root / MANIFEST)
    return manifest


def verify(root: Path | None = None) -> Manifest:
    """Check every file against the manifest (``longshort.shipped.verify_files``); return it parsed."""
    return Manifest.model_validate(verify_files(root))


def shipped_pairs(root: Path | None = None) -> dict[str, tuple[Path, Path]]:
    """The shipped SFT pairs, ``{name: (long_adapter_dir, short_adapter_dir)}``, after verifying the manifest.

    Each adapter must be listed in the manifest and still match the checkpoint it shipped against
    (a rebuilt reasoner or base makes its adapters stale: an error, not a silently different model).
    """
    root = root or assets_dir()
    manifest = verify(root)
    pairs: dict[str, tuple[Path, Path]] = {}
    for name, pair in manifest.sft.items():
        dirs = []
        for role in ("long", "short"):
            agent: ShippedAgent = getattr(pair, role)
            rel = pair_member(name, role, agent.path)
            for file in ("adapter_config.json", "adapter_model.safetensors"):
                if f"{rel}/{file}" not in manifest.files:
                    raise FileNotFoundError(f"shipped pair {name!r}: the manifest lists no {rel}/{file}")
            current = manifest.files.get(weights_file(agent.base))
            if current != agent.base_sha256:
                raise ValueError(
                    f"shipped pair {name!r}: the {role} adapter was shipped against another {agent.base} "
                    f"(sha256 {agent.base_sha256[:12]}…, now {str(current)[:12]}…); "
                    f"ship it again or remove {root / rel}"
                )
            dirs.append(root / rel)
        pairs[name] = (dirs[0], dirs[1])
    return pairs
