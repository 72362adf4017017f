"""``longshort analyze chunk|rollout|score|report``: the thought analysis of PAPER.md §1-3.

    longshort analyze chunk --testbed --n 100 --out runs/analysis         # or --input responses.jsonl
    longshort analyze rollout --dir runs/analysis --n-rollouts 128        # base model: the testbed's by default
    longshort analyze score --dir runs/analysis
    longshort analyze report --dir runs/analysis                          # analysis.json + PNGs

Every step reads and writes files in one directory, so each can be re-run or resumed on its own.
Each command is ``main(config)`` with its options generated from the config (``ChunkConfig``,
``RolloutConfig``, ``ScoreConfig``, ``ReportConfig`` in training/analysis/*_config.py); each step
writes its config as ``DIR/<step>_config.yaml``, so ``--config DIR/chunk_config.yaml`` repeats it.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from longshort.cli._console import console
from longshort.cli._console import fail as _fail
from longshort.cli._options import add_config_command
from longshort.config import config_dict, save_config
from longshort.training.analysis.chunk_config import ChunkConfig
from longshort.training.analysis.report_config import ReportConfig
from longshort.training.analysis.rollout_config import RolloutConfig
from longshort.training.analysis.score_config import ScoreConfig

__all__ = ["analyze_app", "chunk_main", "report_main", "rollout_main", "score_main"]

analyze_app = typer.Typer(no_args_is_help=True, help="Thought analysis: chunk, Monte Carlo rollouts, scores, report.")


def _token_counter(tokenizer: str | None):
    """Thought lengths in tokens of a named tokenizer (default: the shipped testbed base's)."""
    from transformers import AutoTokenizer

    from longshort.shipped import default_model

    tok = AutoTokenizer.from_pretrained(tokenizer or default_model("short"))
    return lambda text: len(tok.encode(text, add_special_tokens=False))


def _grouper(config: ChunkConfig):
    from longshort.training.analysis.chunking import LLMGrouper, RuleGrouper, StepGrouper

    if config.grouper == "rule":
        return RuleGrouper()
    if config.grouper == "step":
        return StepGrouper()
    try:
        from langchain_openai import ChatOpenAI
    except ImportError:
        _fail("--grouper llm needs langchain-openai: pip install 'longshort[serve]'")
    chat = ChatOpenAI(
        model=config.llm_model, base_url=config.llm_base_url, api_key=config.llm_api_key, temperature=0.1, timeout=120
    )
    return LLMGrouper(chat, max_retries=config.retries)


def _read_responses(path: Path):
    from longshort._jsonl import json_lines
    from longshort.training.analysis.rollouts import AnalysisError

    if not path.exists():
        _fail(f"{path} not found")
    try:
        yield from json_lines(path, AnalysisError)
    except AnalysisError as e:
        _fail(str(e))


def chunk_main(config: ChunkConfig) -> None:
    """Cut long CoTs into thoughts: chunks.jsonl (one problem per line) and thoughts.jsonl (a table)."""
    from longshort.testbed.sources import testbed_problems
    from longshort.training.analysis.chunking import ChunkingError, chunk_response
    from longshort.training.analysis.report import write_problems
    from longshort.training.analysis.rollouts import AnalysisProblem

    out = config.out
    count = _token_counter(config.tokenizer)
    skipped: Counter[str] = Counter()
    if config.testbed:
        problems = testbed_problems(config.n, config.seed, count_tokens=count, split=config.split)
    else:
        assert config.input is not None  # ChunkConfig: exactly one of input and testbed
        group = _grouper(config)
        problems = []
        for number, row in _read_responses(config.input):
            if not isinstance(row, dict) or not isinstance(row.get("question"), str):
                skipped["no_question"] += 1
                continue
            try:
                c = chunk_response(row["question"], str(row.get("response") or ""), group, answer=row.get("answer"))
            except ChunkingError:
                skipped["empty_response"] += 1
                continue
            if not c.answer:
                skipped["no_gold_answer"] += 1  # kept for the table; the rollouts cannot grade it
            problems.append(
                AnalysisProblem(
                    problem_id=str(row.get("id", number)),
                    question=c.question,
                    answer=None if c.answer is None else str(c.answer),
                    thoughts=c.thoughts,
                    types=c.thought_types,
                    tokens=[count(t) for t in c.thoughts],
                    grouper=c.grouper,
                    fallback_reason=c.fallback_reason,
                )
            )
    if not problems:
        _fail(f"no problem to analyze (skipped: {dict(skipped)})")
    out.mkdir(parents=True, exist_ok=True)
    write_problems(problems, out / "chunks.jsonl")
    rows = [  # the columns of chunking.thoughts_table, plus the ground-truth label when known
        {
            "problem_id": p.problem_id,
            "question": p.question,
            "answer": p.answer,
            "index": i + 1,
            "text": text,
            "type": p.types[i],
            "tokens": p.tokens[i],
            "needed": None if p.needed is None else p.needed[i],
        }
        for p in problems
        for i, text in enumerate(p.thoughts)
    ]
    from datasets import Dataset

    Dataset.from_list(rows).to_json(str(out / "thoughts.jsonl"))
    summary = {
        "problems": len(problems),
        "thoughts": len(rows),
        "skipped": dict(skipped),
        "fallbacks": sum(p.fallback_reason is not None for p in problems),
        "testbed": {"split": config.split, "n": config.n, "seed": config.seed} if config.testbed else None,
    }
    (out / "chunk_report.json").write_text(json.dumps({**summary, "config": config_dict(config)}, indent=2) + "\n")
    save_config(config, out / "chunk_config.yaml")
    console.print_json(data=summary)


def _agent(model: str | None, base_url: str | None, device: str | None, max_batch_size: int, share: bool):
    from longshort.agents.loading import load_agents
    from longshort.shipped import default_model

    if base_url:
        options = {"backend": "openai", "base_url": base_url}
    else:  # continuations never extend an earlier request: no prefix cache to keep
        options = dict(device=device, max_batch_size=max_batch_size, share_prefills=share, prefix_cache_tokens=0)
    model = model or ("" if base_url else default_model("short"))
    _, short = load_agents(model, model, roles=("short",), temperature=1.0, **options)
    return short


def _run(agent, problems, jobs, path: Path, n: int, max_new_tokens: int, seed: int):
    from longshort.training.analysis.rollouts import run_rollouts

    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*columns, console=console) as bar:
        task = bar.add_task("rollouts (prefixes)", total=len(jobs))
        return run_rollouts(
            agent,
            problems,
            jobs,
            path,
            n=n,
            max_new_tokens=max_new_tokens,
            seed=seed,
            max_requests=max(n, 2048),
            progress=lambda k: bar.advance(task, k),
        )


def rollout_main(config: RolloutConfig) -> None:
    """N continuations of every prefix y1..yi by the base model, graded; resumable (rollouts.jsonl)."""
    from longshort.training.analysis.report import read_problems
    from longshort.training.analysis.rollouts import AnalysisError, prefix_jobs

    dir = config.dir
    try:
        problems = read_problems(dir / "chunks.jsonl")
    except AnalysisError as e:
        _fail(str(e))
    problems = [p for p in problems if p.answer]
    jobs = [j for p in problems for j in prefix_jobs(p)]
    agent = _agent(config.model, config.base_url, config.device, config.max_batch_size, config.share_prefills)
    stats = _run(agent, problems, jobs, dir / "rollouts.jsonl", config.n_rollouts, config.max_new_tokens, config.seed)
    agent.backend.close()
    summary = {**stats.model_dump(), "rollouts_per_s": stats.rollouts_per_s, "share_prefills": config.share_prefills}
    with (dir / "rollout_runs.jsonl").open("a") as f:
        f.write(json.dumps({**summary, "config": config_dict(config)}) + "\n")
    save_config(config, dir / "rollout_config.yaml")
    console.print_json(data=summary)


def score_main(config: ScoreConfig) -> None:
    """M(yi) under both metrics and each one's selection, for every problem with complete rollouts."""
    from longshort.training.analysis.report import read_problems, score_all, write_scores
    from longshort.training.analysis.rollouts import AnalysisError, read_records

    dir = config.dir
    try:
        problems = read_problems(dir / "chunks.jsonl")
        scored, skipped = score_all(problems, read_records(dir / "rollouts.jsonl"), alpha=config.alpha)
    except AnalysisError as e:
        _fail(str(e))
    write_scores(scored, dir / "scores.jsonl")
    summary = {"scored": len(scored), "skipped": skipped}
    (dir / "score_report.json").write_text(json.dumps({**summary, "config": config_dict(config)}, indent=2) + "\n")
    save_config(config, dir / "score_config.yaml")
    console.print_json(data=summary)


def report_main(config: ReportConfig) -> None:
    """The functional check (rollouts from the selected thoughts only, and from a random selection of
    the same token budget), then analysis.json with AUROC / precision / recall and the figures."""
    from longshort.provenance import run_metadata
    from longshort.training.analysis.report import plot, read_problems, report, score_all, selection_jobs, write_report
    from longshort.training.analysis.rollouts import AnalysisError, read_records

    dir, seed = config.dir, config.seed
    out = config.out or dir
    try:
        problems = read_problems(dir / "chunks.jsonl")
        records = read_records(dir / "rollouts.jsonl")
        scored, _ = score_all(problems, records, alpha=config.alpha)
    except AnalysisError as e:
        _fail(str(e))
    if not scored:
        _fail(f"no problem in {dir} has complete rollouts: run `longshort analyze rollout --dir {dir}` first")
    by_id = {p.problem_id: p for p in problems}
    jobs = [j for s in scored for j in selection_jobs(by_id[s.problem_id], s, seed)]
    n = config.n_rollouts or max(records[(s.problem_id, "prefix:0")].total for s in scored)
    agent = _agent(config.model, config.base_url, config.device, config.max_batch_size, config.share_prefills)
    _run(agent, problems, jobs, dir / "rollouts.jsonl", n, config.max_new_tokens, seed)
    agent.backend.close()
    result = report(problems, read_records(dir / "rollouts.jsonl"), metric=config.metric, alpha=config.alpha, seed=seed)
    out.mkdir(parents=True, exist_ok=True)
    path = write_report({**result, **run_metadata(**config_dict(config))}, out)
    save_config(config, out / "report_config.yaml")
    pngs = plot(result, out)
    keys = ("auroc", "auroc_paper", "auroc_significance", "random_auroc", "selection_precision", "selection_recall")
    keys += ("kept_token_frac", "acc_selected", "acc_all", "acc_random_same_budget", "n_problems", "n_thoughts")
    console.print_json(data={k: result.get(k) for k in keys})
    console.print(f"wrote {path} and {', '.join(p.name for p in pngs)}")


add_config_command(analyze_app, "chunk", ChunkConfig, chunk_main)
add_config_command(analyze_app, "rollout", RolloutConfig, rollout_main)
add_config_command(analyze_app, "score", ScoreConfig, score_main)
add_config_command(analyze_app, "report", ReportConfig, report_main)
