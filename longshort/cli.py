"""The ``longshort`` command line.

longshort solve "What is 12 * 34 + 5?" --long-model PATH [--short-model PATH] [--json]
"""

from __future__ import annotations

import json
import sys
from enum import Enum

import typer
from rich.console import Console
from rich.panel import Panel

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Long⊗Short: two models, one efficient reasoner.")
console = Console(stderr=True)


class BackendName(str, Enum):
    hf = "hf"
    openai = "openai"
    vllm = "vllm"


def _fail(message: str, code: int = 2) -> None:
    console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


def print_episode(episode, out: Console) -> None:
    """The conversation, one panel per turn, then the outcome."""
    styles = {"long": "magenta", "short": "cyan"}
    out.print(Panel(episode.question, title="question", border_style="white"))
    for i, turn in enumerate(episode.turns):
        title = f"{i}: {turn.agent} · {turn.num_tokens} tokens · {turn.finish_reason}"
        if turn.error:
            title += f" · {turn.error}"
        out.print(Panel(turn.text or "(empty)", title=title, border_style=styles[turn.agent]))
    t = episode.tokens
    out.print(
        f"[bold]{episode.status}[/] answer=[bold green]{episode.answer}[/] "
        f"tokens long={t.long} short={t.short} total={t.total}"
        + (f"\n[red]{episode.error}[/]" if episode.error else "")
    )


@app.command()
def solve(
    question: str = typer.Argument(..., help="The problem to solve."),
    long_model: str = typer.Option(
        None, "--long-model", help="Path or hub id (hf/vllm) or served model name (openai)."
    ),
    short_model: str = typer.Option(None, "--short-model", help="Defaults to the long model."),
    backend: BackendName = typer.Option(BackendName.hf, "--backend", help="Generation backend."),
    base_url: str = typer.Option(None, "--base-url", help="OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1"),
    api_key: str = typer.Option(None, "--api-key", envvar="OPENAI_API_KEY", help="For --backend openai."),
    max_turns: int = typer.Option(8, min=1),
    max_tokens_per_turn: int = typer.Option(1024, min=1),
    max_total_tokens: int = typer.Option(4096, min=1),
    temperature: float = typer.Option(0.0, min=0.0, help="0 = greedy."),
    seed: int = typer.Option(None, help="Sampling seed (with temperature > 0)."),
    timeout: float = typer.Option(60.0, min=0.1, help="Per-request timeout for --backend openai (s)."),
    as_json: bool = typer.Option(False, "--json", help="Print the Episode as JSON on stdout."),
) -> None:
    """Solve one question with the Long⊗Short reasoner and print the conversation."""
    from longshort.agents.loading import load_agents
    from longshort.graphs import build_reasoner, episode_from_state

    if long_model is None:
        _fail("no model given: pass --long-model PATH|ID (and --short-model for a second model)")
    try:
        long, short = load_agents(
            long_model,
            short_model,
            backend=backend.value,
            temperature=temperature,
            seed=seed,
            base_url=base_url,
            api_key=api_key,
            timeout=timeout,
        )
    except (ValueError, FileNotFoundError, ImportError, OSError) as e:
        _fail(str(e))
    graph = build_reasoner(
        long, short, max_turns=max_turns, max_tokens_per_turn=max_tokens_per_turn, max_total_tokens=max_total_tokens
    )
    try:
        episode = episode_from_state(graph.invoke({"question": question}))
    except (ValueError, TypeError) as e:
        _fail(str(e))
    finally:
        for agent in (long, short):
            agent.backend.close()
    if as_json:
        sys.stdout.write(json.dumps(episode.model_dump(mode="json"), ensure_ascii=False) + "\n")
    else:
        print_episode(episode, Console())


@app.callback()
def main() -> None:
    """Long⊗Short: a long-thought and a short-thought model reason together."""


if __name__ == "__main__":
    app()
