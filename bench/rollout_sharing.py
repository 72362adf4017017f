"""Monte Carlo rollouts per second with and without prefix sharing, side by side in one run.

    python -m bench.rollout_sharing --problems 4 --n 16            # shipped testbed base, CPU or GPU
    python -m bench.rollout_sharing --problems 20 --n 128 --device cuda

The same jobs (every prefix of the testbed teacher's long traces, N continuations each, the same
seeds) run twice through the transformers backend: once with ``share_prefills`` (each prefix is
prefilled once and its KV copied to its N rows) and once without (every row prefills the whole
prefix). The prefix cache is off in both, so neither run reuses the other's work. Outcomes are
checked to be identical, then the ratio is printed and written to ``results/``.
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


def one_run(share: bool, args, problems, workdir: Path) -> tuple[dict, dict]:
    backend = TransformersBackend(
        args.model or checkpoint("base"),
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
    p.add_argument("--problems", type=int, default=4)
    p.add_argument("--n", type=int, default=16, help="continuations per prefix")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--max-batch-size", type=int, default=256)
    p.add_argument("--device", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="results JSON (default results/rollout-sharing-<device>.json)")
    args = p.parse_args()

    with TransformersBackend(args.model or checkpoint("base"), device="cpu") as probe:
        problems = testbed_problems(args.problems, args.seed, count_tokens=lambda t: len(probe.encode(t)))
    with tempfile.TemporaryDirectory() as tmp:
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
