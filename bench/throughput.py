"""Episode throughput: N concurrent Long⊗Short episodes through the graph vs transformers' batched paths.

    python bench/throughput.py --n 1,8,64,256                       # small random-weight model
    python bench/throughput.py --model PATH --n 1,8,64,256          # a real checkpoint
    python bench/throughput.py --testbed --temperature 0 --n 1,8,64  # the shipped pair, real episodes
    python bench/throughput.py --n 1,8,64,256,1024 --repeats 5 --profile --cuda-graphs both

For each N, side by side in one run with the same models:
  graph  N episodes via ``reasoner.abatch`` (the transformers backend batches their turns into
         shared forward passes, admitting new turns into the running batch), once per worker kind
         (``--workers``): ``thread`` = each model's backend in this process (``TransformersBackend``),
         ``process`` = each in a child process (``ProcessBackend``), so that the two models' host-bound
         decode loops do not take turns on one interpreter lock. ``--cuda-graphs both`` runs each kind
         twice, as ``<kind>`` (``cuda_graphs=True``) and ``<kind>-eager`` (``cuda_graphs=False``);
  baselines (``--baselines``, default all three), transformers' own batched paths on the same N
         first-turn prompts with each model, with none of the protocol's turn structure, row i
         generating exactly the tokens episode i generated with that model (the issue's "same
         prompts and lengths"):
         - ``generate`` ("raw"): ``model.generate`` with its default dynamic cache. It batches
           statically, so each chunk of ``--max-batch-size`` rows runs until its longest row is
           done and only the rows' own tokens count (rows are forced with ``min_new_tokens``, which
           costs the same as a row that has stopped and is padded). Also run at the mean length:
           every row generates the episodes' mean, no length spread at all, an upper bound that no
           workload of varying lengths reaches (``raw_mean_length``);
         - ``static``: the same chunks through ``generate(cache_implementation="static")``, whose
           decode steps transformers compiles (``CompileConfig(mode="reduce-overhead")``: inductor
           plus CUDA graphs, the path transformers documents as its fastest for ``generate``). On
           CPU, generate compiles only when told to (``CompileConfig._compile_all_devices``), which
           is set there; ``compiled`` says whether it did. Each chunk first runs once untimed with
           the same shape (compilation, CUDA-graph capture), then timed;
         - ``continuous``: transformers' continuous-batching manager (``ContinuousMixin``,
           ``init_continuous_batching`` / ``add_request``), the N requests submitted at once, each
           with its own ``max_new_tokens`` and EOS disabled (``eos_token_id=-1``), so each row
           generates exactly its length (``forced_lengths`` checks the tokens that came back); at
           most ``--max-batch-size`` requests per forward, the KV cache sized to the workload. An
           untimed pass on other prompts with the same lengths comes first in the same session.
         Baselines run the model of the in-process backend under the engine's attention kernels
         (no cuDNN attention on CUDA, see ``agents/_kv.py``). An arm that cannot run (this
         transformers lacks the API, compile fails, out of memory) is recorded as
         ``{"skipped": reason}`` and left out from then on; it never stops the bench.
``ratio`` = graph / ``generate`` at the same lengths; ``ratio_mean_length`` = graph / the mean-length
bound; ``ratio_<worker>`` for each worker kind; ``ratio_vs_<arm>`` for each baseline;
``best_baseline`` = the arm with the highest median tokens/s, ``ratio_best`` = the median over
repeats of graph / the fastest arm of that repeat (``ratio_best_<worker>`` per worker kind). The
first worker kind listed is "the graph" of ``ratio*``. The baselines' lengths are the first worker
kind's episodes (greedy episodes are identical under all). Each row also has ``summary``: tokens/s
and decode steps/s (median over repeats) of every graph worker and baseline. The graph's decode
steps are the backends' ``stats["decode_steps"]`` over the run (summed over the two models' backends
when they differ; they run side by side), the static baselines' are the chunks' longest rows.

``--profile`` runs, once per N after the timed repeats, one graph pass per in-process worker kind
under ``torch.profiler`` and reports the summed CUDA kernel time per decode step: the profiler sees
the kernels of this process only, so the thread workers are profiled (a ``ProcessBackend``'s
kernels run in its child). On CPU it reports the host (wall) time per step and says CUDA is absent.
Results (with the device, torch and transformers versions) go to ``results/throughput-<device>.json``,
rewritten after every trial (``complete: false`` until the last), so a run cut short keeps what it measured.
"""

from __future__ import annotations

import argparse
import inspect
import math
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

BASELINES = ("generate", "static", "continuous")


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
    before = [b.stats for b in backends]  # a ProcessBackend's stats come from its child: one round trip each
    start = time.perf_counter()
    outs = run_sync(graph.abatch([{"question": q} for q in qs]))
    wall = time.perf_counter() - start
    after = [b.stats for b in backends]
    delta = {
        key: sum(new.get(key, 0) - old.get(key, 0) for new, old in zip(after, before, strict=True))
        for key in ("generated_tokens", "requests", "decode_steps")
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
        # summed over the distinct backends (the two models' decode loops run side by side)
        "decode_steps": delta["decode_steps"],
        "decode_steps_per_s": delta["decode_steps"] / wall,
        "mean_turns": sum(len(o["turns"]) for o in outs) / n,
        "mean_tokens_long": sum(o["tokens"]["long"] for o in outs) / n,
        "mean_tokens_short": sum(o["tokens"]["short"] for o in outs) / n,
        "statuses": statuses,
        "requests": delta["requests"],
        "per_episode": [o["tokens"] for o in outs],
    }


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


@torch.inference_mode()
def run_raw(agent, qs, lengths: list[int], batch_size: int, temperature: float) -> dict:
    """``model.generate`` of each question's first view for this agent; row i counts ``lengths[i]`` tokens.

    Each chunk of ``batch_size`` rows runs to its longest row, as a static batch does.
    """
    return _chunked_generate(agent, qs, lengths, batch_size, temperature)


@torch.inference_mode()
def run_static(agent, qs, lengths: list[int], batch_size: int, temperature: float) -> dict:
    """As ``run_raw``, through a static cache with generate's compiled decode step; each chunk warms up untimed."""
    from transformers import CompileConfig

    compile_config = CompileConfig(fullgraph=False, mode="reduce-overhead")
    if agent.backend.device.type != "cuda":  # generate compiles only on accelerators unless told to (for tests)
        compile_config._compile_all_devices = True
    extra = {"cache_implementation": "static", "compile_config": compile_config}
    out = _chunked_generate(agent, qs, lengths, batch_size, temperature, extra=extra, warm_up=True)
    # generate keeps its compiled forward on the model; absent = it decoded eagerly
    out["compiled"] = getattr(agent.backend.model, "_compiled_call", None) is not None
    return out


def _chunked_generate(
    agent, qs, lengths: list[int], batch_size: int, temperature: float, *, extra=None, warm_up: bool = False
) -> dict:
    """``generate`` over chunks of ``batch_size`` prompts, each to its longest row; the timed part's figures.

    With ``warm_up`` each chunk first runs once untimed with the same shape (compilation and, on
    CUDA, graph capture for a static cache); ``warmup_s`` says how long that took.
    """
    backend = agent.backend
    model, tok, device = backend.model, backend.tokenizer, backend.device
    prompts = [agent.prompt_ids(q) for q in qs]
    wall = warmup = 0.0
    steps = 0
    with attention_kernels(device):  # the same attention kernels as the backend's decode loop
        for i in range(0, len(prompts), batch_size):
            longest = max(lengths[i : i + batch_size])
            if longest == 0:
                continue
            chunk = prompts[i : i + batch_size]
            _sync(device)
            start = time.perf_counter()
            if warm_up:
                _generate(model, tok, chunk, longest, temperature, device, **(extra or {}))
                _sync(device)
                warmup += time.perf_counter() - start
                start = time.perf_counter()
            _generate(model, tok, chunk, longest, temperature, device, **(extra or {}))
            _sync(device)
            wall += time.perf_counter() - start
            steps += longest
    total = sum(lengths)
    out = {
        "wall_s": wall,
        "generated_tokens": total,
        "tokens_per_s": total / wall if wall else 0.0,
        "decode_steps": steps,
        "decode_steps_per_s": steps / wall if wall else 0.0,
    }
    return {**out, "warmup_s": warmup} if warm_up else out


def run_continuous(
    agent, qs, lengths: list[int], warm_qs, max_batch_size: int, temperature: float, timeout_s: float = 900.0
) -> dict:
    """transformers' continuous batching: every row submitted at once with its own length, EOS off.

    One manager session: set-up and transformers' own warm-up (CUDA-graph capture), an untimed pass
    over ``warm_qs`` with the same lengths (other prompts, so that the timed pass finds no prefix of
    its own in the paged cache), then the timed pass.
    """
    from transformers import ContinuousBatchingConfig, GenerationConfig
    from transformers.generation.continuous_batching.utils import WorkloadHints

    backend = agent.backend
    model, tok, device = backend.model, backend.tokenizer, backend.device
    rows = [(agent.prompt_ids(q), n) for q, n in zip(qs, lengths, strict=True) if n > 0]
    warm = [(agent.prompt_ids(q), n) for q, n in zip(warm_qs, lengths, strict=True) if n > 0]
    if not rows:
        return {"wall_s": 0.0, "generated_tokens": 0, "tokens_per_s": 0.0, "decode_steps": None}
    config = ContinuousBatchingConfig(max_requests_per_batch=max_batch_size)
    page = getattr(config, "page_size", None) or getattr(config, "block_size", None) or 256  # 5.17: block_size
    # the default sizes the cache from free memory (on CPU: from all RAM), and paged SDPA's mask grows
    # with the cache: room for one pass (the warm-up's blocks are freed when its requests finish)
    config.num_blocks = max(sum(math.ceil((len(p) + n) / page) for p, n in part) for part in (rows, warm)) + 1
    sampling = {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0} if temperature > 0 else {}
    gen = GenerationConfig(
        max_new_tokens=max(n for _, n in rows), eos_token_id=-1, pad_token_id=tok.pad_token_id, **sampling
    )
    hints = WorkloadHints(
        max_prompt_length=max(len(p) for p, _ in rows + warm),
        max_generated_length=max(n for _, n in rows),
        num_requests=len(rows),
    )
    attn = model.config._attn_implementation  # the manager switches to a paged kernel; restored on stop
    try:
        with (
            attention_kernels(device),
            model.continuous_batching_context_manager(
                generation_config=gen, continuous_batching_config=config, workload_hints=hints, block=True, timeout=60
            ) as manager,
        ):
            start = time.perf_counter()
            _continuous_pass(manager, warm, "warm", timeout_s)
            _sync(device)
            middle = time.perf_counter()
            counts = _continuous_pass(manager, rows, "timed", timeout_s)
            _sync(device)
            wall = time.perf_counter() - middle
            resolved = manager.continuous_batching_config
            attn_used = model.config._attn_implementation
    finally:
        if model.config._attn_implementation != attn:
            model.set_attn_implementation(attn)
    total = sum(counts)
    return {
        "wall_s": wall,
        "generated_tokens": total,  # the tokens that came back, not the requested lengths
        "requested_tokens": sum(n for _, n in rows),
        "forced_lengths": counts == [n for _, n in rows],
        "tokens_per_s": total / wall,
        "decode_steps": None,  # the manager does not count its forward passes
        "warmup_s": middle - start,
        "attn_implementation": attn_used,
        "num_blocks": resolved.num_blocks,
        "max_requests_per_batch": resolved.max_requests_per_batch,
        "use_cuda_graph": str(getattr(resolved, "use_cuda_graph", None)),
    }


def _continuous_pass(manager, rows, tag: str, timeout_s: float) -> list[int]:
    """Submit ``rows`` and wait for them; more than ``timeout_s`` becomes a skip, not a hang."""
    ids = []
    for i, (prompt, n) in enumerate(rows):
        rid = manager.add_request(input_ids=prompt, request_id=f"{tag}-{i}", max_new_tokens=n, eos_token_id=-1)
        if rid is None:
            raise RuntimeError(f"the continuous-batching manager dropped request {tag}-{i}")
        ids.append(rid)
    done: dict[str, int] = {}
    deadline = time.perf_counter() + timeout_s
    while len(done) < len(ids):
        out = manager.get_result(timeout=1.0)
        if out is None:
            if not manager.is_running():
                raise RuntimeError(f"the continuous-batching loop stopped with {len(ids) - len(done)} requests open")
            if time.perf_counter() > deadline:
                raise TimeoutError(f"continuous batching: {len(ids) - len(done)} requests open after the time limit")
            continue
        if out.is_finished():
            if out.error is not None:
                raise RuntimeError(f"continuous batching request {out.request_id} failed: {out.error}")
            done[out.request_id] = len(out.generated_tokens)
    return [done[rid] for rid in ids]


def _generate(model, tok, prompts, new_tokens: int, temperature: float, device, **extra) -> None:
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
        **extra,
    )


def _raw_total(raws: list[dict]) -> dict:
    """One arm's result over the models' shares (run one after the other): sums, and rates of the sums."""
    total = sum(r["generated_tokens"] for r in raws)
    wall = sum(r["wall_s"] for r in raws)
    out = {"wall_s": wall, "generated_tokens": total, "tokens_per_s": total / wall if wall else 0.0, "parts": raws}
    steps = [r.get("decode_steps") for r in raws]
    if raws and all(s is not None for s in steps):
        out["decode_steps"] = sum(steps)
        out["decode_steps_per_s"] = sum(steps) / wall if wall else 0.0
    return out


def unavailable(arm: str, model) -> str | None:
    """Why this transformers cannot run ``arm`` (None when it can), checked once before any timing."""
    import transformers

    version = f"transformers {transformers.__version__}"
    if arm == "static":
        try:
            from transformers import CompileConfig  # noqa: F401
        except ImportError:
            return f"{version} has no CompileConfig (generate's compiled static-cache path)"
    if arm == "continuous":
        try:
            from transformers import ContinuousBatchingConfig  # noqa: F401
            from transformers.generation.continuous_batching.utils import WorkloadHints  # noqa: F401
        except ImportError as e:
            return f"{version} has no continuous batching API ({e})"
        if not hasattr(model, "continuous_batching_context_manager"):
            return f"{version}: {type(model).__name__} has no continuous_batching_context_manager"
    return None


def _run_arm(arm: str, shares, qs, warm_qs, args) -> dict:
    if arm == "generate":
        return _raw_total([run_raw(a, qs, lengths, args.max_batch_size, args.temperature) for a, lengths in shares])
    if arm == "static":
        return _raw_total([run_static(a, qs, lengths, args.max_batch_size, args.temperature) for a, lengths in shares])
    return _raw_total(
        [
            run_continuous(a, qs, lengths, warm_qs, args.max_batch_size, args.temperature, args.continuous_timeout)
            for a, lengths in shares
        ]
    )


_TRIAL_KEY = {"generate": "raw", "static": "static", "continuous": "continuous"}  # where a trial keeps each arm


def one_trial(pairs: dict, long_backend, short_backend, qs, args, arms=("generate",), skipped=None, warm_qs=None):
    """The graph's episodes (per worker kind), then each baseline arm on the same prompts and token counts.

    ``pairs`` maps a worker kind to its (long, short) backends; the baselines run on the models of the
    in-process ``long_backend`` / ``short_backend``. ``skipped`` (arm -> reason) is updated when an
    arm fails, and an arm in it is not run.
    """
    skipped = {} if skipped is None else skipped
    graphs = {}
    for worker, backends in pairs.items():
        graphs[worker] = run_graph(*backends, qs, args)
        print(f"  N={len(qs)} graph {worker}: {graphs[worker]['tokens_per_s']:.0f} tok/s", flush=True)
    per_episode = [g.pop("per_episode") for g in graphs.values()][0]
    if long_backend is short_backend:
        shares = [(long_agent(long_backend), [e["long"] + e["short"] for e in per_episode])]
    else:  # each model generates its own share of the tokens, one after the other
        shares = [
            (long_agent(long_backend), [e["long"] for e in per_episode]),
            (short_agent(short_backend), [e["short"] for e in per_episode]),
        ]
    first = next(iter(graphs.values()))
    trial: dict = {"graph": first}
    speeds: dict[str, float] = {}
    for arm in arms:
        if arm not in skipped:
            try:
                result = _run_arm(arm, shares, qs, warm_qs or qs, args)
            except Exception as e:  # an arm that cannot run here is a result, not a crash
                if isinstance(e, torch.OutOfMemoryError):
                    torch.cuda.empty_cache()
                skipped[arm] = f"failed at N={len(qs)}: {type(e).__name__}: {str(e)[:500]}"
                print(f"  baseline {arm} skipped: {skipped[arm]}", flush=True)
            else:
                print(f"  N={len(qs)} baseline {arm}: {result['tokens_per_s']:.0f} tok/s", flush=True)
                if result["tokens_per_s"] > 0:
                    speeds[arm] = result["tokens_per_s"]
                trial[_TRIAL_KEY[arm]] = result
        if arm in skipped:
            trial[_TRIAL_KEY[arm]] = {"skipped": skipped[arm]}
    if "generate" in speeds:
        raw = trial["raw"]
        mean = [
            run_raw(a, qs, [round(sum(lengths) / len(lengths))] * len(lengths), args.max_batch_size, args.temperature)
            for a, lengths in shares
            if sum(lengths)
        ]
        raw_mean = _raw_total(mean)
        trial["raw_mean_length"] = raw_mean
        trial["ratio"] = first["tokens_per_s"] / raw["tokens_per_s"]
        trial["ratio_mean_length"] = first["tokens_per_s"] / raw_mean["tokens_per_s"]
    for arm, speed in speeds.items():
        trial[f"ratio_vs_{arm}"] = first["tokens_per_s"] / speed
    best = max(speeds, key=speeds.get) if speeds else None
    trial["best_baseline"] = best
    trial["ratio_best"] = first["tokens_per_s"] / speeds[best] if best else None
    for worker, graph in graphs.items():
        trial[f"graph_{worker}"] = graph
        if "generate" in speeds:
            trial[f"ratio_{worker}"] = graph["tokens_per_s"] / speeds["generate"]
        trial[f"ratio_best_{worker}"] = graph["tokens_per_s"] / speeds[best] if best else None
    return trial


def profile_graph(long_backend, short_backend, qs, args) -> dict:
    """One graph pass under ``torch.profiler``: CUDA kernel time per decode step (in-process backends only)."""
    from bench.profiling import profiled

    result, prof = profiled(lambda: run_graph(long_backend, short_backend, qs, args))
    steps = result["decode_steps"]
    out = {
        **prof,
        "profiled_wall_s": result["wall_s"],
        "decode_steps": steps,
        "host_ms_per_step": result["wall_s"] * 1e3 / steps if steps else None,
    }
    if "cuda_kernel_ms" in prof:
        out["cuda_kernel_ms_per_step"] = prof["cuda_kernel_ms"] / steps if steps else None
    return out


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarize(row: dict, trials: list[dict], workers: list[str], arms) -> None:
    """Medians over repeats of each arm's rates, and the ratios; added to ``row`` in place."""
    keys = ["ratio", "ratio_mean_length", *(f"ratio_{w}" for w in workers)]
    keys += ["ratio_best", *(f"ratio_best_{w}" for w in workers), *(f"ratio_vs_{a}" for a in arms)]
    for key in keys:
        values = sorted(t[key] for t in trials if t.get(key) is not None)
        if values:
            row[key] = statistics.median(values)
            row[key.replace("ratio", "ratios", 1)] = values
        else:
            row.pop(key, None)
    row.setdefault("ratio_best", None)
    tokens = {f"graph_{w}": _median([t[f"graph_{w}"]["tokens_per_s"] for t in trials]) for w in workers}
    steps = {f"graph_{w}": _median([t[f"graph_{w}"]["decode_steps_per_s"] for t in trials]) for w in workers}
    baselines = {}
    for arm in arms:
        results = [t[_TRIAL_KEY[arm]] for t in trials]
        measured = [r for r in results if "skipped" not in r]
        if not measured:
            baselines[arm] = {"skipped": results[-1]["skipped"]}
            continue
        speeds = sorted(r["tokens_per_s"] for r in measured)
        baselines[arm] = {"tokens_per_s": statistics.median(speeds), "tokens_per_s_trials": speeds}
        baselines[arm]["decode_steps_per_s"] = _median([r.get("decode_steps_per_s") for r in measured])
        if len(measured) < len(results):
            baselines[arm]["skipped_in_later_trials"] = next(r["skipped"] for r in results if "skipped" in r)
        tokens[arm] = baselines[arm]["tokens_per_s"]
        steps[arm] = baselines[arm]["decode_steps_per_s"]
    ran = {a: b["tokens_per_s"] for a, b in baselines.items() if "skipped" not in b and b["tokens_per_s"] > 0}
    row["baselines"] = baselines
    row["best_baseline"] = max(ran, key=ran.get) if ran else None
    row["summary"] = {"tokens_per_s": tokens, "decode_steps_per_s": steps}


def _fmt(x, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def print_row(row: dict, workers: list[str]) -> None:
    n, graph, summary = row["n"], row["graph"], row["summary"]
    print(f"N={n:4d}  ({graph['mean_turns']:.1f} turns/ep, {graph['statuses']})", flush=True)
    for w in workers:
        ratios = " ".join(f"{r:.2f}" for r in row.get(f"ratios_best_{w}", []))
        print(
            f"  graph {w:14s} {summary['tokens_per_s'][f'graph_{w}']:9.0f} tok/s "
            f"{summary['decode_steps_per_s'][f'graph_{w}']:7.1f} steps/s  "
            f"ratio vs generate {_fmt(row.get(f'ratio_{w}'), '.2f')}  "
            f"vs best ({row['best_baseline']}) {_fmt(row.get(f'ratio_best_{w}'), '.2f')} ({ratios})",
            flush=True,
        )
    for arm, b in row["baselines"].items():
        if "skipped" in b:
            print(f"  {arm:20s} skipped: {b['skipped']}", flush=True)
        else:
            print(
                f"  {arm:20s} {b['tokens_per_s']:9.0f} tok/s {_fmt(b['decode_steps_per_s'], '7.1f')} steps/s",
                flush=True,
            )
    if "ratio_mean_length" in row:
        print(f"  {workers[0]} vs the mean-length bound {row['ratio_mean_length']:.2f}", flush=True)
    for w, prof in row.get("profile", {}).items():
        if "skipped" in prof:
            print(f"  profile {w} skipped: {prof['skipped']}", flush=True)
            continue
        kernel = prof.get("cuda_kernel_ms_per_step")
        where = f"{_fmt(kernel, '.3f')} ms CUDA kernels" if "cuda" not in prof else prof["cuda"]
        print(f"  profile {w}: {_fmt(prof['host_ms_per_step'], '.3f')} ms host per decode step, {where}", flush=True)


def _split(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


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
    p.add_argument("--repeats", type=int, default=3, help="graph/baseline rounds per N; medians are reported")
    p.add_argument(
        "--workers",
        default="process,thread",
        help="comma-separated worker kinds for the graph runs: process (ProcessBackend), thread (TransformersBackend)",
    )
    p.add_argument(
        "--baselines",
        default=",".join(BASELINES),
        help="comma-separated baseline arms: generate (dynamic cache), static (static cache + torch.compile), "
        "continuous (transformers' continuous batching); an arm that cannot run is recorded as skipped",
    )
    p.add_argument(
        "--continuous-timeout",
        type=float,
        default=900.0,
        help="seconds one continuous-batching pass may take before that arm is recorded as skipped",
    )
    p.add_argument(
        "--cuda-graphs",
        choices=("auto", "on", "off", "both"),
        default="auto",
        help="the engine's cuda_graphs: auto = its default (not passed); both = each worker kind twice, "
        "as <kind> (on) and <kind>-eager (off)",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="per N, one profiled graph pass per in-process worker kind: CUDA kernel time per decode step",
    )
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--child-threads", type=int, default=None, help="torch threads in each ProcessBackend child")
    p.add_argument("--out", default=None, help="results JSON (default results/throughput-<device>.json)")
    args = p.parse_args()

    kinds = _split(args.workers)
    if not kinds or any(w not in ("process", "thread") for w in kinds):
        p.error(f"--workers takes process and/or thread, got {args.workers!r}")
    arms = _split(args.baselines)
    if any(a not in BASELINES for a in arms):
        p.error(f"--baselines takes {', '.join(BASELINES)}, got {args.baselines!r}")
    if args.cuda_graphs != "auto" and "cuda_graphs" not in inspect.signature(TransformersBackend.__init__).parameters:
        p.error(
            f"--cuda-graphs {args.cuda_graphs}: this engine's TransformersBackend takes no cuda_graphs keyword; "
            "use --cuda-graphs auto (the default)"
        )
    # (worker name, kind, cuda_graphs keyword or None = not passed)
    on = {"auto": None, "on": True, "off": False, "both": True}[args.cuda_graphs]
    variants = [(w, w, on) for w in kinds]
    if args.cuda_graphs == "both":
        variants = [v for w in kinds for v in ((w, w, True), (f"{w}-eager", w, False))]
    workers = [name for name, _, _ in variants]

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
    kw = {"max_batch_size": args.max_batch_size, "device": args.device}
    in_process: dict = {}

    def in_process_pair(cuda_graphs):
        if cuda_graphs not in in_process:
            extra = {} if cuda_graphs is None else {"cuda_graphs": cuda_graphs}
            lb = TransformersBackend(paths[0], **kw, **extra)
            sb = lb if paths[1] == paths[0] else TransformersBackend(paths[1], **kw, **extra)
            in_process[cuda_graphs] = (lb, sb)
        return in_process[cuda_graphs]

    long_backend, short_backend = in_process_pair(variants[0][2])  # also the baselines' models
    pairs = {}
    for name, kind, cuda_graphs in variants:
        if kind == "thread":
            pairs[name] = in_process_pair(cuda_graphs)
        else:
            extra = {} if cuda_graphs is None else {"cuda_graphs": cuda_graphs}
            lp = ProcessBackend(paths[0], num_threads=args.child_threads, **kw, **extra)
            sp = lp if paths[1] == paths[0] else ProcessBackend(paths[1], num_threads=args.child_threads, **kw, **extra)
            pairs[name] = (lp, sp)
    # the profiler sees this process's kernels only: profile the in-process (thread) workers
    profiled = {name: pairs[name] for name, kind, _ in variants if kind == "thread"} or {
        "thread": (long_backend, short_backend)
    }
    params = sum(x.numel() for b in _distinct(long_backend, short_backend) for x in b.model.parameters())
    skipped = {arm: reason for arm in arms if (reason := unavailable(arm, long_backend.model))}
    for arm, reason in skipped.items():
        print(f"baseline {arm} skipped: {reason}", flush=True)
    for backends in pairs.values():
        run_graph(*backends, make_questions(4, 99), args)  # warm-up (kernels, allocator)
    import transformers

    device = device_name()
    out = args.out or f"results/throughput-{re.sub(r'[^A-Za-z0-9]+', '-', device).strip('-').lower()}.json"
    meta = run_metadata(**{k: v for k, v in vars(args).items()}, model_parameters=params)
    meta["runtime"] = {  # the imported builds (versions above are the installed distributions)
        "device": device,
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "transformers": transformers.__version__,
        "cuda_graphs_keyword": "cuda_graphs" in inspect.signature(TransformersBackend.__init__).parameters,
    }

    def save(rows: list[dict], *, complete: bool) -> None:
        """Write what is measured so far: a run cut short (a time limit) keeps its finished trials."""
        ran = sorted({a for r in rows for a, b in r["baselines"].items() if "skipped" not in b}, key=BASELINES.index)
        baselines = {"requested": arms, "ran": ran, "skipped": {a: skipped[a] for a in arms if a in skipped}}
        result = {"benchmark": "episode_throughput", "device": device, "workers": workers, "baselines": baselines}
        write_json_atomic({**result, "complete": complete, "rows": rows, **meta}, out)

    def make_row(n: int, trials: list[dict]) -> dict:
        row = {"n": n, **trials[0], "trials": trials[1:]}
        summarize(row, trials, workers, arms)
        return row

    rows: list[dict] = []
    for n in [int(x) for x in _split(args.n)]:
        qs, warm_qs = make_questions(n, args.seed), make_questions(n, args.seed + 1)
        trials = []
        for _ in range(args.repeats):
            trials.append(one_trial(pairs, long_backend, short_backend, qs, args, arms, skipped, warm_qs))
            save([*rows, make_row(n, trials)], complete=False)
        row = make_row(n, trials)
        if args.profile:
            row["profile"] = {}
            for name, pair in profiled.items():
                try:
                    row["profile"][name] = profile_graph(*pair, qs, args)
                except Exception as e:  # after the timed repeats: a profiler failure costs this entry only
                    row["profile"][name] = {"skipped": f"{type(e).__name__}: {str(e)[:500]}"}
        rows.append(row)
        print_row(row, workers)
    for b in _distinct(
        long_backend,
        short_backend,
        *(b for pair in in_process.values() for b in pair),
        *(b for pair in pairs.values() for b in pair),
    ):
        b.close()
    save(rows, complete=True)
    print(f"wrote {Path(out)}")


if __name__ == "__main__":
    main()
