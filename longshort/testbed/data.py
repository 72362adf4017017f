"""Tokenized training rows for the testbed models, built exactly as the graph builds views.

A row is ``{"input_ids", "completion_mask"}``: the agent's prompt ids (its system prompt and the
question through the chat template), the document's ids for switch examples, then the target.
TRL's ``SFTTrainer`` takes such pre-tokenized rows as they are and trains on the completion only.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from longshort.agents.roles import chat_prompt_ids
from longshort.protocol import SYSTEM_PROMPTS
from longshort.testbed.tasks import Problem
from longshort.testbed.teachers import (
    base_example,
    long_trace,
    prompt_messages,
    random_selection,
    reasoner_example,
    selection_example,
    switch_example,
)


def make_row(prompt_ids: list[int], completion_ids: list[int]) -> dict[str, list[int]]:
    return {
        "input_ids": prompt_ids + completion_ids,
        "completion_mask": [0] * len(prompt_ids) + [1] * len(completion_ids),
    }


def _encode(tokenizer, text: str) -> list[int]:
    return list(tokenizer.encode(text, add_special_tokens=False))


def tokenizer_corpus(problems: Sequence[Problem], seed: int = 0) -> list[str]:
    """Everything the models will read or write, so the BPE merges fit the testbed's text."""
    texts = list(SYSTEM_PROMPTS.values())
    for p in problems:
        texts += [p.question, reasoner_example(p, seed)[1], base_example(p)[1]]
    return texts


def build_tokenizer(problems: Sequence[Problem], vocab_size: int = 1024, seed: int = 0):
    from longshort.testbed.tokenizer import train_tokenizer

    return train_tokenizer(tokenizer_corpus(problems, seed), vocab_size=vocab_size)


def reasoner_rows(problems: Sequence[Problem], tokenizer, seed: int = 0) -> list[dict[str, list[int]]]:
    """Long-only rows: [long system, question] -> <think> long trace </think><answer> boxed </answer> eos."""
    rows = []
    for p in problems:
        messages, completion = reasoner_example(p, seed)
        rows.append(
            make_row(chat_prompt_ids(tokenizer, messages), _encode(tokenizer, completion) + [tokenizer.eos_token_id])
        )
    return rows


def base_rows(
    problems: Sequence[Problem],
    tokenizer,
    seed: int = 0,
    switches_per_problem: int = 4,
    selections_per_problem: int = 0,
) -> list[dict[str, list[int]]]:
    """Short-only rows plus switch rows (a long prefix cut at a thought boundary, then concise).

    Each problem gives its short-only row (k = 0) and ``switches_per_problem`` prefixes drawn at
    random from 1..n, so the base learns to continue any reasoning prefix; and
    ``selections_per_problem`` gapped selections (most needed thoughts, few others), the documents
    that the analysis's functional check and the cold-start data give it.
    """
    rng = random.Random(seed)
    rows = []
    for p in problems:
        trace = long_trace(p, seed)
        n = len(trace.thoughts)
        ks = [0, *rng.sample(range(1, n + 1), min(switches_per_problem, n))]
        examples = [switch_example(p, k, seed, trace) for k in ks]
        examples += [
            selection_example(p, random_selection(trace, rng), seed, trace) for _ in range(selections_per_problem)
        ]
        prompt = chat_prompt_ids(tokenizer, prompt_messages("short", p.question))
        for ex in examples:
            document = _encode(tokenizer, ex.document) if ex.document else []
            rows.append(make_row(prompt + document, _encode(tokenizer, ex.completion) + [tokenizer.eos_token_id]))
    return rows
