"""Each agent turn as a LangChain run, so LangSmith (``LANGSMITH_TRACING=true``) shows episodes.

The run starts with ``agent``, ``episode_id``, ``turn`` and the prompt length in its metadata;
when the turn ends, the generated token count is added to that metadata and to the outputs.
"""

from __future__ import annotations

from typing import Any

from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import (
    get_async_callback_manager_for_config,
    get_callback_manager_for_config,
    merge_configs,
)
from langchain_core.tracers.base import AsyncBaseTracer, BaseTracer

from longshort.agents.base import GenerationRequest, GenerationResult


def _turn_config(config: RunnableConfig | None, agent: str, metadata: dict[str, Any]) -> RunnableConfig:
    return merge_configs(config, {"tags": [f"agent:{agent}", "longshort"], "metadata": {"agent": agent, **metadata}})


def _inputs(request: GenerationRequest) -> dict[str, Any]:
    if request.messages is not None:
        return {"messages": request.messages, "max_new_tokens": request.max_new_tokens}
    return {"prompt_tokens": len(request.prompt_ids or []), "max_new_tokens": request.max_new_tokens}


def _outputs(result: GenerationResult, request: GenerationRequest) -> dict[str, Any]:
    prompt = len(request.prompt_ids or [])
    return {
        "text": result.text,
        "finish_reason": result.finish_reason,
        "error": result.error,
        "usage_metadata": {
            "input_tokens": prompt,
            "output_tokens": result.num_tokens,
            "total_tokens": prompt + result.num_tokens,
        },
    }


def _annotate(run_manager: Any, extra: dict[str, Any]) -> None:
    """Add end-of-turn facts to the run's metadata on every tracer that holds the run."""
    for handler in run_manager.handlers:
        if isinstance(handler, BaseTracer | AsyncBaseTracer):
            run = handler.run_map.get(str(run_manager.run_id))
            if run is not None:
                run.extra.setdefault("metadata", {}).update(extra)


def _end_metadata(result: GenerationResult) -> dict[str, Any]:
    return {"completion_tokens": result.num_tokens, "finish_reason": result.finish_reason}


def traced_generate(backend, request: GenerationRequest, config, agent: str, metadata: dict) -> GenerationResult:
    manager = get_callback_manager_for_config(_turn_config(config, agent, metadata))
    run = manager.on_chain_start(None, _inputs(request), name=f"{agent}_turn")
    try:
        result = backend.generate([request])[0]
    except BaseException as e:
        run.on_chain_error(e)
        raise
    _annotate(run, _end_metadata(result))
    run.on_chain_end(_outputs(result, request))
    return result


async def atraced_generate(backend, request: GenerationRequest, config, agent: str, metadata: dict) -> GenerationResult:
    manager = get_async_callback_manager_for_config(_turn_config(config, agent, metadata))
    run = await manager.on_chain_start(None, _inputs(request), name=f"{agent}_turn")
    try:
        result = (await backend.agenerate([request]))[0]
    except BaseException as e:
        await run.on_chain_error(e)
        raise
    _annotate(run, _end_metadata(result))
    await run.on_chain_end(_outputs(result, request))
    return result
