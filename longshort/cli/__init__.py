"""The ``longshort`` command line.

longshort solve "What is 12 * 34 + 5?" --long-model PATH [--short-model PATH] [--json]
longshort eval --benchmarks testbed --limit 100 --out runs/eval     # --config runs/eval/config.yaml: the same run

``solve``, ``demo`` and ``grade`` declare their options here; every other command is ``main(config)``
with its options generated from its config dataclass (``longshort.cli._options``), ``--config
FILE.yaml`` included.
"""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path

import typer
from rich.console import Console
from rich.panel import Panel

from longshort.cli._console import console, csv_list, say
from longshort.cli._console import fail as _fail
from longshort.cli._options import add_config_command
from longshort.errors import LongShortError
from longshort.evals.eval_config import EvalConfig
from longshort.limits import MAX_TOKENS_PER_TURN, MAX_TOTAL_TOKENS, MAX_TURNS

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Long⊗Short: two models, one efficient reasoner.")


class BackendName(str, Enum):
    hf = "hf"
    hf_process = "hf-process"
    openai = "openai"
    vllm = "vllm"


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
        None,
        "--long-model",
        help="A shipped pair's name (longshort-sft, longshort-rl: both agents), a path or hub id (hf/vllm), "
        "or a served model name (openai). Default: the shipped testbed reasoner and base.",
    ),
    short_model: str = typer.Option(
        None, "--short-model", help="Defaults to the long model (or the shipped pair's short agent)."
    ),
    backend: BackendName = typer.Option(BackendName.hf, "--backend", help="Generation backend."),
    base_url: str = typer.Option(None, "--base-url", help="OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1"),
    api_key: str = typer.Option(None, "--api-key", envvar="OPENAI_API_KEY", help="For --backend openai."),
    max_turns: int = typer.Option(MAX_TURNS, min=1),
    max_tokens_per_turn: int = typer.Option(MAX_TOKENS_PER_TURN, min=1, help="the per-turn cap"),
    max_total_tokens: int = typer.Option(MAX_TOTAL_TOKENS, min=1, help="tokens per episode, every attempt"),
    temperature: float = typer.Option(0.0, min=0.0, help="0 = greedy."),
    seed: int = typer.Option(None, help="Sampling seed (with temperature > 0)."),
    timeout: float = typer.Option(
        60.0,
        min=0.1,
        help="Per-attempt timeout for --backend openai (s); a request gets 3 attempts and fails after "
        "3 x this in all (180 s by default) with an error naming the deadline and the server.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the Episode as JSON on stdout."),
    stream: bool = typer.Option(
        None,
        "--stream/--no-stream",
        help="Print each turn's tokens as they are generated (default: when stdout is a terminal; never with --json).",
    ),
    traces: Path = typer.Option(
        None,
        "--traces",
        envvar="LONGSHORT_TRACES",
        help="Append the episode to this trace store (SQLite; source solve), e.g. for retraining.",
    ),
) -> None:
    """Solve one question with the Long⊗Short reasoner and print the conversation."""
    from rich.markup import escape

    from longshort.agents.loading import load_agents
    from longshort.graphs import build_reasoner, episode_from_state
    from longshort.store import TraceStore

    live = not as_json and (sys.stdout.isatty() if stream is None else stream)
    try:  # opened first: a store this longshort cannot write fails before any model loads
        store = TraceStore(traces) if traces is not None else None
    except (LongShortError, OSError, ValueError) as e:
        _fail(f"--traces: {e}")

    def solve_live(graph) -> dict:
        """The conversation as it is generated (``stream_mode="messages"``), then the outcome line."""
        styles = {"long": "magenta", "short": "cyan"}
        out = Console(highlight=False)
        out.print(Panel(question, title="question", border_style="white"), markup=False)
        state: dict = {}
        current, shown = None, 0
        for mode, data in graph.stream({"question": question}, stream_mode=["messages", "values"]):
            if mode == "messages":
                chunk, meta = data
                key = (meta.get("turn"), meta.get("attempt"))
                if key != current:
                    if current is not None:
                        out.print()
                    current = key
                    retry = " · retry" if meta.get("attempt") else ""
                    out.rule(f"{meta.get('turn')}: {meta.get('agent')}{retry}", style=styles.get(meta.get("agent"), ""))
                sys.stdout.write(str(chunk.content))
                sys.stdout.flush()
                continue
            state = data
            for turn in (state.get("turns") or [])[shown:]:  # a turn ended: its count and how it ended
                note = f"{turn.num_tokens} tokens · {turn.finish_reason}" + (f" · {turn.error}" if turn.error else "")
                out.print()
                out.print(note, style="dim", markup=False)
                shown += 1
                current = None
        return state

    try:  # no --long-model: the shipped testbed pair, offline
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
    except (ValueError, FileNotFoundError, ImportError, OSError, LongShortError) as e:
        _fail(str(e))
    graph = build_reasoner(
        long, short, max_turns=max_turns, max_tokens_per_turn=max_tokens_per_turn, max_total_tokens=max_total_tokens
    )
    try:
        episode = episode_from_state(solve_live(graph) if live else graph.invoke({"question": question}))
    except (ValueError, TypeError) as e:
        _fail(str(e))
    finally:
        for agent in (long, short):
            agent.backend.close()
    if store is not None:
        settings = {"backend": backend.value, "temperature": temperature, "seed": seed, "max_turns": max_turns}
        settings.update(max_tokens_per_turn=max_tokens_per_turn, max_total_tokens=max_total_tokens)
        with store:
            store.append(
                [episode],
                run="solve",
                source="solve",
                long_model=long.backend.model_id,
                short_model=short.backend.model_id,
                config=settings,
            )
    if as_json:
        sys.stdout.write(json.dumps(episode.model_dump(mode="json"), ensure_ascii=False) + "\n")
    elif live:  # the turns are on screen already: the outcome, as print_episode ends
        t = episode.tokens
        out = Console(highlight=False)
        out.print(
            f"[bold]{episode.status}[/] answer=[bold green]{escape(str(episode.answer))}[/] "
            f"tokens long={t.long} short={t.short} total={t.total}"
        )
        if episode.error:
            out.print(episode.error, style="red", markup=False)
    else:
        print_episode(episode, Console())


@app.command()
def demo(
    n: int = typer.Option(64, "--n", min=1, help="Held-out test problems."),
    seed: int = typer.Option(0, "--seed", min=0, help="Draws other held-out problems."),
    out: Path = typer.Option(Path("demo"), "--out", help="Writes demo.json, episodes.jsonl and demo.png here."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    checkpoints: Path = typer.Option(
        None,
        "--checkpoints",
        help="Another testbed assets folder (default: the shipped one); verified by its manifest.",
    ),
    pair: list[str] = typer.Option(
        None,
        "--pair",
        help="Another Long⊗Short row, NAME=LONG_DIR,SHORT_DIR (e.g. fine-tuned agents); repeatable; "
        "replaces a shipped pair of the same NAME.",
    ),
    no_shipped_pairs: bool = typer.Option(
        False,
        "--no-shipped-pairs",
        help="Skip the trained pairs shipped in the assets folder (longshort-sft, longshort-rl).",
    ),
    traces: Path = typer.Option(
        None,
        "--traces",
        envvar="LONGSHORT_TRACES",
        help="Also append every system's episodes to this trace store (SQLite; source demo).",
    ),
) -> None:
    """The testbed's comparison, offline: long-only, short-only, Long⊗Short (prompt only), oracle, trained pairs."""
    from longshort.errors import ChecksumError
    from longshort.testbed.demo import print_table, run_demo

    pairs = {}
    for spec in pair or []:
        name, _, dirs = spec.partition("=")
        paths = csv_list(dirs)
        if not name or len(paths) != 2 or not all(Path(p).is_dir() for p in paths):
            _fail(f"--pair {spec!r}: expected NAME=LONG_DIR,SHORT_DIR with two existing directories")
        pairs[name] = (paths[0], paths[1])
    try:
        result = run_demo(
            n=n,
            seed=seed,
            out=out,
            device=device,
            progress=say,
            pairs=pairs,
            checkpoints=checkpoints,
            include_shipped=not no_shipped_pairs,
            traces=traces,
        )
    except (ChecksumError, FileNotFoundError, ValueError, LongShortError) as e:
        _fail(str(e))
    except KeyboardInterrupt:
        console.print("[yellow]interrupted: nothing was written[/]")
        raise typer.Exit(130) from None
    print_table(result, Console())
    console.print(f"wrote {out / 'demo.json'}, {out / 'episodes.jsonl'}, {out / 'demo.png'}")
    if traces is not None:
        console.print(f"appended the episodes to {traces}")


@app.command()
def grade(
    data: Path = typer.Option(
        ..., "--data", help="Benchmark file (JSONL/CSV), e.g. shared/data/benchmarks/math500.jsonl."
    ),
    responses: Path = typer.Option(..., "--responses", help='JSONL of {"id": ..., "response": ...}.'),
    benchmark: str = typer.Option(None, "--benchmark", help="Default: the data file's stem (math500, gpqa, ...)."),
    out: Path = typer.Option(Path("graded"), "--out", help="Writes results.json here."),
) -> None:
    """Grade responses produced elsewhere against a benchmark (math: last \\boxed{}; gpqa: a letter)."""
    from longshort.evals.grade_file import grade_file

    try:
        result = grade_file(data, responses, benchmark=benchmark, out=out)
    except (ValueError, FileNotFoundError) as e:
        _fail(str(e))
    acc = result["accuracy"]
    console.print(
        f"{result['benchmark']}: accuracy {'—' if acc is None else f'{100 * acc:.1f}%'} on {result['n']} problems "
        f"({result['n_missing']} without a response); wrote {out / 'results.json'}"
    )


def eval_main(config: EvalConfig) -> None:
    """Evaluate systems on benchmarks: resumable (re-run the same command), Table 2 style results."""
    from longshort.evals.runner import run_eval
    from longshort.testbed.sources import register_testbed

    register_testbed()
    out = config.out
    try:
        run_eval(config, say=say)
    except KeyboardInterrupt:
        console.print(f"[yellow]interrupted: finished items are in {out / 'items.jsonl'}; re-run to resume[/]")
        raise typer.Exit(130) from None
    Console().print((out / "results.md").read_text(encoding="utf-8"))
    console.print(f"wrote {out / 'results.json'}, {out / 'results.md'}, {out / 'results.png'}, {out / 'config.yaml'}")


add_config_command(app, "eval", EvalConfig, eval_main, errors=(LongShortError, ValueError, ImportError, OSError))

from longshort.cli.analyze import analyze_app  # noqa: E402 (sub-app, after the main app is defined)

app.add_typer(analyze_app, name="analyze")

from longshort.cli.train import train_app  # noqa: E402 (sub-app, after the main app is defined)

app.add_typer(train_app, name="train")
from longshort.cli.testbed import testbed_app  # noqa: E402 (sub-app, after the main app is defined)

app.add_typer(testbed_app, name="testbed")
from longshort.cli.traces import traces_app  # noqa: E402 (sub-app, after the main app is defined)

app.add_typer(traces_app, name="traces")


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"longshort {version('longshort')}")
        raise typer.Exit()


@app.callback()
def main(
    _: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the installed version and exit."
    ),
) -> None:
    """Long⊗Short: a long-thought and a short-thought model reason together."""
