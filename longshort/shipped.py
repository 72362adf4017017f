"""What ships inside the package: the assets folder, its integrity check, and the default model of each role.

Every layer needs "the model to use when none is given" (the CLI, the ``langgraph.json``
factories, SFT's starting point), and none of them may import the testbed that built those
models. So the lookup lives here, in core: it knows only files and a manifest of their sha256,
not how the models were made (that is ``longshort.testbed``).

``assets/testbed/{reasoner,base}/`` hold the shipped checkpoints; ``assets/testbed/sft/<name>/{long,short}/``
hold shipped LoRA adapters whose ``adapter_config.json`` names their base by the marker
``"reasoner"`` or ``"base"`` (resolved against the same folder, so an adapter never carries a
path of the machine that trained it). Loading verifies the hashes first, so a corrupted or
missing file is a clear error naming the file, not a confusing failure inside transformers.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Literal

from longshort.errors import ChecksumError
from longshort.protocol import Role

CheckpointName = Literal["reasoner", "base"]
MODELS: tuple[CheckpointName, ...] = ("reasoner", "base")
#: which shipped checkpoint serves each role by default (and each role's adapter is trained from)
ROLE_BASE: dict[Role, CheckpointName] = {"long": "reasoner", "short": "base"}
SFT_DIR = "sft"
MANIFEST = "manifest.json"
#: what ``longshort testbed train`` writes next to every testbed checkpoint (shipped ones included)
TRAIN_INFO = "train_info.json"
#: the key of ``train_info.json`` under which a training run records its files' sha256
TRAIN_INFO_FILES = "files"


def assets_dir() -> Path:
    """Where the shipped checkpoints live (inside the installed ``longshort`` package)."""
    return Path(__file__).resolve().parent / "assets" / "testbed"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_files(root: Path | None = None) -> dict:
    """Check every file listed in ``root/manifest.json``; return the manifest as a dict.

    Raises ``FileNotFoundError`` (no manifest, a missing file) or ``ChecksumError`` naming the first bad file.
    """
    root = root or assets_dir()
    manifest = read_manifest(root)
    for rel, digest in manifest["files"].items():
        _check_file(root / rel, digest, "the manifest", "reinstall longshort or restore the file from git")
    return manifest


def read_manifest(root: Path) -> dict:
    """``root/manifest.json`` parsed, its ``files`` a mapping of path -> sha256 (nothing is hashed).

    A manifest that does not parse is a corrupted shipped file like any other, so it is a
    ``ChecksumError`` naming it, not a bare ``JSONDecodeError`` that says neither file nor fix.
    """
    manifest_path = root / MANIFEST
    if not manifest_path.exists():
        raise FileNotFoundError(f"no testbed manifest at {manifest_path}: the package ships without checkpoints")
    fix = "reinstall longshort or restore it from git"
    manifest = _json_file(manifest_path, "testbed manifest", fix)
    files = manifest.get("files", {}) if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
        raise ChecksumError(
            f"testbed manifest is malformed: {manifest_path} (expected an object whose 'files' maps paths to "
            f"sha256 strings); {fix}",
            path=str(manifest_path),
        )
    return {**manifest, "files": files}


def _json_file(path: Path, what: str, fix: str) -> Any:
    """``path`` parsed as JSON; a file that does not parse is a corrupted shipped file (``ChecksumError``)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ChecksumError(f"{what} is corrupted: {path} is not valid JSON ({e}); {fix}", path=str(path)) from e


def _check_file(path: Path, digest: str, source: str, fix: str) -> None:
    """Raise unless ``path`` exists with sha256 ``digest`` (``source`` says who recorded it)."""
    if not path.is_file():
        raise FileNotFoundError(f"testbed checkpoint file missing: {path}")
    actual = sha256_file(path)
    if actual != digest:
        raise ChecksumError(
            f"testbed checkpoint file is corrupted: {path} (sha256 {actual[:12]}…, {source} says {digest[:12]}…); "
            f"{fix}",
            path=str(path),
        )


def verify_checkpoint_dir(model_dir: str | os.PathLike[str]) -> None:
    """Check a testbed checkpoint folder loaded by path, wherever it lives (a copy, a training run).

    A folder is a testbed checkpoint when it carries the ``train_info.json`` that ``longshort
    testbed train`` writes; any other folder (a hub model, an SFT adapter) is left alone. Its files
    are checked against, in order: the sha256 the run recorded in ``train_info.json["files"]``
    (runs since that was added, and assets built from them), else the package manifest's entry of
    the shipped checkpoint whose ``train_info.json`` it carries byte for byte (a copy of the
    shipped reasoner or base). A folder matching neither (an older run) has nothing to check
    against and loads as before. Cost: one sha256 pass over the folder (milliseconds at testbed
    sizes), the price of never running a silently corrupted model.
    """
    model_dir = Path(model_dir)
    info_path = model_dir / TRAIN_INFO
    if not info_path.is_file():
        return
    info = _read_train_info(info_path)
    if info is None:
        return
    recorded = info.get(TRAIN_INFO_FILES)
    if isinstance(recorded, dict) and recorded:
        for name, digest in recorded.items():
            _check_file(model_dir / name, str(digest), str(info_path), "retrain it or copy the folder again")
        return
    shipped = _shipped_entry(sha256_file(info_path))
    for name, digest in shipped.items():
        _check_file(model_dir / name, digest, "the package manifest", "copy the shipped checkpoint again")


def _read_train_info(info_path: Path) -> dict[str, Any] | None:
    """A testbed ``train_info.json`` parsed, or None when the file is someone else's (no testbed config)."""
    info = _json_file(info_path, "testbed checkpoint file", "retrain it or copy the folder again")
    config = info.get("config") if isinstance(info, dict) else None
    if not isinstance(config, dict) or config.get("model") not in MODELS:
        return None
    return info


def _shipped_entry(info_digest: str) -> dict[str, str]:
    """The manifest's ``{file name: sha256}`` of the shipped checkpoint with this ``train_info.json``, or {}."""
    try:
        files = read_manifest(assets_dir())["files"]
    except FileNotFoundError:  # a package without checkpoints: nothing to compare a copy with
        return {}
    for name in MODELS:
        if files.get(f"{name}/{TRAIN_INFO}") == info_digest:
            prefix = f"{name}/"
            return {rel[len(prefix) :]: digest for rel, digest in files.items() if rel.startswith(prefix)}
    return {}


def checkpoint(name: CheckpointName, root: Path | None = None) -> Path:
    """The verified directory of a shipped model, ready for ``from_pretrained``."""
    if name not in MODELS:
        raise ValueError(f"unknown testbed checkpoint {name!r}; choose 'reasoner' or 'base'")
    root = root or assets_dir()
    verify_files(root)
    return root / name


def default_model(role: Role, root: Path | None = None) -> Path:
    """The model a role uses when none is given: the shipped testbed reasoner (long) or base (short)."""
    if role not in ROLE_BASE:
        raise ValueError(f"unknown role {role!r}; choose 'long' or 'short'")
    return checkpoint(ROLE_BASE[role], root)


#: the shipped cold-start pair: the starting point (and KL reference) of RL when no model is given
DEFAULT_SFT_PAIR = "longshort-sft"


def default_sft(role: Role, root: Path | None = None) -> Path:
    """The shipped cold-start SFT adapter of a role (``sft/longshort-sft/<role>``), after verifying the assets."""
    if role not in ROLE_BASE:
        raise ValueError(f"unknown role {role!r}; choose 'long' or 'short'")
    root = root or assets_dir()
    manifest = verify_files(root)
    rel = f"{SFT_DIR}/{DEFAULT_SFT_PAIR}/{role}"
    if f"{rel}/adapter_config.json" not in manifest.get("files", {}):
        raise FileNotFoundError(f"the assets in {root} ship no {DEFAULT_SFT_PAIR} pair; pass the SFT models explicitly")
    return root / rel


def pair_member(name: str, role: Role, path: str | None = None) -> str:
    """Where a shipped pair's agent lives, relative to the assets: its own folder, or another pair's
    (``path``: an agent an RL run left untrained is the cold-start pair's adapter, not a copy)."""
    return path or f"{SFT_DIR}/{name}/{role}"


def shipped_pair(name: str, root: Path | None = None) -> tuple[Path, Path] | None:
    """The ``(long, short)`` adapter dirs of the shipped pair ``name`` (e.g. ``longshort-rl``), or None.

    Only the manifest is read (and verified); ``longshort.testbed.checkpoints.shipped_pairs`` also
    checks that each adapter still matches the checkpoint it shipped against.
    """
    root = root or assets_dir()
    entry = verify_files(root).get("sft", {}).get(name)
    if entry is None:
        return None
    long, short = (root / pair_member(name, role, (entry.get(role) or {}).get("path")) for role in ("long", "short"))
    return long, short


def pair_named(model: str | os.PathLike[str]) -> tuple[Path, Path] | None:
    """The shipped pair a model name stands for (``"longshort-rl"``), or None: a local folder of
    that name, or any name that is no shipped pair, is a model, not a pair."""
    name = os.fspath(model)
    return None if Path(name).exists() else shipped_pair(name)


def shipped_pair_names(root: Path | None = None) -> list[str]:
    """The names of the pairs shipped in the assets (for help texts and errors)."""
    try:
        return list(verify_files(root).get("sft", {}))
    except (FileNotFoundError, ChecksumError):
        return []


def shipped_base(adapter_dir: str | Path) -> Path | None:
    """The verified dir a shipped adapter loads on, or None for any other model or adapter.

    A shipped adapter lives at ``<assets>/sft/<name>/<long|short>/`` and its
    ``base_model_name_or_path`` is a marker resolved in the same assets folder: ``"reasoner"`` or
    ``"base"`` (a checkpoint), or ``"sft/<pair>/<role>"``, another shipped adapter of the same role
    that this one stacks on (an RL round's LoRA, trained on the merged cold-start adapter). The
    returned dir may therefore itself be an adapter: ``agents.loading.load_trained`` merges it first.
    """
    adapter_dir = Path(adapter_dir)
    config_path = adapter_dir / "adapter_config.json"
    if not config_path.is_file():
        return None
    marker = json.loads(config_path.read_text(encoding="utf-8")).get("base_model_name_or_path")
    stacked = isinstance(marker, str) and marker.startswith(f"{SFT_DIR}/")
    if marker not in MODELS and not stacked:
        return None
    sft_dir = adapter_dir.resolve().parent.parent
    root = sft_dir.parent
    if sft_dir.name != SFT_DIR or not (root / MANIFEST).is_file():
        if Path(marker).is_dir():  # an ordinary adapter whose base happens to be ./reasoner or ./base
            return None
        raise ValueError(
            f"{adapter_dir}: its base is the shipped {marker!r}, which resolves only inside a testbed assets folder "
            f"(<assets>/{SFT_DIR}/<name>/<long|short>/ next to <assets>/{MANIFEST})"
        )
    role = adapter_dir.resolve().name
    if stacked:
        base = root / marker
        if Path(marker).name != role or not (base / "adapter_config.json").is_file():
            raise ValueError(f"{adapter_dir}: a {role} adapter stacks on a shipped {role} adapter, not on {marker!r}")
        verify_files(root)
        return base
    expected = ROLE_BASE.get(role)  # type: ignore[call-overload]
    if expected is not None and expected != marker:
        raise ValueError(f"{adapter_dir}: a {role} adapter merges into the {expected}, not the {marker}")
    return checkpoint(marker, root)
