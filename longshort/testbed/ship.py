"""Ship a trained pair inside the package: ``longshort testbed ship-sft`` and ``ship-rl``.

    longshort train sft --agent long  --lora --output-dir runs/coldstart/sft-long    # from the shipped reasoner
    longshort train sft --agent short --lora --output-dir runs/coldstart/sft-short   # from the shipped base
    longshort testbed ship-sft --long runs/coldstart/sft-long --short runs/coldstart/sft-short \\
        --metrics runs/coldstart/demo/demo.json

copies each adapter (``adapter_model.safetensors`` in float16, ``adapter_config.json``,
``sft_info.json``; the tokenizer is the base checkpoint's) to ``<assets>/sft/<name>/{long,short}/``,
replaces the recorded base path with the marker ``"reasoner"`` / ``"base"`` (resolved when loading,
``checkpoints.shipped_base``) and rewrites the manifest with the new files' hashes and an ``sft``
entry. It refuses a folder that is not a LoRA adapter, an adapter of the wrong agent or base, and a
result over the size cap; the assets are verified first, so a corrupted file is never re-blessed.

    longshort train rl --config training/configs/rl/testbed.yaml --output-dir runs/rl --lora-r 4
    longshort testbed ship-rl --run runs/rl --name longshort-rl

ships what an RL run ended with: each trained agent's last-round LoRA adapter, stacked on the
shipped cold-start adapter it was trained on (its base is the marker ``sft/longshort-sft/<role>``),
and, for an agent no round trained, a reference to that cold-start adapter (no copy).
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from longshort.shipped import DEFAULT_SFT_PAIR, pair_member
from longshort.testbed.checkpoints import (
    ROLE_BASE,
    SFT_DIR,
    SIZE_LIMIT_BYTES,
    Manifest,
    ShippedAgent,
    ShippedPair,
    assets_dir,
    save_manifest,
    sha256_file,
    verify,
    weights_file,
)

ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json", "sft_info.json")
#: the training record a shipped RL adapter carries (its rounds and the run), in place of sft_info.json
RL_INFO = "rl_info.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
#: sft_info.json fields kept in the manifest's summary of each agent
_INFO_KEYS = (
    "agent",
    "steps",
    "train_loss",
    "rows_used",
    "target_tokens",
    "seconds",
    "train_device",
    "created",
    "git_commit",
)
_CONFIG_KEYS = (
    "lora_r",
    "lora_alpha",
    "lora_target_modules",
    "learning_rate",
    "num_train_epochs",
    "max_steps",
    "per_device_train_batch_size",
    "seed",
    *("lr", "epochs", "batch_size"),  # the same three in an sft_info.json from before SFTRunConfig was TRL's
)


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB"


def _check_adapter(role: str, path: Path, manifest: Manifest) -> tuple[dict, dict]:
    """``(adapter_config, sft_info)`` of a LoRA adapter of ``role`` on the matching shipped checkpoint."""
    flag = f"--{role}"
    if not path.is_dir():
        raise FileNotFoundError(f"{flag} {path}: no such directory")
    kind = "a full model" if (path / "model.safetensors").exists() else "no adapter"
    config = _lora_config(
        path,
        f"{flag} {path}",
        f"{flag} {path} is not a LoRA adapter (it holds {kind}: adapter_config.json and adapter_model.safetensors "
        "are needed; train with `longshort train sft --lora`)",
    )
    info_path = path / "sft_info.json"
    if not info_path.is_file():
        raise ValueError(f"{flag} {path} has no sft_info.json: ship adapters written by `longshort train sft --lora`")
    info = json.loads(info_path.read_text(encoding="utf-8"))
    if info.get("agent") != role:
        raise ValueError(f"{flag} {path}: its sft_info.json says it is the {info.get('agent')!r} agent, not {role!r}")
    if info.get("lora") is False:
        raise ValueError(f"{flag} {path}: its sft_info.json says it is not a LoRA run")
    expected = ROLE_BASE[role]
    other = next(m for m in ROLE_BASE.values() if m != expected)
    digests = {m: manifest.files.get(f"{m}/model.safetensors") for m in (expected, other)}
    recorded = str(config.get("base_model_name_or_path") or "")
    base_file = Path(recorded) / "model.safetensors"
    if info.get("base_sha256"):  # recorded by train_sft: the strongest evidence
        found = next((m for m, d in digests.items() if d == info["base_sha256"]), None)
        how = f"its sft_info.json records base sha256 {info['base_sha256'][:12]}…"
    elif recorded in digests:  # already shipped once
        found, how = recorded, f"its adapter_config.json names the shipped {recorded!r}"
    elif base_file.is_file():
        digest = sha256_file(base_file)
        found = next((m for m, d in digests.items() if d == digest), None)
        how = f"its base {recorded} has sha256 {digest[:12]}…"
    else:
        name = Path(recorded).name
        found = name if name in digests else None
        how = f"its base is recorded as {recorded!r}"
    if found != expected:
        what = f"the shipped {found}" if found else "no shipped checkpoint"
        raise ValueError(
            f"{flag} {path}: the {role} agent's adapter must be trained from the shipped {expected}, "
            f"but {how}, which is {what}"
        )
    return config, info


def _to_fp16(src: Path, dst: Path) -> tuple[str, int]:
    """Copy a safetensors file with float32/bfloat16 tensors cast to float16; ``(source dtypes, tensors cast)``."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    tensors, dtypes, cast = {}, set(), 0
    with safe_open(str(src), "pt") as f:
        metadata = f.metadata() or {"format": "pt"}
        for key in f.keys():  # noqa: SIM118 (safe_open is not a mapping)
            t = f.get_tensor(key)
            dtypes.add(str(t.dtype).removeprefix("torch."))
            if t.dtype in (torch.float32, torch.bfloat16):
                half = t.to(torch.float16)
                if torch.isfinite(half).all() or not torch.isfinite(t).all():  # never turn a value into inf
                    t, cast = half, cast + 1
            tensors[key] = t.contiguous()
    save_file(tensors, str(dst), metadata=metadata)
    return ",".join(sorted(dtypes)), cast


def _summary(info: dict, source_dtype: str) -> dict[str, Any]:
    config = info.get("config") or {}
    out = {k: info[k] for k in _INFO_KEYS if k in info}
    out.update({k: config[k] for k in _CONFIG_KEYS if k in config})
    out["source_dtype"] = source_dtype
    return out


def _metrics(path: Path | None, name: str) -> dict[str, Any]:
    """``--metrics``: a JSON object kept as is, or a demo.json reduced to its rows, n and seed."""
    if path is None:
        return {}
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"--metrics {path}: not a readable JSON file ({e})") from None
    if not isinstance(data, dict):
        raise ValueError(f"--metrics {path}: expected a JSON object, got a {type(data).__name__}")
    if isinstance(data.get("rows"), list):  # a demo.json
        row = next((r for r in data["rows"] if isinstance(r, dict) and r.get("system") == name), None)
        return {"eval_n": data.get("n"), "eval_seed": data.get("seed"), "row": row, "rows": data["rows"]}
    return data


def _check_name(name: str) -> None:
    if not _NAME.match(name):
        raise ValueError(f"--name {name!r}: use letters, digits, '.', '_' and '-' (it names a folder and a demo row)")


def _stage_adapter(src: Path, config: dict, base: str, out: Path, record: Path | dict) -> str:
    """Write one shipped adapter into ``out``: float16 weights, the config naming ``base``, its record; its dtype."""
    out.mkdir(parents=True)
    source_dtype, _ = _to_fp16(src / "adapter_model.safetensors", out / "adapter_model.safetensors")
    config = {**config, "base_model_name_or_path": base}
    (out / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    if isinstance(record, Path):
        shutil.copy2(record, out / record.name)
    else:
        (out / RL_INFO).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return source_dtype


def _install(root: Path, before: Manifest, name: str, staging: Path, pair: ShippedPair, limit_bytes: int) -> Manifest:
    """Swap ``staging`` in as ``<root>/sft/<name>/`` and rewrite the manifest, after the size check."""
    prefix = f"{SFT_DIR}/{name}/"
    new_files = {f"{prefix}{p.relative_to(staging)}": p for p in sorted(staging.rglob("*")) if p.is_file()}
    added = sum(p.stat().st_size for p in new_files.values())
    kept = sum(
        p.stat().st_size
        for p in root.rglob("*")
        if p.is_file() and not str(p.relative_to(root).as_posix()).startswith(prefix)
    )
    if kept + added > limit_bytes:
        sizes = ", ".join(
            f"{role} {_mb(sum(p.stat().st_size for k, p in new_files.items() if k.startswith(prefix + role)))}"
            for role in ("long", "short")
        )
        raise ValueError(
            f"shipping {name!r} would make {root} {_mb(kept + added)} ({_mb(kept)} already there + {_mb(added)} "
            f"of adapters: {sizes}), over the {_mb(limit_bytes)} cap on everything "
            "shipped; use a smaller LoRA rank or fewer target modules"
        )
    files = {rel: digest for rel, digest in before.files.items() if not rel.startswith(prefix)}
    files.update({rel: sha256_file(p) for rel, p in new_files.items()})
    manifest = before.model_copy(update={"files": dict(sorted(files.items())), "sft": {**before.sft, name: pair}})
    dest = root / SFT_DIR / name
    incoming, outgoing = dest.with_name(f".{name}.new"), dest.with_name(f".{name}.old")
    for leftover in (incoming, outgoing):
        shutil.rmtree(leftover, ignore_errors=True)
    shutil.copytree(staging, incoming)  # on the assets' file system, so the swap is two renames
    if dest.exists():
        dest.rename(outgoing)
    incoming.rename(dest)
    shutil.rmtree(outgoing, ignore_errors=True)
    save_manifest(root, manifest)
    verify(root)
    return manifest


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def ship_sft(
    long: str | Path,
    short: str | Path,
    *,
    name: str = "longshort-sft",
    assets: str | Path | None = None,
    metrics: str | Path | None = None,
    command: str | None = None,
    limit_bytes: int = SIZE_LIMIT_BYTES,
) -> Manifest:
    """Copy the two adapters into ``<assets>/sft/<name>/`` and rewrite the manifest; return it.

    Shipping a name that is already shipped replaces that pair. Nothing in ``assets`` changes when
    a check fails.
    """
    _check_name(name)
    root = Path(assets) if assets is not None else assets_dir()
    before = verify(root)
    sources = {"long": Path(long), "short": Path(short)}
    checked = {role: _check_adapter(role, path, before) for role, path in sources.items()}
    pair_metrics = _metrics(Path(metrics) if metrics else None, name)
    with tempfile.TemporaryDirectory(prefix="ship-sft-") as tmp:
        staging = Path(tmp) / name
        agents: dict[str, ShippedAgent] = {}
        for role, path in sources.items():
            config, info = checked[role]
            base = ROLE_BASE[role]
            source_dtype = _stage_adapter(path, config, base, staging / role, path / "sft_info.json")
            agents[role] = ShippedAgent(
                base=base, base_sha256=before.files[f"{base}/model.safetensors"], info=_summary(info, source_dtype)
            )
        pair = ShippedPair(
            command=command or f"longshort testbed ship-sft --long {long} --short {short} --name {name}",
            created=_now(),
            metrics=pair_metrics,
            long=agents["long"],
            short=agents["short"],
        )
        return _install(root, before, name, staging, pair, limit_bytes)


def _run_started_from(run: Path, role: str, on: str) -> None:
    """Refuse an RL run whose ``role`` agent did not start from the shipped pair ``on``."""
    import yaml

    config_path = run / "config.yaml"
    config = yaml.safe_load(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
    model = (config or {}).get(f"{role}_model")
    if model is None and on == DEFAULT_SFT_PAIR:  # the run's default: the shipped longshort-sft pair
        return
    if model is not None and Path(model).parts[-3:] == (SFT_DIR, on, role):
        return
    start = model or f"the shipped {DEFAULT_SFT_PAIR} pair"
    raise ValueError(
        f"--run {run}: its {role} agent started from {start}, not from the shipped {on!r} pair (--on); "
        "an RL adapter ships only on the cold-start adapter it was trained on"
    )


def ship_rl(
    run: str | Path,
    *,
    name: str = "longshort-rl",
    on: str = DEFAULT_SFT_PAIR,
    assets: str | Path | None = None,
    command: str | None = None,
    limit_bytes: int = SIZE_LIMIT_BYTES,
) -> Manifest:
    """Ship the pair an RL run (``longshort train rl``) ended with, stacked on the shipped pair ``on``.

    Each agent's last finished round is a LoRA adapter trained on ``on``'s merged adapter of that
    agent, so it ships small (float16, its base the marker ``sft/<on>/<role>``) and loads by merging
    both (``agents.loading.load_trained``). An agent no round trained is ``on``'s own adapter,
    referenced, not copied. The manifest records every round of the run (its ``rounds.json``).
    """
    from longshort.training.rl.trainer import finished_rounds

    _check_name(name)
    if name == on:
        raise ValueError(f"--name {name!r}: the RL pair needs a name of its own (it stacks on {on!r})")
    root = Path(assets) if assets is not None else assets_dir()
    before = verify(root)
    if on not in before.sft:
        raise ValueError(f"--on {on!r}: no such shipped pair in {root} (shipped: {', '.join(before.sft) or 'none'})")
    run = Path(run)
    rounds_path = run / "rounds.json"
    if not rounds_path.is_file():
        raise FileNotFoundError(f"--run {run}: no rounds.json (not a `longshort train rl` output folder?)")
    record = json.loads(rounds_path.read_text(encoding="utf-8"))
    rounds = record.get("rounds", [])
    # each agent's finished rounds, in order (the last one's final/ is what ships)
    finished = {role: finished_rounds(rounds, role) for role in ("long", "short")}
    if not any(finished.values()):
        raise ValueError(f"--run {run}: no round has finished yet (rounds.json holds only {len(rounds)} rows)")
    with tempfile.TemporaryDirectory(prefix="ship-rl-") as tmp:
        staging = Path(tmp) / name
        agents: dict[str, ShippedAgent] = {}
        for role in ("long", "short"):
            sft = before.sft[on].long if role == "long" else before.sft[on].short
            own = pair_member(on, role, sft.path)
            done = finished[role]
            if not done:
                agents[role] = sft.model_copy(update={"path": own, "info": {"same_as": on, **sft.info}})
                continue
            _run_started_from(run, role, on)
            final = run / "rounds" / done[-1]["round"] / "final"  # the recorded path is the run machine's
            config = _lora_config(
                final,
                str(final),
                f"{final}: the {role} agent's last round left no LoRA adapter (a --no-lora run trains full models, "
                "which do not fit the shipped assets)",
            )
            info = {"agent": role, "on": on, "rounds": done, "run": {k: v for k, v in record.items() if k != "rounds"}}
            source_dtype = _stage_adapter(final, config, own, staging / role, info)
            agents[role] = ShippedAgent(
                base=own,
                base_sha256=before.files[weights_file(own)],
                info={
                    "rounds": [r["round"] for r in done],
                    "lora_r": config.get("r"),
                    "lora_alpha": config.get("lora_alpha"),
                    "source_dtype": source_dtype,
                },
            )
        last = rounds[-1]
        pair = ShippedPair(
            command=command or f"longshort testbed ship-rl --run {run} --name {name} --on {on}",
            created=_now(),
            metrics={"row": {**last, "system": name}, "rounds": rounds, "run": record.get("command")},
            long=agents["long"],
            short=agents["short"],
        )
        return _install(root, before, name, staging, pair, limit_bytes)


def _lora_config(path: Path, label: str, missing: str) -> dict:
    """The ``adapter_config.json`` of the LoRA adapter in ``path``; ``missing`` is the error when there is none."""
    if not (path / "adapter_config.json").is_file() or not (path / "adapter_model.safetensors").is_file():
        raise ValueError(missing)
    config = json.loads((path / "adapter_config.json").read_text(encoding="utf-8"))
    if config.get("peft_type") != "LORA":
        raise ValueError(f"{label} is a {config.get('peft_type')!r} adapter; only LoRA adapters ship")
    return config
