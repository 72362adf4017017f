"""The testbed as a source of data for the method's code: analysis problems and benchmark items.

Method code (``training``, ``evals``) takes problems as arguments and never imports the testbed;
the CLI feeds it these (``longshort analyze chunk --testbed``, ``longshort eval --benchmark testbed``).
"""

from __future__ import annotations

from collections.abc import Callable

from longshort.evals.benchmarks import BenchmarkItem
from longshort.testbed.tasks import generate_problems
from longshort.testbed.teachers import long_trace
from longshort.training.analysis.rollouts import AnalysisProblem

__all__ = ["TESTBED", "TESTBED_DEFAULT_N", "TESTBED_TRAIN", "register_testbed", "testbed_items", "testbed_problems"]

#: The testbed's held-out test split as a benchmark (generated, offline): ``--limit`` problems, 500 by default.
TESTBED = "testbed"
TESTBED_DEFAULT_N = 500
#: The testbed's train split (seed 0, as the RL problems) as a benchmark: what ``eval -k 8 --traces`` samples
#: for retraining from traces, so that the test split stays held out. ``--limit`` problems, 2,000 by default.
TESTBED_TRAIN = "testbed-train"
TESTBED_TRAIN_DEFAULT_N = 2000


def testbed_problems(n: int, seed: int = 0, *, count_tokens: Callable[[str], int], split: str = "test"):
    """Held-out testbed problems with the long teacher's thoughts and their ``needed`` labels."""
    out = []
    for p in generate_problems(split, n, seed=seed):  # type: ignore[arg-type]
        trace = long_trace(p, seed)
        out.append(
            AnalysisProblem(
                problem_id=p.id,
                question=p.question,
                answer=p.answer,
                thoughts=[t.text for t in trace.thoughts],
                types=[t.type for t in trace.thoughts],
                tokens=[count_tokens(t.text) for t in trace.thoughts],
                needed=[t.needed for t in trace.thoughts],
                grouper="teacher",
            )
        )
    return out


testbed_problems.__test__ = False  # type: ignore[attr-defined]  # not a pytest test, despite the name


def testbed_items(limit: int | None = None, *, split: str = "test") -> list[BenchmarkItem]:
    """The first ``limit`` problems of a split (seed 0) as benchmark items: the held-out test split
    by default, or the train split (``testbed-train``)."""
    name, default = (TESTBED, TESTBED_DEFAULT_N) if split == "test" else (TESTBED_TRAIN, TESTBED_TRAIN_DEFAULT_N)
    n = default if limit is None else limit
    return [
        BenchmarkItem(id=p.id, benchmark=name, problem=p.question, answer=p.answer)
        for p in generate_problems(split, n, seed=0)  # type: ignore[arg-type]
    ]


def register_testbed() -> None:
    """Make ``testbed`` (test split) and ``testbed-train`` loadable as benchmarks (the CLI calls this)."""
    from longshort.evals.benchmarks import GENERATED, register_generated

    if TESTBED not in GENERATED:
        register_generated(TESTBED, testbed_items)
        register_generated(TESTBED_TRAIN, lambda limit: testbed_items(limit, split="train"))


def rl_problems(n_train: int, n_eval: int, *, seed: int = 0):
    """RL data: ``n_train`` problems of the train split as a ``datasets.Dataset`` (``prompt``, ``answer``),
    and ``n_eval`` of the held-out test split (seed 0, the split every testbed number is measured on)
    as ``(question, answer)`` pairs."""
    from datasets import Dataset

    train = Dataset.from_list(
        [{"prompt": p.question, "answer": p.answer} for p in generate_problems("train", n_train, seed=seed)]
    )
    return train, [(p.question, p.answer) for p in generate_problems("test", n_eval, seed=0)]
