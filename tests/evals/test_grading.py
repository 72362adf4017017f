"""Grading: math-verify equivalence, the integer fast path, time bounds, and thread safety."""

from __future__ import annotations

import threading
import time

import pytest

from longshort.evals import Verdict, grade_answer


@pytest.mark.parametrize(
    ("predicted", "gold", "correct", "extracted"),
    [
        ("888", "888", True, "888"),
        ("887", "888", False, "887"),
        (" 1059 ", "1059", True, "1059"),
        ("-5", "-5", True, "-5"),
        ("\\boxed{42}", "42", True, "42"),
        ("$42$", "42", True, "42"),
        ("007", "7", True, "7"),
        ("+5", "5", True, "5"),
        ("-0", "0", True, "0"),
        ("\u0664\u0662", "42", True, "42"),  # Arabic-Indic digits, as int() reads them
    ],
)
def test_integers_take_the_fast_path(predicted, gold, correct, extracted):
    start = time.perf_counter()
    verdict = grade_answer(predicted, gold)
    assert time.perf_counter() - start < 0.01  # no worker round trip
    assert verdict == Verdict(correct=correct, extracted=extracted, reason="correct" if correct else "wrong")


@pytest.mark.parametrize(
    ("predicted", "gold", "correct"),
    [
        ("\\frac{1}{2}", "0.5", True),
        ("0.5", "\\frac{1}{2}", True),
        ("\\dfrac{1}{2}", "\\frac{1}{2}", True),
        ("\\frac{2}{4}", "\\frac12", True),
        ("1/2", "\\frac{1}{2}", True),
        ("\\frac{1}{3}", "0.5", False),
        ("The answer is \\boxed{\\sqrt{2}}.", "\\sqrt{2}", True),
        ("1,059", "1059", True),
        ("1059.0", "1059", True),
        ("\\boxed{hello}", "5", False),
    ],
)
def test_math_verify_equivalence(predicted, gold, correct):
    verdict = grade_answer(predicted, gold)
    assert verdict.correct is correct, verdict
    assert verdict.reason == ("correct" if correct else "wrong")
    assert verdict.extracted


HUGE = "7" * 5000  # more digits than Python's int() converts (4,300)


@pytest.mark.parametrize(
    ("predicted", "gold", "correct", "extracted"),
    [
        (HUGE, HUGE, True, HUGE),
        (f"\\boxed{{{HUGE}}}", f"00{HUGE}", True, HUGE),
        (HUGE, "7", False, HUGE),
        ("7", HUGE, False, "7"),
        (f"-{HUGE}", HUGE, False, f"-{HUGE}"),
    ],
)
def test_integers_beyond_the_int_digit_limit_are_graded(predicted, gold, correct, extracted):
    """Compared as digit strings: ``int()`` would raise in the caller and abort the whole run."""
    verdict = grade_answer(predicted, gold)
    assert verdict == Verdict(correct=correct, extracted=extracted, reason="correct" if correct else "wrong")


@pytest.mark.parametrize(("predicted", "gold"), [(HUGE, "\\frac{1}{2}"), ("\\frac{1}{2}", HUGE)])
def test_a_huge_integer_against_an_expression_gets_a_bounded_verdict(predicted, gold):
    verdict = grade_answer(predicted, gold, timeout_s=5.0)
    assert not verdict.correct
    assert verdict.reason in ("wrong", "timeout", "unparsable_gold", "no_answer")


@pytest.mark.parametrize("predicted", [None, "", "   ", "\\boxed{}", "}{"])
def test_no_answer(predicted):
    assert grade_answer(predicted, "5") == Verdict(correct=False, extracted=None, reason="no_answer")


@pytest.mark.parametrize("gold", ["", "\\", "\\boxed{}"])
def test_unparsable_gold(gold):
    verdict = grade_answer("5", gold)
    assert verdict.reason == "unparsable_gold" and not verdict.correct


def test_a_stuck_grading_times_out_and_the_next_one_works():
    start = time.perf_counter()
    verdict = grade_answer("\\boxed{9^{9^{9^{9}}}}", "1", timeout_s=1.0)  # sympy would run for ages
    elapsed = time.perf_counter() - start
    assert verdict == Verdict(correct=False, extracted=None, reason="timeout")
    assert elapsed < 10  # one timeout (plus, at most, starting a worker)
    assert grade_answer("\\frac{1}{2}", "0.5").correct


def test_concurrent_calls_from_threads():
    """LangGraph runs sync nodes in threads, where math-verify's own signal.alarm raises."""
    cases = [(f"\\frac{{{i}}}{{4}}", str(i / 4), True) for i in range(1, 9)]
    cases += [(f"\\frac{{{i}}}{{4}}", str(i / 4 + 1), False) for i in range(1, 9)]
    cases += [(str(i), str(i), True) for i in range(8)]
    results: dict[int, Verdict] = {}
    errors: list[BaseException] = []

    def work(thread: int) -> None:
        try:
            for j in range(thread, len(cases), 8):
                predicted, gold, _ = cases[j]
                results[j] = grade_answer(predicted, gold)
        except BaseException as e:  # surfaced below, with the thread's traceback lost otherwise
            errors.append(e)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert not any(t.is_alive() for t in threads)
    assert [results[j].correct for j in range(len(cases))] == [c for _, _, c in cases]
