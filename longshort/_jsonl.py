"""JSONL files: numbered values with errors naming the file and line; append-only result files."""

from __future__ import annotations

import json
from collections.abc import Callable, Hashable, Iterator
from pathlib import Path
from typing import Any


def json_lines(path: Path, error: type[Exception]) -> Iterator[tuple[int, Any]]:
    """Yield ``(line number, value)`` for every non-blank line; raise ``error`` on invalid JSON.

    What a value must look like is the caller's business (and its message).
    """
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise error(f"{path}: line {number} is not valid JSON ({e.msg})") from None
            yield number, row


def finished_records(path: Path, key: Callable[[Any], Hashable], error: type[Exception]) -> dict[Hashable, Any]:
    """The records of an append-only results file by ``key``, ready for the run to append more.

    A run killed mid-write leaves a last line without its newline: it is dropped (and truncated
    away so the next append starts on a fresh line). A bad line anywhere else is corruption, not
    an interruption, and raises ``error``. A later record with the same key replaces an earlier one.
    """
    if not path.exists():
        return {}
    lines = path.read_bytes().split(b"\n")
    done: dict[Hashable, Any] = {}
    offset = 0
    for number, line in enumerate(lines, start=1):
        last = number == len(lines)
        if line.strip():
            try:
                row = json.loads(line)
                k = key(row)
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                if last or (number == len(lines) - 1 and not lines[-1]):
                    with path.open("r+b") as f:
                        f.truncate(offset)
                    break
                raise error(f"{path}: line {number} is not a valid record; fix or remove it") from None
            if last:  # complete JSON but no newline: keep it, and give the file its newline
                with path.open("ab") as f:
                    f.write(b"\n")
            done[k] = row
        offset += len(line) + 1
    return done
