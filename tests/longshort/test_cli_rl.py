"""``longshort train rl``: options generated from RLConfig, YAML errors named, a run's config.yaml reproduces it."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from longshort.cli import app

runner = CliRunner()


def test_help_lists_the_config_fields():
    result = runner.invoke(app, ["train", "rl", "--help"], env={"COLUMNS": "300"})
    assert result.exit_code == 0
    for flag in ("--schedule", "--length-weight", "--partner-temperature", "--num-generations", "--learning-rate"):
        assert flag in result.output


def test_an_unknown_key_and_a_wrong_type_are_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("schedul: L1\n")
    result = runner.invoke(app, ["train", "rl", "--config", str(bad)])
    assert result.exit_code == 2 and "schedul" in result.output and "schedule" in result.output
    bad.write_text("max_turns: many\n")
    result = runner.invoke(app, ["train", "rl", "--config", str(bad)])
    assert result.exit_code == 2 and "max_turns" in result.output and "int" in result.output


def test_a_bad_schedule_fails_before_training(tmp_path):
    result = runner.invoke(app, ["train", "rl", "--schedule", "L2", "--output-dir", str(tmp_path / "o")])
    assert result.exit_code == 2 and "L2 follows L0" in result.output
    assert not (tmp_path / "o" / "rounds").exists()


def test_a_saved_config_loads_back_equal(tmp_path):
    from longshort.cli.rl import default_config_path
    from longshort.config import load_config, save_config
    from longshort.training.rl.config import RLConfig

    config = load_config(RLConfig, default_config_path(), {"max_steps": 3, "use_cpu": True})
    assert config.max_steps == 3 and config.schedule == "S1,L1"
    again = load_config(RLConfig, save_config(config, tmp_path / "config.yaml"), {})
    assert again.to_dict() == config.to_dict()


def test_the_recipe_is_the_shipped_rl_pairs_run():
    """training/configs/rl/testbed.yaml holds the settings whose S1 ships as longshort-rl."""
    import shlex

    from longshort.cli.rl import default_config_path
    from longshort.config import load_config
    from longshort.testbed.checkpoints import verify
    from longshort.training.rl.config import RLConfig

    pair = verify().sft.get("longshort-rl")
    if pair is None:
        pytest.skip("no shipped longshort-rl pair")
    recipe = load_config(RLConfig, default_config_path(), {})
    args = shlex.split(pair.metrics["run"])
    pairs = zip(args, args[1:], strict=False)
    given = {a.removeprefix("--").replace("-", "_"): v for a, v in pairs if a.startswith("--")}
    for field in ("schedule", "max_steps", "lora_r", "lora_alpha", "format_weight", "learning_rate"):
        assert str(getattr(recipe, field)) == given[field] or float(getattr(recipe, field)) == float(given[field])
    assert pair.short.info["lora_r"] == recipe.lora_r and pair.long.path == "sft/longshort-sft/long"
