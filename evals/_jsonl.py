"""Numbered JSON values from a JSONL file, with errors that name the file and the line."""

from __future__ import annotations

import json
from collections.abc import Iterator
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
