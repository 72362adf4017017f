"""Episode throughput: N concurrent Long⊗Short episodes through the graph vs raw batched generate.

    python bench/throughput.py --n 1,8,64,256                       # small random-weight model
    python bench/throughput.py --model PATH --n 1,8,64,256          # a real checkpoint
    python bench/throughput.py --testbed --temperature 0 --n 1,8,64  # the shipped pair, real episodes

For each N, side by side in one run with the same models:
  graph  N episodes via ``reasoner.abatch`` (the transformers backend batches their turns into
         shared forward passes, admitting new turns into the running batch), once per worker kind
         (``--workers``): ``thread`` = each model's backend in this process (``TransformersBackend``),
         ``process`` = each in a child process (``ProcessBackend``), so that the two models' host-bound
         decode loops do not take turns on one interpreter lock;
  raw    batched ``model.generate`` of the same N first-turn prompts with each model, with none of
         the protocol's turn structure, in two versions:
         - same lengths: row i generates exactly the tokens episode i generated with that model.
           ``generate`` batches statically, so the batch runs until its longest row is done and
           only the rows' own tokens count (rows are forced with ``min_new_tokens``, which costs
           the same as a row that has stopped and is padded);
         - mean length: every row generates the episodes' mean, no length spread at all: an upper
           bound that no workload of varying lengths reaches, reported beside it.
``ratio`` = graph / raw at the same lengths (the issue's "same prompts and lengths");
``ratio_mean_length`` = graph / the mean-length bound; ``ratio_<worker>`` for each worker kind, and
``ratio`` is the first one listed. The raw lengths are the first worker kind's episodes (greedy
episodes are identical under both). Results (with the device name) go to
``results/throughput-<device>.json``.
"""

from __future__ import annotations

import argparse
import re
import statistics
import tempfile
import time
from pathlib import Path

import torch

from longshort._async import run_sync
from longshort.agents import ProcessBackend, TransformersBackend, long_agent, short_agent
from longshort.agents._kv import attention_kernels
from longshort.graphs import build_reasoner
from longshort.protocol import SYSTEM_PROMPTS
from longshort.provenance import device_name, run_metadata, write_json_atomic


def random_model_dir(hidden: int, layers: int) -> str:
    """A random-weight Qwen2 of testbed size (about 4M parameters at hidden 256, 4 layers)."""
    from longshort.testbed.model import make_model
    from longshort.testbed.tokenizer import train_tokenizer

    corpus = [*SYSTEM_PROMPTS.values(), "<think> 37 * 24 = 37 * 20 + 37 * 4 = 740 + 148 = 888 </think>"] * 50
    tokenizer = train_tokenizer(corpus, vocab_size=512)
    model = make_model(tokenizer, hidden_size=hidden, layers=layers, heads=4, kv_heads=4, max_positions=4096)
    path = tempfile.mkdtemp(prefix="bench-model-")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def questions(n: int, seed: int) -> list[str]:
    g = torch.Generator().manual_seed(seed)
    nums = torch.randint(10, 99, (n, 3), generator=g).tolist()
    return [f"A shop has {a} crates of {b} apples and sells {c}. How many apples are left?" for a, b, c in nums]


def _distinct(*backends):
    return list({id(b): b for b in backends}.values())


def run_graph(long_backend, short_backend, qs, args) -> dict:
    # unseeded sampling, as the raw baseline samples: one batched draw per step in both
    long = long_agent(long_backend, temperature=args.temperature)
    short = short_agent(short_backend, temperature=args.temperature)
    graph = build_reasoner(
        long,
        short,
        max_turns=args.max_turns,
        max_tokens_per_turn=args.max_tokens_per_turn,
        max_total_tokens=args.max_total_tokens,
    )
    backends = _distinct(long_backend, short_backend)
    before = [dict(b.stats) for b in backends]
    start = time.perf_counter()
    outs = run_sync(graph.abatch([{"question": q} for q in qs]))
    wall = time.perf_counter() - start
    delta = {
        key: sum(b.stats[key] - old.get(key, 0) for b, old in zip(backends, before, strict=True))
        for key in ("generated_tokens", "requests")
    }
    statuses: dict[str, int] = {}
    for o in outs:
        statuses[o["status"]] = statuses.get(o["status"], 0) + 1
    n = len(outs)
    kept = sum(o["tokens"]["total"] for o in outs)
    return {
        "wall_s": wall,
        # the tokens the episodes kept: a malformed turn's discarded first attempt is overhead
        "generated_tokens": kept,
        "tokens_per_s": kept / wall,
        "backend_tokens": delta["generated_tokens"],
        "mean_turns": sum(len(o["turns"]) for o in outs) / n,
        "mean_tokens_long": sum(o["tokens"]["long"] for o in outs) / n,
        "mean_tokens_short": sum(o["tokens"]["short"] for o in outs) / n,
        "statuses": statuses,
        "requests": delta["requests"],
        "per_episode": [o["tokens"] for o in outs],
    }


@torch.inference_mode()
def run_raw(agent, qs, lengths: list[int], batch_size: int, temperature: float) -> dict:
    """``model.generate`` of each question's first view for this agent; row i counts ``lengths[i]`` tokens.

    Each chunk of ``batch_size`` rows runs to its longest row, as a static batch does.
    """
    backend = agent.backend
    model, tok = backend.model, backend.tokenizer
    prompts = [agent.prompt_ids(q) for q in qs]
    if backend.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    steps = 0
    with attention_kernels(backend.device):  # the same attention kernels as the backend's decode loop
        for i in range(0, len(prompts), batch_size):
            longest = max(lengths[i : i + batch_size])
            if longest > 0:
                _generate(model, tok, prompts[i : i + batch_size], longest, temperature, backend.device)
                steps += longest
    if backend.device.type == "cuda":
        torch.cuda.synchronize()
    wall = time.perf_counter() - start
    total = sum(lengths)
    return {"wall_s": wall, "generated_tokens": total, "tokens_per_s": total / wall, "decode_steps": steps}


def _generate(model, tok, prompts, new_tokens: int, temperature: float, device) -> None:
    width = max(map(len, prompts))
    ids = torch.full((len(prompts), width), tok.pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for r, p in enumerate(prompts):  # left padding, as generate expects for decoder-only models
        ids[r, width - len(p) :] = torch.tensor(p)
        mask[r, width - len(p) :] = 1
    model.generate(
        input_ids=ids.to(device),
        attention_mask=mask.to(device),
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        do_sample=temperature > 0,
        temperature=temperature if temperature > 0 else None,
        top_k=0,
        top_p=1.0,
        pad_token_id=tok.pad_token_id,
    )


def _raw_total(raws: list[dict]) -> dict:
    total = sum(r["generated_tokens"] for r in raws)
    wall = sum(r["wall_s"] for r in raws)
    return {"wall_s": wall, "generated_tokens": total, "tokens_per_s": total / wall, "parts": raws}


def one_trial(pairs: dict, long_backend, short_backend, qs, args) -> dict:
    """The graph's episodes (per worker kind), then raw ``generate`` of the same prompts and token counts.

    ``pairs`` maps a worker kind to its (long, short) backends; the raw baseline runs on the
    in-process ``long_backend`` / ``short_backend``.
    """
    graphs = {worker: run_graph(*backends, qs, args) for worker, backends in pairs.items()}
    per_episode = [g.pop("per_episode") for g in graphs.values()][0]
    if long_backend is short_backend:
        shares = [(long_agent(long_backend), [e["long"] + e["short"] for e in per_episode])]
    else:  # each model generates its own share of the tokens, one after the other
        shares = [
            (long_agent(long_backend), [e["long"] for e in per_episode]),
            (short_agent(short_backend), [e["short"] for e in per_episode]),
        ]
    same = [run_raw(agent, qs, lengths, args.max_batch_size, args.temperature) for agent, lengths in shares]
    mean = [
        run_raw(agent, qs, [round(sum(lengths) / len(lengths))] * len(lengths), args.max_batch_size, args.temperature)
        for agent, lengths in shares
        if sum(lengths)
    ]
    raw, raw_mean = _raw_total(same), _raw_total(mean)
    first = next(iter(graphs.values()))
    trial = {
        "graph": first,
        "raw": raw,
        "raw_mean_length": raw_mean,
        "ratio": first["tokens_per_s"] / raw["tokens_per_s"],
        "ratio_mean_length": first["tokens_per_s"] / raw_mean["tokens_per_s"],
    }
    for worker, graph in graphs.items():
        trial[f"graph_{worker}"] = graph
        trial[f"ratio_{worker}"] = graph["tokens_per_s"] / raw["tokens_per_s"]
    return trial


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", help="model directory or hub id; default: a random-weight testbed-size Qwen2")
    p.add_argument("--testbed", action="store_true", help="the shipped reasoner (long) and base (short) instead")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--n", default="1,8,64,256", help="comma-separated numbers of concurrent episodes")
    p.add_argument("--max-turns", type=int, default=6)
    p.add_argument("--max-tokens-per-turn", type=int, default=256)
    p.add_argument("--max-total-tokens", type=int, default=1024)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-batch-size", type=int, default=256)
    p.add_argument("--repeats", type=int, default=3, help="graph/raw pairs per N; the median ratio is reported")
    p.add_argument(
        "--workers",
        default="process,thread",
        help="comma-separated worker kinds for the graph runs: process (ProcessBackend), thread (TransformersBackend)",
    )
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--child-threads", type=int, default=None, help="torch threads in each ProcessBackend child")
    p.add_argument("--out", default=None, help="results JSON (default results/throughput-<device>.json)")
    args = p.parse_args()

    if args.testbed:  # the shipped pair: reasoner as the long agent, base as the short agent
        from longshort.testbed.checkpoints import checkpoint
        from longshort.testbed.tasks import generate_problems

        paths = (checkpoint("reasoner"), checkpoint("base"))

        def make_questions(n: int, seed: int) -> list[str]:
            return [p.question for p in generate_problems("test", n, seed=seed)]
    else:
        model = args.model or random_model_dir(args.hidden, args.layers)
        paths = (model, model)
        make_questions = questions
    workers = [w.strip() for w in args.workers.split(",") if w.strip()]
    if not workers or any(w not in ("process", "thread") for w in workers):
        p.error(f"--workers takes process and/or thread, got {args.workers!r}")
    kw = {"max_batch_size": args.max_batch_size, "device": args.device}
    long_backend = TransformersBackend(paths[0], **kw)  # also the raw baseline's models
    short_backend = long_backend if paths[1] == paths[0] else TransformersBackend(paths[1], **kw)
    pairs = {}
    for worker in workers:
        if worker == "thread":
            pairs[worker] = (long_backend, short_backend)
        else:
            lp = ProcessBackend(paths[0], num_threads=args.child_threads, **kw)
            sp = lp if paths[1] == paths[0] else ProcessBackend(paths[1], num_threads=args.child_threads, **kw)
            pairs[worker] = (lp, sp)
    params = sum(x.numel() for b in _distinct(long_backend, short_backend) for x in b.model.parameters())
    for backends in pairs.values():
        run_graph(*backends, make_questions(4, 99), args)  # warm-up (kernels, allocator)
    rows = []
    for n in [int(x) for x in args.n.split(",")]:
        qs = make_questions(n, args.seed)
        trials = [one_trial(pairs, long_backend, short_backend, qs, args) for _ in range(args.repeats)]
        row = {"n": n, **trials[0], "trials": trials[1:]}
        for key in ("ratio", "ratio_mean_length", *(f"ratio_{w}" for w in workers)):
            values = sorted(t[key] for t in trials)
            row[key] = statistics.median(values)
            row[key.replace("ratio", "ratios", 1)] = values
        rows.append(row)
        raw = row["raw"]
        per_worker = "  ".join(
            f"{w}: {row[f'graph_{w}']['tokens_per_s']:8.0f} tok/s ratio {row[f'ratio_{w}']:.2f}"
            f" ({' '.join(f'{r:.2f}' for r in row[f'ratios_{w}'])})"
            for w in workers
        )
        graph = row["graph"]
        print(
            f"N={n:4d}  {per_worker}  raw {raw['tokens_per_s']:8.0f} tok/s  ({graph['mean_turns']:.1f} turns/ep, "
            f"{graph['statuses']}; {workers[0]} vs the mean-length bound {row['ratio_mean_length']:.2f})",
            flush=True,
        )
    for b in _distinct(long_backend, short_backend, *(b for pair in pairs.values() for b in pair)):
        b.close()
    device = device_name()
    out = args.out or f"results/throughput-{re.sub(r'[^A-Za-z0-9]+', '-', device).strip('-').lower()}.json"
    meta = run_metadata(**{k: v for k, v in vars(args).items()}, model_parameters=params)
    write_json_atomic({"benchmark": "episode_throughput", "device": device, "rows": rows, **meta}, out)
    print(f"wrote {Path(out)}")


if __name__ == "__main__":
    main()
