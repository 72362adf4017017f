"""``longshort demo``: the paper's comparison on the testbed, offline, on a CPU, in minutes.

On held-out testbed problems it runs (a) long-only — the shipped reasoner alone, (b) short-only —
the shipped base alone, (c) Long⊗Short through the graph with prompting only (reasoner as the
long agent, base as the short agent: the paper's "prompt only, no SFT" row), and (d) the oracle
split's tokens as a reference. (a)-(c) run concurrently so each model's backend batches their
requests together. Then one Long⊗Short row per SFT pair shipped in the same assets folder
(``sft/<name>/``, written by ``longshort testbed ship-sft``, e.g. ``longshort-sft``) and one per
``--pair`` (a ``--pair`` with a shipped pair's name replaces it). Writes ``OUT/demo.json``,
``OUT/episodes.jsonl`` and ``OUT/demo.png`` only when everything has finished (an interrupted demo
leaves nothing that looks complete).
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from pathlib import Path

from longshort._async import run_sync
from longshort.evals.report import SystemRow, summarize
from longshort.provenance import run_metadata, write_json_atomic
from longshort.trace import Episode, Turn, write_jsonl

SYSTEMS = ("long-only", "short-only", "longshort-prompt", "oracle")


def oracle_episodes(problems, tokenizer, seed: int) -> list[Episode]:
    from longshort.protocol import parse_turn
    from longshort.testbed.teachers import oracle_episode

    episodes = []
    for p in problems:
        turns = []
        for role, text in oracle_episode(p, seed):
            ids = list(tokenizer.encode(text, add_special_tokens=False))
            parsed = parse_turn(role, text)
            turns.append(Turn(agent=role, text=text, token_ids=ids, num_tokens=len(ids), kind=parsed.kind))
        answer = parse_turn("short", turns[-1].text).answer
        episodes.append(
            Episode(id=p.id, question=p.question, reference=p.answer, answer=answer, status="answered", turns=turns)
        )
    return episodes


def plot(rows: list[SystemRow], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for row in rows:
        if row.system == "oracle":
            ax.axvline(
                row.mean_tokens, color="gray", linestyle="--", label=f"oracle split ({row.mean_tokens:.0f} tokens)"
            )
        elif row.accuracy is not None:
            ax.scatter(row.mean_tokens, 100 * row.accuracy, s=60)
            ax.annotate(row.system, (row.mean_tokens, 100 * row.accuracy), textcoords="offset points", xytext=(6, 4))
    ax.set_xscale("log")
    ax.set_xlabel("mean generated tokens per problem (log)")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 105)
    ax.set_title("Testbed: accuracy vs tokens")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_demo(
    n: int = 64,
    seed: int = 0,
    out: str | Path = "demo",
    *,
    device: str | None = "cpu",
    checkpoints: Path | None = None,
    max_batch_size: int = 128,
    progress=None,
    pairs: dict[str, tuple[str | Path, str | Path]] | None = None,
    include_shipped: bool = True,
    traces: str | Path | None = None,
) -> dict:
    """Run the four rows on ``n`` held-out test problems drawn with ``seed``; return demo.json.

    ``pairs`` adds one Long⊗Short row per entry, ``{"longshort-sft": (long_dir, short_dir)}``:
    fine-tuned agents (full models or LoRA adapters from ``longshort train sft``). With
    ``include_shipped`` the pairs shipped in the assets folder come first (same-named ``pairs`` win).
    ``traces`` also appends every row's episodes to that trace store (run ``demo/<system>``, source
    ``demo``, an ``em`` reward), once the demo has finished.
    """
    from longshort.agents.loading import close_backends, load_agents
    from longshort.evals.systems import run_longshort, run_solo
    from longshort.testbed.checkpoints import checkpoint, shipped_pairs
    from longshort.testbed.tasks import generate_problems

    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    reasoner_dir, base_dir = checkpoint("reasoner", checkpoints), checkpoint("base", checkpoints)
    pairs = {**(shipped_pairs(checkpoints) if include_shipped else {}), **(pairs or {})}
    from longshort.store import TraceStore

    store = TraceStore(traces) if traces is not None else None  # first: a bad store fails before any load
    problems = generate_problems("test", n, seed=seed)
    questions, golds = [p.question for p in problems], [p.answer for p in problems]
    say = progress or (lambda msg: None)
    say(f"loading the shipped reasoner and base ({device})")
    long, short = load_agents(reasoner_dir, base_dir, device=device, max_batch_size=max_batch_size)
    start = time.perf_counter()
    try:
        say(f"running long-only, short-only and Long⊗Short on {n} held-out problems")

        async def all_systems():
            return await asyncio.gather(
                run_solo(long, questions, references=golds),
                run_solo(short, questions, references=golds, max_new_tokens=512),
                run_longshort(long, short, questions, references=golds),
            )

        long_only, short_only, longshort = run_sync(all_systems())
        oracle = oracle_episodes(problems, long.backend.tokenizer, seed)
        extra = {}
        for name, (long_dir, short_dir) in pairs.items():
            say(f"running {name}")
            extra[name] = _run_pair(long_dir, short_dir, questions, golds, device=device, max_batch_size=max_batch_size)
    finally:
        close_backends([long, short])
    wall = time.perf_counter() - start
    named = dict(zip(SYSTEMS, (long_only, short_only, longshort, oracle), strict=True)) | extra
    rows = [summarize(name, eps, golds) for name, eps in named.items()]
    result = {
        "rows": [r.model_dump() for r in rows],
        "seed": seed,
        "n": n,
        "wall_s": wall,
        **run_metadata(
            n=n,
            seed=seed,
            device=device,
            checkpoints=str(reasoner_dir.parent),
            pairs={name: [str(d) for d in dirs] for name, dirs in pairs.items()},
        ),
    }
    out = Path(out)
    staging = Path(tempfile.mkdtemp(prefix=".demo-", dir=out.parent if out.parent.exists() else None))
    try:
        write_jsonl([ep for eps in named.values() for ep in eps], staging / "episodes.jsonl")
        plot(rows, staging / "demo.png")
        write_json_atomic(result, staging / "demo.json")
        out.mkdir(parents=True, exist_ok=True)
        for name in ("episodes.jsonl", "demo.png", "demo.json"):  # demo.json last: it marks completion
            shutil.move(str(staging / name), out / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if store is not None:
        models = {name: (str(reasoner_dir), str(base_dir)) for name in SYSTEMS}
        models |= {"long-only": (str(reasoner_dir), None), "short-only": (None, str(base_dir))}
        models |= {name: (str(dirs[0]), str(dirs[1])) for name, dirs in pairs.items()}
        with store:
            _store_rows(store, named, golds, models, result["config"])
    return result


def _store_rows(store, named: dict[str, list[Episode]], golds, models, config: dict) -> None:
    """Each system's episodes as one batch, graded (``em``) against the problems' answers."""
    from longshort.evals.grading import grade_answer

    for name, episodes in named.items():
        long_model, short_model = models[name]
        rewards = [{"em": float(grade_answer(ep.answer, g).correct)} for ep, g in zip(episodes, golds, strict=True)]
        store.append(
            episodes,
            run=f"demo/{name}",
            source="demo",
            rewards=rewards,
            long_model=long_model,
            short_model=short_model,
            config=config,
        )


def _run_pair(long_dir, short_dir, questions, golds, *, device, max_batch_size: int) -> list:
    """Long⊗Short episodes with another pair of agents (the SFT or RL rows)."""
    from longshort.agents.loading import close_backends, load_agents
    from longshort.evals.systems import run_longshort

    # a shipped adapter has no tokenizer: its base checkpoint's is used
    long, short = load_agents(long_dir, short_dir, device=device, max_batch_size=max_batch_size)
    try:
        return run_sync(run_longshort(long, short, questions, references=golds))
    finally:
        close_backends([long, short])


def print_table(result: dict, console) -> None:
    from rich.table import Table

    table = Table(
        title=f"Testbed demo: {result['n']} held-out problems (seed {result['seed']}), {result['wall_s']:.0f}s"
    )
    for col in ("system", "accuracy", "tokens", "long", "short", "turns", "well-formed"):
        table.add_column(col, justify="left" if col == "system" else "right")
    for r in result["rows"]:
        acc = "—" if r["accuracy"] is None else f"{100 * r['accuracy']:.1f}%"
        table.add_row(
            r["system"],
            acc,
            f"{r['mean_tokens']:.0f}",
            f"{r['mean_tokens_long']:.0f}",
            f"{r['mean_tokens_short']:.0f}",
            f"{r['mean_turns']:.2f}",
            f"{100 * r['well_formed']:.0f}%",
        )
    console.print(table)
