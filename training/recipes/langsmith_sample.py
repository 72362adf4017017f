"""Sample episodes through LangSmith tracing and write what LangSmith received as an export file.

    python training/recipes/langsmith_sample.py --export runs/rft/export.jsonl -- \
        --benchmarks testbed-train --limit 2000 -k 8 --temperature 0.7 --long-model longshort-sft \
        --systems longshort --out runs/rft/ls-sample
    longshort traces import --store runs/rft/ls.sqlite --file runs/rft/export.jsonl

The offline stand-in for "trace the reasoner in LangSmith, export the project, import it": the
options after ``--`` are ``longshort eval``'s, and every episode is traced by the real ``langsmith``
client to a loopback endpoint (``tests/fixtures/langsmith/recorder.py``, the recorder of the test
fixture), whose merged runs are written one JSON run per line, with the fields ``Client.list_runs``
gives. The retraining recipe (``gpu_rft.sh``) trains from this import beside the eval's own store,
so the two paths are compared on the same episodes. Run from the repository root (the recorder is
test code, not part of the package).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import click


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--export", type=Path, required=True, help="where the recorded runs are written (JSONL)")
    parser.add_argument("--project", default="longshort-rft", help="the LangSmith project name the runs carry")
    parser.add_argument("eval_args", nargs=argparse.REMAINDER, help="-- then longshort eval's options")
    args = parser.parse_args(argv)
    eval_args = args.eval_args[1:] if args.eval_args[:1] == ["--"] else args.eval_args

    sys.path.insert(0, str(Path.cwd()))  # the recorder lives in tests/ (run from the repository root)
    from longshort.cli import app
    from tests.fixtures.langsmith.recorder import Recorder, write_export

    start = time.perf_counter()
    with Recorder() as rec:
        with rec.tracing(project=args.project):
            try:
                app(["eval", *eval_args], standalone_mode=False)
            except (KeyboardInterrupt, SystemExit, click.exceptions.Exit) as stop:  # what was traced is kept
                print(f"eval stopped early ({type(stop).__name__}); writing the runs recorded so far")
            rec.flush()
        runs = rec.runs()
    args.export.parent.mkdir(parents=True, exist_ok=True)
    write_export(runs, args.export)
    print(
        f"{len(runs)} runs ({rec.bytes / 1e6:.1f} MB uploaded) -> {args.export} "
        f"({args.export.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - start:.0f} s"
    )


if __name__ == "__main__":
    main()
