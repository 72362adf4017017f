"""``longshort eval``: benchmarks × systems × k samples, resumable, graded, tabled like the paper.

Long runs get killed (preemption, OOM, a closed laptop), so every finished (benchmark, system,
problem, sample) is appended to ``OUT/items.jsonl`` and flushed at once; a re-run of the same
command (or ``longshort eval --config OUT/config.yaml``) reads that file and only generates what is
missing, plus the items whose episode ended in ``backend_error`` (a server's HTTP 500, a question
longer than the model's context): those are retried, and the retry's record, appended later,
replaces the failed one. ``OUT/run.json`` holds the fingerprint (models, backend and server, k,
temperature, token caps, benchmark hashes) and the full config: results of two configs (or of two
servers) never mix in one directory. The summary files (``results.json``/``.md``/``.png``) are
rewritten at the end of each run from everything in ``items.jsonl`` that the current selection covers.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from longshort._async import run_sync
from longshort._jsonl import finished_records
from longshort.config import config_dict, save_config
from longshort.evals import systems
from longshort.evals.benchmarks import BenchmarkItem, benchmark_hash, load_benchmark
from longshort.evals.eval_config import DEFAULT_BASELINE, EvalConfig, server_of
from longshort.evals.grade_file import grade_extracted
from longshort.evals.report import well_formed
from longshort.provenance import run_metadata, write_json_atomic
from longshort.store import TraceStore
from longshort.trace import Episode

ETA = 1.0
SIGMA_UP, SIGMA_DOWN = 3.0, -5.0


class EvalError(ValueError):
    """A bad request or an inconsistent output directory; the message says what to change."""


def aes(acc: float, tokens: float, acc_base: float, tokens_base: float) -> float | None:
    """Accuracy-Efficiency Score (PAPER.md §7) of (acc, tokens) against a baseline.

    AES = η·(L_base − L)/L_base + ς·|(Acc − Acc_base)/Acc_base|, η = 1, ς = 3 if Acc ≥ Acc_base
    else −5: saving tokens is rewarded, losing accuracy punished harder than gaining it is rewarded.
    The score is undefined (``None``) when the baseline has accuracy 0 or uses 0 tokens: the
    relative change would divide by zero, and any finite stand-in would rank systems arbitrarily.
    """
    if acc_base == 0 or tokens_base == 0:
        return None
    sigma = SIGMA_UP if acc >= acc_base else SIGMA_DOWN
    return ETA * (tokens_base - tokens) / tokens_base + sigma * abs((acc - acc_base) / acc_base)


def config_hash(fingerprint: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()


Key = tuple[str, str, str, int]


def read_items(path: Path) -> dict[Key, dict[str, Any]]:
    """Finished records by (benchmark, system, id, sample); a torn last line is cut off the file."""
    return finished_records(path, lambda r: (r["benchmark"], r["system"], r["id"], int(r["sample"])), EvalError)


def drop_backend_errors(done: dict[Key, dict[str, Any]]) -> list[Key]:
    """Remove (and return the keys of) the records whose episode ended in ``backend_error``.

    A backend error says nothing about the system (a server's transient HTTP 500, a dead worker),
    so a resume must run the item again rather than keep it as wrong; the retry's record is
    appended and, being later, replaces the failed one when the file is read back.
    """
    failed = [k for k, r in done.items() if r.get("status") == "backend_error"]
    for k in failed:
        del done[k]
    return failed


def recorded_fingerprint(run: dict[str, Any]) -> dict[str, Any]:
    """The fingerprint in a ``run.json``; one written before the server was part of it takes the
    server from the config saved beside it, so such a directory still resumes on the same server."""
    old = dict(run["fingerprint"])
    if "base_url" not in old:
        saved = run.get("config") or {}
        old["base_url"] = server_of(old.get("backend", saved.get("backend", "")), saved.get("base_url"))
    return old


def check_run_json(out: Path, fingerprint: dict[str, Any], config: dict[str, Any] | None = None) -> None:
    """Refuse to mix configs in one directory; record ours (benchmark hashes accumulate) and the full config."""
    path = out / "run.json"
    if path.exists():
        old = recorded_fingerprint(json.loads(path.read_text(encoding="utf-8")))
        diff = [k for k in fingerprint if k != "benchmarks" and old.get(k) != fingerprint[k]]
        diff += [
            f"benchmark {name} (data changed)"
            for name, h in fingerprint["benchmarks"].items()
            if name in old.get("benchmarks", {}) and old["benchmarks"][name] != h
        ]
        if diff:
            raise EvalError(
                f"{out} holds results of a different config ({', '.join(diff)} differ: "
                f"{ {k: old.get(k) for k in diff if k in old} } there); use another --out"
            )
        fingerprint = {**fingerprint, "benchmarks": {**old.get("benchmarks", {}), **fingerprint["benchmarks"]}}
    record = {"config_hash": config_hash(fingerprint), "fingerprint": fingerprint}
    write_json_atomic(record | ({"config": config} if config is not None else {}), path)


def record(item: BenchmarkItem, system: str, sample: int, episode: Episode) -> dict[str, Any]:
    """One line of items.jsonl: the Episode's outcome and its verdict (not its full transcript)."""
    text = episode.turns[-1].text if episode.turns else None
    t = episode.tokens
    return {
        "benchmark": item.benchmark,
        "system": system,
        "id": item.id,
        "sample": sample,
        "episode_id": episode.id,
        "answer": episode.answer,
        "status": episode.status,
        "error": episode.error,
        "turns": len(episode.turns),
        "tokens": {"long": t.long, "short": t.short, "total": t.total},
        "well_formed": well_formed(episode),
        **grade_extracted(item, episode.answer, text),
    }


def _mean_of(rs: Sequence[dict[str, Any]]) -> Callable[[Callable[[dict[str, Any]], float]], float | None]:
    """``mean(f)`` over ``rs`` (``None`` when there is nothing to average)."""
    return lambda f: sum(f(r) for r in rs) / len(rs) if rs else None


def summarize_rows(records: Sequence[dict[str, Any]], cfg: EvalConfig, n_items: dict[str, int]) -> list[dict]:
    """One row per (benchmark, system): Pass@1 = mean correctness over problems × k samples."""
    rows = []
    for bench in cfg.benchmarks:
        for system in cfg.systems:
            rs = [r for r in records if r["benchmark"] == bench and r["system"] == system]
            mean = _mean_of(rs)
            rows.append(
                {
                    "benchmark": bench,
                    "system": system,
                    "pass_at_1": mean(lambda r: r["correct"]),
                    "mean_tokens": mean(lambda r: r["tokens"]["total"]),
                    "mean_tokens_long": mean(lambda r: r["tokens"]["long"]),
                    "mean_tokens_short": mean(lambda r: r["tokens"]["short"]),
                    "well_formed": mean(lambda r: r["well_formed"]),
                    "mean_turns": mean(lambda r: r["turns"]),
                    "aes": None,
                    "n": n_items[bench],
                    "k": cfg.k,
                }
            )
    if cfg.baseline:
        for row in rows:
            base = next(r for r in rows if r["benchmark"] == row["benchmark"] and r["system"] == cfg.baseline)
            if row["pass_at_1"] is not None and base["pass_at_1"] is not None:
                row["aes"] = aes(row["pass_at_1"], row["mean_tokens"], base["pass_at_1"], base["mean_tokens"])
    return rows


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}"


def markdown_table(rows: list[dict], cfg: EvalConfig) -> str:
    """Table 2's shape: systems as rows, per-benchmark Pass@1 and tokens, then averages and AES.

    The average AES is computed from the average Pass@1 and tokens (as the paper's last columns).
    """
    head = ["System"] + [f"{b} Pass@1" for b in cfg.benchmarks] + [f"{b} tokens" for b in cfg.benchmarks]
    head += ["Avg Pass@1", "Avg tokens", "AES"]
    avg: dict[str, tuple[float, float] | None] = {}
    for system in cfg.systems:
        rs = [r for r in rows if r["system"] == system and r["pass_at_1"] is not None]
        avg[system] = (
            (sum(r["pass_at_1"] for r in rs) / len(rs), sum(r["mean_tokens"] for r in rs) / len(rs)) if rs else None
        )
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for system in cfg.systems:
        by = {r["benchmark"]: r for r in rows if r["system"] == system}
        cells = [system] + [_pct(by[b]["pass_at_1"]) for b in cfg.benchmarks]
        cells += ["—" if by[b]["mean_tokens"] is None else f"{by[b]['mean_tokens']:,.0f}" for b in cfg.benchmarks]
        a, base = avg[system], avg.get(cfg.baseline) if cfg.baseline else None
        score = aes(a[0], a[1], base[0], base[1]) if a and base else None
        cells += [_pct(a[0]) if a else "—", f"{a[1]:,.0f}" if a else "—", "—" if score is None else f"{score:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    k = f", k = {cfg.k} samples (T = {cfg.temperature})" if cfg.k > 1 else ""
    note = f"\nPass@1 in %, tokens = mean generated tokens per problem{k}; AES vs {cfg.baseline or 'none'}.\n"
    return "\n".join(lines) + "\n" + note


def plot(rows: list[dict], path: Path) -> None:
    """Accuracy vs tokens, one marker per (system, benchmark)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    markers = "osD^v<>"
    benches = sorted({r["benchmark"] for r in rows})
    systems_ = list(dict.fromkeys(r["system"] for r in rows))
    for row in rows:
        if row["pass_at_1"] is None:
            continue
        color = f"C{systems_.index(row['system'])}"
        ax.scatter(
            max(row["mean_tokens"], 1),
            100 * row["pass_at_1"],
            color=color,
            marker=markers[benches.index(row["benchmark"]) % len(markers)],
            s=50,
        )
        ax.annotate(
            f"{row['system']} ({row['benchmark']})",
            (max(row["mean_tokens"], 1), 100 * row["pass_at_1"]),
            textcoords="offset points",
            xytext=(5, 3),
            fontsize=7,
        )
    ax.set_xscale("log")
    ax.set_xlabel("mean generated tokens per problem (log)")
    ax.set_ylabel("Pass@1 (%)")
    ax.set_ylim(-2, 102)
    ax.set_title("Accuracy vs tokens")
    fig.tight_layout()
    fig.savefig(path, dpi=120, format="png")
    plt.close(fig)


def _load_agents(cfg: EvalConfig, needed: set[str]):
    """Only the models the pending work needs (a finished resume loads none)."""
    from longshort.agents.loading import load_agents

    long, short = load_agents(
        cfg.long_model,
        cfg.short_model,
        backend=cfg.backend,
        roles=[r for r in ("long", "short") if r in needed],
        temperature=cfg.temperature,
        base_url=cfg.base_url,
        api_key=cfg.api_key,
        timeout=cfg.timeout,
        device=cfg.device,
    )
    return long, short, [a.backend for a in (long, short) if a is not None]


async def _run_system(system: str, long, short, items: list[BenchmarkItem], cfg: EvalConfig, seed: int | None):
    questions, refs = [i.problem for i in items], [i.answer for i in items]
    if system == "longshort":
        return await systems.run_longshort(
            long,
            short,
            questions,
            references=refs,
            max_turns=cfg.max_turns,
            max_tokens_per_turn=cfg.max_tokens_per_turn,
            max_total_tokens=cfg.max_total_tokens,
        )
    agent = long if system == "long-only" else short
    # A solo system gets the whole episode budget in its one turn: same cap as Long⊗Short in total.
    return await systems.run_solo(agent, questions, references=refs, max_new_tokens=cfg.max_total_tokens, seed=seed)


def run_eval(cfg: EvalConfig, *, progress: bool | None = None, say: Callable[[str], None] | None = None) -> dict:
    """Run what is missing in ``cfg.out``, then write results.json/.md/.png from all records."""
    say = say or (lambda msg: None)
    progress = cfg.progress if progress is None else progress
    if cfg.baseline is None and DEFAULT_BASELINE in cfg.systems:
        cfg.baseline = DEFAULT_BASELINE
    cfg.validate()
    out = Path(cfg.out)
    selected: dict[str, list[BenchmarkItem]] = {}
    hashes: dict[str, str] = {}
    for bench in cfg.benchmarks:
        full = load_benchmark(bench, data=cfg.data)  # hash the whole set: a larger --limit can resume
        hashes[bench] = benchmark_hash(full)
        end = None if cfg.limit is None else cfg.offset + cfg.limit
        selected[bench] = full[cfg.offset : end]
    out.mkdir(parents=True, exist_ok=True)
    check_run_json(out, cfg.fingerprint(hashes), config_dict(cfg))
    save_config(cfg, out / "config.yaml")  # `longshort eval --config OUT/config.yaml` re-runs (resumes) this
    items_path = out / "items.jsonl"
    done = read_items(items_path)
    keys = [(b, s, i.id, j) for b, items in selected.items() for s in cfg.systems for i in items for j in range(cfg.k)]
    retried = set(drop_backend_errors(done)) & set(keys)

    todo: list[tuple[str, list[BenchmarkItem]]] = []  # (benchmark, batch of problems with any work left)
    for bench, items in selected.items():
        pending = [i for i in items if any((bench, s, i.id, j) not in done for s in cfg.systems for j in range(cfg.k))]
        todo += [(bench, pending[b : b + cfg.batch_size]) for b in range(0, len(pending), cfg.batch_size)]
    needed = set()
    for bench, batch in todo:
        for s in cfg.systems:
            if any((bench, s, i.id, j) not in done for i in batch for j in range(cfg.k)):
                needed |= {"long", "short"} if s == "longshort" else {"long" if s == "long-only" else "short"}
    total = sum(len(b) for _, b in todo)
    if total:
        retry = f" ({len(retried)} backend_error record(s) retried)" if retried else ""
        say(f"{total} problem(s) to run{retry}, {len(done)} record(s) already in {items_path}")
        long, short, backends = _load_agents(cfg, needed)
        from tqdm.auto import tqdm

        bar = tqdm(total=total, unit="problem", disable=not progress, desc="eval")
        store = TraceStore(cfg.store or out / "traces.sqlite")  # the whole episodes (items.jsonl keeps outcomes)
        try:
            with items_path.open("a", encoding="utf-8") as sink:
                for bench, batch in todo:
                    bar.set_postfix_str(bench)

                    async def one(system: str, sample: int, batch=batch, bench=bench) -> None:
                        work = [i for i in batch if (bench, system, i.id, sample) not in done]
                        if not work:
                            return
                        seed = sample if cfg.temperature > 0 else None
                        episodes = await _run_system(system, long, short, work, cfg, seed)
                        for item, episode in zip(work, episodes, strict=True):
                            row = record(item, system, sample, episode)
                            sink.write(json.dumps(row, ensure_ascii=False) + "\n")
                            done[(bench, system, item.id, sample)] = row
                        sink.flush()
                        os.fsync(sink.fileno())
                        store.append(
                            episodes,
                            run=f"eval/{bench}/{system}",
                            step=sample,
                            source="eval",
                            rewards=[
                                {"em": float(bool(done[(bench, system, i.id, sample)].get("correct")))} for i in work
                            ],
                        )

                    async def all_of_batch() -> None:
                        await asyncio.gather(*(one(s, j) for s in cfg.systems for j in range(cfg.k)))

                    run_sync(all_of_batch())
                    bar.update(len(batch))
        finally:
            bar.close()
            store.close()
            for backend in backends:
                backend.close()

    wanted = [done[k] for k in keys]
    failed = sum(r["status"] == "backend_error" for r in wanted)
    if failed:
        say(f"{failed} item(s) ended in backend_error (see their 'error' in {items_path}); re-run to retry them")
    rows = summarize_rows(wanted, cfg, {b: len(v) for b, v in selected.items()})
    fingerprint = cfg.fingerprint(hashes)
    result = {
        "rows": rows,
        "items": wanted,
        "baseline": cfg.baseline,
        "config_hash": config_hash(fingerprint),
        **run_metadata(**config_dict(cfg), benchmark_hashes=hashes),
    }
    plot(rows, out / "results.png.tmp")
    os.replace(out / "results.png.tmp", out / "results.png")
    tmp = out / "results.md.tmp"
    tmp.write_text(markdown_table(rows, cfg), encoding="utf-8")
    tmp.replace(out / "results.md")
    write_json_atomic(result, out / "results.json")  # last: its presence marks a finished summary
    return result
