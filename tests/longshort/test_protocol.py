import pytest

from longshort.protocol import clean_text, extract_answer, extract_boxed, parse_turn, truncate_at_stop


@pytest.mark.parametrize(
    ("role", "text", "kind"),
    [
        ("long", "<think> a </think>", "think"),
        ("long", "\n <think>\nmulti\n\nline\n</think>\n", "think"),
        ("short", "<answer> go on </rethink>", "rethink"),
        ("short", "<answer> so \\boxed{3} </answer>", "answer"),
    ],
)
def test_well_formed_turns(role, text, kind):
    parsed = parse_turn(role, text)
    assert parsed.ok, parsed.error
    assert parsed.kind == kind


@pytest.mark.parametrize(
    ("role", "text", "error"),
    [
        ("long", "<think> never closed", "not closed"),
        ("long", "no tags at all", "does not start"),
        ("long", "<think> a <think> b </think>", "nests or repeats"),
        ("long", "<think> a </think><think> b </think>", "nests or repeats"),
        ("long", "<think> a </think> trailing", "not closed"),
        ("long", "<answer> wrong role </answer>", "short agent's tag"),
        ("short", "<think> wrong role </think>", "long agent's tag"),
        ("short", "<answer> a <answer> b </answer>", "nests or repeats"),
        ("short", "<answer> a </rethink></answer>", "nests or repeats"),
        ("short", "<answer> open", "not closed"),
        ("short", "", "does not start"),
    ],
)
def test_malformed_turns(role, text, error):
    parsed = parse_turn(role, text)
    assert not parsed.ok
    assert error in parsed.error


def test_final_answer_is_last_balanced_boxed():
    assert extract_boxed(r"first \boxed{1} then \boxed{\frac{1}{2}}") == r"\frac{1}{2}"
    assert extract_boxed(r"\boxed {x^{2}}") == "x^{2}"
    assert extract_boxed(r"\boxed{unbalanced") is None
    assert parse_turn("short", "<answer> 5 </answer>").answer is None  # well-formed, unanswered


def test_multiple_choice_letters():
    assert extract_answer(r"\boxed{(C)}", choices="ABCD") == "C"
    assert extract_answer(r"\boxed{\text{B}}", choices="ABCD") == "B"
    assert extract_answer("so the answer is (D).", choices="ABCD") == "D"
    assert extract_answer(r"\boxed{E}", choices="ABCD") is None
    assert parse_turn("short", r"<answer> \boxed{a} </answer>", choices="ABCD").answer == "A"


def test_truncate_at_first_stop_keeps_it():
    assert truncate_at_stop("x </rethink> y </answer>", ("</answer>", "</rethink>")) == ("x </rethink>", True)
    assert truncate_at_stop("nothing", ("</answer>",)) == ("nothing", False)


def test_clean_text_makes_surrogates_safe():
    cleaned = clean_text("ok \ud800 bad")
    cleaned.encode("utf-8")  # must not raise
    assert cleaned.startswith("ok ")
