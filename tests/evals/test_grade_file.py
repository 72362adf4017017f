"""``longshort grade``: responses from elsewhere, graded like the runner grades its own."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from longshort.cli import app
from longshort.evals.grade_file import GradeFileError, grade_file

BENCH = Path(__file__).resolve().parents[3] / "shared" / "data" / "benchmarks"


@pytest.fixture
def math_file(tmp_path):
    path = tmp_path / "math500.jsonl"
    rows = [
        {"id": "a", "problem": "1+1?", "answer": "2"},
        {"id": "b", "problem": "half?", "answer": "\\frac{1}{2}"},
        {"id": "c", "problem": "3?", "answer": "3"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _responses(tmp_path, rows, name="responses.jsonl"):
    path = tmp_path / name
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_happy_path_with_missing_response(tmp_path, math_file):
    resp = _responses(
        tmp_path,
        [{"id": "a", "response": "so \\boxed{2}"}, {"id": "b", "response": "\\boxed{0.5} then \\boxed{\\frac12}"}],
    )
    result = CliRunner().invoke(
        app, ["grade", "--data", str(math_file), "--responses", str(resp), "--out", str(tmp_path / "g")]
    )
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "g" / "results.json").read_text())
    assert data["benchmark"] == "math500" and data["n"] == 3
    items = {i["id"]: i for i in data["items"]}
    assert items["a"]["correct"] and items["a"]["extracted"] == "2"
    assert items["b"]["correct"]  # the last \boxed{} counts
    assert items["c"] == {"id": "c", "correct": False, "extracted": None, "reason": "no_response"}
    assert data["accuracy"] == pytest.approx(2 / 3)
    assert "git_commit" in data and data["config"]["benchmark_hash"]


def test_gpqa_letters(tmp_path):
    path = tmp_path / "diamond.csv"
    path.write_text(
        "Question,Correct Answer,Incorrect Answer 1,Incorrect Answer 2,Incorrect Answer 3,Record ID\n"
        "Q1,right,w1,w2,w3,r1\nQ2,right,w1,w2,w3,r2\n"
    )
    from longshort.evals.benchmarks import load_benchmark

    gold = {i.id: i.answer for i in load_benchmark("gpqa", data=path)}
    wrong = next(c for c in "ABCD" if c != gold["r2"])
    resp = _responses(
        tmp_path,
        [{"id": "r1", "response": f"The answer is \\boxed{{({gold['r1']})}}"}, {"id": "r2", "response": f"{wrong}"}],
    )
    data = grade_file(path, resp, benchmark="gpqa", out=tmp_path / "g")
    items = {i["id"]: i for i in data["items"]}
    assert items["r1"]["correct"] and items["r1"]["extracted"] == gold["r1"]
    assert not items["r2"]["correct"]


def test_integers_beyond_the_int_digit_limit_are_graded_not_fatal(tmp_path):
    """A 5,000-digit boxed answer (prediction or gold) is a verdict, not an aborted ``grade``."""
    huge = "9" * 5000
    data_path = tmp_path / "aime25.jsonl"
    rows = [{"id": "a", "problem": "big?", "answer": huge}, {"id": "b", "problem": "small?", "answer": "3"}]
    data_path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    resp = _responses(
        tmp_path, [{"id": "a", "response": f"so \\boxed{{{huge}}}"}, {"id": "b", "response": f"\\boxed{{{huge}}}"}]
    )
    result = CliRunner().invoke(
        app, ["grade", "--data", str(data_path), "--responses", str(resp), "--out", str(tmp_path / "g")]
    )
    assert result.exit_code == 0, result.output
    items = {i["id"]: i for i in json.loads((tmp_path / "g" / "results.json").read_text())["items"]}
    assert items["a"]["correct"] and items["a"]["extracted"] == huge
    assert items["b"]["reason"] == "wrong"


def test_unknown_ids_are_listed(tmp_path, math_file):
    resp = _responses(tmp_path, [{"id": "a", "response": "x"}, {"id": "zz1", "response": "x"}])
    with pytest.raises(GradeFileError, match="zz1"):
        grade_file(math_file, resp, out=tmp_path / "g")
    assert not (tmp_path / "g" / "results.json").exists()


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ("{not json", "line 2 is not valid JSON"),
        ('["a", "b"]', "line 2 must be an object"),
        ('{"id": "b"}', "line 2 must be an object"),
        ('{"id": "b", "response": 3}', "line 2: id must be a string"),
        ('{"id": "a", "response": "again"}', "line 2 repeats id"),
    ],
)
def test_malformed_responses_name_the_line(tmp_path, math_file, line, match):
    resp = _responses(tmp_path, ['{"id": "a", "response": "\\\\boxed{2}"}', line])
    with pytest.raises(GradeFileError, match=match):
        grade_file(math_file, resp, out=tmp_path / "g")
    result = CliRunner().invoke(app, ["grade", "--data", str(math_file), "--responses", str(resp)])
    assert result.exit_code == 2 and "line 2" in result.output


def test_missing_files_and_unknown_stem(tmp_path, math_file):
    with pytest.raises(GradeFileError, match="responses file not found"):
        grade_file(math_file, tmp_path / "nope.jsonl", out=tmp_path / "g")
    resp = _responses(tmp_path, [{"id": "a", "response": "x"}])
    other = tmp_path / "mystery.jsonl"
    other.write_text(math_file.read_text())
    with pytest.raises(GradeFileError, match="pass --benchmark"):
        grade_file(other, resp, out=tmp_path / "g")
    assert grade_file(other, resp, benchmark="math500", out=tmp_path / "g")["n"] == 3
    result = CliRunner().invoke(
        app, ["grade", "--data", str(tmp_path / "none" / "math500.jsonl"), "--responses", str(resp)]
    )
    assert result.exit_code == 2 and "not found" in result.output


@pytest.mark.skipif(not (BENCH / "math500.jsonl").exists(), reason="no local benchmark copies")
def test_local_math500_copy_gold_as_response_is_all_correct(tmp_path):
    from longshort.evals.benchmarks import load_benchmark

    items = load_benchmark("math500", data=BENCH / "math500.jsonl", limit=5)
    resp = _responses(tmp_path, [{"id": i.id, "response": f"\\boxed{{{i.answer}}}"} for i in items])
    data = grade_file(BENCH / "math500.jsonl", resp, out=tmp_path / "g")
    assert data["n"] == 500 and sum(i["correct"] for i in data["items"]) == 5
    assert data["n_missing"] == 495
