"""Build agents from names (what the CLI and ``langgraph.json`` factories need)."""

from __future__ import annotations

from typing import Literal

from longshort.agents.base import Backend
from longshort.agents.roles import Agent

BackendKind = Literal["hf", "hf-process", "openai", "vllm"]
BACKENDS: tuple[str, ...] = ("hf", "hf-process", "openai", "vllm")
#: the kinds that run a local transformers model (they take ``device``)
LOCAL_HF: tuple[str, ...] = ("hf", "hf-process")


def load_backend(
    kind: str,
    model: str,
    *,
    base_url: str | None = None,
    api_key: str | None = None,
    device: str | None = None,
    timeout: float = 60.0,
    max_retries: int = 2,
) -> Backend:
    """One backend: ``hf`` (local path or hub id), ``hf-process`` (the same in a child process),
    ``openai`` (any OpenAI-compatible server), ``vllm``.

    ``hf-process`` pays off when the two agents are two models on one GPU: each decode loop gets its
    own interpreter instead of taking turns on one lock (``agents/process.py``).
    """
    if kind == "hf":
        from longshort.agents.hf import TransformersBackend

        return TransformersBackend(model, device=device)
    if kind == "hf-process":
        from longshort.agents.process import ProcessBackend

        return ProcessBackend(model, device=device)
    if kind == "openai":
        if not base_url:
            raise ValueError("the openai backend needs --base-url (e.g. http://127.0.0.1:8000/v1)")
        from longshort.agents.chat import openai_backend

        return openai_backend(base_url, model, api_key=api_key, timeout=timeout, max_retries=max_retries)
    if kind == "vllm":
        from longshort.agents.vllm import VLLMBackend

        return VLLMBackend(model)
    raise ValueError(f"unknown backend {kind!r}; choose one of {', '.join(BACKENDS)}")


def load_agents(
    long_model: str,
    short_model: str | None = None,
    *,
    backend: str = "hf",
    temperature: float = 0.0,
    seed: int | None = None,
    **backend_kwargs,
) -> tuple[Agent, Agent]:
    """The long and short agents; one backend is shared when both name the same model."""
    long_backend = load_backend(backend, long_model, **backend_kwargs)
    same = short_model is None or short_model == long_model
    short_backend = long_backend if same else load_backend(backend, short_model, **backend_kwargs)
    return (
        Agent("long", long_backend, temperature=temperature, seed=seed),
        Agent("short", short_backend, temperature=temperature, seed=seed),
    )
