"""Monte Carlo rollouts per second with and without prefix sharing, side by side in one run.

    python -m bench.rollout_sharing --problems 4 --n 16            # shipped testbed base, CPU or GPU
    python -m bench.rollout_sharing --problems 20 --n 128 --device cuda
    python -m bench.rollout_sharing --random-size 1024,16 --max-new-tokens 64 --device cuda   # prefill-heavy

The same jobs (every prefix of the testbed teacher's long traces, N continuations each, the same
seeds) run twice through the transformers backend: once with ``share_prefills`` (each prefix is
prefilled once and its KV copied to its N rows) and once without (every row prefills the whole
prefix). The prefix cache is off in both, so neither run reuses the other's work. Outcomes are
checked to be identical, then the ratio is printed and written to ``results/``.

What sharing saves is prefill compute, so the speed-up depends on the model's size: a 4M-parameter
testbed base prefills a thousand tokens for a whole batch in about one decode step's time, and on
a GPU sharing then buys nothing. ``--random-size HIDDEN,LAYERS`` runs the same jobs on a
random-weight Qwen2 of that size with the testbed tokenizer (e.g. ``1024,16``: about 200M
parameters), where prefill costs compute as it does for the paper's 7B models. Random weights
rarely emit the end token, so every continuation runs to ``--max-new-tokens``.
"""

from __future__ import annotations

import argparse
import re
import tempfile
from pathlib import Path

from longshort.agents import TransformersBackend, short_agent
from longshort.provenance import device_name, run_metadata, write_json_atomic
from longshort.training.analysis import testbed_problems
from longshort.training.rollouts import prefix_jobs, read_records, run_rollouts
from longshort.training.testbed.checkpoints import checkpoint


def random_model(hidden: int, layers: int, workdir: Path) -> str:
    """A random-weight Qwen2 of the given size that reads the testbed's token ids."""
    from transformers import AutoTokenizer

    from longshort.training.testbed.model import make_model

    tokenizer = AutoTokenizer.from_pretrained(checkpoint("base"))
    heads = max(1, hidden // 64)
    model = make_model(tokenizer, hidden_size=hidden, layers=layers, heads=heads, kv_heads=heads, max_positions=4096)
    path = workdir / f"random-{hidden}x{layers}"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def one_run(share: bool, args, problems, workdir: Path) -> tuple[dict, dict]:
    backend = TransformersBackend(
        args.model,
        device=args.device,
        max_batch_size=args.max_batch_size,
        share_prefills=share,
        prefix_cache_tokens=0,
    )
    with backend:
        agent = short_agent(backend, temperature=1.0)
        jobs = [j for p in problems for j in prefix_jobs(p)]
        out = workdir / f"rollouts-{'shared' if share else 'unshared'}.jsonl"
        stats = run_rollouts(agent, problems, jobs, out, n=args.n, max_new_tokens=args.max_new_tokens, seed=args.seed)
        row = {
            "share_prefills": share,
            **stats.model_dump(),
            "rollouts_per_s": stats.rollouts_per_s,
            "shared_prefill_rows": backend.stats["shared_prefill_rows"],
            "prefills": backend.stats["prefills"],
        }
    outcomes = {k: r.outcomes for k, r in read_records(out).items()}
    return row, outcomes


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", help="base model directory (default: the shipped testbed base)")
    p.add_argument("--random-size", help="HIDDEN,LAYERS: a random-weight Qwen2 of this size instead (prefill-heavy)")
    p.add_argument("--problems", type=int, default=4)
    p.add_argument("--n", type=int, default=16, help="continuations per prefix")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--max-batch-size", type=int, default=256)
    p.add_argument("--device", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="results JSON (default results/rollout-sharing-<device>.json)")
    args = p.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        if args.random_size:
            hidden, layers = (int(x) for x in args.random_size.split(","))
            args.model = random_model(hidden, layers, Path(tmp))
        args.model = args.model or str(checkpoint("base"))
        with TransformersBackend(args.model, device="cpu") as probe:
            problems = testbed_problems(args.problems, args.seed, count_tokens=lambda t: len(probe.encode(t)))
        shared, a = one_run(True, args, problems, Path(tmp))
        unshared, b = one_run(False, args, problems, Path(tmp))
    speedup = shared["rollouts_per_s"] / unshared["rollouts_per_s"]
    same = a == b
    print(
        f"{shared['continuations']} rollouts: shared {shared['rollouts_per_s']:.1f}/s, "
        f"unshared {unshared['rollouts_per_s']:.1f}/s, speed-up {speedup:.2f}x, identical outcomes: {same}"
    )
    device = device_name()
    out = args.out or f"results/rollout-sharing-{re.sub(r'[^A-Za-z0-9]+', '-', device).strip('-').lower()}.json"
    write_json_atomic(
        {
            "benchmark": "rollout_sharing",
            "device": device,
            "shared": shared,
            "unshared": unshared,
            "speedup": speedup,
            "identical_outcomes": same,
            **run_metadata(**vars(args)),
        },
        out,
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
