"""RL step cost: a multi-turn GRPO step through the graph vs TRL's plain single-turn GRPO, side by side.

    python -m bench.rl_step --steps 12 --warmup 2 --num-generations 8 --batch 64      # the testbed SFT pair

Both runs train the same model (the shipped long agent's SFT, merged) with the same optimizer,
group size, batch and per-turn budget, in one process, one after the other:

  graph  ``LongShortGRPOTrainer``: every completion is an episode of the reasoner graph, the long
         agent on the trainer's weights, the SFT short agent frozen (its own backend: a child
         process on CUDA); the loss covers the long agent's own tokens only (``env_mask``);
  plain  ``GRPOTrainer`` with TRL's own ``transformers`` generation: one turn, the long agent's
         prompt, the same EM reward on its text.

Per step (median of ``--steps`` after ``--warmup``): seconds, trained tokens (loss-mask tokens),
seconds per trained token, and the step split into rollout (``_generate``), log-prob passes
(the no-grad policy/reference passes) and the rest (the loss forward, backward and optimizer).
``ratio`` = graph / plain seconds per trained token. Results go to ``results/rl-step-<device>.json``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

from longshort.provenance import device_name, run_metadata, write_json_atomic
from longshort.testbed.tasks import generate_problems


def _timed(trainer, name: str, bucket: dict[str, float]) -> None:
    """Wrap ``trainer.<name>`` so that its wall time (CUDA-synchronized) adds to ``bucket[name]``."""
    inner = getattr(trainer, name)

    def wrapper(*args, **kwargs):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            if name != "_get_per_token_logps_and_entropies" or not torch.is_grad_enabled():
                bucket[name] += time.perf_counter() - start

    setattr(trainer, name, wrapper)


class _Steps:
    """A TrainerCallback-like recorder of per-step wall time and phase times."""

    def __init__(self, trainer) -> None:
        from transformers import TrainerCallback

        self.rows: list[dict] = []
        self.bucket: dict[str, float] = defaultdict(float)
        for name in ("_generate", "_get_per_token_logps_and_entropies"):
            _timed(trainer, name, self.bucket)
        recorder = self

        class Callback(TrainerCallback):
            def on_step_begin(self, args, state, control, **kw):
                recorder.bucket.clear()
                recorder.start = time.perf_counter()

            def on_step_end(self, args, state, control, **kw):
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                total = time.perf_counter() - recorder.start
                rollout = recorder.bucket["_generate"]
                logprob = recorder.bucket["_get_per_token_logps_and_entropies"]
                recorder.rows.append(
                    {"seconds": total, "rollout": rollout, "logprob": logprob, "optimizer": total - rollout - logprob}
                )

        trainer.add_callback(Callback())


def _summary(rows: list[dict], tokens: list[float], warmup: int) -> dict:
    kept = rows[warmup:]
    toks = tokens[warmup : warmup + len(kept)]
    per_token = [r["seconds"] / max(1.0, t) for r, t in zip(kept, toks, strict=True)]
    return {
        "steps": len(kept),
        "seconds_median": statistics.median(r["seconds"] for r in kept),
        "seconds_per_token_median": statistics.median(per_token),
        "seconds_per_token_range": [min(per_token), max(per_token)],
        "trained_tokens_median": statistics.median(toks),
        "split_median": {k: statistics.median(r[k] for r in kept) for k in ("rollout", "logprob", "optimizer")},
    }


def _trained_tokens(trainer) -> list[float]:
    """Loss-mask tokens per step: TRL logs the mean completion length (env_mask-1 tokens) per step."""
    batch = trainer.args.per_device_train_batch_size * trainer.accelerator.num_processes
    return [h["completions/mean_length"] * batch for h in trainer.state.log_history if "completions/mean_length" in h]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=12, help="measured steps (after --warmup)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--num-generations", type=int, default=8)
    parser.add_argument("--batch", type=int, default=64, help="completions per step (questions x generations)")
    parser.add_argument("--max-tokens-per-turn", type=int, default=512)
    parser.add_argument("--max-total-tokens", type=int, default=1024)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    import os

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from longshort.protocol import SYSTEM_PROMPTS
    from longshort.training.rl.config import RLConfig
    from longshort.training.rl.rewards import em_reward
    from longshort.training.rl.trainer import _run_round, sft_dir

    total = args.warmup + args.steps
    n_questions = total * args.batch // args.num_generations
    problems = generate_problems("train", n_questions, seed=1)
    work = Path(tempfile.mkdtemp(prefix="bench-rl-"))
    cpu = not torch.cuda.is_available()
    common = dict(
        max_steps=total,
        num_generations=args.num_generations,
        per_device_train_batch_size=args.batch,
        learning_rate=args.learning_rate,
        temperature=args.temperature,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=cpu,
        bf16=False,
        gradient_checkpointing=False,
        shuffle_dataset=False,
    )
    config = RLConfig(
        output_dir=str(work / "graph"),
        schedule="L1",
        max_tokens_per_turn=args.max_tokens_per_turn,
        max_total_tokens=args.max_total_tokens,
        eval_n=1,
        **common,
    )
    graph_data = Dataset.from_list([{"prompt": p.question, "answer": p.answer} for p in problems])

    recorders: dict[str, _Steps] = {}
    trainers: dict[str, object] = {}

    def keep(trainer):  # called by _run_round with the trainer it built, before training
        recorders["graph"] = _Steps(trainer)
        trainers["graph"] = trainer

    from longshort.store import TraceStore

    with TraceStore(work / "traces.sqlite") as store:
        _run_round(config, "L1", "long", 1, graph_data, [], store, on_trainer=keep)

    long_dir = sft_dir(config, "long")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(long_dir)
    plain_data = Dataset.from_list(
        [
            {
                "prompt": [
                    {"role": "system", "content": SYSTEM_PROMPTS["long"]},
                    {"role": "user", "content": p.question},
                ],
                "answer": p.answer,
            }
            for p in problems
        ]
    )

    def plain_em(completions, answer, **_):
        texts = [c[0]["content"] if isinstance(c, list) else c for c in completions]
        return em_reward(completions, answer=answer, predicted=texts)

    plain = GRPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(long_dir, dtype=torch.float32),
        reward_funcs=[plain_em],
        args=GRPOConfig(output_dir=str(work / "plain"), max_completion_length=args.max_tokens_per_turn, **common),
        train_dataset=plain_data,
        processing_class=tokenizer,
        peft_config=__import__("longshort.training.rl.trainer", fromlist=["_lora_config"])._lora_config(config),
    )
    recorders["plain"] = _Steps(plain)
    plain.train()
    trainers["plain"] = plain

    result = {name: _summary(recorders[name].rows, _trained_tokens(trainers[name]), args.warmup) for name in recorders}
    result["ratio"] = result["graph"]["seconds_per_token_median"] / result["plain"]["seconds_per_token_median"]
    result.update(run_metadata(**vars(args), device=device_name()))
    out = Path(args.out or f"results/rl-step-{device_name()}.json")
    write_json_atomic(result, out)
    for name in ("graph", "plain"):
        r = result[name]
        split = ", ".join(f"{k} {v:.2f}s" for k, v in r["split_median"].items())
        print(
            f"{name}: {r['seconds_median']:.2f} s/step, {r['trained_tokens_median']:.0f} trained tokens, "
            f"{1e3 * r['seconds_per_token_median']:.3f} ms/token ({split})"
        )
    print(f"ratio graph/plain per trained token: {result['ratio']:.2f}; wrote {out}")


if __name__ == "__main__":
    main()
