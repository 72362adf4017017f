"""Training rows are the graph's own views, so the models learn exactly what they will be fed."""

from longshort.agents import ScriptedBackend, long_agent, short_agent
from longshort.graphs.turn import view_ids
from longshort.testbed.data import base_rows, make_row, reasoner_rows
from longshort.testbed.tasks import generate_problems
from longshort.testbed.teachers import switch_example
from longshort.trace import Turn


def _split(row):
    k = row["completion_mask"].index(1)
    assert all(row["completion_mask"][k:]) and not any(row["completion_mask"][:k])
    return row["input_ids"][:k], row["input_ids"][k:]


def test_make_row_masks_the_prompt():
    assert make_row([1, 2], [3]) == {"input_ids": [1, 2, 3], "completion_mask": [0, 0, 1]}


def test_reasoner_rows_are_the_long_agents_view(tiny_tokenizer):
    problems = generate_problems("train", 3, seed=1)
    agent = long_agent(ScriptedBackend([], tiny_tokenizer))
    for p, row in zip(problems, reasoner_rows(problems, tiny_tokenizer), strict=True):
        prompt, completion = _split(row)
        assert prompt == view_ids(agent, p.question, [])
        text = tiny_tokenizer.decode(completion)
        assert text.startswith("<think>") and text.endswith(f"\\boxed{{{p.answer}}} </answer><|im_end|>")


def test_base_switch_rows_are_the_short_agents_view_after_a_long_turn(tiny_tokenizer):
    problems = generate_problems("train", 2, seed=2)
    agent = short_agent(ScriptedBackend([], tiny_tokenizer))
    rows = base_rows(problems, tiny_tokenizer, switches_per_problem=3)
    assert len(rows) == 2 * 4  # short-only + 3 switches per problem
    with_gaps = base_rows(problems, tiny_tokenizer, switches_per_problem=3, selections_per_problem=2)
    assert len(with_gaps) == 2 * 6 and [r for r in with_gaps if r not in rows]  # 2 gapped selections each
    views = set()
    for p in problems:
        for k in range(0, 30):
            try:
                ex = switch_example(p, k)
            except ValueError:
                break
            turns = []
            if ex.document:
                ids = tiny_tokenizer.encode(ex.document, add_special_tokens=False)
                turns = [Turn(agent="long", text=ex.document, token_ids=ids, num_tokens=len(ids))]
            views.add(tuple(view_ids(agent, p.question, turns)))
    for row in rows:
        prompt, completion = _split(row)
        assert tuple(prompt) in views
        assert tiny_tokenizer.decode(completion).startswith("<answer>")
