import json
import re
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

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


def _reference_boxed(text: str) -> str | None:
    """The former quadratic extractor, kept as the specification of what the linear one returns."""
    result = None
    for match in re.finditer(r"\\boxed\s*\{", text):
        depth, start = 1, match.end()
        for i in range(start, len(text)):
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
                if depth == 0:
                    result = text[start:i].strip()
                    break
    return result


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"\boxed{\boxed{1}}", "1"),  # the box opened last wins, even inside another
        (r"\boxed{a} \boxed{b", "a"),  # an unclosed later box leaves the earlier answer
        (r"\boxed{a \boxed{b} c", "b"),
        (r"} \boxed{x}", "x"),  # a stray closing brace before the box is nobody's
        (r"{ \boxed{x} }", "x"),
        (r"\boxed{a}} \boxed{b}}", "b"),
        (r"\boxed{{a}{b}} tail {", "{a}{b}"),
        (r"\boxed", None),
        ("", None),
    ],
)
def test_boxed_edge_cases(text, expected):
    assert extract_boxed(text) == expected == _reference_boxed(text)


@given(st.lists(st.sampled_from(["\\boxed{", "\\boxed {", "\\boxed", "{", "}", " ", "x", "12"]), max_size=14))
def test_boxed_agrees_with_the_reference(atoms):
    text = "".join(atoms)
    assert extract_boxed(text) == _reference_boxed(text)


#: Megabyte responses that were quadratic to extract from; built in the child process below.
HARD_CASES = {
    "unclosed boxes": '"\\\\boxed{" * 150_000',
    "boxes closed at the end": '"\\\\boxed{" * 70_000 + "}" * 70_000',
    "stray closing braces": '"\\\\boxed{x}" + "}" * 1_000_000',
    "spaces after 'answer'": '"answer" + " " * 1_000_000',  # the letter pattern backtracked here
}
_TIMED = """
import json, sys, time
from longshort.protocol import extract_answer
text = eval(sys.argv[1])
start = time.perf_counter()
for choices in (None, "ABCD"):
    extract_answer(text, choices=choices)
print(json.dumps({"n": len(text), "s": time.perf_counter() - start}))
"""


@pytest.mark.parametrize("case", sorted(HARD_CASES))
def test_extraction_is_linear_on_a_megabyte(case):
    """Timed in a child that is killed if it hangs: the quadratic versions ran for minutes, inside a
    regex that holds the GIL, where neither a pytest timeout nor a watching thread gets a word in."""
    try:
        done = subprocess.run(
            [sys.executable, "-c", _TIMED, HARD_CASES[case]], capture_output=True, text=True, timeout=60, check=True
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{case}: extract_answer did not finish in 60 s")
    timed = json.loads(done.stdout)
    assert timed["n"] >= 560_000
    assert timed["s"] < 1.0, timed


def test_multiple_choice_letters():
    assert extract_answer(r"\boxed{(C)}", choices="ABCD") == "C"
    assert extract_answer(r"\boxed{\text{B}}", choices="ABCD") == "B"
    assert extract_answer("so the answer is (D).", choices="ABCD") == "D"
    assert extract_answer("Answer: B", choices="ABCD") == "B"
    assert extract_answer("the answer   is   C, not answer isD", choices="ABCD") == "C"
    assert extract_answer(r"\boxed{E}", choices="ABCD") is None
    assert parse_turn("short", r"<answer> \boxed{a} </answer>", choices="ABCD").answer == "A"


def test_truncate_at_first_stop_keeps_it():
    assert truncate_at_stop("x </rethink> y </answer>", ("</answer>", "</rethink>")) == ("x </rethink>", True)
    assert truncate_at_stop("nothing", ("</answer>",)) == ("nothing", False)


def test_clean_text_makes_surrogates_safe():
    cleaned = clean_text("ok \ud800 bad")
    cleaned.encode("utf-8")  # must not raise
    assert cleaned.startswith("ok ")
