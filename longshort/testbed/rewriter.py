"""The testbed's short teacher as a cold-start rewriter: exact and offline, no LLM needed.

``longshort train data --rewriter testbed`` uses it on problems chunked with
``longshort analyze chunk --testbed``; for real models the rewriter is an instruction LLM
(``longshort.training.coldstart.compression.LLMRewriter``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from longshort.testbed.tasks import Problem
from longshort.testbed.teachers import long_trace, op_lines
from longshort.training.analysis.rollouts import AnalysisProblem
from longshort.training.coldstart.compression import CompressionError

__all__ = ["TestbedRewriter"]


class TestbedRewriter:
    """The testbed's short teacher as a rewriter: exact, offline, in ``oracle_episode``'s phrasing.

    ``problems`` are the testbed problems by id (or an iterable of them); the thoughts must be the
    long teacher's trace for ``seed`` (``long_trace``), whose ``op_index`` tells which step each
    thought belongs to. Each step's lines (``op_lines``) are written once, in the first run that
    reaches it: "From above, a * b = p" when its ``decompose`` thought was kept in an earlier long
    segment, one-shot otherwise; a run stops before a product the long model decomposes later and,
    when the next long segment is that decomposition, ends with "Next: a * b". A run with no new
    step writes the running total ("So far: 3510") or, before any step, the whole computation.
    The last segment, when it is a run, writes every remaining step.
    """

    __test__ = False  # not a pytest class, despite the name
    name = "testbed"

    def __init__(self, problems: Mapping[str, Problem] | Iterable[Problem], *, seed: int = 0) -> None:
        self.problems: dict[str, Problem] = (
            dict(problems) if isinstance(problems, Mapping) else {p.id: p for p in problems}
        )
        self.seed = seed

    def rewrite(
        self, problem: AnalysisProblem, kept: list[tuple[int, str]], compressed: list[list[tuple[int, str]]]
    ) -> list[str]:
        source = self.problems.get(problem.problem_id)
        if source is None:
            raise CompressionError("not a known testbed problem", problem_id=problem.problem_id)
        thoughts = long_trace(source, self.seed).thoughts
        if [t.text for t in thoughts] != problem.thoughts:
            raise CompressionError(
                f"the thoughts are not the long teacher's trace for seed {self.seed}", problem_id=problem.problem_id
            )
        ops, n = source.ops, len(thoughts)
        kept_at = {i for i, _ in kept}
        # Where the long model decomposes each product it keeps (1-based thought index).
        decomposed = {t.op_index: k for k, t in enumerate(thoughts, 1) if t.type == "decompose" and k in kept_at}
        starts = [run[0][0] for run in compressed] + [n + 1]
        texts, step = [], 0  # step: the first op whose lines are not written yet
        for r, run in enumerate(compressed):
            end = run[-1][0]
            # The furthest step any thought so far belongs to (every step, once the trace is read).
            reach = max((t.op_index for t in thoughts[:end] if t.op_index is not None), default=-1)
            lines: list[str] = []
            while step <= reach:
                at = decomposed.get(step)
                if at is not None and at > end:
                    break  # the long model has yet to decompose this product
                lines += op_lines(source, step, from_above=at is not None)
                step += 1
            if not lines:
                lines.append(
                    f"So far: {ops[step - 1].value}" if step else f"The whole computation is {_spaced(source)}."
                )
            at = decomposed.get(step)
            if end < n and at is not None and end < at < starts[r + 1]:
                a, b = ops[step].factors  # type: ignore[misc]
                lines.append(f"Next: {a} * {b}")
            texts.append("\n".join(lines))
        return texts


def _spaced(problem: Problem) -> str:
    return re.sub(r"([*+-])", r" \1 ", problem.expression)


def _spaced(problem: Problem) -> str:
    return re.sub(r"([*+-])", r" \1 ", problem.expression)
