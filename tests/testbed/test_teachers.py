"""The testbed's teachers: correct arithmetic everywhere, R1-like redundancy, parseable formats."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from longshort.protocol import SYSTEM_PROMPTS, extract_boxed, parse_turn
from longshort.testbed.tasks import Problem, generate_problems
from longshort.testbed.teachers import (
    LongTrace,
    Thought,
    base_example,
    count_tokens,
    long_trace,
    oracle_episode,
    random_selection,
    reasoner_example,
    selection_example,
    short_trace,
    switch_example,
    switch_examples,
    teacher_stats,
    tokenizer_counter,
    turn_token_counts,
)

# ------------------------------------------------------------------ an independent arithmetic checker

_EXPR = r"\d+(?:\s*[-+*]\s*\d+)*"
_CHAIN = re.compile(rf"(?<!\d)({_EXPR})((?:\s*=\s*{_EXPR})+)")


def _value(expr: str) -> int:
    """Evaluate ``a op b op c`` with * before + and -, by hand (no eval)."""
    tokens = re.findall(r"\d+|[-+*]", expr)
    terms, signs, current = [], ["+"], int(tokens[0])
    for op, num in zip(tokens[1::2], tokens[2::2], strict=True):
        if op == "*":
            current *= int(num)
        else:
            terms.append(current)
            signs.append(op)
            current = int(num)
    terms.append(current)
    return sum(t if s == "+" else -t for s, t in zip(signs, terms, strict=True))


def wrong_equations(text: str) -> tuple[int, list[str]]:
    """(number of ``a op b = c`` chains found, the ones that are false)."""
    found, bad = 0, []
    for match in _CHAIN.finditer(text):
        sides = [match.group(1), *re.split(r"\s*=\s*", match.group(2).strip())[1:]]
        found += 1
        if len({_value(side) for side in sides}) != 1:
            bad.append(match.group(0))
    return found, bad


def test_checker_catches_mistakes():
    assert wrong_equations("so 37 * 24 = 37 * 20 + 37 * 4 = 740 + 148 = 888.") == (1, [])
    assert wrong_equations("carry 2. 3 * 4 = 12, and 12 + 2 = 14.") == (2, [])
    assert wrong_equations("37 * 24 = 878.")[1] == ["37 * 24 = 878"]
    assert wrong_equations("1068 - 9 = 1059 and 2 + 3 * 4 = 14")[1] == []
    assert wrong_equations("2 + 3 * 4 = 20")[1]


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def problems() -> list[Problem]:
    return generate_problems("train", 300, seed=0)


@pytest.fixture(scope="module")
def traces(problems) -> list[LongTrace]:
    return [long_trace(p, seed=0) for p in problems]


@pytest.fixture(scope="module")
def real_tokenizer():
    """A tokenizer trained the way the testbed's is, on a few hundred traces of other problems."""
    from longshort.testbed.tokenizer import train_tokenizer

    corpus = [SYSTEM_PROMPTS["long"], SYSTEM_PROMPTS["short"]]
    for p in generate_problems("validation", 250, seed=5):
        corpus += [p.question, reasoner_example(p, seed=1)[1], base_example(p)[1]]
    return train_tokenizer(corpus, vocab_size=1024)


# ------------------------------------------------------------------ long teacher


def test_every_equation_in_every_format_is_correct(problems, traces):
    for p, trace in zip(problems, traces, strict=True):
        texts = [trace.text, short_trace(p)]
        texts += [text for _, text in oracle_episode(p)]
        texts += [ex.completion for ex in switch_examples(p)[::4]]
        for text in texts:
            _, bad = wrong_equations(text)
            assert not bad, (p.expression, bad)
        found, _ = wrong_equations(trace.text)
        assert found >= 8 * p.n_hard, "the long trace should be full of checkable arithmetic"


def test_trace_structure(problems, traces):
    for p, trace in zip(problems, traces, strict=True):
        kinds = [t.type for t in trace.thoughts]
        assert kinds[0] == "restate" and kinds[-1] == "final" and kinds[-2] == "review"
        assert trace.text == "\n\n".join(t.text for t in trace.thoughts)
        assert trace.text.count("\n\n") == len(trace.thoughts) - 1, "a thought holds a blank line"
        assert [t.needed for t in trace.thoughts] == [t.type == "decompose" for t in trace.thoughts]
        decomposed = [t.op_index for t in trace.thoughts if t.type == "decompose"]
        assert decomposed == [i for i, op in enumerate(p.ops) if op.hard]
        for i in decomposed:  # each decomposition re-verified and rechecked after it
            after = [t.type for t in trace.thoughts if t.op_index == i]
            assert after.index("decompose") < after.index("verify") < after.index("recheck")
        assert extract_boxed(trace.text) == p.answer
        for t in trace.thoughts:
            if t.type == "decompose":  # multiplications by one digit (and its shift), one addition
                a, b = p.ops[t.op_index].factors
                assert t.text.startswith(f"{a} * {b} = ") and f" = {a * b}." in t.text
                # after the first step, the careful combination with the running total follows
                assert (
                    t.text.endswith(f" = {p.ops[t.op_index].value}.") if t.op_index else t.text.endswith(f" = {a * b}.")
                )
                product = t.text.split(" Then ")[0]
                assert all(int(y) < 10 or int(y) % 10 == 0 for y in re.findall(r"\* (\d+)", product)[1:])


def test_needed_share_is_r1_like(problems, traces):
    fractions = [t.needed_fraction() for t in traces]
    assert max(fractions) <= 0.10
    pooled = sum(count_tokens(x.text) for t in traces for x in t.thoughts if x.needed) / sum(
        count_tokens(t.text) for t in traces
    )
    assert 0.05 <= pooled <= 0.09
    lengths = [count_tokens(t.text) for t in traces]
    assert 600 <= sum(lengths) / len(lengths) <= 1100


def test_thoughts_reject_blank_lines_and_tags():
    with pytest.raises(ValueError, match="paragraph"):
        Thought(text="a\n\nb", type="plan")
    with pytest.raises(ValueError, match="tags"):
        Thought(text="so </think>", type="plan")


def test_seed_varies_wording_not_arithmetic(problems):
    p = problems[0]
    assert long_trace(p, seed=3) == long_trace(p, seed=3)
    texts = {long_trace(p, seed=s).text for s in range(6)}
    assert len(texts) > 1
    decompositions = {tuple(t.text for t in long_trace(p, seed=s).thoughts if t.needed) for s in range(6)}
    assert len(decompositions) == 1


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10**6), n_ops=st.integers(1, 6), data=st.data())
def test_any_chain_any_seed(seed, n_ops, data):
    n_hard = data.draw(st.integers(1, n_ops))
    (p,) = generate_problems("train", 1, seed=seed, n_ops=n_ops, n_hard=n_hard)
    trace = long_trace(p, seed=seed)
    assert not wrong_equations(trace.text)[1]
    assert trace.needed_fraction() <= 0.10
    assert extract_boxed(trace.text) == p.answer
    turns = oracle_episode(p, seed)
    assert all(parse_turn(role, text).ok for role, text in turns)
    assert parse_turn("short", turns[-1][1]).answer == p.answer


# ------------------------------------------------------------------ short teacher and formats


def test_short_trace(problems, traces):
    for p, trace in zip(problems, traces, strict=True):
        lines = short_trace(p).split("\n")
        assert lines[-1] == f"\\boxed{{{p.answer}}}"
        assert len(lines) == len(p.ops) + p.n_hard  # a line per product, per combination, and the box
        assert 6 <= count_tokens(trace.text) / count_tokens(short_trace(p)) <= 25


def test_reasoner_and_base_formats(problems):
    p = problems[1]
    messages, completion = reasoner_example(p)
    assert messages == [{"role": "system", "content": SYSTEM_PROMPTS["long"]}, {"role": "user", "content": p.question}]
    think, answer = completion.split("</think>")
    think += "</think>"
    assert think == f"<think>\n{long_trace(p).text}\n</think>"
    assert parse_turn("long", think).ok
    assert answer == f"<answer> \\boxed{{{p.answer}}} </answer>"
    assert parse_turn("short", answer).answer == p.answer

    messages, completion = base_example(p)
    assert messages[0] == {"role": "system", "content": SYSTEM_PROMPTS["short"]}
    assert completion == f"<answer> {short_trace(p)} </answer>"
    parsed = parse_turn("short", completion)
    assert parsed.kind == "answer" and parsed.answer == p.answer


def test_switch_examples_parse_for_every_prefix(problems):
    for p in problems[:60]:
        trace = long_trace(p)
        examples = switch_examples(p)
        assert [ex.k for ex in examples] == list(range(len(trace.thoughts) + 1))
        assert examples[0].document == "" and examples[0].completion == base_example(p)[1]
        for ex in examples:
            assert ex.question == p.question
            if ex.k:
                parsed = parse_turn("long", ex.document)
                assert parsed.ok, parsed.error
                assert parsed.content == trace.prefix(ex.k)
            answer = parse_turn("short", ex.completion)
            assert answer.kind == "answer" and answer.answer == p.answer, ex.completion
            in_prefix = sum(t.type == "decompose" for t in trace.thoughts[: ex.k])
            # each decomposed product is quoted, and so is its careful combination (steps after the first)
            combined = sum(t.type == "decompose" and bool(t.op_index) for t in trace.thoughts[: ex.k])
            assert ex.completion.count("From above, ") == in_prefix + combined
            # The graph's document is the turns' texts concatenated: long turn, then this turn.
            assert parse_turn("short", (ex.document + ex.completion)[len(ex.document) :]).ok
    with pytest.raises(ValueError, match="k must lie"):
        switch_example(problems[0], 999)


def test_selection_examples_keep_only_the_chosen_thoughts(problems):
    import random

    rng = random.Random(0)
    for p in problems[:40]:
        trace = long_trace(p)
        kept = random_selection(trace, rng)
        assert kept and kept == sorted(set(kept))
        ex = selection_example(p, kept, trace=trace)
        parsed = parse_turn("long", ex.document)
        assert parsed.ok and parsed.content == "\n\n".join(trace.thoughts[i - 1].text for i in kept)
        answer = parse_turn("short", ex.completion)
        assert answer.kind == "answer" and answer.answer == p.answer
        decomposed = [trace.thoughts[i - 1] for i in kept if trace.thoughts[i - 1].type == "decompose"]
        assert ex.completion.count("From above, ") == len(decomposed) + sum(bool(t.op_index) for t in decomposed)
        k = len(trace.thoughts) // 2
        assert selection_example(p, range(1, k + 1), trace=trace) == switch_example(p, k, trace=trace)
    assert selection_example(problems[0], []).document == ""
    with pytest.raises(ValueError, match="kept thoughts"):
        selection_example(problems[0], [0, 2])


def test_oracle_episode(problems, traces):
    for p, trace in zip(problems, traces, strict=True):
        turns = oracle_episode(p)
        roles = [r for r, _ in turns]
        assert roles == ["long", "short"] * p.n_hard
        parsed = [parse_turn(role, text) for role, text in turns]
        assert all(x.ok for x in parsed), [x.error for x in parsed]
        assert [x.content for x in parsed if x.role == "long"] == [t.text for t in trace.thoughts if t.needed]
        assert [x.kind for x in parsed if x.role == "short"] == ["rethink"] * (p.n_hard - 1) + ["answer"]
        assert parsed[-1].answer == p.answer
        counts = turn_token_counts(turns)
        assert counts.total == counts.long + counts.short
        assert counts.total < count_tokens(reasoner_example(p)[1]) / 3


def test_stats_with_a_real_tokenizer(problems, real_tokenizer, capsys):
    count = tokenizer_counter(real_tokenizer)
    assert count("37 * 24") == count_tokens("37 * 24") == 6  # 3 7 " *" " " 2 4: digits split, space before a number
    stats = teacher_stats(problems[:150], count=count)
    approx = teacher_stats(problems[:150])
    with capsys.disabled():
        print(f"\nreal tokenizer (vocab {len(real_tokenizer)}): {stats}\ncount_tokens: {approx}")
    assert stats.needed_fraction <= 0.10 and stats.max_needed_fraction <= 0.10
    assert 0.05 <= stats.needed_fraction
    assert stats.ratio >= 8
    assert 600 <= stats.mean_long_tokens <= 1200
    assert stats.mean_oracle_tokens < stats.mean_long_tokens / 3
    # The approximation is close enough to steer by.
    assert abs(approx.mean_long_tokens / stats.mean_long_tokens - 1) < 0.1
    with pytest.raises(ValueError):
        teacher_stats([])
