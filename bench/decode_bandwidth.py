"""Decode speed of a large model as a fraction of the memory-bandwidth bound, graphs on and off.

    python -m bench.decode_bandwidth --random-size 3584,28,4,18944 --n 64 --device cuda   # Qwen2.5-7B shape
    python -m bench.decode_bandwidth --random-size 64,2 --n 8 --new-tokens 32 --device cpu  # smoke run

A decode step of a large model at small batch reads every weight once: at N rows its best possible
rate is ``bandwidth / weight bytes`` steps per second, whatever the batch. This bench runs N
requests of one prompt length through ``TransformersBackend`` on a random-weight model of the given
shape (``bench.rollout_sharing.random_model``, built on the device in bf16), once with the decode
step replayed as a CUDA graph (``cuda_graphs=True``) and once eagerly (``cuda_graphs=False``),
alternating, ``--repeats`` times each, and reports for each: decode steps per second (the backend's
own step count over the decode part's wall time: a run's time minus the arm's median time for a
one-token run of the same prompts, which is the prefill),
tokens per second, and ``steps/s × weight bytes / bandwidth`` (``--bandwidth``, default 4.3e12 B/s,
the H200's measured rate). The KV read per step grows with the context and is reported beside it.
Random weights rarely emit the end token; rows that do stop early are counted as they are.
``--profile`` runs each arm once more under ``torch.profiler``: device kernel time per decode step
(both prefills of that run included) and the kernels that took the most time.
"""

from __future__ import annotations

import argparse
import re
import statistics
import time

import torch

from longshort.agents import TransformersBackend
from longshort.agents.base import GenerationRequest
from longshort.provenance import device_name, run_metadata, write_json_atomic


def one_run(backend: TransformersBackend, prompts: list[list[int]], new_tokens: int) -> dict:
    """Generate ``new_tokens`` per prompt; the decode part's time is that minus a one-token run's (the prefill)."""
    sync = torch.cuda.synchronize if backend.device.type == "cuda" else (lambda: None)

    def timed(n: int) -> tuple[float, list]:
        sync()
        start = time.perf_counter()
        out = backend.generate([GenerationRequest(prompt_ids=p, max_new_tokens=n) for p in prompts])
        sync()
        return time.perf_counter() - start, out

    prefill_s, _ = timed(1)  # the prefill and the first token: no decode step
    before = backend.stats
    total_s, results = timed(new_tokens)
    after = backend.stats
    errors = [r.error for r in results if r.error]
    if errors:
        raise SystemExit(f"generation failed: {errors[0]}")
    return {
        "prefill_s": prefill_s,
        "total_s": total_s,
        "decode_steps": after["decode_steps"] - before["decode_steps"],
        "tokens": sum(r.num_tokens for r in results),
        "graph_replays": after.get("graph_replays", 0) - before.get("graph_replays", 0),
        "eager_steps": after.get("eager_steps", 0) - before.get("eager_steps", 0),
    }


def summarize(trials: list[dict], *, weight_bytes: int, kv_bytes: float, bandwidth: float) -> dict:
    """Decode steps/s per trial and their median, and the median as a fraction of the bandwidth bound.

    A trial's decode time is its run's time minus the arm's *median* one-token (prefill) time: one
    slow prefill (a first capture, an allocator growth) must not make that trial's decode look free.
    ``kv_bytes`` is the KV read per step at the mean context, reported beside the weights-only bound.
    """
    prefill = statistics.median(t["prefill_s"] for t in trials)
    steps = sorted(t["decode_steps"] / max(1e-9, t["total_s"] - prefill) for t in trials)
    median = statistics.median(steps)
    return {
        "steps_per_s": median,
        "steps_per_s_all": steps,
        "prefill_s": prefill,
        "tokens_per_s": statistics.median(t["tokens"] / max(1e-9, t["total_s"] - prefill) for t in trials),
        "bandwidth_fraction": median * weight_bytes / bandwidth,
        "bandwidth_fraction_with_kv": median * (weight_bytes + kv_bytes) / bandwidth,
        "trials": trials,
    }


def main() -> None:
    from bench.rollout_sharing import random_model

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--random-size", default="3584,28,4,18944", help="HIDDEN,LAYERS[,KV_HEADS[,FFN]]")
    p.add_argument("--n", type=int, default=64, help="concurrent requests (rows)")
    p.add_argument("--prompt-tokens", type=int, default=128)
    p.add_argument("--new-tokens", type=int, default=256)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--bandwidth", type=float, default=4.3e12, help="memory bandwidth in bytes/s")
    p.add_argument("--device", default=None)
    p.add_argument("--profile", action="store_true", help="profile one run per arm: kernel time per step")
    p.add_argument("--out", default=None)
    args = p.parse_args()

    model = random_model(args.random_size, args.device)
    weight_bytes = sum(x.numel() * x.element_size() for x in model.parameters())
    cfg = model.config
    kv_per_token = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * (cfg.hidden_size // cfg.num_attention_heads)
    kv_per_token *= next(model.parameters()).element_size()
    g = torch.Generator().manual_seed(0)
    vocab = model.get_input_embeddings().num_embeddings
    prompts = torch.randint(3, vocab, (args.n, args.prompt_tokens), generator=g).tolist()
    tokenizer = model_tokenizer()
    arms = {}
    for name, graphs in (("graphs", True), ("eager", False)):
        arms[name] = TransformersBackend(
            model, tokenizer, max_batch_size=args.n, cuda_graphs=graphs, prefix_cache_tokens=0
        )
    runs: dict[str, list[dict]] = {name: [] for name in arms}
    for backend in arms.values():  # untimed: captures, allocator, kernels
        one_run(backend, prompts, min(args.new_tokens, 16))
    for _ in range(args.repeats):
        for name, backend in arms.items():
            runs[name].append(one_run(backend, prompts, args.new_tokens))
    kv_bytes = kv_per_token * (args.prompt_tokens + args.new_tokens / 2) * args.n
    rows = {}
    for name, trials in runs.items():
        rows[name] = summarize(trials, weight_bytes=weight_bytes, kv_bytes=kv_bytes, bandwidth=args.bandwidth)
        row = rows[name]
        print(
            f"{name:7s} {row['steps_per_s']:7.1f} steps/s ({' '.join(f'{x:.1f}' for x in row['steps_per_s_all'])})  "
            f"{row['tokens_per_s']:8.0f} tok/s  weights {row['bandwidth_fraction']:.1%} of the bound, "
            f"with KV {row['bandwidth_fraction_with_kv']:.1%}",
            flush=True,
        )
    if args.profile:  # where a step's device time goes, per arm
        from bench.profiling import profiled

        for name, backend in arms.items():
            trial, prof = profiled(lambda b=backend: one_run(b, prompts, args.new_tokens))
            prof["cuda_kernel_ms_per_step"] = prof.get("cuda_kernel_ms", 0.0) / max(1, trial["decode_steps"])
            prof["wall_ms_per_step"] = (
                (prof["profiled_wall_s"] - trial["prefill_s"]) * 1e3 / max(1, trial["decode_steps"])
            )
            rows[name]["profile"] = prof
            print(
                f"{name}: {prof['wall_ms_per_step']:.2f} ms wall / step, "
                f"{prof['cuda_kernel_ms_per_step']:.2f} ms kernels / step; top: {prof.get('top_kernels', [])[:5]}"
            )
    for backend in arms.values():
        backend.close()
    device = device_name()
    out = args.out or f"results/decode-bandwidth-{re.sub(r'[^A-Za-z0-9]+', '-', device).strip('-').lower()}.json"
    meta = run_metadata(
        **vars(args), weight_bytes=weight_bytes, kv_bytes_per_token=kv_per_token, kv_bytes_per_step=kv_bytes
    )
    write_json_atomic(
        {
            "benchmark": "decode_bandwidth",
            "device": device,
            "arms": rows,
            "speedup_graphs": rows["graphs"]["steps_per_s"] / rows["eager"]["steps_per_s"],
            **meta,
        },
        out,
    )
    print(f"graphs / eager: {rows['graphs']['steps_per_s'] / rows['eager']['steps_per_s']:.2f}x; wrote {out}")


def model_tokenizer():
    from transformers import AutoTokenizer

    from longshort.testbed.checkpoints import checkpoint

    return AutoTokenizer.from_pretrained(checkpoint("base"))


if __name__ == "__main__":
    main()
