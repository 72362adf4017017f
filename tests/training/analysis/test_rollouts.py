"""Monte Carlo prefix rollouts and the analysis report, with a scripted base model."""

import math

import pytest

from longshort.agents import ScriptedBackend, short_agent
from longshort.training.analysis.report import report, score_all, selection_jobs
from longshort.training.analysis.rollouts import (
    AnalysisError,
    AnalysisProblem,
    RolloutJob,
    prefix_jobs,
    read_records,
    run_rollouts,
)


def _problem(pid: str, needed_at: int, n: int = 4, answer: str | None = "42") -> AnalysisProblem:
    thoughts = [f"Thought {i} of {pid}." if i != needed_at else f"KEY 6 * 7 = 42 for {pid}." for i in range(1, n + 1)]
    return AnalysisProblem(
        problem_id=pid,
        question=f"What is 6 * 7 ({pid})?",
        answer=answer,
        thoughts=thoughts,
        types=["step"] * n,
        tokens=[5] * n,
        needed=[i == needed_at for i in range(1, n + 1)],
    )


def _base(tok, **kwargs):
    """Right iff the document holds the KEY thought; the seed decides between two wrong answers."""

    def script(request):
        view = tok.decode(request.prompt_ids)
        if "KEY" in view:
            return "<answer> \\boxed{42} </answer>"
        return f"<answer> \\boxed{{{request.seed % 2}}} </answer>"

    return ScriptedBackend(script, tok, **kwargs)


def test_prefix_accuracy_scores_and_report(tmp_path, tiny_tokenizer):
    backend = _base(tiny_tokenizer)
    agent = short_agent(backend, temperature=1.0)
    problems = [_problem("a", 2), _problem("b", 3)]
    jobs = [j for p in problems for j in prefix_jobs(p)]
    stats = run_rollouts(agent, problems, jobs, tmp_path / "r.jsonl", n=4)
    assert stats.continuations == 4 * 10 and stats.statuses == {"ok": 10}
    records = read_records(tmp_path / "r.jsonl")
    assert [records[("a", f"prefix:{i}")].outcomes for i in range(5)] == ["0000", "0000", "1111", "1111", "1111"]
    assert len({r.seed for r in backend.requests}) == len(backend.requests)  # every continuation its own seed
    # the view is the short agent's: its prompt, the question, then the kept thoughts as a long turn
    view = tiny_tokenizer.decode(backend.requests[2 * 4].prompt_ids)  # prefix:2 of problem a
    assert "Thought 1 of a." in view and "KEY" in view and view.rstrip().endswith("</think>")

    scored, skipped = score_all(problems, records)
    assert skipped == {"no_gold": 0, "incomplete_rollouts": 0}
    assert [s.selected["paper"] for s in scored] == [[True, True, False, False], [True, False, True, False]]
    more = [j for p, s in zip(problems, scored, strict=True) for j in selection_jobs(p, s)]
    run_rollouts(agent, problems, more, tmp_path / "r.jsonl", n=4)
    result = report(problems, read_records(tmp_path / "r.jsonl"))
    assert result["auroc_paper"] == result["auroc_significance"] == 1.0
    assert result["selection_recall"] == 1.0 and result["selection_precision"] == 0.5
    assert result["acc_selected"] == result["acc_all"] == 1.0 and result["acc_none"] == 0.0
    assert result["kept_token_frac"] == 0.5
    assert [r["accuracy"] for r in result["figure2"]] == [0.0, 0.0, 0.5, 1.0, 1.0]
    assert result["convergence"][-1]["n"] == 4


def test_resume_after_a_torn_line_runs_only_what_is_missing(tmp_path, tiny_tokenizer):
    problems = [_problem("a", 2), _problem("b", 3)]
    jobs = [j for p in problems for j in prefix_jobs(p)]
    path = tmp_path / "r.jsonl"
    run_rollouts(short_agent(_base(tiny_tokenizer), temperature=1.0), problems, jobs, path, n=3)
    full = read_records(path)
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:6]) + lines[6][:20])  # killed while writing the 7th record

    again = _base(tiny_tokenizer)
    stats = run_rollouts(short_agent(again, temperature=1.0), problems, jobs, path, n=3)
    assert stats.skipped_done == 6 and len(again.requests) == 3 * 4
    assert read_records(path) == full
    assert len(path.read_text().splitlines()) == 10


def test_bad_input_is_recorded_not_raised(tmp_path, tiny_tokenizer):
    long_problem = _problem("long", 2, n=3)
    long_problem.thoughts[0] = "word " * 800
    problems = [_problem("a", 2), long_problem]
    backend = _base(tiny_tokenizer, max_context=600, fail_on=[0, 1, 2])
    jobs = [j for p in problems for j in prefix_jobs(p)]
    stats = run_rollouts(
        short_agent(backend, temperature=1.0), problems, jobs, tmp_path / "r.jsonl", n=3, max_new_tokens=64
    )
    records = read_records(tmp_path / "r.jsonl")
    assert records[("long", "prefix:1")].status == "context"
    assert "context 600" in records[("long", "prefix:1")].detail
    assert records[("a", "prefix:0")].status == "error" and records[("a", "prefix:0")].errors == 3
    assert stats.statuses["context"] == 3 and stats.statuses["error"] == 1
    scored, skipped = score_all([*problems, _problem("c", 1, answer=None)], records)
    assert scored == [] and skipped == {"no_gold": 1, "incomplete_rollouts": 2}
    with pytest.raises(AnalysisError, match="complete rollouts"):
        report(problems, records)
    with pytest.raises(AnalysisError, match="unknown problem"):
        stray = RolloutJob(problem_id="zz", key="prefix:0", kept=[])
        run_rollouts(short_agent(backend), problems, [stray], tmp_path / "x", n=1)
    with pytest.raises(ValueError, match="n must be"):
        run_rollouts(short_agent(backend), problems, jobs, tmp_path / "x", n=0)


def test_corrupt_middle_line_is_an_error(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"problem_id": "a", "key": "prefix:0", "kept": []}\nnot json\n{"problem_id": "a"}\n')
    with pytest.raises(AnalysisError, match="line 2"):
        read_records(path)


def test_random_scores_give_chance_auroc():
    import random

    from longshort.training.analysis.importance import auroc

    rng = random.Random(0)
    labels = [rng.random() < 0.2 for _ in range(4000)]
    assert math.isclose(auroc([rng.random() for _ in labels], labels), 0.5, abs_tol=0.03)


# ---------------------------------------------------------------- killed mid-chunk (issue 17, case 5)


class Killed(BaseException):
    """The run dies (as a SIGINT or a crash would): not a backend error result, an exception."""


class DyingBackend(ScriptedBackend):
    """A backend with its own ``agenerate`` (as the transformers one) that answers in arrival order
    and dies after ``answered`` requests, while the rest of the chunk is still queued."""

    def __init__(self, tok, answered: int) -> None:
        super().__init__(_base(tok).script, tok)
        self.answered = answered
        self._serial: tuple[object, object] | None = None

    def _serial_lock(self):
        import asyncio

        loop = asyncio.get_running_loop()
        if self._serial is None or self._serial[0] is not loop:  # one lock per asyncio.run (one chunk)
            self._serial = (loop, asyncio.Lock())
        return self._serial[1]

    async def agenerate(self, requests):
        import asyncio

        async with self._serial_lock():
            results = []
            for request in requests:
                if len(self.requests) >= self.answered:
                    raise Killed(f"killed after {self.answered} requests")
                results.append(self._one(request))
                await asyncio.sleep(0)
            return results


def _full_run(tmp_path, tok, problems, jobs, n):
    path = tmp_path / "full.jsonl"
    run_rollouts(short_agent(_base(tok), temperature=1.0), problems, jobs, path, n=n)
    return read_records(path)


def test_a_run_killed_mid_chunk_keeps_every_finished_prefix_and_resumes(tmp_path, tiny_tokenizer):
    problems = [_problem("a", 2), _problem("b", 3)]
    jobs = [j for p in problems for j in prefix_jobs(p)]  # 10 prefixes x 3 = 30 requests, one chunk
    path = tmp_path / "r.jsonl"
    dying = DyingBackend(tiny_tokenizer, answered=20)  # 6 prefixes done, the 7th half done
    with pytest.raises(Killed):
        run_rollouts(short_agent(dying, temperature=1.0), problems, jobs, path, n=3)
    kept = read_records(path)
    assert list(kept) == [(j.problem_id, j.key) for j in jobs[:6]]  # written as they were graded

    again = _base(tiny_tokenizer)
    stats = run_rollouts(short_agent(again, temperature=1.0), problems, jobs, path, n=3)
    assert stats.skipped_done == 6 and len(again.requests) == 4 * 3  # only what was missing
    assert len(path.read_text().splitlines()) == 10  # no duplicates
    assert read_records(path) == _full_run(tmp_path, tiny_tokenizer, problems, jobs, 3)  # same seeds, same outcomes


#: ``python -c`` body: rollouts of two problems through a chat backend on a fake server that answers
#: ``argv[2]`` requests and then kills its own process with SIGKILL (as the OOM killer or a lost
#: lease would: no exception, no cleanup), after which the parent reads what reached the file.
_KILLED_CHAT_RUN = """
import os, signal, sys
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from longshort.agents import short_agent
from longshort.agents.chat import ChatModelBackend
from longshort.training.analysis.rollouts import prefix_jobs, run_rollouts
from tests.training.analysis.test_rollouts import _problem, _reply

class Server(BaseChatModel):
    answered: int
    calls: list = []

    @property
    def _llm_type(self):
        return "dying"

    def _generate(self, messages, stop=None, run_manager=None, **kw):
        raise AssertionError("the rollouts use the async client")

    async def _agenerate(self, messages, stop=None, run_manager=None, **kw):
        if len(self.calls) >= self.answered:
            os.kill(os.getpid(), signal.SIGKILL)
        self.calls.append(kw)
        text = _reply(" ".join(str(m.content) for m in messages), kw["seed"])
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])

problems = [_problem("a", 2), _problem("b", 3)]
jobs = [j for p in problems for j in prefix_jobs(p)]
backend = ChatModelBackend(Server(answered=int(sys.argv[2]), calls=[]), max_concurrency=int(sys.argv[3]))
run_rollouts(short_agent(backend), problems, jobs, __import__("pathlib").Path(sys.argv[1]), n=3)
"""


def _reply(view: str, seed: int) -> str:
    """The scripted base's answer to a chat view (right iff it holds the KEY thought)."""
    return "<answer> \\boxed{42} </answer>" if "KEY" in view else f"<answer> \\boxed{{{seed % 2}}} </answer>"


def _killed_chat_run(path, answered: int, concurrency: int) -> int:
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[3]
    args = [sys.executable, "-c", _KILLED_CHAT_RUN, str(path), str(answered), str(concurrency)]
    return subprocess.run(args, cwd=root, timeout=300, capture_output=True).returncode


def test_a_chat_run_killed_mid_chunk_keeps_every_finished_prefix(tmp_path):
    """The case of the issue: a server answered most of a chunk's requests, then the run was killed."""
    import signal

    problems = [_problem("a", 2), _problem("b", 3)]
    jobs = [j for p in problems for j in prefix_jobs(p)]  # 10 prefixes x 3 = 30 requests, one chunk
    path = tmp_path / "r.jsonl"
    assert _killed_chat_run(path, answered=26, concurrency=1) == -signal.SIGKILL
    assert list(read_records(path)) == [(j.problem_id, j.key) for j in jobs[:8]]  # 26 answers: 8 whole prefixes

    assert _killed_chat_run(path, answered=10**6, concurrency=4) == 0  # the resume
    records = read_records(path)
    assert list(records) == [(j.problem_id, j.key) for j in jobs] and len(path.read_text().splitlines()) == 10
    assert records[("b", "prefix:3")].outcomes == "111" and records[("b", "prefix:2")].outcomes != "111"


def test_chat_rollouts_keep_the_backends_concurrency_over_the_whole_chunk(tmp_path):
    """One call per request under one gate: never more than ``max_concurrency`` requests in flight."""
    import asyncio

    from langchain_core.language_models import BaseChatModel
    from langchain_core.messages import AIMessage
    from langchain_core.outputs import ChatGeneration, ChatResult

    from longshort.agents.chat import ChatModelBackend

    class CountingServer(BaseChatModel):
        now: list = [0]
        peak: list = [0]

        @property
        def _llm_type(self) -> str:
            return "counting"

        def _generate(self, messages, stop=None, run_manager=None, **kw):
            raise AssertionError("the rollouts use the async client")

        async def _agenerate(self, messages, stop=None, run_manager=None, **kw):
            self.now[0] += 1
            self.peak[0] = max(self.peak[0], self.now[0])
            await asyncio.sleep(0.001)
            self.now[0] -= 1
            return ChatResult(generations=[ChatGeneration(message=AIMessage(content="<answer> 1 </answer>"))])

    server = CountingServer(now=[0], peak=[0])
    problems = [_problem("a", 2), _problem("b", 3)]
    jobs = [j for p in problems for j in prefix_jobs(p)]
    stats = run_rollouts(short_agent(ChatModelBackend(server, max_concurrency=3)), problems, jobs, tmp_path / "r", n=4)
    assert stats.statuses == {"ok": 10} and server.peak[0] == 3


def test_transformers_rollouts_still_share_each_prefixs_prefill(tmp_path, tiny_qwen_dir):
    """One call per prefix: its N continuations arrive together and are prefilled once."""
    from longshort.agents.hf import TransformersBackend

    problems = [_problem("a", 2), _problem("b", 3)]
    jobs = [j for p in problems for j in prefix_jobs(p)]
    with TransformersBackend(tiny_qwen_dir, device="cpu", prefix_cache_tokens=0) as backend:
        stats = run_rollouts(short_agent(backend), problems, jobs, tmp_path / "r.jsonl", n=4, max_new_tokens=3)
        assert stats.statuses == {"ok": 10} and backend.stats["shared_prefill_rows"] == 10 * 3
