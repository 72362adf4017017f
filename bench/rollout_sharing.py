"""Monte Carlo rollouts per second with and without prefix sharing, side by side in one run.

    python -m bench.rollout_sharing --problems 4 --n 16            # shipped testbed base, CPU or GPU
    python -m bench.rollout_sharing --problems 20 --n 128 --device cuda
    python -m bench.rollout_sharing --random-size 1024,16 --max-new-tokens 64 --device cuda   # prefill-heavy
    python -m bench.rollout_sharing --random-size 3584,28,4,18944 --max-new-tokens 64 --device cuda  # Qwen2.5-7B shape

The same jobs (every prefix of the testbed teacher's long traces, N continuations each, the same
seeds) run twice through the transformers backend: once with ``share_prefills`` (each prefix is
prefilled once and its KV copied to its N rows) and once without (every row prefills the whole
prefix). The prefix cache is off in both, so neither run reuses the other's work. Outcomes are
checked to be identical, then the ratio is printed and written to ``results/``.

What sharing saves is prefill compute, so the speed-up depends on the model's size: a 4M-parameter
testbed base prefills a thousand tokens for a whole batch in about one decode step's time, and on
a GPU sharing then buys nothing. ``--random-size HIDDEN,LAYERS[,KV_HEADS[,FFN]]`` runs the same jobs
on a random-weight Qwen2 of that shape with the testbed tokenizer, built directly on the device (bf16
on CUDA): ``1024,16`` is about 200M parameters; ``3584,28,4,18944`` is the body of Qwen2.5-7B (the
paper's base model; 6.5B parameters with the testbed's small vocabulary), where prefill costs what it
costs in the paper's analysis. Random weights rarely emit the end token, so every continuation runs
to ``--max-new-tokens``.
"""

from __future__ import annotations

import argparse
import re
import tempfile
from pathlib import Path

from transformers import AutoTokenizer

from longshort.agents import TransformersBackend, short_agent
from longshort.provenance import device_name, run_metadata, write_json_atomic
from longshort.testbed.checkpoints import checkpoint
from longshort.testbed.sources import testbed_problems
from longshort.training.analysis.rollouts import prefix_jobs, read_records, run_rollouts


def random_model(size: str, device: str | None):
    """A random-weight Qwen2 of shape ``HIDDEN,LAYERS[,KV_HEADS[,FFN]]`` that reads the testbed's ids.

    Built on the device in its backend dtype (bf16 on CUDA), never saved: a 7B-shaped model would
    take minutes to write and read back.
    """
    import torch
    from transformers import AutoTokenizer

    from longshort.testbed.model import make_model

    parts = [int(x) for x in size.split(",")]
    if not 2 <= len(parts) <= 4:
        raise SystemExit(f"--random-size takes HIDDEN,LAYERS[,KV_HEADS[,FFN]], got {size!r}")
    hidden, layers = parts[:2]
    heads = max(1, hidden // 128) if hidden >= 2048 else max(1, hidden // 64)
    kv_heads = parts[2] if len(parts) > 2 else heads
    ffn = parts[3] if len(parts) > 3 else None
    if heads % kv_heads:
        raise SystemExit(f"--random-size {size!r}: {heads} attention heads are not a multiple of {kv_heads} KV heads")
    target = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    tokenizer = AutoTokenizer.from_pretrained(checkpoint("base"))
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16 if target.type == "cuda" else torch.float32)
    try:
        with torch.device(target):
            model = make_model(
                tokenizer,
                hidden_size=hidden,
                layers=layers,
                heads=heads,
                kv_heads=kv_heads,
                intermediate_size=ffn,
                max_positions=4096,
            )
    finally:
        torch.set_default_dtype(before)
    return model.eval()


def one_run(share: bool, args, problems, workdir: Path) -> tuple[dict, dict]:
    backend = TransformersBackend(
        args.model_instance or args.model,
        tokenizer=str(checkpoint("base")) if args.model_instance is not None else None,
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
        args.model_instance = random_model(args.random_size, args.device) if args.random_size else None
        args.model = args.model or str(checkpoint("base"))
        tokenizer = AutoTokenizer.from_pretrained(args.model if args.model_instance is None else checkpoint("base"))
        count = lambda t: len(tokenizer.encode(t, add_special_tokens=False))  # noqa: E731
        problems = testbed_problems(args.problems, args.seed, count_tokens=count)
        shared, a = one_run(True, args, problems, Path(tmp))
        unshared, b = one_run(False, args, problems, Path(tmp))
        instance = args.model_instance
        parameters = sum(p.numel() for p in instance.parameters()) if instance is not None else None
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
            "model_parameters": parameters,
            **run_metadata(**{k: v for k, v in vars(args).items() if k != "model_instance"}),
        },
        out,
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
