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
