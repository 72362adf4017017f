"""``longshort solve`` against a local model directory and a real OpenAI-compatible server."""

import json

import pytest
from typer.testing import CliRunner

from longshort.cli import app
from tests.conftest import PROTOCOL_EPISODES

runner = CliRunner()
QUESTION = PROTOCOL_EPISODES[1][0]


def _episode(result) -> dict:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_solve_json_with_a_local_model(protocol_model_dir):
    result = runner.invoke(app, ["solve", QUESTION, "--long-model", str(protocol_model_dir), "--json"])
    ep = _episode(result)
    assert set(ep) >= {"id", "question", "answer", "status", "turns", "tokens"}
    assert ep["status"] == "answered" and ep["answer"] == "413"
    assert set(ep["turns"][0]) >= {"agent", "text", "token_ids", "logprobs", "finish_reason"}
    assert (
        ep["tokens"]["total"]
        == ep["tokens"]["long"] + ep["tokens"]["short"]
        == sum(len(t["token_ids"]) for t in ep["turns"])
    )


def test_solve_prints_the_conversation(protocol_model_dir):
    result = runner.invoke(app, ["solve", QUESTION, "--long-model", str(protocol_model_dir)])
    assert result.exit_code == 0, result.output
    assert "answered" in result.stdout and "413" in result.stdout and "rethink" in result.stdout


def test_solve_against_an_openai_compatible_server(served_protocol_model):
    args = ["solve", QUESTION, "--backend", "openai", "--base-url", served_protocol_model.base_url]
    ep = _episode(runner.invoke(app, [*args, "--long-model", served_protocol_model.model, "--json"]))
    assert ep["status"] == "answered" and ep["answer"] == "413"


def test_clear_errors(tmp_path):
    cases = [
        (["solve", "q", "--backend", "openai"], "needs --long-model"),
        (["solve", "q", "--long-model", str(tmp_path / "missing")], "missing"),
        (["solve", "q", "--backend", "nope", "--long-model", "x"], "nope"),
        (["solve", "q", "--backend", "openai", "--long-model", "x"], "--base-url"),
        (["solve", "q", "--backend", "vllm", "--long-model", "x"], "pip install"),
    ]
    for args, needle in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert needle in result.output, (args, result.output)


def test_empty_question_is_a_clear_error(protocol_model_dir):
    result = runner.invoke(app, ["solve", "  ", "--long-model", str(protocol_model_dir)])
    assert result.exit_code == 2 and "question is empty" in result.output


def test_unreachable_server_is_a_recorded_status():
    args = ["solve", "q", "--backend", "openai", "--base-url", "http://127.0.0.1:9/v1", "--long-model", "m"]
    ep = _episode(runner.invoke(app, [*args, "--timeout", "2", "--json"]))
    assert ep["status"] == "backend_error" and "127.0.0.1:9" in ep["error"]


def test_solve_defaults_to_the_shipped_testbed_pair():
    from longshort.testbed.tasks import generate_problems

    problem = generate_problems("test", 1, seed=7)[0]
    ep = _episode(runner.invoke(app, ["solve", problem.question, "--json"]))
    assert ep["status"] == "answered" and ep["answer"] is not None
    assert [t["agent"] for t in ep["turns"]][:2] == ["long", "short"]
    assert "testbed/reasoner" in ep["turns"][0]["model_id"] and "testbed/base" in ep["turns"][1]["model_id"]


def test_errors_print_verbatim_brackets_included():
    """Rich markup would eat ``[vllm]``; errors are escaped and not re-wrapped."""
    from longshort.agents.vllm import is_vllm_available

    if is_vllm_available():
        pytest.skip("vLLM is installed here")
    result = CliRunner().invoke(app, ["solve", "What is 1 + 1?", "--backend", "vllm", "--long-model", "x"])
    assert result.exit_code == 2
    assert "pip install 'longshort[vllm]'" in result.output
