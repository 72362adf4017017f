"""The synergy rewards: EM through the eval graders, format, Kimi length within groups, µ's schedule."""

from __future__ import annotations

import pytest

from longshort.training.rl.rewards import (
    em_reward,
    format_reward,
    kimi_length,
    length_reward,
    length_weight_at,
)


def test_rewards_are_named_for_trl_metrics():
    assert [f.__name__ for f in (em_reward, format_reward, length_reward)] == ["em", "format", "length"]


def test_em_grades_through_the_eval_graders():
    got = em_reward([""] * 4, answer=["42", "42", "1/2", "7"], predicted=["42", "41", "\\frac{1}{2}", None])
    assert got == [1.0, 0.0, 1.0, 0.0]


def test_format_needs_well_formed_turns_and_a_final_answer():
    got = format_reward([""] * 3, well_formed=[True, True, False], status=["answered", "token_budget", "answered"])
    assert got == [1.0, 0.0, 0.0]


def test_kimi_length_within_each_group():
    lengths = [100, 200, 300, 50, 50]
    # group 1 of 3: λ = 0.5, 0, -0.5; the wrong long one gets min(0, λ); group 2: equal lengths -> 0
    got = kimi_length(lengths[:3] + [50, 50, 60], [True, False, False, True, False, True], group_size=3)
    assert got[:3] == [0.5, 0.0, -0.5]
    assert got[3:] == [0.5, min(0.0, 0.5), -0.5]
    assert kimi_length([10, 10], [True, False], group_size=2) == [0.0, 0.0]
    with pytest.raises(ValueError, match="groups of 2"):
        kimi_length(lengths, [True] * 5, group_size=2)


def test_a_wrong_answer_never_gets_a_positive_length_reward():
    got = kimi_length([10, 20, 30, 40], [False] * 4, group_size=4)
    assert all(r <= 0 for r in got) and got[-1] == -0.5


def test_mu_is_zero_then_rises():
    mu = [length_weight_at(s, weight=0.5, warmup_steps=3, ramp_steps=4) for s in range(10)]
    assert mu[:3] == [0.0, 0.0, 0.0]
    assert mu[3:7] == [0.125, 0.25, 0.375, 0.5] and mu[9] == 0.5
    assert length_weight_at(0, weight=0.3, warmup_steps=0, ramp_steps=0) == 0.3
