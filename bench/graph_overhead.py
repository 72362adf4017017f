"""LangGraph bookkeeping per turn: how much of an episode's wall time is not generation.

    python bench/graph_overhead.py [--model PATH] [--episodes 20]

Runs episodes one at a time (``invoke``) on the CPU and times every backend call from inside
the graph's nodes. Bookkeeping = episode wall time − time spent in the backend: state
validation, the reducer, routing, checkpoint-free channel updates, tracing callbacks, view
building. Writes ``results/graph-overhead-cpu.json``.
"""

from __future__ import annotations

import argparse
import time

import torch

from bench.throughput import questions, random_model_dir  # noqa: E402  (run from the repo root)
from longshort.agents import TransformersBackend, long_agent, short_agent
from longshort.graphs import build_reasoner
from longshort.provenance import run_metadata, write_json_atomic


class TimedBackend:
    """Delegates to a backend and sums the wall time of its ``generate`` calls."""

    def __init__(self, inner) -> None:
        self.inner, self.seconds, self.calls = inner, 0.0, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def generate(self, requests):
        start = time.perf_counter()
        try:
            return self.inner.generate(requests)
        finally:
            self.seconds += time.perf_counter() - start
            self.calls += 1


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=None)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--max-tokens-per-turn", type=int, default=128)
    p.add_argument("--max-total-tokens", type=int, default=512)
    p.add_argument("--out", default="results/graph-overhead-cpu.json")
    args = p.parse_args()
    torch.set_num_threads(2)
    backend = TransformersBackend(args.model or random_model_dir(args.hidden, args.layers), device="cpu")
    timed = TimedBackend(backend)
    graph = build_reasoner(
        long_agent(timed, temperature=1.0, seed=0),
        short_agent(timed, temperature=1.0, seed=0),
        max_tokens_per_turn=args.max_tokens_per_turn,
        max_total_tokens=args.max_total_tokens,
    )
    graph.invoke({"question": "warm up"})
    timed.seconds, timed.calls = 0.0, 0
    start = time.perf_counter()
    for q in questions(args.episodes, seed=1):
        graph.invoke({"question": q})
    wall = time.perf_counter() - start
    backend.close()
    overhead = wall - timed.seconds
    result = {
        "benchmark": "graph_overhead",
        "episodes": args.episodes,
        "turn_calls": timed.calls,
        "wall_s": wall,
        "backend_s": timed.seconds,
        "bookkeeping_s": overhead,
        "bookkeeping_fraction": overhead / wall,
        "bookkeeping_ms_per_turn": 1000 * overhead / max(1, timed.calls),
        **run_metadata(**vars(args)),
    }
    print(
        f"{args.episodes} episodes, {timed.calls} generate calls: wall {wall:.2f}s, backend {timed.seconds:.2f}s, "
        f"bookkeeping {100 * result['bookkeeping_fraction']:.1f}% ({result['bookkeeping_ms_per_turn']:.2f} ms/turn)"
    )
    write_json_atomic(result, args.out)


if __name__ == "__main__":
    main()
