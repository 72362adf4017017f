"""Evaluation: grading (math-verify, bounded in time, thread-safe), benchmarks, runner, reports."""

from __future__ import annotations

from typing import TYPE_CHECKING

from longshort._lazy import lazy_getattr

if TYPE_CHECKING:
    from longshort.evals.grading import Verdict, grade_answer

_LAZY = {"Verdict": "longshort.evals.grading", "grade_answer": "longshort.evals.grading"}
__all__ = ["Verdict", "grade_answer"]

__getattr__ = lazy_getattr("longshort.evals", _LAZY)
