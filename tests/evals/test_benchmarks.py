"""Benchmarks: local copies load with exact counts, gold answers parse, GPQA letters, clear errors."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import datasets
import pytest
from datasets.exceptions import DatasetNotFoundError

from longshort.evals import grade_answer
from longshort.evals.benchmarks import (
    BENCHMARKS,
    GPQA_COLUMNS,
    LETTERS,
    BenchmarkError,
    BenchmarkItem,
    benchmark_hash,
    gpqa_permutations,
    load_benchmark,
)

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "benchmarks"
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "gpqa_fixture.csv"
COUNTS = {"math500": 500, "aime24": 30, "aime25": 30, "amc23": 40}
#: Dollar-amount golds (``\$18.90``): math-verify read them as unparsable until grading dropped ``\$``.
DOLLAR_GOLDS = {"math500-242", "math500-459", "math500-488"}

needs_data = pytest.mark.skipif(
    not DATA.is_dir(), reason=f"local benchmark copies not found at {DATA} (shared/ must sit beside the repo)"
)


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@needs_data
@pytest.mark.parametrize(("name", "count"), sorted(COUNTS.items()))
def test_local_copies_load_with_exact_counts(name: str, count: int) -> None:
    items = load_benchmark(name, data=DATA / f"{name}.jsonl")
    assert len(items) == count
    assert len({item.id for item in items}) == count
    assert all(item.benchmark == name and item.problem and item.answer and item.choices is None for item in items)
    assert items[0].id.startswith(name)


@needs_data
def test_every_gold_answer_parses_with_math_verify() -> None:
    failures = []
    for name in COUNTS:
        for item in load_benchmark(name, data=DATA / f"{name}.jsonl"):
            verdict = grade_answer(item.answer, item.answer)
            if not verdict.correct:
                failures.append(f"{item.id}: {item.answer!r} ({verdict.reason})")
    assert not failures, f"{len(failures)} gold answers do not grade equal to themselves:\n" + "\n".join(failures)


@needs_data
def test_dollar_golds_parse() -> None:
    items = {i.id: i for i in load_benchmark("math500", data=DATA / "math500.jsonl")}
    failing = [i for i in sorted(DOLLAR_GOLDS) if not grade_answer(items[i].answer, items[i].answer).correct]
    assert not failing, f"still unparsable: {[items[i].answer for i in failing]}"


@needs_data
def test_limit_keeps_the_first_items() -> None:
    full = load_benchmark("aime24", data=DATA / "aime24.jsonl")
    assert load_benchmark("aime24", data=DATA / "aime24.jsonl", limit=5) == full[:5]
    assert load_benchmark("aime24", data=DATA / "aime24.jsonl", limit=0) == []
    assert len(load_benchmark("aime24", data=DATA / "aime24.jsonl", limit=1000)) == 30
    with pytest.raises(BenchmarkError, match="limit"):
        load_benchmark("aime24", data=DATA / "aime24.jsonl", limit=-1)


def _fixture_rows() -> list[dict[str, str]]:
    with FIXTURE.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def test_gpqa_fixture_letters_follow_the_permutation_convention() -> None:
    rows = _fixture_rows()
    items = load_benchmark("gpqa", data=FIXTURE)
    assert len(items) == len(rows) == 6
    rng = random.Random(0)  # the PROVENANCE convention, reproduced independently
    for row, item in zip(rows, items, strict=True):
        perm = rng.sample(range(4), 4)
        options = [row["Correct Answer"], *(row[f"Incorrect Answer {k}"] for k in (1, 2, 3))]
        shuffled = [options[i] for i in perm]
        assert item.id == row["Record ID"]
        assert item.benchmark == "gpqa" and item.choices == "ABCD"
        assert item.answer == LETTERS[perm.index(0)]
        expected = row["Question"] + "\n\n" + "\n".join(f"{c}) {o}" for c, o in zip(LETTERS, shuffled, strict=True))
        assert item.problem == expected
    rng = random.Random(0)
    assert gpqa_permutations(6) == [rng.sample(range(4), 4) for _ in range(6)]


def test_gpqa_correct_text_sits_under_the_answer_letter() -> None:
    for row, item in zip(_fixture_rows(), load_benchmark("gpqa", data=FIXTURE), strict=True):
        lines = dict(line.split(") ", 1) for line in item.problem.split("\n\n", 1)[1].splitlines())
        assert list(lines) == list(LETTERS)
        assert lines[item.answer] == row["Correct Answer"]  # numeric-looking options ("+3", "0.10") stay text
        assert sorted(lines.values()) == sorted(
            [row["Correct Answer"], *(row[f"Incorrect Answer {k}"] for k in (1, 2, 3))]
        )
    answers = [item.answer for item in load_benchmark("gpqa", data=FIXTURE)]
    assert answers == ["C", "D", "C", "B", "C", "C"]


def test_gpqa_limit_does_not_change_letters() -> None:
    full = load_benchmark("gpqa", data=FIXTURE)
    assert load_benchmark("gpqa", data=FIXTURE, limit=2) == full[:2]


def test_gpqa_row_without_correct_answer_is_named(tmp_path: Path) -> None:
    text = FIXTURE.read_text(encoding="utf-8").splitlines()
    broken = text[:2] + ['"A question with no answer?",,x,y,z,recFAKE000000099,Physics,Optics']
    with pytest.raises(BenchmarkError, match=r"row 2 \(id recFAKE000000099\) has no Correct Answer"):
        load_benchmark("gpqa", data=_write(tmp_path / "g.csv", broken))


def test_gpqa_csv_without_gpqa_columns(tmp_path: Path) -> None:
    with pytest.raises(BenchmarkError, match="missing columns"):
        load_benchmark("gpqa", data=_write(tmp_path / "g.csv", ["id,problem,answer", "1,2+2,4"]))


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.jsonl"
    with pytest.raises(FileNotFoundError, match="nowhere.jsonl") as info:
        load_benchmark("math500", data=path)
    assert isinstance(info.value, BenchmarkError)


def test_malformed_jsonl_line_is_numbered(tmp_path: Path) -> None:
    good = json.dumps({"id": "a", "problem": "1+1", "answer": "2"})
    path = _write(tmp_path / "bad.jsonl", [good, '{"id": "b", "problem": "oops"', good])
    with pytest.raises(BenchmarkError, match=r"bad.jsonl: line 2 is not valid JSON"):
        load_benchmark("aime24", data=path)


def test_a_lone_surrogate_names_the_row_and_the_cause(tmp_path: Path) -> None:
    """``"\\ud800"`` is valid JSON but no text: Arrow once failed the whole file with the cause only logged."""
    good = json.dumps({"id": "a", "problem": "1+1", "answer": "2"})
    bad = '{"id": "b", "problem": "x\\ud800", "answer": "2"}'
    path = _write(tmp_path / "sur.jsonl", [good, "", bad])
    named = r"sur.jsonl: line 3 \(row 2, id b\): 'problem' is not valid Unicode"
    with pytest.raises(BenchmarkError, match=named) as info:
        load_benchmark("aime25", data=path)
    assert "U+D800, a lone surrogate" in str(info.value)


def test_invalid_utf8_names_the_line(tmp_path: Path) -> None:
    for name, benchmark, lines in [
        ("bad.jsonl", "aime25", [b'{"id": "a", "problem": "1+1", "answer": "2"}', b'{"id": "b", "problem": "\xff"}']),
        ("bad.csv", "gpqa", [FIXTURE.read_bytes().splitlines()[0], b"q\xff,a,b,c,d,r1"]),
    ]:
        path = tmp_path / name
        path.write_bytes(b"\n".join(lines) + b"\n")
        with pytest.raises(BenchmarkError, match=rf"{name}: line 2 is not valid UTF-8"):
            load_benchmark(benchmark, data=path)


@pytest.mark.parametrize(
    ("name", "text", "what"),
    [
        ("math500.jsonl", "", "the file is empty or blank"),
        ("math500.jsonl", "\n  \n", "the file is empty or blank"),
        ("diamond.csv", "", "the file is empty"),
        ("diamond.csv", ",".join(GPQA_COLUMNS) + "\n", "only a header"),
    ],
)
def test_a_file_without_rows_is_a_clear_error(tmp_path: Path, name: str, text: str, what: str) -> None:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    benchmark = "gpqa" if name.endswith(".csv") else "math500"
    with pytest.raises(BenchmarkError, match=rf"{name}: no rows \({what}\)"):
        load_benchmark(benchmark, data=path)


def test_row_without_answer_names_the_row_id(tmp_path: Path) -> None:
    rows = [{"id": "x-1", "problem": "1+1", "answer": "2"}, {"id": "x-2", "problem": "2+2", "answer": ""}]
    path = _write(tmp_path / "noanswer.jsonl", [json.dumps(r) for r in rows])
    with pytest.raises(BenchmarkError, match=r"row 2 \(id x-2\) has no answer"):
        load_benchmark("aime25", data=path)


def test_unsupported_suffix(tmp_path: Path) -> None:
    with pytest.raises(BenchmarkError, match="unsupported file type"):
        load_benchmark("aime25", data=_write(tmp_path / "x.txt", ["hi"]))


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(BenchmarkError, match="unknown benchmark 'math5000'.*aime24, aime25, amc23, gpqa, math500"):
        load_benchmark("math5000")


def test_registry() -> None:
    assert set(BENCHMARKS) == {"math500", "aime24", "aime25", "amc23", "gpqa"}
    gpqa = BENCHMARKS["gpqa"]
    assert (gpqa.hub_id, gpqa.config, gpqa.split, gpqa.gated) == ("Idavidrein/gpqa", "gpqa_diamond", "train", True)
    assert (BENCHMARKS["math500"].hub_id, BENCHMARKS["math500"].split) == ("HuggingFaceH4/MATH-500", "test")
    assert (BENCHMARKS["aime24"].hub_id, BENCHMARKS["aime24"].split) == ("HuggingFaceH4/aime_2024", "train")


def test_hub_rows_are_mapped(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def fake(*args, **kwargs):
        calls.append((args, kwargs))
        return [{"id": 0, "question": "How many?", "answer": 27.0, "url": "u"}]

    monkeypatch.setattr(datasets, "load_dataset", fake)
    items = load_benchmark("amc23")
    assert calls == [(("math-ai/amc23",), {"split": "test"})]
    assert items == [BenchmarkItem(id="0", benchmark="amc23", problem="How many?", answer="27")]


def test_hub_unreachable_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def unreachable(path, *args, **kwargs):
        raise ConnectionError(f"Couldn't reach '{path}' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    with pytest.raises(BenchmarkError, match=r"HuggingFaceH4/MATH-500.*--data PATH"):
        load_benchmark("math500")


def test_gpqa_gated_tells_how_to_get_access(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def gated(*args, **kwargs):
        calls.append((args, kwargs))
        raise DatasetNotFoundError(
            f"Dataset '{args[0]}' is a gated dataset on the Hub. You must be authenticated to access it."
        )

    monkeypatch.setattr(datasets, "load_dataset", gated)
    with pytest.raises(BenchmarkError) as info:
        load_benchmark("gpqa")
    assert calls == [(("Idavidrein/gpqa", "gpqa_diamond"), {"split": "train"})]
    message = str(info.value)
    assert "huggingface.co/datasets/Idavidrein/gpqa" in message
    assert "huggingface-cli login" in message and "HF_TOKEN" in message


def test_benchmark_hash_is_stable_and_sensitive() -> None:
    items = load_benchmark("gpqa", data=FIXTURE)
    digest = benchmark_hash(items)
    assert len(digest) == 64 and digest == benchmark_hash(list(items))
    assert benchmark_hash(items[:5]) != digest
    assert benchmark_hash(list(reversed(items))) != digest
    changed = [items[0].model_copy(update={"answer": "A" if items[0].answer != "A" else "B"}), *items[1:]]
    assert benchmark_hash(changed) != digest


def test_a_generated_benchmark_is_registered_by_name(monkeypatch) -> None:
    from longshort.evals import benchmarks

    monkeypatch.setattr(benchmarks, "GENERATED", {})
    make = lambda limit: [BenchmarkItem(id=str(i), benchmark="toy", problem=f"{i} + 1", answer=str(i + 1)) for i in range(limit or 3)]  # noqa: E731,E501
    with pytest.raises(BenchmarkError, match="valid names: aime24"):
        load_benchmark("toy")
    benchmarks.register_generated("toy", make)
    assert [i.answer for i in load_benchmark("toy")] == ["1", "2", "3"]
    assert len(load_benchmark("toy", limit=5)) == 5
    with pytest.raises(BenchmarkError, match="no --data"):
        load_benchmark("toy", data="x.jsonl")
    with pytest.raises(BenchmarkError, match="toy"):
        load_benchmark("nope")
    with pytest.raises(ValueError, match="math500"):
        benchmarks.register_generated("math500", make)
