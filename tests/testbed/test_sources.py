"""The testbed as data for method code: analysis problems and the ``testbed`` benchmark."""

from __future__ import annotations

import pytest

from longshort.evals import benchmarks
from longshort.evals.benchmarks import BenchmarkError, load_benchmark
from longshort.testbed import sources
from longshort.testbed.sources import TESTBED, testbed_problems
from longshort.testbed.tasks import generate_problems


def test_the_testbed_is_a_benchmark_once_registered(monkeypatch) -> None:
    monkeypatch.setattr(benchmarks, "GENERATED", {})
    benchmarks.register_generated(TESTBED, sources.testbed_items)
    items = load_benchmark("testbed", limit=4)
    assert len(items) == 4 and all(i.benchmark == "testbed" and i.answer.isdigit() for i in items)
    assert items == load_benchmark("testbed", limit=4)  # the held-out split, deterministic
    assert [i.id for i in items] == [p.id for p in generate_problems("test", 4, seed=0)]
    assert len(sources.testbed_items()) == 500
    with pytest.raises(BenchmarkError, match="no --data"):
        load_benchmark("testbed", data="x.jsonl")


def test_the_train_split_is_a_benchmark_disjoint_from_the_test_split(monkeypatch) -> None:
    monkeypatch.setattr(benchmarks, "GENERATED", {})
    sources.register_testbed()
    sources.register_testbed()  # idempotent: the CLI may call it more than once in a process
    train = load_benchmark("testbed-train", limit=300)
    assert [i.id for i in train] == [p.id for p in generate_problems("train", 300, seed=0)]
    assert all(i.benchmark == "testbed-train" for i in train)
    test = load_benchmark("testbed")
    assert not {i.problem for i in train} & {i.problem for i in test}  # sampling it for RFT keeps the test held out
    assert len(sources.testbed_items(split="train")) == 2000


def test_testbed_problems_carry_the_teacher_thoughts_and_labels() -> None:
    problems = testbed_problems(3, 0, count_tokens=lambda t: len(t.split()))
    assert len(problems) == 3
    for p in problems:
        assert len(p.thoughts) == len(p.types) == len(p.tokens) == len(p.needed) > 1
        assert p.grouper == "teacher" and any(p.needed) and not all(p.needed)
