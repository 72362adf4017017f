"""The one torn-line rule of every JSONL the project appends to, and errors naming file and line."""

from __future__ import annotations

import json

import pytest

from longshort._jsonl import cut_torn_tail, finished_records, json_lines

A, B = json.dumps({"k": "a"}), json.dumps({"k": "b"})
LONG = json.dumps({"k": "long", "text": "x" * 200_000})  # longer than a block read from the end


class Bad(ValueError):
    pass


@pytest.mark.parametrize(
    ("before", "after", "cut"),
    [
        (f"{A}\n{B[:5]}", f"{A}\n", True),  # killed mid-line
        (f"{A}\n{B[:5]}\n", f"{A}\n", True),  # a torn line that did get its newline
        (f"{A}\n{B[:5]}\n\n  \n", f"{A}\n", True),  # blank lines after it
        (f"{B[:5]}", "", True),  # the only line
        (f"{A}\n{B}", f"{A}\n{B}\n", False),  # complete but no newline: give it one
        (f"{A}\n{B}\n", f"{A}\n{B}\n", False),
        (f"{A}\n\n", f"{A}\n\n", False),
        (f"{A}\n{LONG[:150_000]}", f"{A}\n", True),
        (f"{LONG}\n{LONG}", f"{LONG}\n{LONG}\n", False),
        ("", "", False),
        ("\n \n", "\n \n", False),
    ],
)
def test_cut_torn_tail(tmp_path, before, after, cut):
    path = tmp_path / "f.jsonl"
    path.write_text(before)
    assert cut_torn_tail(path) is cut
    assert path.read_text() == after


def test_a_multibyte_character_cut_in_two_is_torn(tmp_path):
    path = tmp_path / "f.jsonl"
    path.write_bytes(f"{A}\n".encode() + '{"k": "中'.encode()[:-1])
    assert cut_torn_tail(path)
    assert path.read_text() == f"{A}\n"


def test_a_missing_file_is_left_alone(tmp_path):
    assert not cut_torn_tail(tmp_path / "none.jsonl")
    assert not (tmp_path / "none.jsonl").exists()


def test_a_custom_record_test(tmp_path):
    path = tmp_path / "f.jsonl"
    path.write_text(f'{A}\n{{"other": 1}}')
    assert cut_torn_tail(path, lambda line: "k" in json.loads(line))
    assert path.read_text() == f"{A}\n"


def test_json_lines_names_the_line_and_may_skip_only_a_torn_tail(tmp_path):
    path = tmp_path / "f.jsonl"
    path.write_text(f"{A}\n\n{B}\n{B[:5]}\n\n")
    assert [n for n, _ in json_lines(path, Bad, skip_torn_tail=True)] == [1, 3]
    with pytest.raises(Bad, match=r"f.jsonl: line 4 is not valid JSON"):
        list(json_lines(path, Bad))
    path.write_text(f"{A}\n{B[:5]}\n{B}\n")
    with pytest.raises(Bad, match=r"f.jsonl: line 2 is not valid JSON"):
        list(json_lines(path, Bad, skip_torn_tail=True))


def test_finished_records_cut_the_torn_tail_and_append_cleanly(tmp_path):
    path = tmp_path / "items.jsonl"
    path.write_text(f'{A}\n{{"nokey": 1}}\n{B}\n{{"k": "c"')
    with pytest.raises(Bad, match=r"items.jsonl: line 2 is not a valid record"):
        finished_records(path, lambda r: r["k"], Bad)
    path.write_text(f'{A}\n{B}\n{{"nokey": 1}}')  # a last line without a key is torn too
    assert finished_records(path, lambda r: r["k"], Bad) == {"a": {"k": "a"}, "b": {"k": "b"}}
    with path.open("a") as f:
        f.write(json.dumps({"k": "a", "v": 2}) + "\n")
    assert finished_records(path, lambda r: r["k"], Bad)["a"] == {"k": "a", "v": 2}  # a later record wins
