"""Getting a model and tokenizer into the transformers backend: loading by path or hub id, or adopting.

Kept apart from the serving code because its failure modes are different (a missing path must
say "not found", not fail as a confusing hub lookup; a loader error becomes one clear message)
and because ``ProcessBackend`` needs the tokenizer loader without the backend. Adopting a live
instance (a model being trained) checks, never changes, its device and dtype.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


def _describe(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"[:2000]


def _resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype | str:
    """``None`` → bf16 on CUDA, fp32 elsewhere; strings like "bf16", "float16" or "auto"."""
    if dtype is None:
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    aliases = {
        "bf16": "bfloat16",
        "fp16": "float16",
        "half": "float16",
        "fp32": "float32",
        "float": "float32",
    }
    name = aliases.get(dtype.lower(), dtype.lower())
    if name == "auto":
        return "auto"
    resolved = getattr(torch, name, None)
    if not isinstance(resolved, torch.dtype):
        raise ValueError(f"unknown dtype {dtype!r}; use e.g. 'bfloat16', 'float16', 'float32' or 'auto'")
    return resolved


def _looks_like_path(src: str, given_as_path: bool) -> bool:
    """A missing path must fail as 'not found', not as a confusing hub lookup of '/tmp/x'."""
    if given_as_path or os.path.isabs(src) or src.startswith((".", "~")) or "\\" in src:
        return True
    return src.count("/") > 1  # hub ids are "name" or "org/name"


def _load_model(
    model: str | os.PathLike[str], *, dtype: torch.dtype | str, revision: str | None, trust_remote_code: bool
) -> PreTrainedModel:
    from transformers import AutoModelForCausalLM

    src = os.fspath(model)
    local = Path(src).expanduser()
    if local.exists():
        src = str(local)
    elif _looks_like_path(src, isinstance(model, os.PathLike)):
        raise FileNotFoundError(f"TransformersBackend: model path {src!r} does not exist")
    try:
        return AutoModelForCausalLM.from_pretrained(
            src, dtype=dtype, revision=revision, trust_remote_code=trust_remote_code
        )
    except Exception as e:  # any loader failure becomes one clear message
        where = "a local directory" if local.exists() else "not a local path, so tried as a Hugging Face Hub id"
        raise ValueError(
            f"TransformersBackend: could not load a causal LM from {src!r} ({where}): {_describe(e)}"
        ) from e


def _load_tokenizer(
    src: str | os.PathLike[str], *, revision: str | None, trust_remote_code: bool
) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    name = os.fspath(src)
    local = Path(name).expanduser()
    if local.exists():
        name = str(local)
    elif _looks_like_path(name, isinstance(src, os.PathLike)):
        raise FileNotFoundError(f"TransformersBackend: tokenizer path {name!r} does not exist")
    try:
        return AutoTokenizer.from_pretrained(name, revision=revision, trust_remote_code=trust_remote_code)
    except Exception as e:
        raise ValueError(f"TransformersBackend: could not load a tokenizer from {name!r}: {_describe(e)}") from e


def _same_device(asked: torch.device, actual: torch.device) -> bool:
    if asked.type != actual.type:
        return False
    if asked.index is None:  # "cuda" means the current CUDA device, as ``.to("cuda")`` would
        if asked.type == "cuda" and torch.cuda.is_available():
            return actual.index == torch.cuda.current_device()
        return True
    return asked.index == (actual.index if actual.index is not None else 0)


def _adopted_device(
    model: PreTrainedModel, device: str | torch.device | None, dtype: str | torch.dtype | None
) -> torch.device:
    """The device of a live model instance, after checking it against what the caller asked for.

    The backend never moves, casts or switches the mode of a model it did not load (it may be in
    the middle of training): a ``device``/``dtype`` that differs from the instance's is an error.
    """
    param = next(model.parameters())
    actual = param.device
    if device is not None and not _same_device(torch.device(device), actual):
        raise ValueError(
            f"TransformersBackend: device={str(device)!r} but the model instance is on {actual}; "
            "move the model first (the backend does not move a model it did not load)"
        )
    if dtype is not None:
        resolved = _resolve_dtype(dtype, actual)
        have = getattr(model, "dtype", param.dtype)
        if isinstance(resolved, torch.dtype) and resolved != have:
            raise ValueError(
                f"TransformersBackend: dtype={dtype!r} ({resolved}) but the model instance is {have}; "
                "cast the model first (the backend does not cast a model it did not load)"
            )
    return actual
