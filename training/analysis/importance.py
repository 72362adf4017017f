"""How much a thought is worth: the paper's bounded metric, a noise-aware variant, the selection rule.

For a long CoT y1..yn, Monte Carlo rollouts from each prefix y1..yi give an accuracy estimate P_i
(P_0: from no thought at all). PAPER.md §3 scores thought i as

    M(yi) = log2(1 + (d_y - d_{y1..yi}) / d_y * (d_y - d_{yi}) / d_y * P_i) - δ(yi)

where d are token lengths, and δ = 0.25 when the thought brought no accuracy gain. The length
factors lie in [0, 1], so |M(P̂) - M(P)| <= |P̂ - P| / ln 2: the estimate is as good as P̂.

The paper fires δ on any observed drop (``P_i <= P_{i-1}``). Under sampling noise a useless
thought shows a "gain" by chance about half of the time and escapes its penalty, so the
``significance`` variant fires δ unless P_i beats P_{i-1} by a one-sided two-proportion z-test on
the rollout counts at level ``alpha``: the penalty is lifted only by evidence of a gain.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

Metric = Literal["paper", "significance"]
METRICS: tuple[str, ...] = ("paper", "significance")
#: The default, chosen by measurement: on the testbed (40 held-out problems, N = 64 rollouts, H200)
#: the paper's metric scored AUROC 0.82 against 0.80 for the significance variant, and higher at
#: every N from 4 to 64 (results/analysis-testbed-nvidia-h200.json).
DEFAULT_METRIC: Metric = "paper"
DELTA = 0.25


def length_factor(lengths: Sequence[int], i: int) -> float:
    """(d_y - d_{y1..yi}) / d_y * (d_y - d_{yi}) / d_y for thought ``i`` (1-based)."""
    total = sum(lengths)
    if total <= 0:
        raise ValueError("the thoughts have no tokens")
    upto = sum(lengths[:i])
    return (total - upto) / total * (total - lengths[i - 1]) / total


def bounded_score(p: float, factor: float, penalty: bool, delta: float = DELTA) -> float:
    """log2(1 + factor * p) - (delta if penalty else 0)."""
    return math.log2(1.0 + factor * p) - (delta if penalty else 0.0)


def gain_is_significant(correct_prev: int, total_prev: int, correct: int, total: int, alpha: float) -> bool:
    """One-sided two-proportion z-test: is correct/total > correct_prev/total_prev at level ``alpha``?"""
    if total <= 0 or total_prev <= 0:
        return False
    p1, p0 = correct / total, correct_prev / total_prev
    if p1 <= p0:
        return False
    pooled = (correct + correct_prev) / (total + total_prev)
    var = pooled * (1 - pooled) * (1 / total + 1 / total_prev)
    if var <= 0:  # both all-right or all-wrong: no evidence either way (and p1 > p0 is impossible)
        return False
    z = (p1 - p0) / math.sqrt(var)
    p_value = 0.5 * math.erfc(z / math.sqrt(2))
    return p_value < alpha


def thought_scores(
    lengths: Sequence[int],
    correct: Sequence[int],
    totals: Sequence[int],
    *,
    metric: Metric = DEFAULT_METRIC,
    alpha: float = 0.05,
    delta: float = DELTA,
) -> list[float]:
    """M(y1..yn) from thought lengths (n) and rollout counts of prefixes 0..n (n + 1 each)."""
    n = len(lengths)
    if len(correct) != n + 1 or len(totals) != n + 1:
        raise ValueError(f"{n} thoughts need {n + 1} prefix counts (prefixes 0..n), got {len(correct)}/{len(totals)}")
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    if any(t <= 0 for t in totals):
        raise ValueError("every prefix needs at least one rollout")
    p = [c / t for c, t in zip(correct, totals, strict=True)]
    scores = []
    for i in range(1, n + 1):
        if metric == "paper":
            penalty = p[i] <= p[i - 1]
        else:
            penalty = not gain_is_significant(correct[i - 1], totals[i - 1], correct[i], totals[i], alpha)
        scores.append(bounded_score(p[i], length_factor(lengths, i), penalty, delta))
    return scores


def select_long(scores: Sequence[float]) -> list[bool]:
    """The selection rule: y1 is kept long; yi is kept iff M(yi) beats every earlier score."""
    keep: list[bool] = []
    best = -math.inf
    for i, s in enumerate(scores):
        keep.append(i == 0 or s > best)
        best = max(best, s)
    return keep


def auroc(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """Area under the ROC curve (the Mann-Whitney statistic, ties counted half); NaN for one class."""
    pos = [s for s, y in zip(scores, labels, strict=True) if y]
    neg = [s for s, y in zip(scores, labels, strict=True) if not y]
    if not pos or not neg:
        return math.nan
    ranked = sorted((s, i) for i, s in enumerate(scores))
    ranks = [0.0] * len(scores)
    j = 0
    while j < len(ranked):  # average ranks over ties
        k = j
        while k + 1 < len(ranked) and ranked[k + 1][0] == ranked[j][0]:
            k += 1
        for m in range(j, k + 1):
            ranks[ranked[m][1]] = (j + k) / 2 + 1
        j = k + 1
    pos_rank_sum = sum(r for r, y in zip(ranks, labels, strict=True) if y)
    return (pos_rank_sum - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg))
