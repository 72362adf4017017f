"""Cold-start data (PAPER.md §5): scored thoughts → Long⊗Short dialogues → per-agent SFT tables.

    analysis dir (chunks.jsonl, rollouts.jsonl)  →  OUT/dialogues.jsonl, OUT/long/, OUT/short/, OUT/data.json

The selection of long thoughts comes from one *source*: the paper's metric, the significance
variant, or random thought scores put through the same selection rule (the paper's Table 6
ablation). Every source uses the same scored problems, so the variants differ only in which
thoughts stay long: same data size, same training.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from longshort.training.analysis.importance import METRICS, select_long
from longshort.training.analysis.report import read_problems, score_all
from longshort.training.analysis.rollouts import AnalysisError, read_records
from longshort.training.coldstart.build_config import Source

SOURCES: tuple[str, ...] = (*METRICS, "random")


def selections(problems, scored, source: Source, seed: int = 0) -> tuple[dict[str, list[bool]], dict[str, list[float]]]:
    """Which thoughts stay long for each scored problem, and the scores behind that choice."""
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    chosen, scores = {}, {}
    for s in scored:
        if source == "random":
            rng = random.Random(f"{seed}|{s.problem_id}")
            scores[s.problem_id] = [rng.random() for _ in s.scores[METRICS[0]]]
            chosen[s.problem_id] = select_long(scores[s.problem_id])
        else:
            scores[s.problem_id] = s.scores[source]
            chosen[s.problem_id] = s.selected[source]
    return chosen, scores


def build_coldstart(
    analysis: Path,
    out: Path,
    *,
    source: Source,
    rewriter,
    long_tokenizer,
    short_tokenizer,
    alpha: float = 0.05,
    seed: int = 0,
    config: Mapping[str, Any] | None = None,
) -> dict:
    """Write the dialogues and both agents' SFT tables; return the data report (also OUT/data.json).

    ``config``: the command's full config (``ColdstartDataConfig``), recorded in data.json.
    """
    from longshort.provenance import run_metadata, write_json_atomic
    from longshort.training.coldstart.compression import compress_all
    from longshort.training.coldstart.sft_data import sft_tables

    problems = read_problems(analysis / "chunks.jsonl")
    scored, skipped = score_all(problems, read_records(analysis / "rollouts.jsonl"), alpha=alpha)
    if not scored:
        raise AnalysisError(f"no problem in {analysis} has complete rollouts: run `longshort analyze rollout` first")
    by_id = {p.problem_id: p for p in problems}
    used = [by_id[s.problem_id] for s in scored]
    chosen, scores = selections(used, scored, source, seed)
    dialogues, dropped = compress_all(used, chosen, rewriter, scores=scores)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "dialogues.jsonl.tmp"
    tmp.write_text("".join(d.model_dump_json() + "\n" for d in dialogues), encoding="utf-8")
    tmp.replace(out / "dialogues.jsonl")
    tables = sft_tables(dialogues, long_tokenizer, short_tokenizer)
    for role, table in tables.items():
        table.save_to_disk(str(out / role))
    report = {
        "source": source,
        "problems": len(problems),
        "scored": len(scored),
        "dialogues": len(dialogues),
        "dropped": dropped,
        "skipped": skipped,
        "rows": {role: len(t) for role, t in tables.items()},
        "kept_token_frac": _kept_fraction(used, chosen),
        "mean_turns": sum(len(d.turns) for d in dialogues) / max(1, len(dialogues)),
        "rewriter": getattr(rewriter, "name", ""),
        **run_metadata(**(config if config is not None else {"analysis": str(analysis), "alpha": alpha, "seed": seed})),
    }
    write_json_atomic(report, out / "data.json")
    return report


def _kept_fraction(problems: Sequence, chosen: dict[str, list[bool]]) -> float:
    kept = sum(t for p in problems for t, k in zip(p.tokens, chosen[p.problem_id], strict=True) if k)
    return kept / max(1, sum(sum(p.tokens) for p in problems))
