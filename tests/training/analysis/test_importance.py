import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from longshort.training.analysis.importance import (
    auroc,
    bounded_score,
    gain_is_significant,
    length_factor,
    select_long,
    thought_scores,
)


def test_paper_metric_by_hand():
    # three thoughts of 10, 30, 60 tokens (d_y = 100); P_0..P_3 = 0.2, 0.5, 0.5, 0.9
    lengths, correct, totals = [10, 30, 60], [2, 5, 5, 9], [10, 10, 10, 10]
    m = thought_scores(lengths, correct, totals, metric="paper")
    # y1: (100-10)/100 * (100-10)/100 = 0.81; gain 0.2 -> 0.5, no penalty
    assert m[0] == pytest.approx(math.log2(1 + 0.81 * 0.5))
    # y2: (100-40)/100 * (100-30)/100 = 0.42; no gain (0.5 <= 0.5) -> -0.25
    assert m[1] == pytest.approx(math.log2(1 + 0.42 * 0.5) - 0.25)
    # y3: (100-100)/100 * ... = 0 -> log2(1) = 0, gain -> no penalty
    assert m[2] == pytest.approx(0.0)
    assert length_factor(lengths, 2) == pytest.approx(0.42)


def test_significance_variant_needs_evidence_of_a_gain():
    # a small observed gain (5/10 -> 6/10) lifts the paper's penalty, not the significant one
    lengths, correct, totals = [10, 10], [5, 6, 10], [10, 10, 10]
    paper = thought_scores(lengths, correct, totals, metric="paper")
    sig = thought_scores(lengths, correct, totals, metric="significance", alpha=0.05)
    assert paper[0] == pytest.approx(bounded_score(0.6, 0.5 * 0.5, penalty=False))
    assert sig[0] == pytest.approx(bounded_score(0.6, 0.5 * 0.5, penalty=True))
    assert sig[1] == pytest.approx(paper[1])  # 6/10 -> 10/10 is significant at 5%: no penalty in both
    assert not gain_is_significant(5, 10, 6, 10, 0.05)
    assert gain_is_significant(6, 10, 10, 10, 0.05)
    assert gain_is_significant(60, 128, 80, 128, 0.05)
    assert not gain_is_significant(80, 128, 60, 128, 0.5)
    assert not gain_is_significant(0, 0, 1, 1, 0.05)


def test_selection_rule_keeps_first_and_new_maxima():
    assert select_long([0.1, 0.3, 0.2, 0.3, 0.5, -1.0]) == [True, True, False, False, True, False]
    assert select_long([-0.2, -0.3]) == [True, False]
    assert select_long([]) == []


def test_bad_counts_are_rejected():
    with pytest.raises(ValueError, match="prefix counts"):
        thought_scores([1, 2], [1, 1], [2, 2])
    with pytest.raises(ValueError, match="at least one rollout"):
        thought_scores([1], [0, 0], [0, 3])
    with pytest.raises(ValueError, match="metric"):
        thought_scores([1], [0, 0], [1, 1], metric="nope")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no tokens"):
        length_factor([0, 0], 1)


def test_auroc_by_hand():
    assert auroc([0.9, 0.8, 0.1, 0.2], [True, True, False, False]) == 1.0
    assert auroc([0.1, 0.2, 0.9], [True, False, False]) == 0.0
    assert auroc([0.5, 0.5, 0.5], [True, False, False]) == 0.5  # ties count half
    assert auroc([0.3, 0.7, 0.5, 0.1], [True, True, False, False]) == 0.75
    assert math.isnan(auroc([0.1, 0.2], [True, True]))


@given(
    lengths=st.lists(st.integers(1, 5000), min_size=1, max_size=30),
    data=st.data(),
)
def test_error_bound(lengths, data):
    """|M(P̂) - M(P)| <= |P̂ - P| / ln 2 for the same penalty, any lengths and probabilities."""
    i = data.draw(st.integers(1, len(lengths)))
    p = data.draw(st.floats(0, 1))
    p_hat = data.draw(st.floats(0, 1))
    penalty = data.draw(st.booleans())
    factor = length_factor(lengths, i)
    assert 0 <= factor <= 1
    gap = abs(bounded_score(p_hat, factor, penalty) - bounded_score(p, factor, penalty))
    assert gap <= abs(p_hat - p) / math.log(2) + 1e-12
