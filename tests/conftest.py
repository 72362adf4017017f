"""Shared fixtures: tiny random-weight models of real architectures with an offline tokenizer.

They exercise the mechanics (batching, tags, token views), not quality.
"""

from __future__ import annotations

import os

import pytest

from longshort.protocol import SYSTEM_PROMPTS

# Rich wraps CLI output at the terminal's width (80 when there is none, narrower in some CI shells):
# fix it, here and in every subprocess, so an assertion on a message never depends on where it runs.
os.environ["COLUMNS"] = "200"

pytest_plugins = ["tests.serve_utils"]  # served_tiny_qwen: a real `transformers serve` on loopback

CORPUS = [
    SYSTEM_PROMPTS["long"],
    SYSTEM_PROMPTS["short"],
    "<think> First, 12 * 34 = 12 * 30 + 12 * 4 = 360 + 48 = 408. Let me check: 408 / 12 = 34. </think>",
    "<answer> 408 + 5 = 413. So the answer is \\boxed{413}. </answer>",
    "<answer> We need 17 * 23 first. </rethink>",
    "What is 12 * 34 + 5? Compute step by step. Wait, verify the product again.",
] * 20


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from longshort.testbed.tokenizer import train_tokenizer

    return train_tokenizer(CORPUS, vocab_size=400)


def _save(tmp_path_factory, tokenizer, arch: str, seed: int):
    from longshort.testbed.model import make_model

    path = tmp_path_factory.mktemp(f"tiny-{arch}-{seed}")
    model = make_model(tokenizer, arch=arch, seed=seed)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_qwen_dir(tmp_path_factory, tiny_tokenizer):
    """A saved tiny Qwen2ForCausalLM directory (model + tokenizer + chat template)."""
    return _save(tmp_path_factory, tiny_tokenizer, "qwen2", 0)


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory, tiny_tokenizer):
    return _save(tmp_path_factory, tiny_tokenizer, "llama", 1)


#: Episodes the protocol model memorises: (question, [(agent, text), ...]).
PROTOCOL_EPISODES = [
    (
        "What is 6 * 7?",
        [("long", "<think>\n6 * 7 = 42\n</think>"), ("short", "<answer> So the answer is \\boxed{42} </answer>")],
    ),
    (
        "What is 12 * 34 + 5?",
        [
            ("long", "<think>\nFirst 12 * 34.\n</think>"),
            ("short", "<answer> We need 12 * 34 first. </rethink>"),
            ("long", "<think>\n12 * 34 = 360 + 48 = 408\n</think>"),
            ("short", "<answer> 408 + 5 = \\boxed{413} </answer>"),
        ],
    ),
]


def train_protocol_model(tokenizer, path, steps: int = 120, lr: float = 5e-3) -> None:
    """Overfit a tiny Qwen2 on PROTOCOL_EPISODES, built with the graph's own view function.

    It learns both views: the token-level one (prompt + document ids) and the chat one (the
    transcript rendered in the user message), so it follows the protocol for real (tags,
    hand-back, boxed answer) in process and behind an OpenAI-compatible server. Long turns use
    "<think>\\n…\\n</think>" because that is how a server's reasoning split is rebuilt.
    """
    import torch

    from longshort.agents import ScriptedBackend, long_agent, short_agent
    from longshort.graphs.turn import view_ids
    from longshort.testbed.model import make_model
    from longshort.trace import Turn

    backend = ScriptedBackend([], tokenizer)
    agents = {"long": long_agent(backend), "short": short_agent(backend)}
    rows = []
    for question, script in PROTOCOL_EPISODES:
        turns: list[Turn] = []
        for agent, text in script:
            ids = tokenizer.encode(text, add_special_tokens=False)
            target = [*ids, tokenizer.eos_token_id]  # eos after the tag: a server stops there too
            rows.append((view_ids(agents[agent], question, turns), target))
            messages = agents[agent].view_messages(question, "".join(t.text for t in turns))
            chat = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
            rows.append((list(chat["input_ids"] if not isinstance(chat, list) else chat), target))
            turns.append(Turn(agent=agent, text=text, token_ids=ids, num_tokens=len(ids)))
    model = make_model(tokenizer, hidden_size=64, layers=2, seed=3)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    width = max(len(p) + len(c) for p, c in rows)
    inputs = torch.full((len(rows), width), tokenizer.pad_token_id)
    labels = torch.full((len(rows), width), -100)
    for i, (prompt, completion) in enumerate(rows):
        seq = prompt + completion
        inputs[i, : len(seq)] = torch.tensor(seq)
        labels[i, len(prompt) : len(seq)] = torch.tensor(completion)
    model.train()
    for _ in range(steps):
        loss = model(input_ids=inputs, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)


@pytest.fixture(scope="session")
def protocol_model_dir(tmp_path_factory, tiny_tokenizer):
    """A tiny real model that has learnt to play both roles on PROTOCOL_EPISODES."""
    path = tmp_path_factory.mktemp("protocol-model")
    train_protocol_model(tiny_tokenizer, path)
    return path
