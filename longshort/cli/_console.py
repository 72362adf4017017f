"""The CLI's stderr console and its one way to stop with an error (shared by every sub-command)."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.markup import escape

console = Console(stderr=True)


def fail(message: str, code: int = 2) -> None:
    """Print ``error: message`` and exit with ``code`` (2: bad input, as typer does for bad options).

    The message is printed verbatim: escaped, so ``pip install 'longshort[vllm]'`` keeps its
    brackets, and not wrapped, so a long path stays one line that users (and tests) can grep.
    """
    console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    raise typer.Exit(code)


def say(message: str) -> None:
    """Progress line on stderr, dimmed; printed verbatim (brackets in it are text, not markup)."""
    console.print(f"[dim]{escape(message)}[/]", soft_wrap=True)


def csv_list(value: str) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]`` (comma-separated options)."""
    return [v.strip() for v in value.split(",") if v.strip()]
