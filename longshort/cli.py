"""The ``longshort`` command line.

longshort solve "What is 12 * 34 + 5?" --long-model PATH [--short-model PATH] [--json]
"""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path

import typer
from rich.console import Console
from rich.panel import Panel

from longshort._console import console
from longshort._console import fail as _fail

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
    from longshort.errors import LongShortError
    from longshort.graphs import build_reasoner, episode_from_state
    from longshort.training.testbed.checkpoints import checkpoint as default_model

    try:
        if long_model is None:  # the shipped testbed pair: works offline
            if backend not in (BackendName.hf, BackendName.hf_process):
                _fail("--backend openai/vllm needs --long-model (the served model's name or path)")
            long_model, short_model = str(default_model("reasoner")), short_model or str(default_model("base"))
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
        False, "--no-shipped-pairs", help="Skip the SFT pairs shipped in the assets folder (e.g. longshort-sft)."
    ),
) -> None:
    """The testbed's comparison, offline: long-only, short-only, Long⊗Short (prompt only), oracle, shipped SFT pairs."""
    from longshort.errors import ChecksumError
    from longshort.evals.demo import print_table, run_demo

    pairs = {}
    for spec in pair or []:
        name, _, dirs = spec.partition("=")
        paths = _csv(dirs)
        if not name or len(paths) != 2 or not all(Path(p).is_dir() for p in paths):
            _fail(f"--pair {spec!r}: expected NAME=LONG_DIR,SHORT_DIR with two existing directories")
        pairs[name] = (paths[0], paths[1])
    try:
        say = lambda m: console.print(f"[dim]{m}[/]")  # noqa: E731
        result = run_demo(
            n=n,
            seed=seed,
            out=out,
            device=device,
            progress=say,
            pairs=pairs,
            checkpoints=checkpoints,
            include_shipped=not no_shipped_pairs,
        )
    except (ChecksumError, FileNotFoundError, ValueError) as e:
        _fail(str(e))
    except KeyboardInterrupt:
        console.print("[yellow]interrupted: nothing was written[/]")
        raise typer.Exit(130) from None
    print_table(result, Console())
    console.print(f"wrote {out / 'demo.json'}, {out / 'episodes.jsonl'}, {out / 'demo.png'}")


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


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


@app.command("eval")
def eval_(
    benchmark: str = typer.Option(..., "--benchmark", help="Comma-separated: math500,aime24,aime25,amc23,gpqa."),
    system: str = typer.Option("longshort,long-only,short-only", "--system", help="longshort, long-only, short-only."),
    long_model: str = typer.Option(None, "--long-model", help="Default: the shipped testbed reasoner."),
    short_model: str = typer.Option(None, "--short-model", help="Default: the shipped testbed base."),
    backend: BackendName = typer.Option(BackendName.hf, "--backend"),
    base_url: str = typer.Option(None, "--base-url", help="OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1"),
    api_key: str = typer.Option(None, "--api-key", envvar="OPENAI_API_KEY"),
    timeout: float = typer.Option(60.0, min=0.1, help="Per-request timeout for --backend openai (s)."),
    device: str = typer.Option(None, "--device", help="For --backend hf: cpu or cuda."),
    data: Path = typer.Option(None, "--data", help="Local file for a single --benchmark (else the Hub)."),
    limit: int = typer.Option(None, "--limit", min=0, help="First N problems of each benchmark."),
    k: int = typer.Option(1, "-k", "--k", min=1, help="Samples per problem (Pass@1 = mean over them)."),
    temperature: float = typer.Option(0.0, min=0.0, help="0 = greedy; k > 1 needs > 0."),
    max_turns: int = typer.Option(8, min=1),
    max_tokens_per_turn: int = typer.Option(1024, min=1),
    max_total_tokens: int = typer.Option(4096, min=1, help="Also the solo systems' one-turn budget."),
    batch_size: int = typer.Option(32, min=1, help="Problems per batch sent to the backend."),
    out: Path = typer.Option(Path("results/eval"), "--out", help="items.jsonl, run.json, results.{json,md,png}."),
    baseline: str = typer.Option(None, "--baseline", help="AES reference system (default long-only if run)."),
    no_progress: bool = typer.Option(False, "--no-progress"),
) -> None:
    """Evaluate systems on benchmarks: resumable (re-run the same command), Table 2 style results."""
    from longshort.errors import LongShortError
    from longshort.evals.runner import EvalConfig, run_eval

    if long_model is None or short_model is None:
        if backend not in (BackendName.hf, BackendName.hf_process):
            _fail("--backend openai/vllm needs --long-model and --short-model (served names or paths)")
        from longshort.training.testbed.checkpoints import checkpoint as default_model

        long_model = long_model or str(default_model("reasoner"))
        short_model = short_model or str(default_model("base"))
    cfg = EvalConfig(
        benchmarks=_csv(benchmark),
        systems=_csv(system),
        long_model=long_model,
        short_model=short_model,
        out=out,
        backend=backend.value,
        base_url=base_url,
        api_key=api_key,
        timeout=timeout,
        device=device,
        data=data,
        limit=limit,
        k=k,
        temperature=temperature,
        max_turns=max_turns,
        max_tokens_per_turn=max_tokens_per_turn,
        max_total_tokens=max_total_tokens,
        batch_size=batch_size,
        baseline=baseline,
    )
    try:
        run_eval(cfg, progress=not no_progress, say=lambda m: console.print(f"[dim]{m}[/]"))
    except (ValueError, FileNotFoundError, ImportError, OSError, LongShortError) as e:
        _fail(str(e))
    except KeyboardInterrupt:
        console.print(f"[yellow]interrupted: finished items are in {out / 'items.jsonl'}; re-run to resume[/]")
        raise typer.Exit(130) from None
    Console().print((out / "results.md").read_text(encoding="utf-8"))
    console.print(f"wrote {out / 'results.json'}, {out / 'results.md'}, {out / 'results.png'}")


from longshort.cli_analyze import analyze_app  # noqa: E402 (sub-app, after the main app is defined)

app.add_typer(analyze_app, name="analyze")

from longshort.cli_train import train_app  # noqa: E402 (sub-app, after the main app is defined)

app.add_typer(train_app, name="train")

testbed_app = typer.Typer(no_args_is_help=True, help="The testbed: train its small models, rebuild the shipped assets.")
app.add_typer(testbed_app, name="testbed")


@testbed_app.command("train")
def testbed_train(
    model: str = typer.Option(..., "--model", help="reasoner or base"),
    out: str = typer.Option("runs/testbed", "--out"),
    n_train: int = typer.Option(20000, "--n-train", min=1),
    n_ops: int = typer.Option(3, "--n-ops", min=1),
    steps: int = typer.Option(3000, "--steps", min=1),
    batch_size: int = typer.Option(128, "--batch-size", min=1),
    lr: float = typer.Option(1e-3, "--lr"),
    hidden_size: int = typer.Option(256, "--hidden-size", min=8),
    layers: int = typer.Option(4, "--layers", min=1),
    heads: int = typer.Option(4, "--heads", min=1),
    vocab_size: int = typer.Option(1024, "--vocab-size", min=300),
    max_positions: int = typer.Option(3072, "--max-positions", min=64),
    switches_per_problem: int = typer.Option(4, "--switches-per-problem", min=0),
    selections_per_problem: int = typer.Option(2, "--selections-per-problem", min=0),
    seed: int = typer.Option(0, "--seed", min=0),
    device: str = typer.Option(None, "--device"),
    max_seconds: float = typer.Option(None, "--max-seconds", help="Stop and save after this much training time."),
    init: str = typer.Option(None, "--init", help="Continue from this assets folder's model instead of from scratch."),
) -> None:
    """Train one testbed model from scratch (TRL SFTTrainer); see training/testbed/train.py."""
    from longshort.training.testbed.train import TestbedTrainConfig, train

    try:
        args = {k: v for k, v in locals().items() if k not in ("train", "TestbedTrainConfig")}
        config = TestbedTrainConfig(**args)
    except ValueError as e:
        _fail(str(e))
    try:
        console.print(f"saved {train(config)}")
    except ValueError as e:  # e.g. a row longer than --max-positions
        _fail(str(e))


@testbed_app.command("build")
def testbed_build(
    out: str = typer.Option("runs/testbed", "--out"),
    assets: Path = typer.Option(None, "--assets", help="Default: the installed package's assets/testbed."),
    n_train: int = typer.Option(20000, "--n-train", min=1),
    steps: int = typer.Option(3000, "--steps", min=1),
    batch_size: int = typer.Option(128, "--batch-size", min=1),
    lr: float = typer.Option(1e-3, "--lr"),
    hidden_size: int = typer.Option(256, "--hidden-size", min=8),
    layers: int = typer.Option(4, "--layers", min=1),
    vocab_size: int = typer.Option(1024, "--vocab-size", min=300),
    seed: int = typer.Option(0, "--seed", min=0),
    max_seconds: float = typer.Option(None, "--max-seconds", help="Per-model training time limit."),
    init: str = typer.Option(None, "--init", help="Continue from this assets folder's models instead of from scratch."),
    eval_n: int = typer.Option(500, "--eval-n", min=0, help="0: train only; `testbed measure` later."),
    results: Path = typer.Option(Path("results/testbed.json"), "--results"),
    models: str = typer.Option(
        "reasoner,base", "--models", help="Which to train; the others (and the tokenizer) are kept from --assets."
    ),
) -> None:
    """The full recipe (GPU): tokenizer, reasoner + base, measured numbers, assets + manifest."""
    from longshort.training.testbed.build import build
    from longshort.training.testbed.checkpoints import assets_dir
    from longshort.training.testbed.train import TestbedTrainConfig

    config = TestbedTrainConfig(
        model="reasoner",
        out=out,
        n_train=n_train,
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        hidden_size=hidden_size,
        layers=layers,
        vocab_size=vocab_size,
        seed=seed,
        max_seconds=max_seconds,
        init=init,
    )
    Path(out).mkdir(parents=True, exist_ok=True)
    try:
        result = build(config, assets or assets_dir(), eval_n=eval_n, results=results, models=tuple(_csv(models)))
    except (ValueError, FileNotFoundError) as e:
        _fail(str(e))
    console.print_json(data=result["metrics"])


@testbed_app.command("measure")
def testbed_measure(
    assets: Path = typer.Option(..., "--assets", help="A testbed assets folder (from `testbed build`)."),
    eval_n: int = typer.Option(500, "--eval-n", min=1),
    eval_seed: int = typer.Option(0, "--eval-seed", min=0),
    results: Path = typer.Option(Path("results/testbed.json"), "--results"),
    device: str = typer.Option(None, "--device", help="Default: cuda if available."),
) -> None:
    """Measure the issue's numbers for built assets and write them into their manifest."""
    from longshort.training.testbed.build import measure

    try:
        result = measure(assets, eval_n=eval_n, eval_seed=eval_seed, results=results, device=device)
    except (ValueError, FileNotFoundError) as e:
        _fail(str(e))
    console.print_json(data={k: v for k, v in result["metrics"].items() if k != "rows"})


@testbed_app.command("ship-sft")
def testbed_ship_sft(
    long: Path = typer.Option(..., "--long", help="The long agent's LoRA adapter (`--agent long --lora`)."),
    short: Path = typer.Option(..., "--short", help="The short agent's LoRA adapter (`--agent short --lora`)."),
    name: str = typer.Option("longshort-sft", "--name", help="The pair's folder under sft/ and its demo row."),
    assets: Path = typer.Option(None, "--assets", help="Default: the installed package's assets/testbed."),
    metrics: Path = typer.Option(
        None, "--metrics", help="A JSON file (e.g. the demo.json with this row) recorded in the manifest."
    ),
) -> None:
    """Ship a cold-start SFT pair (two LoRA adapters) in the assets, so `longshort demo` shows its row."""
    from longshort.errors import ChecksumError
    from longshort.training.testbed.checkpoints import SIZE_LIMIT_BYTES, assets_dir
    from longshort.training.testbed.ship import ship_sft

    root = assets or assets_dir()
    command = " ".join(["longshort", *sys.argv[1:]]) if "ship-sft" in sys.argv else None
    try:
        ship_sft(long, short, name=name, assets=root, metrics=metrics, command=command)
    except (ChecksumError, ValueError, FileNotFoundError) as e:
        _fail(str(e))
    shipped = sum(p.stat().st_size for p in (root / "sft" / name).rglob("*") if p.is_file())
    total = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    console.print(
        f"shipped {name} in {root / 'sft' / name} ({shipped / 1e6:.2f} MB); "
        f"the assets are {total / 1e6:.2f} MB of {SIZE_LIMIT_BYTES / 1e6:.2f} MB; manifest updated"
    )


@app.callback()
def main() -> None:
    """Long⊗Short: a long-thought and a short-thought model reason together."""


if __name__ == "__main__":
    app()
