"""Evaluation: grading (math-verify, bounded in time, thread-safe), benchmarks, runner, reports."""

from longshort.evals.grading import Verdict, grade_answer

__all__ = ["Verdict", "grade_answer"]
