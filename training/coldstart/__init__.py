"""The cold start (PAPER.md §5): SFT data from scored thoughts, then SFT of each agent.

    compression  a scored long CoT -> a Long⊗Short dialogue (kept thoughts verbatim, runs rewritten)
    build        analysis directory -> dialogues.jsonl + one SFT table per agent (``longshort train data``)
    build_config ``ColdstartDataConfig``: one run of ``longshort train data``
    sft_data     dialogues -> per-agent rows, exactly the views the graph feeds each agent
    sft_config   ``SFTRunConfig``: one run of ``longshort train sft``, a TRL ``SFTConfig``
    sft          TRL ``SFTTrainer`` on one agent, loss on its own turns only
    from_traces  a trace store -> one agent's RFT rows (correct, well-formed episodes; ``train sft --from-traces``)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from longshort._lazy import lazy_getattr

if TYPE_CHECKING:
    from longshort.training.coldstart.build import build_coldstart
    from longshort.training.coldstart.compression import CompressionError, LLMRewriter, Rewriter, build_dialogue
    from longshort.training.coldstart.from_traces import TraceSelection, TraceSelectionError, trace_rows
    from longshort.training.coldstart.sft import train_sft
    from longshort.training.coldstart.sft_config import SFTRunConfig
    from longshort.training.coldstart.sft_data import sft_tables

_LAZY = {
    "build_coldstart": "longshort.training.coldstart.build",
    "CompressionError": "longshort.training.coldstart.compression",
    "LLMRewriter": "longshort.training.coldstart.compression",
    "Rewriter": "longshort.training.coldstart.compression",
    "build_dialogue": "longshort.training.coldstart.compression",
    "train_sft": "longshort.training.coldstart.sft",
    "TraceSelection": "longshort.training.coldstart.from_traces",
    "TraceSelectionError": "longshort.training.coldstart.from_traces",
    "trace_rows": "longshort.training.coldstart.from_traces",
    "SFTRunConfig": "longshort.training.coldstart.sft_config",
    "sft_tables": "longshort.training.coldstart.sft_data",
}
__all__ = [
    "CompressionError",
    "LLMRewriter",
    "Rewriter",
    "SFTRunConfig",
    "TraceSelection",
    "TraceSelectionError",
    "build_coldstart",
    "build_dialogue",
    "sft_tables",
    "trace_rows",
    "train_sft",
]

__getattr__ = lazy_getattr("longshort.training.coldstart", _LAZY)
