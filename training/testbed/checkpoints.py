"""The testbed checkpoints shipped inside the package, and their manifest.

``longshort/assets/testbed/{reasoner,base}/`` hold half-precision safetensors, the tokenizer and
the configs; ``manifest.json`` records every file's sha256, the command and seed that produced
them, and the accuracies measured. Loading verifies the hashes first, so a corrupted or missing
file is a clear error naming the file, not a confusing failure inside transformers.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from longshort.errors import ChecksumError

CheckpointName = Literal["reasoner", "base"]


def assets_dir() -> Path:
    """Where the shipped checkpoints live (inside the installed ``longshort`` package)."""
    import longshort

    return Path(longshort.__file__).resolve().parent / "assets" / "testbed"


class Manifest(BaseModel):
    files: dict[str, str] = Field(description="path relative to the assets dir -> sha256")
    command: str
    seed: int
    metrics: dict[str, Any] = Field(default_factory=dict)
    created: str = ""
    git_commit: str | None = None
    device: str = ""


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
    manifest = Manifest(files=files, command=command, seed=seed, metrics=metrics, **extra)
    (root / "manifest.json").write_text(manifest.model_dump_json(indent=2) + "\n", encoding="utf-8")
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
    if name not in ("reasoner", "base"):
        raise ValueError(f"unknown testbed checkpoint {name!r}; choose 'reasoner' or 'base'")
    root = root or assets_dir()
    verify(root)
    return root / name
