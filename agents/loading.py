"""Build agents from names: the one builder the CLI, the eval runner, the analysis, the testbed demo
and the ``langgraph.json`` factories all use.

A name is a local directory (a full model, or a LoRA adapter saved by ``longshort train sft``), a
hub id, or a served model's name (``openai`` backend). A role given no model gets the shipped
default for that role (``longshort.shipped.default_model``), so every entry point works offline.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from longshort.agents.base import Backend
from longshort.agents.roles import Agent
from longshort.protocol import Role

BackendKind = Literal["hf", "hf-process", "openai", "vllm"]
BACKENDS: tuple[str, ...] = ("hf", "hf-process", "openai", "vllm")
#: the kinds that run a local transformers model (they take ``device`` and the backend's own options)
LOCAL_HF: tuple[str, ...] = ("hf", "hf-process")
ROLES: tuple[Role, ...] = ("long", "short")


def is_adapter(model: str | os.PathLike[str]) -> bool:
    """A local PEFT adapter folder (it has ``adapter_config.json``), not a full model."""
    return (Path(model) / "adapter_config.json").is_file()


def load_trained(path: str | Path, *, dtype=None, merge: bool = True, device: str | None = None):
    """A model saved by ``longshort train sft``: a full model, or base + LoRA adapter (merged by default).

    An adapter shipped in the testbed assets names its base by the marker ``reasoner`` / ``base``
    (loaded on the verified checkpoint of the same assets folder) or ``sft/<pair>/<role>`` (another
    shipped adapter, merged first: an RL round stacked on the cold-start adapter). The model is returned in
    eval mode on ``device`` (when given): it is loaded for inference. A testbed checkpoint folder
    (the model itself, or an adapter's base given by path) is verified first (``verify_local``).
    """
    from transformers import AutoModelForCausalLM

    from longshort.shipped import shipped_base

    path = Path(path)
    if not is_adapter(path):
        verify_local(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype or "auto")
    else:
        base_dir = shipped_base(path)  # a shipped base is verified with its whole assets folder
        if base_dir is None:
            from peft import AutoPeftModelForCausalLM

            verify_local(_adapter_base(path))
            model = AutoPeftModelForCausalLM.from_pretrained(path, dtype=dtype or "auto")
        else:
            from peft import PeftModel

            if is_adapter(base_dir):  # stacked on another shipped adapter (an RL round on the SFT one)
                base = load_trained(base_dir, dtype=dtype)
            else:
                base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=dtype or "auto")
            model = PeftModel.from_pretrained(base, path)
        if merge:
            model = model.merge_and_unload()
    if device is not None:
        model.to(device)
    return model.eval()


def verify_local(model: str | os.PathLike[str] | None) -> None:
    """Check a local testbed checkpoint's files before loading it (``ChecksumError`` naming a bad one).

    The shipped defaults are verified against the package manifest where they are looked up, but a
    folder passed by path (a copy of a shipped checkpoint, a training run's output) reaches
    ``from_pretrained`` directly, which loads flipped bytes without complaint. Hub ids and folders
    that are not testbed checkpoints pass unchecked (``longshort.shipped.verify_checkpoint_dir``).
    """
    from longshort.shipped import verify_checkpoint_dir

    if model is not None and Path(model).is_dir():
        verify_checkpoint_dir(model)


def _adapter_base(adapter_dir: Path) -> str | None:
    """The ``base_model_name_or_path`` an ordinary (not shipped) adapter loads on, or None."""
    import json

    try:
        base = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8")).get(
            "base_model_name_or_path"
        )
    except (OSError, ValueError, AttributeError):  # peft reports a broken config itself, in its own words
        return None
    return base if isinstance(base, str) and base else None


def tokenizer_path(path: str | Path) -> Path:
    """Where a trained model's tokenizer is: the folder itself, or for a shipped adapter (which carries
    none) its shipped base checkpoint."""
    from longshort.shipped import shipped_base

    base = shipped_base(path)
    return Path(path) if base is None else tokenizer_path(base)


def load_backend(
    kind: str,
    model: str | os.PathLike[str],
    *,
    base_url: str | None = None,
    api_key: str | None = None,
    device: str | None = None,
    timeout: float = 60.0,
    max_retries: int = 2,
    deadline: float | None = None,
    **local_options: Any,
) -> Backend:
    """One backend: ``hf`` (local path, adapter or hub id), ``hf-process`` (the same in a child
    process), ``openai`` (any OpenAI-compatible server), ``vllm``.

    ``local_options`` go to ``TransformersBackend`` (``max_batch_size``, ``prefix_cache_tokens``, …)
    for the local kinds; the remote kinds take none. ``hf-process`` pays off when the two agents
    are two models on one GPU: each decode loop gets its own interpreter instead of taking turns
    on one lock (``agents/process.py``). ``timeout`` (per attempt), ``max_retries`` and
    ``deadline`` (all attempts of one request; default ``timeout × (max_retries + 1)``) are the
    ``openai`` kind's (``agents.chat.openai_backend``).
    """
    if kind not in BACKENDS:
        raise ValueError(f"unknown backend {kind!r}; choose one of {', '.join(BACKENDS)}")
    if local_options and kind not in LOCAL_HF:
        raise ValueError(f"backend {kind!r} takes no local model options (got {', '.join(sorted(local_options))})")
    if kind != "openai":  # a local folder: a testbed checkpoint is checked before it is loaded
        verify_local(model)
    if kind == "hf":
        from longshort.agents.hf import TransformersBackend

        if is_adapter(model):  # merged on load; CPU inference in float32 as for full models
            dev = device or _default_device()
            merged = load_trained(model, dtype="float32" if dev == "cpu" else None, device=dev)
            # the merged model is this backend's own, not one being trained: graphs as for a path
            local_options.setdefault("cuda_graphs", str(dev).startswith("cuda"))
            return TransformersBackend(merged, tokenizer_path(model), **local_options)
        return TransformersBackend(model, device=device, **local_options)
    if kind == "hf-process":
        from longshort.agents.process import ProcessBackend

        if is_adapter(model):
            raise ValueError(f"{model} is a LoRA adapter: hf-process loads full models (use --backend hf)")
        return ProcessBackend(model, device=device, **local_options)
    if kind == "openai":
        if not base_url:
            raise ValueError("the openai backend needs --base-url (e.g. http://127.0.0.1:8000/v1)")
        from longshort.agents.chat import openai_backend

        return openai_backend(
            base_url, str(model), api_key=api_key, timeout=timeout, max_retries=max_retries, deadline=deadline
        )
    from longshort.agents.vllm import VLLMBackend

    return VLLMBackend(str(model))


def load_agents(
    long_model: str | os.PathLike[str] | None = None,
    short_model: str | os.PathLike[str] | None = None,
    *,
    backend: str = "hf",
    roles: Sequence[Role] = ROLES,
    temperature: float = 0.0,
    seed: int | None = None,
    **backend_kwargs: Any,
) -> tuple[Agent | None, Agent | None]:
    """The long and short agents, ``(long, short)``: the one way to build a pair from names.

    - nothing: the shipped testbed models (the reasoner as long, the base as short), offline;
    - a shipped pair's name as ``long_model`` (``"longshort-sft"``, ``"longshort-rl"``) and no
      ``short_model``: its two adapters, each merged on its shipped base (never through the hub);
    - local folders (full models or LoRA adapters) or hub ids; a ``long_model`` alone plays both
      roles on one backend;
    - ``backend="openai"`` with ``base_url``: the names are the served models'.

    A role not in ``roles`` is None and loads nothing. ``backend_kwargs`` go to ``load_backend``.
    A local folder wins over a shipped pair of the same name.
    """
    if not set(roles) <= set(ROLES) or not roles:
        raise ValueError(f"roles must be a non-empty subset of {ROLES}, got {tuple(roles)}")
    if long_model is None:
        if backend not in LOCAL_HF:
            raise ValueError(f"--backend {backend} needs --long-model (the served model's name or path)")
        from longshort.shipped import default_model

        long_model = default_model("long")
        short_model = short_model or default_model("short")
    elif backend in LOCAL_HF:
        from longshort.shipped import pair_named, shipped_pair_names

        pair = pair_named(long_model)
        if pair is not None and short_model is not None:
            raise ValueError(
                f"{os.fspath(long_model)!r} is a shipped pair (both agents): give it without a short model, "
                "or pick its long adapter by path"
            )
        if pair is not None:
            long_model, short_model = pair
        elif os.fspath(long_model).startswith("longshort-") and not Path(long_model).exists():  # fail fast, offline
            raise ValueError(
                f"no shipped pair named {os.fspath(long_model)!r}; shipped: {', '.join(shipped_pair_names()) or 'none'}"
            )
    names: dict[Role, str] = {"long": os.fspath(long_model), "short": os.fspath(short_model or long_model)}
    backends: dict[str, Backend] = {}
    agents: dict[Role, Agent] = {}
    try:
        for role in roles:
            name = names[role]
            if name not in backends:
                backends[name] = load_backend(backend, name, **backend_kwargs)
            agents[role] = Agent(role, backends[name], temperature=temperature, seed=seed)
    except BaseException:
        close_backends(list(backends.values()))
        raise
    return agents.get("long"), agents.get("short")


def close_backends(items: Sequence[Backend | Agent | None]) -> None:
    """Close each distinct backend once (agents sharing one close it once; None is skipped)."""
    seen: set[int] = set()
    for item in items:
        backend = item.backend if isinstance(item, Agent) else item
        if backend is not None and id(backend) not in seen:
            seen.add(id(backend))
            backend.close()


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
