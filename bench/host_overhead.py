"""Host overhead of the transformers backend: a model so small that its forward costs nothing.

    python -m bench.host_overhead                               # this checkout, batch 64,256,512
    python -m bench.host_overhead --against HEAD~3 --repeats 5  # an older engine beside it, interleaved
    python -m bench.host_overhead --profile 256                 # yappi profile of one episode run at N=256

The models are two random 1-layer, 32-wide Qwen2s (long and short) that read the testbed tokenizer,
run with one torch thread on the CPU. A forward of 512 rows costs well under a millisecond, so what
is timed is the engine's Python work per decode step and per row: the host-bound regime that
the 4.3M testbed pair is in on an H200.

A forward hook makes the random models speak the protocol, so episodes are multi-turn as in an
eval: at a prefill the open tag of the model's role is forced; at a decode step the tags are
masked except the closing ones, which get a bias (long: ``</think>`` after about 60 tokens;
short: ``</rethink>`` or, one time in three, ``</answer>``, after about 20). Sampling is at
temperature 0.7 with a seed per episode, as ``longshort eval --temperature 0.7 -k 8`` samples.

Two arms per batch size N (``max_batch_size`` = N):
  decode    N requests of 64 new tokens each through ``generate`` (no stop possible): ms per
            decode step = wall / decode steps;
  episodes  N episodes through the reasoner graph (``abatch``): episodes/s, and the wall time per
            decode step of the long backend.
Each figure is the median of ``--repeats`` runs with the min-max spread. With ``--against REV``
the engine (``agents/`` and ``graphs/``) of git revision REV is checked out into a temporary
worktree and timed in child processes that alternate with this checkout's, so both see the same
machine state.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.abc
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent


class _Redirect(importlib.abc.MetaPathFinder):
    """Import ``longshort.agents`` / ``longshort.graphs`` (and their modules) from another tree."""

    def __init__(self, mapping: dict[str, Path]) -> None:
        self.mapping = mapping

    def find_spec(self, fullname, path=None, target=None):
        for package, root in self.mapping.items():
            if fullname == package:
                return importlib.util.spec_from_file_location(
                    fullname, root / "__init__.py", submodule_search_locations=[str(root)]
                )
            if fullname.startswith(package + "."):
                rest = fullname[len(package) + 1 :].split(".")
                base = root.joinpath(*rest)
                if (base / "__init__.py").exists():
                    return importlib.util.spec_from_file_location(
                        fullname, base / "__init__.py", submodule_search_locations=[str(base)]
                    )
                file = base.with_suffix(".py")
                if file.exists():
                    return importlib.util.spec_from_file_location(fullname, file)
        return None


def _tag_ids(tokenizer) -> dict[str, int]:
    from longshort.protocol import ANSWER_CLOSE, ANSWER_OPEN, RETHINK_CLOSE, THINK_CLOSE, THINK_OPEN

    ids = {}
    for tag in (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE, RETHINK_CLOSE):
        (ids[tag],) = tokenizer.encode(tag, add_special_tokens=False)
    return ids


def protocol_model(tokenizer, role: str, seed: int):
    """A random 1-layer, 32-wide Qwen2 whose logits are nudged into well-formed turns of ``role``."""
    from longshort.protocol import ANSWER_CLOSE, ANSWER_OPEN, RETHINK_CLOSE, THINK_CLOSE, THINK_OPEN
    from longshort.testbed.model import make_model

    model = make_model(tokenizer, hidden_size=32, layers=1, heads=2, kv_heads=2, max_positions=4096, seed=seed)
    model.eval()
    vocab = model.get_input_embeddings().num_embeddings
    tags = _tag_ids(tokenizer)
    t = 0.7  # the sampling temperature the biases are set for
    open_tag = tags[THINK_OPEN if role == "long" else ANSWER_OPEN]
    prefill = torch.full((vocab,), -1e4)
    prefill[open_tag] = 0.0
    decode = torch.zeros(vocab)
    for tag in tags.values():
        decode[tag] = -1e4
    for special in {tokenizer.eos_token_id, tokenizer.pad_token_id} - {None}:
        decode[special] = -1e4
    # p(close) ~ e^(b/T) / (vocab + e^(b/T)) with near-uniform random logits
    if role == "long":
        decode[tags[THINK_CLOSE]] = t * float(torch.log(torch.tensor(vocab / 60.0)))
    else:
        decode[tags[RETHINK_CLOSE]] = t * float(torch.log(torch.tensor(vocab / 20.0 * 2 / 3)))
        decode[tags[ANSWER_CLOSE]] = t * float(torch.log(torch.tensor(vocab / 20.0 / 3)))

    def hook(module, args, kwargs, output):
        ids = kwargs.get("input_ids")
        output.logits[:, -1, :] += prefill if ids is not None and ids.shape[1] > 1 else decode
        return output

    model.register_forward_hook(hook, with_kwargs=True)
    return model


def questions(n: int, seed: int) -> list[str]:
    g = torch.Generator().manual_seed(seed)
    nums = torch.randint(10, 99, (n, 3), generator=g).tolist()
    return [f"A shop has {a} crates of {b} apples and sells {c}. How many apples are left?" for a, b, c in nums]


def child(args) -> None:
    """One engine, every batch size, ``--repeats`` times: JSON lines on stdout."""
    if args.engine:
        root = Path(args.engine)
        sys.meta_path.insert(0, _Redirect({"longshort.agents": root / "agents", "longshort.graphs": root / "graphs"}))
    torch.set_num_threads(1)
    from transformers import AutoTokenizer

    import longshort.agents as engine
    from longshort._async import run_sync
    from longshort.agents import GenerationRequest, TransformersBackend, long_agent, short_agent
    from longshort.graphs import build_reasoner
    from longshort.testbed.checkpoints import checkpoint

    assert not args.engine or Path(engine.__file__).resolve().is_relative_to(Path(args.engine).resolve())
    tokenizer = AutoTokenizer.from_pretrained(checkpoint("base"))
    models = {role: protocol_model(tokenizer, role, seed) for role, seed in (("long", 1), ("short", 2))}

    def backends(n: int):
        kw = {"max_batch_size": n, "device": "cpu"}
        return {role: TransformersBackend(m, tokenizer, **kw) for role, m in models.items()}

    def decode_arm(n: int) -> dict:
        b = backends(n)
        try:
            backend = b["long"]
            prompts = [long_agent(backend).prompt_ids(q) for q in questions(n, 7)]
            reqs = [
                GenerationRequest(prompt_ids=p, max_new_tokens=64, temperature=0.7, seed=i)
                for i, p in enumerate(prompts)
            ]
            backend.generate(reqs[: min(8, n)])  # warm-up
            before = backend.stats["decode_steps"]
            start = time.perf_counter()
            backend.generate(reqs)
            wall = time.perf_counter() - start
            steps = backend.stats["decode_steps"] - before
            return {"ms_per_step": 1e3 * wall / steps, "tokens_per_s": n * 64 / wall}
        finally:
            for x in b.values():
                x.close()

    def episode_arm(n: int, profile: bool = False) -> dict:
        b = backends(n)
        try:
            graph = build_reasoner(
                long_agent(b["long"], temperature=0.7, seed=0),
                short_agent(b["short"], temperature=0.7, seed=0),
                max_turns=8,
                max_tokens_per_turn=256,
                max_total_tokens=1024,
            )
            run_sync(graph.abatch([{"question": q, "id": f"w{i}"} for i, q in enumerate(questions(8, 99))]))
            inputs = [{"question": q, "id": f"e{i}"} for i, q in enumerate(questions(n, 0))]
            before = {r: x.stats for r, x in b.items()}
            if profile:
                import yappi

                yappi.set_clock_type("cpu")
                yappi.start()
            start = time.perf_counter()
            outs = run_sync(graph.abatch(inputs))
            wall = time.perf_counter() - start
            if profile:
                yappi.stop()
                stats = yappi.get_func_stats()
                stats.sort("tsub")
                stats.print_all(
                    out=sys.stderr,
                    columns={0: ("name", 90), 1: ("ncall", 10), 2: ("tsub", 8), 3: ("ttot", 8)},
                )
            delta = {r: {k: x.stats[k] - before[r][k] for k in x.stats} for r, x in b.items()}
            statuses: dict[str, int] = {}
            for o in outs:
                statuses[o["status"]] = statuses.get(o["status"], 0) + 1
            tokens = sum(o["tokens"]["total"] for o in outs)
            steps = delta["long"]["decode_steps"]
            return {
                "episodes_per_s": n / wall,
                "tokens_per_s": tokens / wall,
                "ms_per_long_step": 1e3 * wall / max(1, steps),
                "mean_turns": sum(len(o["turns"]) for o in outs) / n,
                "statuses": statuses,
                # what the episodes sampled, to check that two engines did the same work
                "digest": hash(tuple(tuple(t.token_ids) for o in outs for t in o["turns"])) & 0xFFFFFFFF,
            }
        finally:
            for x in b.values():
                x.close()

    if args.profile:
        print(json.dumps({"profile": episode_arm(args.profile, profile=True)}), flush=True)
        return
    for n in [int(x) for x in args.n.split(",")]:
        print(json.dumps({"n": n, "decode": decode_arm(n), "episodes": episode_arm(n)}), flush=True)


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):8.2f} ({min(values):.2f}-{max(values):.2f})"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", default="64,256,512", help="comma-separated batch sizes (= concurrent requests)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--against", help="a git revision whose engine is timed beside this checkout's")
    p.add_argument("--profile", type=int, default=0, help="yappi profile (CPU clock) of one episode run at this N")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--engine", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child or args.profile:
        child(args)
        return

    with contextlib.ExitStack() as stack:
        engines: dict[str, str | None] = {"this": None}
        if args.against:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="engine-"))
            subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", tmp, args.against], check=True)
            stack.callback(subprocess.run, ["git", "-C", str(REPO), "worktree", "remove", "--force", tmp], check=False)
            engines = {args.against: tmp, "this": None}
        runs: dict[str, list[dict]] = {name: [] for name in engines}
        for i in range(args.repeats):
            for name, root in engines.items():
                cmd = [sys.executable, "-m", "bench.host_overhead", "--child", "--n", args.n]
                if root:
                    cmd += ["--engine", root]
                out = subprocess.run(cmd, cwd=REPO, check=True, capture_output=True, text=True, env=os.environ).stdout
                runs[name].extend(json.loads(line) for line in out.splitlines() if line.startswith("{"))
                print(f"repeat {i + 1}/{args.repeats} {name} done", file=sys.stderr, flush=True)
    print("engine      N   decode ms/step          episodes/s              ms/long step       turns  digest")
    for name, rows in runs.items():
        for n in [int(x) for x in args.n.split(",")]:
            mine = [r for r in rows if r["n"] == n]
            digests = sorted({r["episodes"]["digest"] for r in mine})
            print(
                f"{name:10s} {n:4d} {_spread([r['decode']['ms_per_step'] for r in mine])}"
                f"  {_spread([r['episodes']['episodes_per_s'] for r in mine])}"
                f"  {_spread([r['episodes']['ms_per_long_step'] for r in mine])}"
                f"  {statistics.median(r['episodes']['mean_turns'] for r in mine):5.2f}  {digests}"
            )


if __name__ == "__main__":
    main()
