"""The whole testbed recipe: tokenizer, both models, their measured numbers, the shipped assets.

    longshort testbed build --out runs/testbed --assets longshort/assets/testbed --eval-n 500

1. trains the shared tokenizer on training problems' teacher text;
2. trains the reasoner and the base at the same time (two processes on one GPU: the models are
   small, so neither fills the device alone);
3. writes the assets (fp16 safetensors + tokenizer + configs) and a manifest of sha256 hashes;
4. measures the issue's numbers on ``eval_n`` held-out test problems with the demo's own code
   (greedy): long-only and short-only accuracy and tokens, the Long⊗Short prompt-only row, and
   the needed-thought share of the long teacher's tokens; stores them in the manifest and in
   ``results/testbed.json``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

from longshort.config import config_dict, save_config
from longshort.shipped import MODELS
from longshort.testbed.build_config import TestbedBuildConfig
from longshort.testbed.train import load_or_train_tokenizer

_SHIPPED = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "train_info.json",
)


_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")


def build(config: TestbedBuildConfig) -> dict:
    """Train ``config.models`` (keeping the others from ``config.assets``), measure, write the assets.

    ``OUT/config.yaml`` repeats the build (``testbed build --config``); each model trains from its own
    ``OUT/train-<model>.yaml`` (``testbed train --config``), recorded with its train_info.json.
    """
    from longshort.testbed.checkpoints import assets_dir, write_manifest
    from longshort.testbed.tasks import generate_problems

    out = Path(config.out)
    assets = Path(config.assets) if config.assets else assets_dir()
    models = tuple(config.models)
    out.mkdir(parents=True, exist_ok=True)
    save_config(config, out / "config.yaml")
    kept = [kind for kind in MODELS if kind not in models]
    for kind in kept:  # retrain only some: the others, and their shared tokenizer, come from ``assets``
        if not (assets / kind / "model.safetensors").exists():
            raise FileNotFoundError(f"cannot keep the {kind}: {assets / kind} has no model")
        shutil.copytree(assets / kind, out / kind, dirs_exist_ok=True)
        (out / "tokenizer").mkdir(parents=True, exist_ok=True)
        for name in _TOKENIZER_FILES:
            if (assets / kind / name).exists():
                shutil.copy2(assets / kind / name, out / "tokenizer" / name)
    start = time.perf_counter()
    problems = generate_problems("train", config.n_train, seed=config.seed, n_ops=config.n_ops)
    load_or_train_tokenizer(config.train_config("reasoner"), problems)  # once, before the two trainings read it
    for kind in models:
        save_config(config.train_config(kind), out / f"train-{kind}.yaml")
    procs = {
        kind: subprocess.Popen(
            [sys.executable, "-m", "longshort.cli", "testbed", "train", "--config", str(out / f"train-{kind}.yaml")],
            stdout=open(out / f"train-{kind}.log", "w"),  # noqa: SIM115 (closed with the process)
            stderr=subprocess.STDOUT,
        )
        for kind in models
    }
    for kind, proc in procs.items():
        if proc.wait() != 0:
            log = (out / f"train-{kind}.log").read_text()[-3000:]
            raise RuntimeError(f"training the {kind} failed:\n{log}")
    train_s = time.perf_counter() - start

    staging = assets.with_name(assets.name + ".new")
    shutil.rmtree(staging, ignore_errors=True)
    for kind in MODELS:
        (staging / kind).mkdir(parents=True)
        for name in _SHIPPED:
            if (out / kind / name).exists():
                shutil.copy2(out / kind / name, staging / kind / name)
    command = _command("longshort.testbed.build")
    write_manifest(staging, command=command, seed=config.seed, metrics={"train_seconds": train_s}, **_provenance())
    # measured before the swap, so a failed evaluation leaves the old assets in place
    result = (
        measure(
            staging,
            eval_n=config.eval_n,
            eval_seed=config.eval_seed,
            results=config.results,
            out=out / "eval",
            config=config_dict(config),
        )
        if config.eval_n
        else {"metrics": {"train_seconds": train_s}, "config": config_dict(config)}
    )
    shutil.rmtree(assets, ignore_errors=True)
    staging.rename(assets)
    return result


def measure(
    assets: Path,
    *,
    eval_n: int = 500,
    eval_seed: int = 0,
    results: Path | None = None,
    out: Path | None = None,
    device: str | None = None,
    config: dict | None = None,
) -> dict:
    """The issue's numbers for the models in ``assets``, written into its manifest and ``results``.

    ``results`` records ``config`` (the build's or measure's command config) and the models' training
    config (``train_config``, from the reasoner's train_info.json).

    Split from training so that a GPU lease shorter than training plus evaluation can do one, then
    the other (``longshort testbed measure``).
    """
    import json

    from transformers import AutoTokenizer

    from longshort.provenance import run_metadata, write_json_atomic
    from longshort.testbed.checkpoints import Manifest, write_manifest
    from longshort.testbed.demo import run_demo
    from longshort.testbed.tasks import generate_problems
    from longshort.testbed.teachers import teacher_stats, tokenizer_counter

    manifest_path = assets / "manifest.json"
    if not manifest_path.exists():
        raise FileNotFoundError(f"no manifest at {manifest_path}: not a testbed assets folder")
    before = Manifest.model_validate_json(manifest_path.read_text(encoding="utf-8"))
    info = json.loads((assets / "reasoner" / "train_info.json").read_text())["config"]
    out = out or assets.with_name(assets.name + ".eval")
    demo = run_demo(  # the checkpoints' own numbers: shipped SFT pairs are measured when they ship
        n=eval_n, seed=eval_seed, out=out, device=device, checkpoints=assets, max_batch_size=512, include_shipped=False
    )
    rows = {r["system"]: r for r in demo["rows"]}
    tokenizer = AutoTokenizer.from_pretrained(assets / "reasoner")
    test_problems = generate_problems("test", eval_n, seed=eval_seed, n_ops=info["n_ops"])
    stats = teacher_stats(test_problems, seed=info["seed"], count=tokenizer_counter(tokenizer))
    metrics = {
        "eval_n": eval_n,
        "eval_seed": eval_seed,
        "long_only_accuracy": rows["long-only"]["accuracy"],
        "short_only_accuracy": rows["short-only"]["accuracy"],
        "long_only_mean_tokens": rows["long-only"]["mean_tokens"],
        "short_only_mean_tokens": rows["short-only"]["mean_tokens"],
        "long_to_short_token_ratio": rows["long-only"]["mean_tokens"] / rows["short-only"]["mean_tokens"],
        "needed_token_fraction": stats.needed_fraction,
        "rows": demo["rows"],
        "train_seconds": before.metrics.get("train_seconds"),
    }
    command = before.command
    if "testbed measure" in " ".join(sys.argv):
        command = f"{command} && {_command('longshort.testbed.build.measure')}"
    extra = before.model_dump(include={"created", "git_commit", "device", "sft"})
    manifest = write_manifest(assets, command=command, seed=before.seed, metrics=metrics, **extra)
    result = {
        "metrics": metrics,
        "teacher": stats.model_dump(),
        "manifest": manifest.model_dump(),
        "train_config": info,
        **run_metadata(**(config if config is not None else {"assets": str(assets), "eval_n": eval_n})),
    }
    write_json_atomic(result, results or Path("results") / "testbed.json")
    return result


def _command(fallback: str) -> str:
    return " ".join(["longshort", *sys.argv[1:]]) if "testbed" in sys.argv else fallback


def _provenance() -> dict:
    from longshort.provenance import device_name, git_commit

    return {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "git_commit": git_commit(),
        "device": device_name(),
    }
