"""Run ``lint-imports`` (the layer contracts in pyproject.toml) over the package as it installs.

The repo maps top-level folders onto subpackages (``agents/`` is ``longshort.agents``, …) through
setuptools' ``package-dir``. import-linter (grimp) finds a package's modules by walking its
directory, so from the repo it sees only ``longshort/``. This stages the ``.py`` files in the
installed layout (``<tmp>/longshort/agents/…``, from the same ``package-dir`` table) and runs
``lint-imports`` there, which is what a wheel would contain.

    python -m tests.layers          # prints import-linter's report; exit code 0 = every contract kept
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def package_dirs() -> dict[str, Path]:
    """``{"longshort.agents": ROOT / "agents", …}`` from pyproject.toml's ``[tool.setuptools] package-dir``."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return {name: ROOT / folder for name, folder in config["tool"]["setuptools"]["package-dir"].items()}


def stage(dest: Path) -> Path:
    """Copy every package's ``.py`` files to ``dest`` in the installed layout; return ``dest``."""
    mapping = package_dirs()
    for name, folder in sorted(mapping.items()):  # parents first: "longshort" before "longshort.agents"
        target = dest.joinpath(*name.split("."))
        for src in folder.rglob("*.py"):
            rel = src.relative_to(folder)
            # a sub-folder that is itself mapped elsewhere is staged from its own mapping
            if any(f"{name}.{rel.parts[0]}" == other for other in mapping) and len(rel.parts) > 1:
                continue
            out = target / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, out)
    return dest


def lint_imports(staged: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` with the repo's contracts over a staged tree (it is first on the path)."""
    env = {**os.environ, "PYTHONPATH": str(staged)}
    exe = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    return subprocess.run(
        [exe, "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
        cwd=staged,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="longshort-layers-") as tmp:
        result = lint_imports(stage(Path(tmp)))
    sys.stdout.write(result.stdout + result.stderr)
    return result.returncode


if __name__ == "__main__":
    raise SystemExit(main())
