"""The CLI's stderr console and its one way to stop with an error (shared by every sub-command)."""

from __future__ import annotations

import typer
from rich.console import Console

console = Console(stderr=True)


def fail(message: str, code: int = 2) -> None:
    """Print ``error: message`` and exit with ``code`` (2: bad input, as typer does for bad options)."""
    console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


def csv_list(value: str) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]`` (comma-separated options)."""
    return [v.strip() for v in value.split(",") if v.strip()]
