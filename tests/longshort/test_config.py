"""``longshort.config``: typed YAML in, errors that name the key and the type, YAML out that loads back equal."""

from __future__ import annotations

import dataclasses
import importlib
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import pytest

from longshort.config import ConfigError, config_dict, from_dict, load_config, option, own_fields, save_config
from longshort.errors import LongShortError


@dataclass
class Run:
    name: str = option(help="a required name")
    steps: int = option(10, help="steps")
    lr: float = option(1e-3, help="learning rate")
    fast: bool = option(False, help="go fast")
    out: Path = option(Path("out"), help="output")
    kind: Literal["a", "b"] = option("a", help="a or b")
    tags: list[str] = option(default_factory=list, help="tags")
    extra: dict = option(default_factory=dict, help="anything")
    limit: int | None = option(None, help="optional")
    key: str = option("EMPTY", help="a credential", secret=True)

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.fast and self.kind == "b":
            raise ConfigError("fast needs kind a", key="fast")


def test_option_keeps_the_help_where_trl_does():
    f = {f.name: f for f in dataclasses.fields(Run)}
    assert f["steps"].metadata["help"] == "steps" and f["steps"].default == 10
    assert f["key"].metadata["secret"] is True
    assert issubclass(ConfigError, LongShortError) and issubclass(ConfigError, ValueError)


def test_values_are_checked_against_the_annotations():
    run = from_dict(Run, {"name": "x", "lr": 1, "out": "o", "tags": ["t"], "limit": None, "extra": {"k": [1]}})
    assert run.lr == 1.0 and isinstance(run.lr, float) and run.out == Path("o") and run.tags == ["t"]
    bad = [
        ({"steps": "ten"}, "steps", "src.yaml: steps must be int, got 'ten' (str)"),
        ({"steps": True}, "steps", "steps must be int, got True (bool)"),
        ({"lr": "fast"}, "lr", "lr must be float, got 'fast' (str)"),
        ({"fast": "yes"}, "fast", "fast must be bool, got 'yes' (str)"),
        ({"kind": "c"}, "kind", "kind must be one of 'a', 'b', got 'c' (str)"),
        ({"tags": "t"}, "tags", "tags must be list of str, got 't' (str)"),
        ({"tags": [1]}, "tags", "tags must be list of str, got [1] (list)"),
        ({"limit": 1.5}, "limit", "limit must be int or null, got 1.5 (float)"),
        ({"extra": [1]}, "extra", "extra must be mapping"),
        ({"out": 3}, "out", "out must be path"),
    ]
    for values, key, message in bad:
        with pytest.raises(ConfigError) as e:
            from_dict(Run, {"name": "x", **values}, source="src.yaml")
        assert e.value.key == key and message in str(e.value), str(e.value)


def test_unknown_and_missing_keys_are_named():
    with pytest.raises(ConfigError, match=r"run.yaml: unknown key 'step' for Run; did you mean steps\?") as e:
        from_dict(Run, {"name": "x", "step": 3}, source="run.yaml")
    assert e.value.key == "step"
    with pytest.raises(ConfigError, match=r"Run needs name \(str\)") as e:
        from_dict(Run, {})
    assert e.value.key == "name" and e.value.missing


def test_post_init_checks_fail_naming_the_field():
    with pytest.raises(ConfigError, match="steps must be >= 1, got 0") as e:  # a plain ValueError: the key is found
        from_dict(Run, {"name": "x", "steps": 0}, source="run.yaml")
    assert e.value.key == "steps" and str(e.value).startswith("run.yaml: ")
    with pytest.raises(ConfigError, match="fast needs kind a") as e:
        from_dict(Run, {"name": "x", "fast": True, "kind": "b"})
    assert e.value.key == "fast"


def test_layers_defaults_then_yaml_then_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("name: from-yaml\nsteps: 7\nlr: 0.5\n")
    run = load_config(Run, path, {"lr": 0.1}, defaults={"steps": 3, "fast": True})
    assert (run.name, run.steps, run.lr, run.fast, run.kind) == ("from-yaml", 7, 0.1, True, "a")
    assert load_config(Run, None, {"name": "n"}).steps == 10
    with pytest.raises(ConfigError, match="not found"):
        load_config(Run, tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(Run, tmp_path / "list.yaml")
    (tmp_path / "bad.yaml").write_text("name: [1\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(Run, tmp_path / "bad.yaml")


def test_saved_config_loads_back_equal_and_keeps_secrets_out(tmp_path):
    run = Run(name="n", steps=3, out=Path("x/y"), kind="b", tags=["a", "b"], extra={"k": 1}, key="sk-secret")
    data = config_dict(run)
    assert (
        data["out"] == "x/y" and "key" not in data and set(data) == {f.name for f in dataclasses.fields(Run)} - {"key"}
    )
    path = save_config(run, tmp_path / "config.yaml")
    assert "sk-secret" not in path.read_text() and path.read_text().startswith("# Run: pass this file back")
    assert load_config(Run, path) == dataclasses.replace(run, key="EMPTY")


def test_a_trl_config_records_its_own_fields_and_the_changed_inherited_ones(tmp_path):
    from longshort.training.coldstart.sft_config import SFTRunConfig

    config = SFTRunConfig(agent="long", data="d", output_dir="o", use_cpu=True, adam_beta2=0.9, hub_token="hf_x")
    data = config_dict(config)
    assert {"agent", "data", "lora", "learning_rate", "max_steps"} <= set(data)  # ours and cli_fields, always
    assert data["adam_beta2"] == 0.9 and "adam_beta1" not in data and "hub_token" not in data
    assert "agent" in own_fields(SFTRunConfig) and "adam_beta1" not in own_fields(SFTRunConfig)
    again = load_config(SFTRunConfig, save_config(config, tmp_path / "c.yaml"))
    assert again == dataclasses.replace(config, hub_token=None)


CONFIGS = [
    "longshort.training.coldstart.sft_config:SFTRunConfig",
    "longshort.training.coldstart.build_config:ColdstartDataConfig",
    "longshort.training.analysis.chunk_config:ChunkConfig",
    "longshort.training.analysis.rollout_config:RolloutConfig",
    "longshort.training.analysis.score_config:ScoreConfig",
    "longshort.training.analysis.report_config:ReportConfig",
    "longshort.training.rl.config:RLConfig",
    "longshort.evals.eval_config:EvalConfig",
    "longshort.testbed.train_config:TestbedTrainConfig",
    "longshort.testbed.build_config:TestbedBuildConfig",
    "longshort.testbed.measure_config:MeasureConfig",
    "longshort.testbed.ship_config:ShipSFTConfig",
]


def _load(spec: str) -> type:
    module, name = spec.split(":")
    return getattr(importlib.import_module(module), name)


@pytest.mark.parametrize("spec", CONFIGS)
def test_every_config_field_has_a_help(spec):
    """Every field a config class declares has a help (TRL's own fields have theirs), and so every option."""
    from longshort.cli._options import cli_fields

    cls = _load(spec)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    declared = [
        n for k in cls.__mro__ if k.__module__.startswith("longshort") for n in k.__dict__.get("__annotations__", {})
    ]
    missing = [n for n in declared if n in fields and not str(fields[n].metadata.get("help", "")).strip()]
    assert not missing, f"{cls.__name__}: no help on {missing}"
    assert all(str(fields[n].metadata.get("help", "")).strip() for n in cli_fields(cls))
    assert cls.__doc__ and cls.__doc__.strip()


def test_config_module_imports_nothing_heavy():
    code = (
        "import sys, longshort.config\n"
        "heavy = [m for m in ('torch', 'transformers', 'trl', 'yaml', 'pydantic') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_a_cli_field_this_library_version_lacks_gets_no_option():
    """``cli_fields`` may name an inherited field that only newer transformers have
    (``activation_checkpointing``: absent in the GPU image's 5.17); the command must still build."""
    from longshort.cli._options import cli_fields, config_command

    @dataclasses.dataclass
    class Old:
        """A config as an older library gives it."""

        cli_fields: ClassVar[tuple[str, ...]] = ("max_steps", "activation_checkpointing")
        max_steps: int = dataclasses.field(default=-1, metadata={"help": "steps"})

    assert cli_fields(Old) == ["max_steps"]
    assert callable(config_command(Old, lambda config: None))
