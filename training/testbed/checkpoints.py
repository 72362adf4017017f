"""The testbed checkpoints shipped inside the package, and their manifest.

``longshort/assets/testbed/{reasoner,base}/`` hold half-precision safetensors, the tokenizer and
the configs; ``manifest.json`` records every file's sha256, the command and seed that produced
them, and the accuracies measured. Loading verifies the hashes first, so a corrupted or missing
file is a clear error naming the file, not a confusing failure inside transformers.

Cold-start SFT'd agents ship as LoRA adapters under ``sft/<name>/{long,short}/``
(``longshort testbed ship-sft``, ``training/testbed/ship.py``). Their ``adapter_config.json`` names
the base as ``"reasoner"`` or ``"base"``: a marker resolved against the same assets folder when
loading (``shipped_base``), so the adapters never carry a path of the machine that trained them.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from longshort.errors import ChecksumError

CheckpointName = Literal["reasoner", "base"]
MODELS: tuple[CheckpointName, ...] = ("reasoner", "base")
#: which shipped checkpoint each agent's adapter is trained from
ROLE_BASE: dict[str, CheckpointName] = {"long": "reasoner", "short": "base"}
SFT_DIR = "sft"
#: everything under the assets folder ships in the wheel; it must stay under this (20 MB, decimal)
SIZE_LIMIT_BYTES = 20_000_000


def assets_dir() -> Path:
    """Where the shipped checkpoints live (inside the installed ``longshort`` package)."""
    import longshort

    return Path(longshort.__file__).resolve().parent / "assets" / "testbed"


class ShippedAgent(BaseModel):
    """One agent of a shipped SFT pair: a LoRA adapter on a shipped checkpoint."""

    base: CheckpointName = Field(description="the shipped checkpoint the adapter is merged into")
    base_sha256: str = Field(description="sha256 of that checkpoint's model.safetensors when the adapter shipped")
    info: dict[str, Any] = Field(default_factory=dict, description="a summary of the adapter's sft_info.json")


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


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_manifest(root: Path, *, command: str, seed: int, metrics: dict[str, Any], **extra: Any) -> Manifest:
    files = {
        str(p.relative_to(root)): sha256_file(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "manifest.json"
    }
    return save_manifest(root, Manifest(files=files, command=command, seed=seed, metrics=metrics, **extra))


def save_manifest(root: Path, manifest: Manifest) -> Manifest:
    """Write ``root/manifest.json`` atomically (a manifest without SFT pairs has no ``sft`` key)."""
    text = manifest.model_dump_json(indent=2, exclude=None if manifest.sft else {"sft"}) + "\n"
    tmp = root / "manifest.json.tmp"
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, root / "manifest.json")
    return manifest


def verify(root: Path | None = None) -> Manifest:
    """Check every file against the manifest; raise naming the first bad or missing file."""
    root = root or assets_dir()
    manifest_path = root / "manifest.json"
    if not manifest_path.exists():
        raise FileNotFoundError(f"no testbed manifest at {manifest_path}: the package ships without checkpoints")
    manifest = Manifest.model_validate_json(manifest_path.read_text(encoding="utf-8"))
    for rel, digest in manifest.files.items():
        path = root / rel
        if not path.exists():
            raise FileNotFoundError(f"testbed checkpoint file missing: {path}")
        actual = sha256_file(path)
        if actual != digest:
            raise ChecksumError(
                f"testbed checkpoint file is corrupted: {path} (sha256 {actual[:12]}…, manifest says {digest[:12]}…); "
                "reinstall longshort or restore the file from git",
                path=str(path),
            )
    return manifest


def checkpoint(name: CheckpointName, root: Path | None = None) -> Path:
    """The verified directory of a shipped model, ready for ``from_pretrained``."""
    if name not in MODELS:
        raise ValueError(f"unknown testbed checkpoint {name!r}; choose 'reasoner' or 'base'")
    root = root or assets_dir()
    verify(root)
    return root / name


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
            rel = f"{SFT_DIR}/{name}/{role}"
            for file in ("adapter_config.json", "adapter_model.safetensors"):
                if f"{rel}/{file}" not in manifest.files:
                    raise FileNotFoundError(f"shipped pair {name!r}: the manifest lists no {rel}/{file}")
            current = manifest.files.get(f"{agent.base}/model.safetensors")
            if current != agent.base_sha256:
                raise ValueError(
                    f"shipped pair {name!r}: the {role} adapter was shipped against another {agent.base} "
                    f"(sha256 {agent.base_sha256[:12]}…, now {str(current)[:12]}…); "
                    f"ship it again or remove {root / rel}"
                )
            dirs.append(root / rel)
        pairs[name] = (dirs[0], dirs[1])
    return pairs


def shipped_base(adapter_dir: str | Path) -> Path | None:
    """The verified checkpoint dir a shipped adapter merges into, or None for any other model or adapter.

    A shipped adapter's ``base_model_name_or_path`` is the marker ``"reasoner"`` or ``"base"`` and it
    lives at ``<assets>/sft/<name>/<long|short>/``; the marker names ``<assets>/<marker>``.
    """
    adapter_dir = Path(adapter_dir)
    config_path = adapter_dir / "adapter_config.json"
    if not config_path.is_file():
        return None
    marker = json.loads(config_path.read_text(encoding="utf-8")).get("base_model_name_or_path")
    if marker not in MODELS:
        return None
    sft_dir = adapter_dir.resolve().parent.parent
    root = sft_dir.parent
    if sft_dir.name != SFT_DIR or not (root / "manifest.json").is_file():
        if Path(marker).is_dir():  # an ordinary adapter whose base happens to be ./reasoner or ./base
            return None
        raise ValueError(
            f"{adapter_dir}: its base is the shipped {marker!r}, which resolves only inside a testbed assets folder "
            f"(<assets>/{SFT_DIR}/<name>/<long|short>/ next to <assets>/manifest.json)"
        )
    expected = ROLE_BASE.get(adapter_dir.resolve().name)
    if expected is not None and expected != marker:
        raise ValueError(f"{adapter_dir}: a {adapter_dir.name} adapter merges into the {expected}, not the {marker}")
    return checkpoint(marker, root)
