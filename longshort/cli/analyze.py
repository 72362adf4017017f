"""``longshort analyze chunk|rollout|score|report``: the thought analysis of PAPER.md §1-3.

    longshort analyze chunk --testbed --n 100 --out runs/analysis         # or --input responses.jsonl
    longshort analyze rollout --dir runs/analysis --n-rollouts 128        # base model: the testbed's by default
    longshort analyze score --dir runs/analysis
    longshort analyze report --dir runs/analysis                          # analysis.json + PNGs

Every step reads and writes files in one directory, so each can be re-run or resumed on its own.
"""

from __future__ import annotations

import json
from collections import Counter
from enum import Enum
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from longshort.cli._console import console
from longshort.cli._console import fail as _fail
from longshort.training.analysis.importance import DEFAULT_METRIC

analyze_app = typer.Typer(no_args_is_help=True, help="Thought analysis: chunk, Monte Carlo rollouts, scores, report.")


class GrouperName(str, Enum):
    rule = "rule"
    llm = "llm"
    step = "step"


def _token_counter(tokenizer: str | None):
    """Thought lengths in tokens of a named tokenizer (default: the shipped testbed base's)."""
    from transformers import AutoTokenizer

    from longshort.shipped import default_model

    tok = AutoTokenizer.from_pretrained(tokenizer or default_model("short"))
    return lambda text: len(tok.encode(text, add_special_tokens=False))


def _grouper(name: GrouperName, llm_model: str | None, llm_base_url: str | None, llm_api_key: str, retries: int):
    from longshort.training.analysis.chunking import LLMGrouper, RuleGrouper, StepGrouper

    if name is GrouperName.rule:
        return RuleGrouper()
    if name is GrouperName.step:
        return StepGrouper()
    if not llm_model:
        _fail("--grouper llm needs --llm-model (and --llm-base-url for a local OpenAI-compatible server)")
    try:
        from langchain_openai import ChatOpenAI
    except ImportError:
        _fail("--grouper llm needs langchain-openai: pip install 'longshort[serve]'")
    chat = ChatOpenAI(model=llm_model, base_url=llm_base_url, api_key=llm_api_key, temperature=0.1, timeout=120)
    return LLMGrouper(chat, max_retries=retries)


def _read_responses(path: Path):
    from longshort._jsonl import json_lines
    from longshort.training.analysis.rollouts import AnalysisError

    if not path.exists():
        _fail(f"{path} not found")
    try:
        yield from json_lines(path, AnalysisError)
    except AnalysisError as e:
        _fail(str(e))


@analyze_app.command("chunk")
def chunk(
    out: Path = typer.Option(Path("runs/analysis"), "--out", help="analysis directory"),
    input: Path = typer.Option(None, "--input", help="JSONL of {question, answer, response} (id optional)"),
    testbed: bool = typer.Option(False, "--testbed", help="held-out testbed problems, teacher thoughts, labels"),
    n: int = typer.Option(100, "--n", min=1, help="testbed problems"),
    split: str = typer.Option("test", "--split", help="testbed split: test (held-out analysis) or train (cold start)"),
    seed: int = typer.Option(0, "--seed", min=0),
    grouper: GrouperName = typer.Option(GrouperName.rule, "--grouper", help="how steps become thoughts"),
    llm_model: str = typer.Option(None, "--llm-model", help="chat model for --grouper llm"),
    llm_base_url: str = typer.Option(None, "--llm-base-url"),
    llm_api_key: str = typer.Option("EMPTY", "--llm-api-key", envvar="OPENAI_API_KEY"),
    retries: int = typer.Option(5, "--retries", min=1, help="LLM grouping attempts before the fallback"),
    tokenizer: str = typer.Option(None, "--tokenizer", help="tokenizer that measures thought lengths"),
) -> None:
    """Cut long CoTs into thoughts: chunks.jsonl (one problem per line) and thoughts.jsonl (a table)."""
    from longshort.testbed.sources import testbed_problems
    from longshort.training.analysis.chunking import ChunkingError, chunk_response
    from longshort.training.analysis.report import write_problems
    from longshort.training.analysis.rollouts import AnalysisProblem

    if testbed == (input is not None):
        _fail("give exactly one of --input FILE or --testbed")
    count = _token_counter(tokenizer)
    skipped: Counter[str] = Counter()
    if testbed:
        if split not in ("train", "validation", "test"):
            _fail("--split must be train, validation or test")
        problems = testbed_problems(n, seed, count_tokens=count, split=split)
    else:
        group = _grouper(grouper, llm_model, llm_base_url, llm_api_key, retries)
        problems = []
        for number, row in _read_responses(input):
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
        "testbed": {"split": split, "n": n, "seed": seed} if testbed else None,
    }
    (out / "chunk_report.json").write_text(json.dumps(summary, indent=2) + "\n")
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


_MODEL = typer.Option(None, "--model", help="base model (path or hub id; default: the shipped testbed base)")
_BASE_URL = typer.Option(None, "--base-url", help="an OpenAI-compatible server instead of a local model")
_DEVICE = typer.Option(None, "--device")
_N = typer.Option(32, "--n-rollouts", min=1, help="continuations per prefix (paper: 128 for the analysis)")
_MAX_NEW = typer.Option(512, "--max-new-tokens", min=1)
_BATCH = typer.Option(256, "--max-batch-size", min=1)
_SEED = typer.Option(0, "--seed", min=0)
_DIR = typer.Option(Path("runs/analysis"), "--dir", help="analysis directory (from `analyze chunk`)")


@analyze_app.command("rollout")
def rollout(
    dir: Path = _DIR,
    model: str = _MODEL,
    base_url: str = _BASE_URL,
    device: str = _DEVICE,
    n_rollouts: int = _N,
    max_new_tokens: int = _MAX_NEW,
    max_batch_size: int = _BATCH,
    seed: int = _SEED,
    no_share: bool = typer.Option(False, "--no-share", help="prefill every continuation's prefix on its own"),
) -> None:
    """N continuations of every prefix y1..yi by the base model, graded; resumable (rollouts.jsonl)."""
    from longshort.training.analysis.report import read_problems
    from longshort.training.analysis.rollouts import AnalysisError, prefix_jobs

    try:
        problems = read_problems(dir / "chunks.jsonl")
    except AnalysisError as e:
        _fail(str(e))
    problems = [p for p in problems if p.answer]
    jobs = [j for p in problems for j in prefix_jobs(p)]
    agent = _agent(model, base_url, device, max_batch_size, not no_share)
    stats = _run(agent, problems, jobs, dir / "rollouts.jsonl", n_rollouts, max_new_tokens, seed)
    agent.backend.close()
    summary = {**stats.model_dump(), "rollouts_per_s": stats.rollouts_per_s, "share_prefills": not no_share}
    with (dir / "rollout_runs.jsonl").open("a") as f:
        f.write(json.dumps(summary) + "\n")
    console.print_json(data=summary)


@analyze_app.command("score")
def score(
    dir: Path = _DIR,
    alpha: float = typer.Option(0.05, "--alpha", min=0.0, max=1.0, help="level of the significance variant"),
) -> None:
    """M(yi) under both metrics and each one's selection, for every problem with complete rollouts."""
    from longshort.training.analysis.report import read_problems, score_all, write_scores
    from longshort.training.analysis.rollouts import AnalysisError, read_records

    try:
        problems = read_problems(dir / "chunks.jsonl")
        scored, skipped = score_all(problems, read_records(dir / "rollouts.jsonl"), alpha=alpha)
    except AnalysisError as e:
        _fail(str(e))
    write_scores(scored, dir / "scores.jsonl")
    console.print_json(data={"scored": len(scored), "skipped": skipped})


@analyze_app.command("report")
def report_(
    dir: Path = _DIR,
    out: Path = typer.Option(None, "--out", help="where analysis.json and the PNGs go (default: --dir)"),
    metric: str = typer.Option(DEFAULT_METRIC, "--metric", help="the headline metric: paper or significance"),
    alpha: float = typer.Option(0.05, "--alpha", min=0.0, max=1.0),
    model: str = _MODEL,
    base_url: str = _BASE_URL,
    device: str = _DEVICE,
    n_rollouts: int = typer.Option(None, "--n-rollouts", min=1, help="default: as many as the prefixes had"),
    max_new_tokens: int = _MAX_NEW,
    max_batch_size: int = _BATCH,
    seed: int = _SEED,
) -> None:
    """The functional check (rollouts from the selected thoughts only, and from a random selection of
    the same token budget), then analysis.json with AUROC / precision / recall and the figures."""
    from longshort.training.analysis.importance import METRICS
    from longshort.training.analysis.report import plot, read_problems, report, score_all, selection_jobs, write_report
    from longshort.training.analysis.rollouts import AnalysisError, read_records

    if metric not in METRICS:
        _fail(f"--metric must be one of {', '.join(METRICS)}")
    out = out or dir
    try:
        problems = read_problems(dir / "chunks.jsonl")
        records = read_records(dir / "rollouts.jsonl")
        scored, _ = score_all(problems, records, alpha=alpha)
    except AnalysisError as e:
        _fail(str(e))
    if not scored:
        _fail(f"no problem in {dir} has complete rollouts: run `longshort analyze rollout --dir {dir}` first")
    by_id = {p.problem_id: p for p in problems}
    jobs = [j for s in scored for j in selection_jobs(by_id[s.problem_id], s, seed)]
    n = n_rollouts or max(records[(s.problem_id, "prefix:0")].total for s in scored)
    agent = _agent(model, base_url, device, max_batch_size, True)
    _run(agent, problems, jobs, dir / "rollouts.jsonl", n, max_new_tokens, seed)
    agent.backend.close()
    result = report(problems, read_records(dir / "rollouts.jsonl"), metric=metric, alpha=alpha, seed=seed)  # type: ignore[arg-type]
    out.mkdir(parents=True, exist_ok=True)
    path = write_report(result, out)
    pngs = plot(result, out)
    keys = ("auroc", "auroc_paper", "auroc_significance", "random_auroc", "selection_precision", "selection_recall")
    keys += ("kept_token_frac", "acc_selected", "acc_all", "acc_random_same_budget", "n_problems", "n_thoughts")
    console.print_json(data={k: result.get(k) for k in keys})
    console.print(f"wrote {path} and {', '.join(p.name for p in pngs)}")
