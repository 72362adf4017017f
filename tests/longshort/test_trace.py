from longshort.trace import Episode, Turn, from_dataset, read_jsonl, to_dataset, write_jsonl


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
