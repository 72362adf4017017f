"""The testbed's problem generator: disjoint splits, determinism, knobs, exact answers."""

from __future__ import annotations

import ast
import operator
import re

import pytest

from longshort.testbed.tasks import (
    FACTORS,
    SPLITS,
    Problem,
    canonical_expression,
    generate_problems,
    split_of,
    to_dataset,
)


def evaluate(expression: str) -> int:
    """An independent evaluator of ``37*24+9-15*12`` (Python's own grammar, integers only)."""
    ops = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul}

    def walk(node: ast.AST) -> int:
        if isinstance(node, ast.BinOp) and type(node.op) in ops:
            return ops[type(node.op)](walk(node.left), walk(node.right))
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        raise ValueError(f"unexpected node {ast.dump(node)}")

    return walk(ast.parse(expression, mode="eval").body)


@pytest.fixture(scope="module")
def draws() -> dict[str, list[Problem]]:
    return {split: generate_problems(split, 2000, seed=0) for split in SPLITS}


def test_splits_are_disjoint(draws):
    ids = {split: {p.id for p in problems} for split, problems in draws.items()}
    canon = {split: {canonical_expression(p.ops) for p in problems} for split, problems in draws.items()}
    for split, problems in draws.items():
        assert len(problems) == 2000
        assert len(ids[split]) == 2000, "ids repeat within a split"
        assert all(p.split == split == split_of(canonical_expression(p.ops)) for p in problems)
    for a in SPLITS:
        for b in SPLITS:
            if a < b:
                assert not ids[a] & ids[b], (a, b)
                assert not canon[a] & canon[b], (a, b)
    # Another seed draws other problems but never moves one across splits.
    other = generate_problems("test", 500, seed=1)
    assert not {p.id for p in other} & (ids["train"] | ids["validation"])
    assert {p.id for p in other} != {p.id for p in draws["test"][:500]}


def test_commuted_products_share_a_split():
    problems = generate_problems("train", 300, seed=3)
    for p in problems:
        canon = canonical_expression(p.ops)
        assert p.id.startswith("tb-") and re.fullmatch(r"tb-[0-9a-f]{12}", p.id)
        factors = p.ops[0].factors
        assert factors is not None
        swapped = p.model_copy(deep=True)
        swapped.ops[0].factors = (factors[1], factors[0])
        assert canonical_expression(swapped.ops) == canon


def test_deterministic_by_seed():
    a = generate_problems("validation", 50, seed=7)
    b = generate_problems("validation", 50, seed=7)
    c = generate_problems("validation", 50, seed=8)
    assert [p.model_dump() for p in a] == [p.model_dump() for p in b]
    assert [p.id for p in a] != [p.id for p in c]
    assert generate_problems("train", 0) == []


def test_answers_match_an_independent_evaluation(draws):
    for p in draws["train"][:1000] + draws["test"][:500]:
        assert p.answer == str(evaluate(p.expression)), p.expression
        assert int(p.answer) > 0
        value = 0
        for i, op in enumerate(p.ops):
            term = op.factors[0] * op.factors[1] if op.factors else op.amount
            assert term == op.amount
            value = term if i == 0 else value + term if op.kind == "add" else value - term
            assert op.value == value > 0
        # Every number of the chain is in the question, in order.
        numbers = [int(x) for x in re.findall(r"\d+", p.question)]
        assert numbers == [int(x) for x in re.findall(r"\d+", p.expression)]


@pytest.mark.parametrize(("n_ops", "n_hard"), [(1, 1), (3, 1), (3, 2), (3, 3), (5, (2, 4)), (6, 1)])
def test_knobs(n_ops, n_hard):
    problems = generate_problems("train", 200, seed=1, n_ops=n_ops, n_hard=n_hard)
    lo, hi = (n_hard, n_hard) if isinstance(n_hard, int) else n_hard
    counts = {p.n_hard for p in problems}
    assert counts == set(range(lo, hi + 1)), counts
    for p in problems:
        assert len(p.ops) == n_ops
        first, rest = p.ops[0], p.ops[1:]
        assert first.kind == "mul" and first.hard
        assert all(op.kind in ("add", "sub") for op in rest)
        for op in p.ops:
            if op.hard:
                assert all(f in FACTORS and 10 <= f <= 99 for f in op.factors)
            else:
                assert 1 <= op.amount <= 99


def test_default_mix_and_variety(draws):
    problems = draws["train"]
    hard = [p.n_hard for p in problems]
    assert set(hard) == {1, 2} and 0.35 < hard.count(1) / len(hard) < 0.65
    kinds = {op.kind for p in problems for op in p.ops[1:]}
    assert kinds == {"add", "sub"}
    assert len({p.unit for p in problems}) >= 6
    openings = {re.sub(r"\d+", "N", p.ops[0].sentence) for p in problems}
    assert len(openings) > 12, openings  # several phrasings per setting, not one template
    for p in problems[:300]:
        sentences = [op.sentence for op in p.ops]
        assert len(set(sentences)) == len(sentences), p.question


def test_bad_arguments():
    with pytest.raises(ValueError, match="train, validation, test"):
        generate_problems("dev", 5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n must be >= 0"):
        generate_problems("train", -1)
    with pytest.raises(ValueError, match="n_hard"):
        generate_problems("train", 5, n_ops=2, n_hard=3)
    with pytest.raises(ValueError, match="n_hard"):
        generate_problems("train", 5, n_hard=(0, 2))
    with pytest.raises(ValueError, match="n_ops"):
        generate_problems("train", 5, n_ops=0, n_hard=1)
    # One product alone has ~2,600 distinct problems, ~130 of them in the test split.
    with pytest.raises(RuntimeError, match="distinct test problems"):
        generate_problems("test", 300, n_ops=1, n_hard=1)


def test_to_dataset(draws):
    problems = draws["validation"][:20]
    ds = to_dataset(problems)
    assert len(ds) == 20
    assert {"id", "question", "answer", "expression", "split", "ops", "n_hard"} <= set(ds.column_names)
    row = ds[3]
    assert row["id"] == problems[3].id and row["answer"] == problems[3].answer
    assert [op["value"] for op in row["ops"]] == [op.value for op in problems[3].ops]
    assert row["ops"][0]["factors"] == list(problems[3].ops[0].factors)
