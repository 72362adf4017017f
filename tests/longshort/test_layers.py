"""The layer contracts (pyproject.toml ``[tool.importlinter]``) hold, and a back-import breaks them."""

from __future__ import annotations

import pytest

from tests.layers import lint_imports, stage


@pytest.fixture(scope="module")
def staged(tmp_path_factory):
    return stage(tmp_path_factory.mktemp("layers"))


def test_the_package_keeps_every_layer_contract(staged):
    result = lint_imports(staged)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout
    assert "Analyzed" in result.stdout and " 0 files" not in result.stdout


@pytest.mark.parametrize(
    ("module", "planted", "contract"),
    [
        # a graph that reaches for the testbed's checkpoints (as graphs/server.py once did)
        ("graphs/server.py", "from longshort.testbed import checkpoints", "Layers"),
        # evaluation that imports training (as evals/demo.py once did)
        ("evals/runner.py", "from longshort.training.coldstart import sft", "Layers"),
        # the trace schema importing an agent backend
        ("trace.py", "from longshort.agents import base", "Core"),
    ],
)
def test_a_planted_back_import_fails_lint_imports(tmp_path, module, planted, contract):
    staged = stage(tmp_path)
    path = staged / "longshort" / module
    path.write_text(path.read_text(encoding="utf-8") + f"\n{planted}  # planted\n", encoding="utf-8")
    result = lint_imports(staged)
    assert result.returncode != 0
    assert "1 broken" in result.stdout
    broken = [line for line in result.stdout.splitlines() if line.endswith("BROKEN")]
    assert len(broken) == 1 and broken[0].startswith(contract), result.stdout
