"""Cold-start data from an analysis directory: dialogues and both agents' SFT tables, per source."""

import json

import pytest
from datasets import load_from_disk

from longshort.protocol import parse_turn
from longshort.testbed.rewriter import TestbedRewriter
from longshort.testbed.sources import testbed_problems
from longshort.testbed.tasks import generate_problems
from longshort.training.analysis import report as analysis
from longshort.training.analysis.rollouts import RolloutRecord, prefix_jobs, read_records
from longshort.training.coldstart.build import build_coldstart, selections


@pytest.fixture()
def analysis_dir(tmp_path):
    """Testbed problems whose rollouts succeed exactly from the prefix holding every needed thought."""
    problems = testbed_problems(3, 0, count_tokens=lambda t: len(t.split()))
    analysis.write_problems(problems, tmp_path / "chunks.jsonl")
    with (tmp_path / "rollouts.jsonl").open("w") as f:
        for p in problems:
            last_needed = max(i for i, y in enumerate(p.needed, 1) if y)
            for job in prefix_jobs(p):
                i = len(job.kept)
                right = 16 if i >= last_needed else (8 if any(p.needed[:i]) else 0)
                f.write(RolloutRecord(**job.model_dump(), outcomes="1" * right + "0" * (16 - right)).model_dump_json())
                f.write("\n")
    return tmp_path, problems


def test_sources_select_differently_but_on_the_same_problems(analysis_dir, tiny_tokenizer):
    d, problems = analysis_dir
    rewriter = TestbedRewriter(generate_problems("test", 3, seed=0))
    reports = {}
    for source in ("significance", "paper", "random"):
        out = d / source
        reports[source] = build_coldstart(
            d, out, source=source, rewriter=rewriter, long_tokenizer=tiny_tokenizer, short_tokenizer=tiny_tokenizer
        )
        dialogues = [json.loads(line) for line in (out / "dialogues.jsonl").read_text().splitlines()]
        assert len(dialogues) == reports[source]["dialogues"] == 3
        for dia in dialogues:
            assert all(parse_turn(role, text).ok for role, text in dia["turns"])
        tables = {role: load_from_disk(str(out / role)) for role in ("long", "short")}
        assert {role: len(t) for role, t in tables.items()} == reports[source]["rows"]
        assert min(reports[source]["rows"].values()) >= 3
        assert json.loads((out / "data.json").read_text())["source"] == source
    sig = reports["significance"]["kept_token_frac"]
    assert sig < 0.35 and reports["paper"]["scored"] == reports["random"]["scored"] == 3
    # the metric keeps the needed thoughts; random scores keep something else
    scored, _ = analysis.score_all(problems, read_records(d / "rollouts.jsonl"))
    chosen, _ = selections(problems, scored, "significance")
    rand, _ = selections(problems, scored, "random")
    for p in problems:
        assert all(k for k, y in zip(chosen[p.problem_id], p.needed, strict=True) if y)
    assert chosen != rand
    with pytest.raises(ValueError, match="source"):
        selections(problems, scored, "nope")  # type: ignore[arg-type]
