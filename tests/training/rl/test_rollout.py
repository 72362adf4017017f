"""The RL rollout's bad-input clause: a partner backend that dies fails the round clearly, after its retries."""

from __future__ import annotations

import pytest

from longshort.agents.base import GenerationResult
from longshort.agents.scripted import ScriptedBackend
from longshort.errors import BackendError


class _DeadPartner(ScriptedBackend):
    """A partner backend that returns an error for every request and counts the calls."""

    def __init__(self, tokenizer) -> None:
        super().__init__([], tokenizer)
        self.calls = 0

    def generate(self, requests):
        self.calls += 1
        return [GenerationResult(finish_reason="error", error="connection refused") for _ in requests]


def test_a_dead_partner_fails_the_round_after_its_retries(tiny_qwen_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from longshort.agents import Agent
    from longshort.training.rl.rollout import GraphRollout

    tokenizer = AutoTokenizer.from_pretrained(tiny_qwen_dir)
    partner = _DeadPartner(tokenizer)
    # the short agent is trained: the long partner opens every episode, and it is dead
    model = AutoModelForCausalLM.from_pretrained(tiny_qwen_dir)
    rollout = GraphRollout(
        "short",
        Agent("long", partner),
        tokenizer=tokenizer,
        temperature=1.0,
        partner_retries=2,
        max_tokens_per_turn=8,
        max_total_tokens=64,
    )
    try:
        with pytest.raises(BackendError, match="long partner failed on 2 of 2 episodes after 3 attempts") as info:
            rollout.episodes(["What is 1 + 1?", "What is 2 + 2?"], ["2", "4"], model, step=0)
        assert "connection refused" in str(info.value) and "resume the run" in str(info.value)
        assert partner.calls >= 3  # every attempt asked the partner again
    finally:
        rollout.close()
