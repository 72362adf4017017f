"""`longshort --version` prints the installed distribution's version."""

from importlib.metadata import version

from typer.testing import CliRunner

from longshort.cli import app


def test_version_prints_the_installed_version():
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"longshort {version('longshort')}"


def test_eval_writes_outside_the_tracked_results_by_default():
    from longshort.evals.eval_config import EvalConfig

    assert EvalConfig.__dataclass_fields__["out"].default.parts[0] == "runs"
