"""Thought analysis (PAPER.md §1-3): which thoughts of a long CoT are worth the long model's tokens.

    chunking    long CoT -> steps -> thoughts (rule, one per step, or an instruction LLM)
    rollouts    N continuations of every prefix by a base model, graded, appended resumably
    importance  the bounded metric M(yi) and the running-maximum selection (and variants)
    report      scores, selections, AUROC, the functional check, figures

The CLI is ``longshort analyze chunk|rollout|score|report``; each step reads and writes one directory.
Each step's config sits beside the code: ``chunk_config``, ``rollout_config``, ``score_config``,
``report_config`` (``ChunkConfig`` … ``ReportConfig``, dataclasses with a help on every field).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from longshort._lazy import lazy_getattr

if TYPE_CHECKING:
    from longshort.training.analysis.chunking import ChunkingError, chunk_response
    from longshort.training.analysis.importance import DEFAULT_METRIC, METRICS, select_long, thought_scores
    from longshort.training.analysis.report import report, score_all
    from longshort.training.analysis.rollouts import AnalysisError, AnalysisProblem, run_rollouts

_LAZY = {
    "ChunkingError": "longshort.training.analysis.chunking",
    "chunk_response": "longshort.training.analysis.chunking",
    "DEFAULT_METRIC": "longshort.training.analysis.importance",
    "METRICS": "longshort.training.analysis.importance",
    "select_long": "longshort.training.analysis.importance",
    "thought_scores": "longshort.training.analysis.importance",
    "report": "longshort.training.analysis.report",
    "score_all": "longshort.training.analysis.report",
    "AnalysisError": "longshort.training.analysis.rollouts",
    "AnalysisProblem": "longshort.training.analysis.rollouts",
    "run_rollouts": "longshort.training.analysis.rollouts",
}
__all__ = [
    "AnalysisError",
    "AnalysisProblem",
    "ChunkingError",
    "DEFAULT_METRIC",
    "METRICS",
    "chunk_response",
    "report",
    "run_rollouts",
    "score_all",
    "select_long",
    "thought_scores",
]

__getattr__ = lazy_getattr("longshort.training.analysis", _LAZY)
