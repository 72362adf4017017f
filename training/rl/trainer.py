"""Synergizing multi-turn RL (PAPER.md §6): TRL's GRPO on the graph's own episodes, round by round.

    longshort train rl --config training/configs/rl/testbed.yaml [--schedule L1,L2,S1,L3,S2,L4]

Round ``L<k>`` optimizes the long agent with the short one frozen as part of the environment,
``S<k>`` the reverse. Each round starts from that agent's latest weights, and its KL reference
is that agent's SFT model:

- LoRA (default): the SFT model is merged once into a plain model (``OUT/sft/<role>``); each agent
  trains ONE adapter on it across its rounds (round k loads round k-1's adapter as trainable).
  TRL's own reference for a pre-trained adapter is a copy of it at the start of the round, so the
  trainer drops that copy: with adapters disabled the model *is* the SFT model, the reference.
- Full parameters: round k loads round k-1's weights, and the model's ``name_or_path`` points at
  ``OUT/sft/<role>``, from which TRL loads its reference.

Each round writes ``OUT/rounds/<name>/`` (TRL checkpoints, ``final/``), its measured accuracy
and tokens into ``OUT/rounds.json``, and every episode into the trace store. A killed run
resumes at the same schedule position from the round's last checkpoint; the store drops the
episodes logged after it, so it ends with no duplicated and no missing episodes.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from trl import GRPOTrainer

from longshort.protocol import Role
from longshort.store import TraceStore
from longshort.training.rl.config import RLConfig, parse_schedule
from longshort.training.rl.rewards import (
    REWARD_NAMES,
    em_reward,
    format_reward,
    kimi_length,
    length_reward,
    length_weight_at,
)
from longshort.training.rl.rollout import GraphRollout

if TYPE_CHECKING:
    from datasets import Dataset

logger = logging.getLogger(__name__)

__all__ = ["LongShortGRPOTrainer", "evaluate_pair", "train_rl"]

OTHER: dict[Role, Role] = {"long": "short", "short": "long"}


class LongShortGRPOTrainer(GRPOTrainer):
    """``GRPOTrainer`` with the graph rollout, the within-group length reward and the trace store.

    The length reward needs each whole group, which can straddle processes, so it is computed
    here after TRL gathers every process's rewards; µ follows the config's schedule per step.
    Every batch's episodes go to the store with their rewards, one transaction per batch.
    """

    def __init__(self, *args: Any, rollout: GraphRollout, store: TraceStore, run: str, round_index: int, **kwargs):
        self.graph_rollout = rollout
        self.store, self.run_name, self.round_index = store, run, round_index
        super().__init__(*args, rollout_func=rollout, **kwargs)
        model = self.accelerator.unwrap_model(self.model)
        if getattr(model, "peft_config", None) and "ref" in model.peft_config:
            model.delete_adapter("ref")  # the reference is the SFT model: the adapters disabled
        self.answers_by_question = {row["prompt"]: row["answer"] for row in self.train_dataset}

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        names = list(self.reward_func_names)
        em, length = names.index("em"), names.index("length")
        device = rewards.device
        lengths = self.accelerator.gather(torch.tensor([float(x["tokens_total"]) for x in inputs], device=device))
        correct = (rewards[:, em] > 0.5).tolist()
        rewards[:, length] = torch.tensor(
            kimi_length(lengths.tolist(), correct, self.num_generations), dtype=rewards.dtype, device=device
        )
        a = self.args
        self.reward_weights[length] = length_weight_at(
            self.state.global_step,
            weight=a.length_weight,
            warmup_steps=a.length_warmup_steps,
            ramp_steps=a.length_ramp_steps,
        )
        self._metrics["train"]["rewards/length/weight"].append(float(self.reward_weights[length]))
        self._store_batch(rewards, names, len(prompts))
        return rewards

    def _store_batch(self, rewards: torch.Tensor, names: list[str], n_local: int) -> None:
        batch = self.graph_rollout.last
        if batch is None:
            return
        start = self.accelerator.process_index * n_local
        local = rewards[start : start + n_local].tolist()
        self.store.append(
            batch.episodes,
            run=self.run_name,
            round=self.round_index,
            step=self.state.global_step,
            agent=self.graph_rollout.role,
            rewards=[dict(zip(names, row, strict=True)) for row in local],
        )


# ------------------------------------------------------------------------------------ models


def _lora_config(config: RLConfig):
    from peft import LoraConfig

    return LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=0.0,
        target_modules=config.lora_target_modules,
        task_type="CAUSAL_LM",
    )


def _device(config: RLConfig) -> str:
    """This process's device: the CPU, or its own GPU under ``accelerate launch``."""
    if config.use_cpu or not torch.cuda.is_available():
        return "cpu"
    from accelerate import PartialState

    return str(PartialState().device)


def sft_dir(config: RLConfig, role: Role) -> Path:
    """The agent's SFT model as a plain model folder (merged once from an adapter): the KL reference."""
    from longshort.agents.loading import load_trained, tokenizer_path

    out = Path(config.output_dir) / "sft" / role
    if (out / "config.json").is_file():
        return out
    from transformers import AutoTokenizer

    from longshort.shipped import default_sft

    source = getattr(config, f"{role}_model") or str(default_sft(role))
    model = load_trained(source, dtype=torch.float32)
    tmp = out.with_name(out.name + ".tmp")
    model.save_pretrained(tmp)
    AutoTokenizer.from_pretrained(tokenizer_path(source)).save_pretrained(tmp)
    os.replace(tmp, out)
    return out


def finished_rounds(rounds: list[dict], role: Role) -> list[dict]:
    """``role``'s finished rounds of a ``rounds.json``, in order (each has its ``final/`` folder)."""
    return [r for r in rounds if r.get("agent") == role and r.get("final")]


def latest(rounds: list[dict], role: Role) -> Path | None:
    """The ``final/`` folder of ``role``'s last finished round (None: it is still its SFT model)."""
    done = finished_rounds(rounds, role)
    return Path(done[-1]["final"]) if done else None


def load_policy(config: RLConfig, role: Role, rounds: list[dict]):
    """The trained agent's starting weights for a new round, ready for ``GRPOTrainer``."""
    from transformers import AutoModelForCausalLM

    base_dir, prev = sft_dir(config, role), latest(rounds, role)
    if not config.lora:
        model = AutoModelForCausalLM.from_pretrained(prev or base_dir, dtype=torch.float32)
        model.config._name_or_path = str(base_dir)  # TRL loads its reference from here: the SFT model
        return model
    from peft import PeftModel, get_peft_model

    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    if prev is None:
        return get_peft_model(model, _lora_config(config))
    return PeftModel.from_pretrained(model, prev, is_trainable=True)


def partner_dir(config: RLConfig, role: Role, rounds: list[dict]) -> Path:
    """A plain model folder with the partner's latest weights (an adapter merged), for its own backend."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base_dir, prev = sft_dir(config, role), latest(rounds, role)
    if prev is None or not config.lora:
        return prev or base_dir
    out = prev.parent / "merged"
    if not (out / "config.json").is_file():
        merged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), prev).merge_and_unload()
        merged.save_pretrained(out)
        AutoTokenizer.from_pretrained(base_dir).save_pretrained(out)
    return out


# ------------------------------------------------------------------------------------ evaluation


def evaluate_pair(
    long_dir: str | Path,
    short_dir: str | Path,
    problems: Sequence[tuple[str, str]],
    *,
    config: RLConfig,
) -> dict[str, Any]:
    """Greedy Long⊗Short episodes on held-out ``(question, answer)`` pairs: accuracy, tokens, turns."""
    from longshort._async import run_sync
    from longshort.agents.loading import close_backends, load_agents
    from longshort.evals.report import summarize
    from longshort.evals.systems import run_longshort

    long, short = load_agents(str(long_dir), str(short_dir), device=_device(config))
    try:
        questions, golds = [q for q, _ in problems], [a for _, a in problems]
        episodes = run_sync(
            run_longshort(
                long,
                short,
                questions,
                references=golds,
                max_turns=config.max_turns,
                max_tokens_per_turn=config.max_tokens_per_turn,
                max_total_tokens=config.max_total_tokens,
            )
        )
    finally:
        close_backends([long, short])
    row = summarize("longshort", episodes, golds).model_dump(exclude={"system"})  # as the demo reports it
    return {**row, "episodes": episodes}


# ------------------------------------------------------------------------------------ the schedule


def _read_rounds(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))["rounds"] if path.is_file() else []


def _write_rounds(path: Path, rounds: list[dict], config: RLConfig) -> None:
    from longshort.provenance import run_metadata, write_json_atomic

    write_json_atomic({"rounds": rounds, **run_metadata(schedule=config.schedule)}, path)


def _last_checkpoint(folder: Path) -> Path | None:
    from transformers.trainer_utils import get_last_checkpoint

    return Path(found) if folder.is_dir() and (found := get_last_checkpoint(str(folder))) else None


def _measure(name: str, agent: str | None, long_dir, short_dir, eval_set, config, store, round_index) -> dict:
    start = time.perf_counter()
    measured = evaluate_pair(long_dir, short_dir, eval_set, config=config)
    episodes = measured.pop("episodes")
    store.append(episodes, run=f"{Path(config.output_dir).name}/eval", round=round_index, source="eval", agent=agent)
    return {"round": name, "agent": agent, **measured, "eval_seconds": time.perf_counter() - start}


def train_rl(
    config: RLConfig,
    train_dataset: Dataset,
    eval_set: Sequence[tuple[str, str]],
    *,
    say: Callable[[str], None] = logger.info,
) -> list[dict]:
    """Run (or resume) the whole schedule; return the rows of ``rounds.json``.

    ``train_dataset`` has a ``prompt`` column (the question) and an ``answer`` column (gold);
    ``eval_set`` is the held-out ``(question, answer)`` pairs measured after every round.
    """
    from accelerate import PartialState

    from longshort.config import save_config

    state = PartialState()  # one process, or one per GPU under `accelerate launch`: all train, the main one writes
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    rounds_path = out / "rounds.json"
    store = TraceStore(config.store or out / "traces.sqlite")
    phases = parse_schedule(config.schedule)
    try:
        with state.main_process_first():  # the main process merges the SFT models, the others then load them
            long_sft, short_sft = preflight(config)
        rounds = _read_rounds(rounds_path)
        if state.is_main_process:
            save_config(config, out / "config.yaml")  # `longshort train rl --config OUT/config.yaml` runs it again
            if not any(r["round"] == "SFT r0" for r in rounds):
                say("measuring the SFT pair (r0)")
                rounds.append(_measure("SFT r0", None, long_sft, short_sft, eval_set, config, store, 0))
                _write_rounds(rounds_path, rounds, config)
        state.wait_for_everyone()
        for index, (name, role, _k) in enumerate(phases, start=1):
            rounds = _read_rounds(rounds_path)
            if any(r["round"] == name for r in rounds):
                continue  # finished before a restart
            say(f"round {name}: training the {role} agent, {OTHER[role]} frozen")
            final, stats = _run_round(config, name, role, index, train_dataset, rounds, store)
            state.wait_for_everyone()
            if state.is_main_process:
                pair = {
                    role: final_model_dir(config, role, final),
                    OTHER[role]: partner_dir(config, OTHER[role], rounds),
                }
                row = _measure(name, role, pair["long"], pair["short"], eval_set, config, store, index)
                row.update(final=str(final), **stats)
                rounds.append(row)
                _write_rounds(rounds_path, rounds, config)
                say(f"round {name}: accuracy {row['accuracy']:.1%} at {row['mean_tokens']:.0f} tokens")
            state.wait_for_everyone()
        rounds = _read_rounds(rounds_path)
    finally:
        store.close()
    return rounds


def final_model_dir(config: RLConfig, role: Role, final: Path) -> Path:
    """A loadable model folder for a round's ``final/`` (an adapter is merged next to it)."""
    if not config.lora:
        return final
    return partner_dir(config, role, [{"agent": role, "final": str(final)}])


def _run_round(config, name, role: Role, index, train_dataset, rounds, store, on_trainer=None) -> tuple[Path, dict]:
    """Train one round; ``on_trainer(trainer)`` sees the trainer before it trains (benchmarks time it)."""
    from transformers import AutoTokenizer

    from longshort.agents.loading import load_agents

    folder = Path(config.output_dir) / "rounds" / name
    args = copy.copy(config)  # (dataclasses.replace would re-run TRL's __post_init__ on derived fields)
    args.output_dir = str(folder)
    resume = _last_checkpoint(folder)
    run = f"{Path(config.output_dir).name}/train"
    from accelerate import PartialState

    state = PartialState()
    if resume is not None and state.is_main_process:  # the episodes logged after the checkpoint are redone
        step = int(resume.name.rsplit("-", 1)[-1])
        dropped = store.truncate_after(run, round=index, step=step - 1)
        logger.info("round %s: resuming from %s (%d stored episodes after it dropped)", name, resume, dropped)
    partner_kind = config.partner_backend or ("hf" if _device(config) == "cpu" else "hf-process")
    with state.main_process_first():  # the main process merges the partner's adapter, the others load it
        partner_path = partner_dir(config, OTHER[role], rounds)
    agents = load_agents(
        str(partner_path),
        str(partner_path),
        backend=partner_kind,
        roles=(OTHER[role],),
        temperature=config.partner_temperature,
        device=_device(config),
    )
    partner = agents[0] if role == "short" else agents[1]
    tokenizer = AutoTokenizer.from_pretrained(sft_dir(config, role))
    rollout = GraphRollout(
        role,
        partner,
        tokenizer=tokenizer,
        temperature=config.temperature,
        top_p=config.top_p,
        seed=config.seed + index,
        max_turns=config.max_turns,
        max_tokens_per_turn=config.max_tokens_per_turn,
        max_total_tokens=config.max_total_tokens,
        mask_over_budget=config.mask_over_budget,
    )
    reward_weights = {"em": config.em_weight, "format": config.format_weight, "length": 0.0}
    args.reward_weights = [reward_weights[n] for n in REWARD_NAMES]
    trainer = LongShortGRPOTrainer(
        model=load_policy(config, role, rounds),
        reward_funcs=[em_reward, format_reward, length_reward],
        args=args,
        train_dataset=train_dataset,
        processing_class=tokenizer,
        rollout=rollout,
        store=store,
        run=run,
        round_index=index,
    )
    if on_trainer is not None:
        on_trainer(trainer)
    start = time.perf_counter()
    try:
        result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    finally:
        rollout.close()
        partner.backend.close()
    final = folder / "final"
    trainer.save_model(str(final))  # (the main process writes)
    if state.is_main_process:
        _plot(trainer.state.log_history, folder / "training.png", name)
    return final, {
        "train_loss": result.training_loss,
        "steps": trainer.state.global_step,
        "train_seconds": time.perf_counter() - start,
    }


def preflight(config: RLConfig) -> tuple[Path, Path]:
    """Everything that can fail before a step is trained: both SFT references load, and they share a
    tokenizer (the pair's document is shared as token ids). Returns their plain model folders."""
    from transformers import AutoTokenizer

    dirs = sft_dir(config, "long"), sft_dir(config, "short")
    vocabs = [json.dumps(sorted(AutoTokenizer.from_pretrained(d).get_vocab().items())) for d in dirs]
    if vocabs[0] != vocabs[1]:
        raise ValueError(
            f"long_model ({dirs[0]}) and short_model ({dirs[1]}) have different tokenizers: the RL trainer needs "
            "one tokenizer family for both agents (their document is shared as token ids)"
        )
    return dirs


def _plot(history: list[dict], path: Path, title: str) -> None:
    """Reward, accuracy (EM) and tokens per logged step: the round at a glance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [h for h in history if "reward" in h]
    if not rows:
        return
    steps = [h["step"] for h in rows]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    series = (
        ("reward", ["reward"]),
        ("EM (accuracy)", ["rewards/em/mean"]),
        ("tokens", ["agents/long/tokens", "agents/short/tokens"]),
    )
    for ax, (label, keys) in zip(axes, series, strict=True):
        for key in keys:
            ax.plot(steps, [h.get(key, float("nan")) for h in rows], label=key.split("/")[1] if "/" in key else key)
        ax.set_title(label)
        ax.set_xlabel("step")
        if len(keys) > 1:
            ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
