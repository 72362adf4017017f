"""Monte Carlo prefix rollouts: how often does a base model finish correctly from thoughts y1..yi?

For every problem and every prefix y1..yi (i = 0..n), a base model continues the solution N times
as the *short agent* does in the graph: its view is its own prompt, the question, and a long turn
``<think>\\n{kept thoughts}\\n</think>`` (no turn at all for i = 0). Each continuation is graded
with the evaluation graders; a prefix's record holds every outcome, so P_i and its convergence
with N can be read back.

Cost is the point (the paper's analysis took 6-10 hours on 20 A100s). All continuations of a chunk
of prefixes go to the backend at once; the transformers backend batches them and, with
``share_prefills``, computes each prefix once for its N continuations. Results are appended per
prefix to a JSONL file as soon as that prefix's N continuations are graded, not when the whole
chunk is: a run killed mid-chunk keeps every prefix that was finished, and a resume re-runs only
the missing ones. How a chunk reaches the backend (``_generate_chunk``):

* a backend with its own ``agenerate`` that batches across callers (transformers, in process or
  in a child) gets one call per prefix, all at once: each prefix's N requests arrive together, so
  its prefill is still shared, and the calls still batch with each other;
* a chat backend (an OpenAI-compatible server) gets one call per request, at most its
  ``max_concurrency`` in flight over the whole chunk (one call per prefix would give every prefix
  its own ``max_concurrency``);
* a backend without its own ``agenerate`` (vLLM's offline engine, scripted fakes) gets the chunk in
  one blocking call, which returns nothing before all of it is done: for these the chunk, bounded by
  ``max_requests``, is the unit an interruption loses.
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
from longshort.agents.base import Backend, GenerationRequest, GenerationResult
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


#: jobs sent to the backend together, each with its N requests
Chunk = list[tuple[RolloutJob, list[GenerationRequest]]]


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
    """Run every job not already in ``out``; append each job's record as soon as it is graded.

    A job's record is written once its N continuations are back (not when its chunk is), so an
    interrupted run keeps every finished job and a resume runs only the others.
    """
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
        chunk: Chunk = []
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


def _run_chunk(agent: Agent, by_id, chunk: Chunk, f, stats: RolloutStats, progress) -> None:
    """Generate a chunk and write each job's record the moment its continuations are all back."""

    def finished(job: RolloutJob, results: list[GenerationResult]) -> None:
        record = _record(job, results, by_id[job.problem_id].answer or "")
        stats.continuations += record.total
        stats.generated_tokens += sum(r.num_tokens for r in results if r.error is None)
        _write(f, record, stats)
        if progress is not None:
            progress(1)

    if chunk:
        asyncio.run(_generate_chunk(agent.backend, chunk, finished))


def _record(job: RolloutJob, results: Sequence[GenerationResult], gold: str) -> RolloutRecord:
    ok = [r for r in results if r.error is None]
    return RolloutRecord(
        **job.model_dump(),
        outcomes=_grade([r.text for r in ok], gold),
        mean_tokens=sum(r.num_tokens for r in ok) / len(ok) if ok else 0.0,
        status="ok" if ok else "error",
        errors=len(results) - len(ok),
        detail=next((r.error for r in results if r.error), None),
    )


def _has_own_agenerate(backend: Backend) -> bool:
    """True when the backend overrides ``agenerate``: it can serve concurrent calls without blocking.

    The default runs ``generate`` in a thread; concurrent calls would run several blocking
    generates side by side, which the offline vLLM engine does not allow and which would split the
    one batch it schedules well.
    """
    return type(backend).agenerate is not Backend.agenerate


async def _generate_chunk(backend: Backend, chunk: Chunk, finished: Callable[[RolloutJob, list], None]) -> None:
    """Generate every job of ``chunk``, calling ``finished(job, results)`` as each job completes.

    See the module docstring for the three ways a chunk is sent. An exception (a backend that
    raises, a cancelled run) cancels the calls still running, after the finished jobs were written.
    """
    if not _has_own_agenerate(backend):
        flat = [r for _, reqs in chunk for r in reqs]
        results = await backend.agenerate(flat)
        at = 0
        for job, reqs in chunk:
            finished(job, results[at : at + len(reqs)])
            at += len(reqs)
        return
    per_request = not backend.token_level
    gate = asyncio.Semaphore(int(getattr(backend, "max_concurrency", 16) or 16))

    async def one_request(request: GenerationRequest) -> GenerationResult:
        async with gate:
            return (await backend.agenerate([request]))[0]

    async def one_job(reqs: list[GenerationRequest]) -> list[GenerationResult]:
        if per_request:
            return list(await asyncio.gather(*(one_request(r) for r in reqs)))
        return await backend.agenerate(reqs)

    tasks = {asyncio.ensure_future(one_job(reqs)): job for job, reqs in chunk}
    order = {task: i for i, task in enumerate(tasks)}
    pending = set(tasks)
    try:
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            ready = sorted(done, key=order.__getitem__)  # ties in chunk order
            failed = [t for t in ready if t.cancelled() or t.exception() is not None]
            for task in ready:  # every job that did finish is written before a failure is raised
                if task not in failed:
                    finished(tasks[task], task.result())
            if failed:
                failed[0].result()  # raises that job's exception
    finally:
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


def _write(f, record: RolloutRecord, stats: RolloutStats) -> None:
    f.write(record.model_dump_json() + "\n")
    f.flush()
    stats.statuses[record.status] = stats.statuses.get(record.status, 0) + 1
