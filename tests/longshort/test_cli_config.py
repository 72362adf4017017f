"""Commands generated from configs: ``--config FILE.yaml``, options on top, clear errors, reproducible runs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest
import typer
from typer.testing import CliRunner

from longshort.cli import app
from longshort.cli._options import add_config_command
from longshort.config import ConfigError, load_config, option, save_config
from longshort.testbed.train_config import TestbedTrainConfig as TrainConfig  # (not a test class)

runner = CliRunner()


@dataclass
class Toy:
    """A toy command."""

    name: str = option(help="required")
    steps: int = option(10, help="steps")
    rate: float = option(0.5, help="a rate")
    fast: bool = option(False, help="go fast")
    kind: Literal["a", "b"] = option("a", help="a or b")
    tags: list[str] = option(default_factory=lambda: ["x"], help="tags", aliases=("--tag",))
    out: Path | None = option(None, help="a path")
    token: str | None = option(None, help="from the environment", envvar="TOY_TOKEN", secret=True)

    def __post_init__(self) -> None:
        if self.fast and self.steps > 100:
            raise ConfigError(f"steps must be <= 100 when fast, got {self.steps}", key="steps")


def _toy_app(seen: list) -> typer.Typer:
    toy = typer.Typer()
    add_config_command(toy, "run", Toy, seen.append)
    toy.command("other")(lambda: None)  # two commands: `run` stays a sub-command
    return toy


def test_options_come_from_the_fields_with_their_help():
    result = runner.invoke(_toy_app([]), ["run", "--help"], env={"COLUMNS": "200"})
    text = result.output
    for flag in ("--config", "--name", "--steps", "--fast", "--no-fast", "--kind", "--tags", "--tag", "--out"):
        assert flag in text, flag
    assert "go fast" in text and "[default: 10]" in text and "[required]" in text and "TOY_TOKEN" in text


def test_yaml_then_options_given_then_environment_under_the_yaml(tmp_path, monkeypatch):
    seen: list[Toy] = []
    toy = _toy_app(seen)
    path = tmp_path / "toy.yaml"
    path.write_text("name: yaml\nsteps: 7\nrate: 0.25\ntags: [p, q]\ntoken: from-yaml\n")
    result = runner.invoke(toy, ["run", "--config", str(path), "--steps", "3", "--tag", "a,b", "--fast"])
    assert result.exit_code == 0, result.output
    # given options win; the YAML wins over the defaults (rate); options not given never override it
    assert (seen[-1].name, seen[-1].steps, seen[-1].rate, seen[-1].tags, seen[-1].fast) == (
        "yaml",
        3,
        0.25,
        ["a", "b"],
        True,
    )
    monkeypatch.setenv("TOY_TOKEN", "from-env")
    assert runner.invoke(toy, ["run", "--config", str(path)]).exit_code == 0
    assert seen[-1].token == "from-yaml"  # an environment variable is a default: the YAML wins over it
    assert runner.invoke(toy, ["run", "--name", "n"]).exit_code == 0
    assert (seen[-1].token, seen[-1].steps, seen[-1].tags) == ("from-env", 10, ["x"])


@pytest.mark.parametrize(
    "text, message",
    [
        ("name: n\nstpes: 3\n", "unknown key 'stpes' for Toy; did you mean steps?"),
        ("name: n\nsteps: ten\n", "steps must be int, got 'ten' (str)"),
        ("name: n\nkind: c\n", "kind must be one of 'a', 'b', got 'c' (str)"),
        ("name: n\nfast: true\nsteps: 500\n", "steps must be <= 100 when fast, got 500"),
        ("steps: 3\n", "Toy needs name (str): give --name or set name in --config FILE"),
    ],
)
def test_bad_yaml_exits_2_naming_the_key_and_type(tmp_path, text, message):
    path = tmp_path / "toy.yaml"
    path.write_text(text)
    result = runner.invoke(_toy_app([]), ["run", "--config", str(path)])
    assert result.exit_code == 2, result.output
    said = " ".join(result.stderr.split())
    assert f"error: {path}: {message}" in said and "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)


def test_a_missing_config_file_is_a_clear_error(tmp_path):
    result = runner.invoke(_toy_app([]), ["run", "--config", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2 and "not found" in " ".join(result.stderr.split())


@pytest.fixture
def fake_testbed_train(monkeypatch):
    """``testbed train`` that records its config and writes what the real one writes about it."""
    import longshort.testbed.train as train

    seen: list[TrainConfig] = []

    def fake(config):
        seen.append(config)
        out = Path(config.out) / config.model
        out.mkdir(parents=True, exist_ok=True)
        save_config(config, out / "config.yaml")
        return out

    monkeypatch.setattr(train, "train", fake)
    return seen


def test_testbed_train_yaml_override_and_reproduction(tmp_path, fake_testbed_train):
    seen = fake_testbed_train
    path = tmp_path / "train.yaml"
    path.write_text(f"model: base\nout: {tmp_path}\nsteps: 7\nlr: 0.5\n")
    result = runner.invoke(app, ["testbed", "train", "--config", str(path), "--lr", "0.1"])
    assert result.exit_code == 0, result.output
    assert (seen[-1].model, seen[-1].steps, seen[-1].lr, seen[-1].batch_size) == ("base", 7, 0.1, 128)
    saved = tmp_path / "base" / "config.yaml"
    assert runner.invoke(app, ["testbed", "train", "--config", str(saved)]).exit_code == 0
    assert seen[-1] == seen[-2] == load_config(TrainConfig, saved)
    bad = runner.invoke(app, ["testbed", "train", "--model", "base", "--hidden-size", "4"])
    assert bad.exit_code == 2 and "hidden_size must be >= 8, got 4" in " ".join(bad.stderr.split())


def test_testbed_build_takes_the_train_fields_and_its_own(tmp_path):
    text = runner.invoke(app, ["testbed", "build", "--help"], env={"COLUMNS": "200"}).output
    for flag in ("--n-ops", "--heads", "--max-positions", "--lr", "--init", "--assets", "--models", "--eval-n"):
        assert flag in text, flag
    assert "--model " not in text  # build trains every one of --models
    path = tmp_path / "build.yaml"
    path.write_text("models: [teacher]\n")
    result = runner.invoke(app, ["testbed", "build", "--config", str(path)])
    assert result.exit_code == 2 and "models must be a non-empty subset" in " ".join(result.stderr.split())


def test_eval_yaml_errors_and_cross_field_checks(tmp_path):
    path = tmp_path / "eval.yaml"
    path.write_text("benchmarks: [math500]\nk: 4\n")
    result = runner.invoke(app, ["eval", "--config", str(path)])
    assert result.exit_code == 2 and "--temperature > 0" in " ".join(result.stderr.split())
    path.write_text("benchmarks: math500\n")
    result = runner.invoke(app, ["eval", "--config", str(path)])
    assert result.exit_code == 2 and "benchmarks must be list of str, got 'math500' (str)" in " ".join(
        result.stderr.split()
    )
    with pytest.raises(ConfigError) as e:
        load_config(_eval_config(), None, {"benchmarks": ["m"], "k": 2})
    assert e.value.key == "temperature"


def _eval_config():
    from longshort.evals.eval_config import EvalConfig

    return EvalConfig


def test_eval_records_its_config_and_config_yaml_reproduces_it(tmp_path, monkeypatch):
    from longshort.evals import runner as eval_runner
    from longshort.evals.eval_config import EvalConfig

    seen: list = []

    def fake_run_eval(config, **kwargs):
        seen.append(config)
        config.out.mkdir(parents=True, exist_ok=True)
        save_config(config, config.out / "config.yaml")
        (config.out / "results.md").write_text("| table |\n")

    monkeypatch.setattr(eval_runner, "run_eval", fake_run_eval)
    out = tmp_path / "e"
    args = ["eval", "--benchmark", "testbed", "--system", "short-only", "--limit", "2", "--out", str(out)]
    assert runner.invoke(app, [*args, "--no-progress"], env={"OPENAI_API_KEY": "sk-x"}).exit_code == 0
    assert seen[-1].api_key == "sk-x" and "sk-x" not in (out / "config.yaml").read_text()
    assert (
        runner.invoke(app, ["eval", "--config", str(out / "config.yaml")], env={"OPENAI_API_KEY": "sk-x"}).exit_code
        == 0
    )
    assert seen[-1] == seen[-2] and isinstance(seen[-1], EvalConfig) and seen[-1].progress is False


def test_the_cli_starts_without_trl_and_builds_train_sft_on_demand():
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from longshort.cli import app\n"
        "r = CliRunner().invoke(app, ['--help'])\n"
        "assert r.exit_code == 0 and 'train' in r.output\n"
        "heavy = [m for m in ('torch', 'transformers', 'trl') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "r = CliRunner().invoke(app, ['train', 'sft', '--help'])\n"
        "assert r.exit_code == 0 and '--learning-rate' in r.output, r.output\n"
        "assert 'trl' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_eval_help_lists_testbed_and_writes_outside_results():
    """`eval --help` names every benchmark, testbed too; its default output is not the tracked results/."""
    from longshort.evals.eval_config import EvalConfig

    text = " ".join(runner.invoke(app, ["eval", "--help"], env={"COLUMNS": "200"}).output.split())
    assert "testbed" in text and "math500" in text
    out = EvalConfig.__dataclass_fields__["out"].default
    assert out.parts[0] == "runs" and "results" not in out.parts


def test_eval_takes_a_shipped_pair_by_name(tmp_path):
    """`--long-model longshort-rl` alone is the pair (both agents), not its name as a hub id + the base."""
    import json

    from longshort.shipped import shipped_pair

    if shipped_pair("longshort-rl") is None:
        pytest.skip("no shipped longshort-rl pair")
    out = tmp_path / "eval"
    args = ["eval", "--benchmarks", "testbed", "--systems", "longshort", "--limit", "1", "--out", str(out)]
    result = runner.invoke(app, [*args, "--long-model", "longshort-rl"])
    assert result.exit_code == 0, result.output
    items = [json.loads(line) for line in (out / "items.jsonl").read_text().splitlines()]
    assert len(items) == 1 and items[0]["system"] == "longshort"
