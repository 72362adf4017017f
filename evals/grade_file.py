"""``longshort grade``: grade responses generated elsewhere (any server, any harness) against a benchmark.

Responses are JSONL ``{"id": ..., "response": ...}``. The final answer is read the way the protocol
reads it (``extract_answer``): the last ``\\boxed{}`` for math, a letter for multiple choice (GPQA),
so a number produced here is comparable with the runner's own. Problems with no response count as
wrong (``reason: "no_response"``) rather than silently shrinking the denominator.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from longshort._jsonl import json_lines
from longshort.evals.benchmarks import BENCHMARKS, BenchmarkItem, benchmark_hash, load_benchmark
from longshort.evals.grading import Verdict, grade_answer
from longshort.protocol import extract_answer
from longshort.provenance import run_metadata, write_json_atomic


class GradeFileError(ValueError):
    """Bad input to ``longshort grade``; the message names the file and line."""


def grade_item(item: BenchmarkItem, response: str | None) -> dict[str, Any]:
    """The verdict on one full response text (``None``: the item had no response)."""
    if response is None:
        return {"correct": False, "extracted": None, "reason": "no_response"}
    if item.choices:
        # Letters are compared directly: math-verify would read "A" as a symbol, not an option.
        letter = extract_answer(response, choices=item.choices)
        if letter is None:
            verdict = Verdict(correct=False, extracted=None, reason="no_answer")
        else:
            ok = letter == item.answer.strip().upper()
            verdict = Verdict(correct=ok, extracted=letter, reason="correct" if ok else "wrong")
    else:
        verdict = grade_answer(extract_answer(response), item.answer)
    return verdict.model_dump()


def grade_extracted(item: BenchmarkItem, answer: str | None, text: str | None = None) -> dict[str, Any]:
    """The verdict on an already extracted answer (an Episode's), re-reading ``text`` for letters."""
    if item.choices:
        source = text if text is not None else (f"\\boxed{{{answer}}}" if answer is not None else "")
        return grade_item(item, source)
    return grade_answer(answer, item.answer).model_dump()


def read_responses(path: Path) -> dict[str, str]:
    """``id -> response`` from JSONL; malformed lines and duplicate ids are errors naming the line."""
    if not path.is_file():
        raise GradeFileError(f"responses file not found: {path}")
    responses: dict[str, str] = {}
    for number, row in json_lines(path, GradeFileError):
        if not isinstance(row, dict) or "id" not in row or "response" not in row:
            raise GradeFileError(f'{path}: line {number} must be an object with "id" and "response"')
        if not isinstance(row["response"], str) or not isinstance(row["id"], (str, int)):
            raise GradeFileError(f"{path}: line {number}: id must be a string and response a string")
        key = str(row["id"])
        if key in responses:
            raise GradeFileError(f"{path}: line {number} repeats id {key!r}")
        responses[key] = row["response"]
    return responses


def infer_benchmark(data: Path) -> str:
    """The benchmark named by the file stem (``math500.jsonl`` -> ``math500``)."""
    name = data.stem.lower()
    if name not in BENCHMARKS:
        raise GradeFileError(
            f"cannot tell the benchmark from the file name {data.name!r}; pass --benchmark "
            f"({', '.join(sorted(BENCHMARKS))})"
        )
    return name


def grade_file(data: str | Path, responses: str | Path, *, benchmark: str | None = None, out: str | Path) -> dict:
    """Grade ``responses`` against the benchmark file ``data``; write and return ``OUT/results.json``."""
    data, responses = Path(data), Path(responses)
    name = benchmark or infer_benchmark(data)
    items = load_benchmark(name, data=data)
    answers = read_responses(responses)
    known = {item.id for item in items}
    unknown = [i for i in answers if i not in known]
    if unknown:
        raise GradeFileError(
            f"{responses}: {len(unknown)} response id(s) not in {name} ({data}), e.g. {unknown[:5]}; "
            "is this the right benchmark file?"
        )
    graded = [{"id": item.id, **grade_item(item, answers.get(item.id))} for item in items]
    n = len(graded)
    result = {
        "benchmark": name,
        "items": graded,
        "accuracy": sum(g["correct"] for g in graded) / n if n else None,
        "n": n,
        "n_responses": len(answers),
        "n_missing": sum(g["reason"] == "no_response" for g in graded),
        **run_metadata(benchmark=name, data=str(data), responses=str(responses), benchmark_hash=benchmark_hash(items)),
    }
    write_json_atomic(result, Path(out) / "results.json")
    return result
