import pytest

from longshort.trace import Episode, TraceFileError, Turn, from_dataset, read_jsonl, to_dataset, write_jsonl


def _episode(i: int) -> Episode:
    return Episode(
        id=f"e{i}",
        question="What is 2+2?",
        answer="4",
        status="answered",
        turns=[
            Turn(
                agent="long",
                text="<think> 2+2 </think>",
                token_ids=[1, 2, 3],
                logprobs=[-0.1, -0.2, -0.3],
                num_tokens=3,
            ),
            Turn(agent="short", text="<answer> \\boxed{4} </answer>", num_tokens=5),
        ],
    )


def test_tokens_are_counted_per_agent():
    assert _episode(0).tokens.model_dump() == {"long": 3, "short": 5, "total": 8, "kept": 8}


def test_discarded_attempts_count_in_the_tokens_but_not_in_the_document():
    ep = _episode(0)
    ep.turns[0].discarded_tokens = 10
    assert ep.tokens.model_dump() == {"long": 13, "short": 5, "total": 18, "kept": 8}


def test_jsonl_round_trip_and_truncated_tail(tmp_path):
    path = tmp_path / "eps.jsonl"
    episodes = [_episode(i) for i in range(3)]
    assert write_jsonl(episodes, path) == 3
    assert list(read_jsonl(path)) == episodes
    with open(path, "a") as f:
        f.write('{"id": "half')  # a writer killed mid-line
    assert list(read_jsonl(path)) == episodes


def test_dataset_round_trip():
    episodes = [_episode(i) for i in range(3)]
    ds = to_dataset(episodes)
    assert ds.num_rows == 3
    assert ds[0]["tokens"]["total"] == 8
    assert from_dataset(ds) == episodes


def test_append_after_a_killed_writer_cuts_the_torn_line(tmp_path):
    """Glued onto the torn line, the appended episode would make the file unreadable from there on."""
    path = tmp_path / "eps.jsonl"
    write_jsonl([_episode(0)], path)
    with open(path, "a") as f:
        f.write(_episode(1).model_dump_json()[:50])  # the writer was killed mid-line
    assert write_jsonl([_episode(2), _episode(3)], path, append=True) == 2
    assert [ep.id for ep in read_jsonl(path)] == ["e0", "e2", "e3"]
    assert len(path.read_text().splitlines()) == 3


def test_append_keeps_a_complete_last_line_without_its_newline(tmp_path):
    path = tmp_path / "eps.jsonl"
    path.write_text(_episode(0).model_dump_json())  # complete, newline never written
    write_jsonl([_episode(1)], path, append=True)
    assert [ep.id for ep in read_jsonl(path)] == ["e0", "e1"]


def test_append_to_a_new_file(tmp_path):
    path = tmp_path / "new.jsonl"
    assert write_jsonl([_episode(0)], path, append=True) == 1
    assert [ep.id for ep in read_jsonl(path)] == ["e0"]


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ('{"id": "half', r"eps.jsonl: line 2 is not valid JSON"),
        ('{"id": "x"}', r"eps.jsonl: line 2 is not an episode \(question: Field required and 1 more\)"),
    ],
)
def test_a_corrupt_middle_line_names_the_file_and_line(tmp_path, bad, match):
    path = tmp_path / "eps.jsonl"
    path.write_text(f"{_episode(0).model_dump_json()}\n{bad}\n\n{_episode(1).model_dump_json()}\n")
    with pytest.raises(TraceFileError, match=match) as info:
        list(read_jsonl(path))
    assert isinstance(info.value, ValueError)


def test_invalid_utf8_names_the_line(tmp_path):
    path = tmp_path / "eps.jsonl"
    path.write_bytes(_episode(0).model_dump_json().encode() + b"\n" + b'{"id": "\xff"}\n' + b"{}\n")
    with pytest.raises(TraceFileError, match=r"eps.jsonl: line 2 is not valid UTF-8"):
        list(read_jsonl(path))
