"""SFT rows are exactly the views the graph feeds each agent, and their targets are the turns."""

from types import SimpleNamespace

from longshort.agents import ScriptedBackend, long_agent, short_agent
from longshort.graphs import build_reasoner, episode_from_state
from longshort.training.coldstart.sft_data import dialogue_rows, sft_tables

TURNS = [
    ("long", "<think>\n12 * 34 = 12 * 30 + 12 * 4 = 360 + 48 = 408\n</think>"),
    ("short", "<answer> From above, 12 * 34 = 408\nNext: 7 * 8 </rethink>"),
    ("long", "<think>\n7 * 8 = 56\n</think>"),
    ("short", "<answer> 408 + 56 = 464\n\\boxed{464} </answer>"),
]
DIALOGUE = SimpleNamespace(
    problem_id="p1",
    question="What is 12 * 34 + 7 * 8?",
    turns=TURNS,
    segments=[SimpleNamespace(thoughts=[1]), SimpleNamespace(thoughts=[2, 3]), SimpleNamespace(thoughts=[4])]
    + [SimpleNamespace(thoughts=[5, 6])],
)


def test_rows_equal_the_graphs_views(tiny_tokenizer):
    rows = dialogue_rows(DIALOGUE, tiny_tokenizer, tiny_tokenizer)
    # replay the dialogue through the real graph: each backend records the prompt ids it was fed
    long_b = ScriptedBackend([t for r, t in TURNS if r == "long"], tiny_tokenizer)
    short_b = ScriptedBackend([t for r, t in TURNS if r == "short"], tiny_tokenizer)
    graph = build_reasoner(long_agent(long_b), short_agent(short_b))
    episode = episode_from_state(graph.invoke({"question": DIALOGUE.question}))
    assert episode.status == "answered" and episode.answer == "464"
    for role, backend in (("long", long_b), ("short", short_b)):
        assert len(rows[role]) == len(backend.requests) == 2
        for row, request in zip(rows[role], backend.requests, strict=True):
            n = row["prompt_tokens"]
            assert row["input_ids"][:n] == request.prompt_ids
            assert row["completion_mask"] == [0] * n + [1] * row["completion_tokens"]
            assert tiny_tokenizer.decode(row["input_ids"][n:]) == TURNS[row["turn"]][1]
    assert [r["thoughts"] for r in rows["short"]] == [[2, 3], [5, 6]]
    assert rows["long"][1]["problem_id"] == "p1"


def test_tables_keep_their_columns_when_empty(tiny_tokenizer):
    tables = sft_tables([DIALOGUE, DIALOGUE], tiny_tokenizer, tiny_tokenizer)
    assert len(tables["long"]) == len(tables["short"]) == 4
    empty = sft_tables([], tiny_tokenizer, tiny_tokenizer)
    assert len(empty["long"]) == 0 and "completion_mask" in empty["long"].column_names
