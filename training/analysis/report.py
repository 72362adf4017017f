"""Thought analysis end to end: problems in, scored thoughts, selections and a report out.

    chunks.jsonl     AnalysisProblem per problem (from a {question, answer, response} JSONL or the testbed)
    rollouts.jsonl   RolloutRecord per (problem, prefix or selection), appended as graded
    scores.jsonl     per problem: M(yi) under each metric, and the selection of each
    analysis.json    AUROC against ground-truth labels (when known), selection precision/recall,
                     the functional check (the base from the selected thoughts only vs from all,
                     vs a random selection of the same token budget), and the figures' data

The functional check is the one that matters downstream (cold-start data keeps the selected
thoughts): it is measured with the same rollouts, on keys ``selected:<metric>`` and
``random:<metric>``.
"""

from __future__ import annotations

import json
import math
import random
import statistics
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel

from longshort.training.analysis.importance import DEFAULT_METRIC, METRICS, Metric, auroc, select_long, thought_scores
from longshort.training.analysis.rollouts import (
    AnalysisError,
    AnalysisProblem,
    RolloutJob,
    RolloutRecord,
    prefix_jobs,
)

# ------------------------------------------------------------------------------------ problems


def write_problems(problems: Sequence[AnalysisProblem], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(p.model_dump_json() + "\n" for p in problems), encoding="utf-8")
    tmp.replace(path)


def read_problems(path: Path) -> list[AnalysisProblem]:
    if not path.exists():
        raise AnalysisError(f"{path} not found: run `longshort analyze chunk` first")
    from longshort._jsonl import json_lines

    return [AnalysisProblem.model_validate(row) for _, row in json_lines(path, AnalysisError)]


# ------------------------------------------------------------------------------------ scoring


class ProblemScores(BaseModel):
    problem_id: str
    scores: dict[str, list[float]]
    selected: dict[str, list[bool]]


def usable(problem: AnalysisProblem, records: dict[tuple[str, str], RolloutRecord]) -> bool:
    """Every prefix has graded rollouts and the problem has a gold answer."""
    if not problem.answer or not problem.thoughts or sum(problem.tokens) <= 0:
        return False
    recs = [records.get((problem.problem_id, j.key)) for j in prefix_jobs(problem)]
    return all(r is not None and r.status == "ok" and r.total > 0 for r in recs)


def prefix_counts(problem: AnalysisProblem, records, n: int | None = None) -> tuple[list[int], list[int]]:
    """Correct and total rollouts per prefix 0..len(thoughts), from the first ``n`` outcomes."""
    outs = [records[(problem.problem_id, j.key)].outcomes[:n] for j in prefix_jobs(problem)]
    return [o.count("1") for o in outs], [len(o) for o in outs]


def score_problem(problem: AnalysisProblem, records, *, alpha: float = 0.05, n: int | None = None) -> ProblemScores:
    correct, totals = prefix_counts(problem, records, n)
    scores = {m: thought_scores(problem.tokens, correct, totals, metric=m, alpha=alpha) for m in METRICS}  # type: ignore[arg-type]
    return ProblemScores(
        problem_id=problem.problem_id, scores=scores, selected={m: select_long(s) for m, s in scores.items()}
    )


def random_same_budget(problem: AnalysisProblem, budget: int, rng: random.Random) -> list[int]:
    """Thoughts drawn in random order while they fit in ``budget`` tokens, kept in document order."""
    order = list(range(1, len(problem.thoughts) + 1))
    rng.shuffle(order)
    kept, used = [], 0
    for i in order:
        if used + problem.tokens[i - 1] <= budget:
            kept.append(i)
            used += problem.tokens[i - 1]
    return sorted(kept)


def selection_jobs(problem: AnalysisProblem, scored: ProblemScores, seed: int = 0) -> list[RolloutJob]:
    """Rollouts from each metric's selection and from a random selection of the same token budget."""
    jobs = []
    for m in METRICS:
        kept = [i + 1 for i, k in enumerate(scored.selected[m]) if k]
        budget = sum(problem.tokens[i - 1] for i in kept)
        rng = random.Random(f"{seed}|{problem.problem_id}|{m}")
        jobs.append(RolloutJob(problem_id=problem.problem_id, key=f"selected:{m}", kept=kept))
        jobs.append(
            RolloutJob(problem_id=problem.problem_id, key=f"random:{m}", kept=random_same_budget(problem, budget, rng))
        )
    return jobs


def write_scores(scores: Sequence[ProblemScores], path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(s.model_dump_json() + "\n" for s in scores), encoding="utf-8")
    tmp.replace(path)


def score_all(problems, records, *, alpha: float = 0.05) -> tuple[list[ProblemScores], dict[str, int]]:
    """Scores of every usable problem, and counts of the ones left out (and why)."""
    scored, skipped = [], {"no_gold": 0, "incomplete_rollouts": 0}
    for p in problems:
        if not p.answer:
            skipped["no_gold"] += 1
        elif not usable(p, records):
            skipped["incomplete_rollouts"] += 1
        else:
            scored.append(score_problem(p, records, alpha=alpha))
    return scored, skipped


# ------------------------------------------------------------------------------------ report


def _mean(xs: Sequence[float]) -> float:
    return statistics.fmean(xs) if xs else math.nan


def _p(records, problem: AnalysisProblem, key: str) -> float:
    record = records[(problem.problem_id, key)]
    return record.correct / record.total


def _accuracy(problems, records, key: str) -> float:
    recs = [records.get((p.problem_id, key)) for p in problems]
    recs = [r for r in recs if r is not None and r.total]
    return sum(r.correct for r in recs) / sum(r.total for r in recs) if recs else math.nan


def _labels_and_scores(problems, scored: Sequence[ProblemScores], metric: str):
    labels, scores = [], []
    for p, s in zip(problems, scored, strict=True):
        labels += p.needed or []
        scores += s.scores[metric]
    return labels, scores


def _precision_recall(problems, scored, metric: str) -> tuple[float, float]:
    tp = fp = fn = 0
    for p, s in zip(problems, scored, strict=True):
        for needed, kept in zip(p.needed or [], s.selected[metric], strict=True):
            tp += needed and kept
            fp += kept and not needed
            fn += needed and not kept
    return (tp / (tp + fp) if tp + fp else math.nan), (tp / (tp + fn) if tp + fn else math.nan)


def report(
    problems: Sequence[AnalysisProblem],
    records: dict[tuple[str, str], RolloutRecord],
    *,
    metric: Metric = DEFAULT_METRIC,
    alpha: float = 0.05,
    seed: int = 0,
) -> dict:
    """The numbers of ``analysis.json`` (labels-based ones only when every problem has labels)."""
    scored, skipped = score_all(problems, records, alpha=alpha)
    by_id = {s.problem_id: s for s in scored}
    used = [p for p in problems if p.problem_id in by_id]
    if not used:
        raise AnalysisError("no problem has complete rollouts: run `longshort analyze rollout` first")
    scored = [by_id[p.problem_id] for p in used]
    n_max = max(records[(p.problem_id, "prefix:0")].total for p in used)
    out: dict = {
        "metric": metric,
        "alpha": alpha,
        "n_problems": len(used),
        "n_thoughts": sum(len(p.thoughts) for p in used),
        "n_rollouts": n_max,
        "skipped": {**skipped, "chunking_fallbacks": sum(p.fallback_reason is not None for p in problems)},
    }
    total_tokens = sum(sum(p.tokens) for p in used)
    for m in METRICS:
        kept = sum(
            t for p, s in zip(used, scored, strict=True) for t, k in zip(p.tokens, s.selected[m], strict=True) if k
        )
        out[f"kept_token_frac_{m}"] = kept / total_tokens
        out[f"acc_selected_{m}"] = _accuracy(used, records, f"selected:{m}")
        out[f"acc_random_same_budget_{m}"] = _accuracy(used, records, f"random:{m}")
    out["kept_token_frac"] = out[f"kept_token_frac_{metric}"]
    out["acc_selected"] = out[f"acc_selected_{metric}"]
    out["acc_random_same_budget"] = out[f"acc_random_same_budget_{metric}"]
    out["acc_all"] = _mean([_p(records, p, f"prefix:{len(p.thoughts)}") for p in used])
    out["acc_none"] = _mean([_p(records, p, "prefix:0") for p in used])
    out["selected_vs_all"] = out["acc_selected"] / out["acc_all"] if out["acc_all"] else math.nan

    if all(p.needed is not None for p in used):
        rng = random.Random(seed)
        for m in METRICS:
            labels, scores = _labels_and_scores(used, scored, m)
            out[f"auroc_{m}"] = auroc(scores, labels)
            out[f"selection_precision_{m}"], out[f"selection_recall_{m}"] = _precision_recall(used, scored, m)
        labels, _ = _labels_and_scores(used, scored, metric)
        out["random_auroc"] = auroc([rng.random() for _ in labels], labels)
        out["auroc"] = out[f"auroc_{metric}"]
        out["selection_precision"] = out[f"selection_precision_{metric}"]
        out["selection_recall"] = out[f"selection_recall_{metric}"]
        out["needed_token_frac"] = (
            sum(t for p in used for t, y in zip(p.tokens, p.needed or [], strict=True) if y) / total_tokens
        )
        out["convergence"] = convergence(used, records, n_max, alpha=alpha)
    out["figure2"] = accuracy_by_prefix(used, records)
    out["by_type"] = score_by_type(used, scored, metric)
    return out


def convergence(problems, records, n_max: int, *, alpha: float) -> list[dict]:
    """AUROC of each metric when only the first N rollouts of every prefix are used (Figure 3)."""
    rows = []
    ns = sorted({min(n_max, 2**k) for k in range(2, int(math.log2(max(4, n_max))) + 1)} | {n_max})
    for n in ns:
        scored = [score_problem(p, records, alpha=alpha, n=n) for p in problems]
        row: dict = {"n": n}
        for m in METRICS:
            labels, scores = _labels_and_scores(problems, scored, m)
            row[f"auroc_{m}"] = auroc(scores, labels)
        rows.append(row)
    return rows


def accuracy_by_prefix(problems, records) -> list[dict]:
    """Mean accuracy and continuation length from y1..yi, i = 0.. (problems with at least i thoughts)."""
    rows = []
    for i in range(max(len(p.thoughts) for p in problems) + 1):
        recs = [records[(p.problem_id, f"prefix:{i}")] for p in problems if len(p.thoughts) >= i]
        rows.append(
            {
                "thoughts": i,
                "problems": len(recs),
                "accuracy": _mean([r.correct / r.total for r in recs]),
                "mean_tokens": _mean([r.mean_tokens for r in recs]),
            }
        )
    return rows


def score_by_type(problems, scored, metric: str) -> dict[str, dict]:
    acc: dict[str, list[tuple[float, bool]]] = {}
    for p, s in zip(problems, scored, strict=True):
        for t, sc, k in zip(p.types, s.scores[metric], s.selected[metric], strict=True):
            acc.setdefault(t, []).append((sc, k))
    return {
        t: {"n": len(v), "mean_score": _mean([x for x, _ in v]), "kept": _mean([k for _, k in v])}
        for t, v in acc.items()
    }


def plot(result: dict, out: Path) -> list[Path]:
    """Figure 2 (accuracy and length vs kept thoughts), scores by type, Figure 3 (AUROC vs N)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    fig, ax = plt.subplots(figsize=(6, 4))
    rows = [r for r in result["figure2"] if r["problems"] >= max(1, result["n_problems"] // 2)]
    ax.plot([r["thoughts"] for r in rows], [r["accuracy"] for r in rows], "o-", color="C0")
    ax.set_xlabel("thoughts kept (prefix y1..yi)")
    ax.set_ylabel("base accuracy from the prefix", color="C0")
    ax2 = ax.twinx()
    ax2.plot([r["thoughts"] for r in rows], [r["mean_tokens"] for r in rows], "s--", color="C1")
    ax2.set_ylabel("continuation tokens", color="C1")
    ax.set_title("Accuracy and length vs kept thoughts (Figure 2 analogue)")
    fig.tight_layout()
    paths.append(out / "accuracy_by_prefix.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    types = sorted(result["by_type"], key=lambda t: -result["by_type"][t]["mean_score"])
    ax.barh(types, [result["by_type"][t]["mean_score"] for t in types])
    ax.set_xlabel(f"mean M(y) ({result['metric']})")
    ax.set_title("Metric per thought type")
    fig.tight_layout()
    paths.append(out / "score_by_type.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    if result.get("convergence"):
        fig, ax = plt.subplots(figsize=(6, 4))
        for m in METRICS:
            ax.plot(
                [r["n"] for r in result["convergence"]], [r[f"auroc_{m}"] for r in result["convergence"]], "o-", label=m
            )
        ax.axhline(result["random_auroc"], color="grey", ls=":", label="random")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("rollouts per prefix (N)")
        ax.set_ylabel("AUROC vs needed labels")
        ax.legend()
        ax.set_title("Convergence of the estimate (Figure 3 analogue)")
        fig.tight_layout()
        paths.append(out / "auroc_vs_n.png")
        fig.savefig(paths[-1], dpi=120)
        plt.close(fig)
    return paths


def write_report(result: dict, out: Path) -> Path:
    from longshort.provenance import write_json_atomic

    path = out / "analysis.json"
    write_json_atomic(json.loads(json.dumps(result, default=float)), path)
    return path
