"""Monte Carlo prefix rollouts: how often does a base model finish correctly from thoughts y1..yi?

For every problem and every prefix y1..yi (i = 0..n), a base model continues the solution N times
as the *short agent* does in the graph: its view is its own prompt, the question, and a long turn
``<think>\\n{kept thoughts}\\n</think>`` (no turn at all for i = 0). Each continuation is graded
with the evaluation graders; a prefix's record holds every outcome, so P_i and its convergence
with N can be read back.

Cost is the point (the paper's analysis took 6-10 hours on 20 A100s). All continuations of a chunk
of prefixes go to the backend at once; the transformers backend batches them and, with
``share_prefills``, computes each prefix once for its N continuations. Results are appended per
prefix to a JSONL file as soon as they are graded: an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from longshort._jsonl import finished_records
from longshort.agents.base import GenerationRequest
from longshort.agents.roles import Agent
from longshort.errors import LongShortError
from longshort.evals.grading import grade_answer
from longshort.protocol import THINK_CLOSE, THINK_OPEN, extract_answer


class AnalysisError(LongShortError):
    """Bad analysis input or state (missing file, corrupt record, inconsistent directory)."""


class AnalysisProblem(BaseModel):
    """A problem with its long CoT chunked into thoughts (one ``chunks.jsonl`` line)."""

    problem_id: str
    question: str
    answer: str | None = None
    thoughts: list[str]
    types: list[str]
    tokens: list[int] = Field(description="length of each thought in tokens of the named tokenizer")
    needed: list[bool] | None = Field(None, description="ground-truth labels, when known (the testbed)")
    grouper: str = ""
    fallback_reason: str | None = None


class RolloutJob(BaseModel):
    """N continuations from one set of kept thoughts (a prefix, or a selection) of one problem."""

    problem_id: str
    key: str = Field(description='"prefix:i" for y1..yi, or e.g. "selected:significance", "random:paper"')
    kept: list[int] = Field(description="1-based indices of the thoughts in the document, in order")


RolloutStatus = Literal["ok", "context", "error"]


class RolloutRecord(RolloutJob):
    """The graded continuations of one job (one ``rollouts.jsonl`` line)."""

    outcomes: str = Field("", description="one character per continuation: 1 right, 0 wrong")
    mean_tokens: float = 0.0
    status: RolloutStatus = "ok"
    errors: int = 0
    detail: str | None = None

    @property
    def correct(self) -> int:
        return self.outcomes.count("1")

    @property
    def total(self) -> int:
        return len(self.outcomes)


def prefix_jobs(problem: AnalysisProblem) -> list[RolloutJob]:
    return [
        RolloutJob(problem_id=problem.problem_id, key=f"prefix:{i}", kept=list(range(1, i + 1)))
        for i in range(len(problem.thoughts) + 1)
    ]


def document(problem: AnalysisProblem, kept: Sequence[int]) -> str:
    """The long turn holding the kept thoughts, as the graph writes it ("" when none are kept)."""
    if not kept:
        return ""
    return f"{THINK_OPEN}\n" + "\n\n".join(problem.thoughts[i - 1] for i in kept) + f"\n{THINK_CLOSE}"


def _seed(seed: int, problem_id: str, key: str, j: int) -> int:
    digest = hashlib.sha256(f"{seed}|{problem_id}|{key}|{j}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def job_requests(
    agent: Agent,
    problem: AnalysisProblem,
    job: RolloutJob,
    n: int,
    *,
    max_new_tokens: int,
    temperature: float,
    seed: int | None,
) -> list[GenerationRequest] | str:
    """The N requests of a job, or why it cannot run (its view does not fit the model's context)."""
    doc = document(problem, job.kept)
    common = {"max_new_tokens": max_new_tokens, "temperature": temperature, "stop": agent.stop}
    backend = agent.backend
    if backend.token_level:
        ids = agent.prompt_ids(problem.question) + (backend.encode(doc) if doc else [])
        limit = getattr(backend, "max_context", None)
        if limit is not None and len(ids) + max_new_tokens > limit:
            return f"view of {len(ids)} tokens + {max_new_tokens} new > context {limit}"
        base = {"prompt_ids": ids}
    else:
        base = {"messages": agent.view_messages(problem.question, doc)}
    return [
        GenerationRequest(**base, **common, seed=None if seed is None else _seed(seed, problem.problem_id, job.key, j))
        for j in range(n)
    ]


def _grade(texts: Sequence[str], gold: str) -> str:
    return "".join("1" if grade_answer(extract_answer(t), gold).correct else "0" for t in texts)


def record_key(row: dict) -> tuple[str, str]:
    return row["problem_id"], row["key"]


def read_records(path: Path) -> dict[tuple[str, str], RolloutRecord]:
    """Finished records of a rollouts file (a torn last line from a killed run is dropped)."""
    rows = finished_records(path, record_key, AnalysisError)
    return {k: RolloutRecord.model_validate(v) for k, v in rows.items()}  # type: ignore[misc]


class RolloutStats(BaseModel):
    jobs: int = 0
    skipped_done: int = 0
    continuations: int = 0
    generated_tokens: int = 0
    seconds: float = 0.0
    statuses: dict[str, int] = Field(default_factory=dict)

    @property
    def rollouts_per_s(self) -> float:
        return self.continuations / self.seconds if self.seconds else 0.0


def run_rollouts(
    agent: Agent,
    problems: Sequence[AnalysisProblem],
    jobs: Sequence[RolloutJob],
    out: Path,
    *,
    n: int,
    max_new_tokens: int = 512,
    temperature: float = 1.0,
    seed: int | None = 0,
    max_requests: int = 4096,
    progress: Callable[[int], None] | None = None,
) -> RolloutStats:
    """Run every job not already in ``out``; append each job's record as soon as it is graded."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    by_id = {p.problem_id: p for p in problems}
    done = read_records(out)
    stats = RolloutStats(jobs=len(jobs))
    pending = []
    for job in jobs:
        if (job.problem_id, job.key) in done:
            stats.skipped_done += 1
        elif job.problem_id not in by_id:
            raise AnalysisError(f"rollout job for unknown problem {job.problem_id!r}")
        else:
            pending.append(job)
    out.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with out.open("a", encoding="utf-8") as f:
        chunk: list[tuple[RolloutJob, list[GenerationRequest]]] = []
        size = 0
        for job in [*pending, None]:
            if job is not None:
                problem = by_id[job.problem_id]
                reqs = job_requests(
                    agent, problem, job, n, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed
                )
                if isinstance(reqs, str):
                    _write(f, RolloutRecord(**job.model_dump(), status="context", detail=reqs), stats)
                    continue
                chunk.append((job, reqs))
                size += len(reqs)
            if chunk and (job is None or size >= max_requests):
                _run_chunk(agent, by_id, chunk, f, stats, progress)
                chunk, size = [], 0
    stats.seconds = time.perf_counter() - start
    return stats


def _run_chunk(agent, by_id, chunk, f, stats: RolloutStats, progress) -> None:
    flat = [r for _, reqs in chunk for r in reqs]
    results = asyncio.run(agent.backend.agenerate(flat)) if flat else []
    at = 0
    for job, reqs in chunk:
        mine = results[at : at + len(reqs)]
        at += len(reqs)
        ok = [r for r in mine if r.error is None]
        gold = by_id[job.problem_id].answer or ""
        record = RolloutRecord(
            **job.model_dump(),
            outcomes=_grade([r.text for r in ok], gold),
            mean_tokens=sum(r.num_tokens for r in ok) / len(ok) if ok else 0.0,
            status="ok" if ok else "error",
            errors=len(mine) - len(ok),
            detail=next((r.error for r in mine if r.error), None),
        )
        stats.continuations += len(ok)
        stats.generated_tokens += sum(r.num_tokens for r in ok)
        _write(f, record, stats)
        if progress is not None:
            progress(1)


def _write(f, record: RolloutRecord, stats: RolloutStats) -> None:
    f.write(record.model_dump_json() + "\n")
    f.flush()
    stats.statuses[record.status] = stats.statuses.get(record.status, 0) + 1
