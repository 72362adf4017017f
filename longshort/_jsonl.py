"""JSONL files: numbered values with errors naming the file and line; append-only result files.

Every JSONL the project appends to (episodes, ``items.jsonl``, ``rollouts.jsonl``) follows one
torn-line rule, ``cut_torn_tail``: a writer killed mid-line leaves a last line that is not a valid
record (a proper prefix of a JSON object is never valid JSON). That line is an interruption, not
corruption: readers skip it and writers cut it before appending, so the next record starts on a
fresh line instead of being glued onto the torn one. A bad line anywhere else is corruption, and
the error names the file and the line.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Hashable, Iterator
from pathlib import Path
from typing import IO, Any

#: Bytes read per step when looking for the last line from the end of a file.
_TAIL_BLOCK = 1 << 16


def is_json(line: bytes) -> bool:
    """Whether ``line`` is one complete JSON value (the default test of a finished record)."""
    try:
        json.loads(line)
    except ValueError:  # JSONDecodeError, and UnicodeDecodeError for a multi-byte char cut in two
        return False
    return True


def _last_line(f: IO[bytes], size: int) -> tuple[int, bytes]:
    """Offset and bytes (to the end of the file) of the last non-blank line, read from the end.

    Reading back from the end keeps an append O(last line), not O(file), however long a run gets.
    """
    tail, pos = b"", size
    while pos > 0:
        step = min(_TAIL_BLOCK, pos)
        pos -= step
        f.seek(pos)
        tail = f.read(step) + tail
        content_end = len(tail.rstrip())
        if content_end:
            newline = tail.rfind(b"\n", 0, content_end)
            if newline >= 0:
                return pos + newline + 1, tail[newline + 1 :]
    return 0, tail


def cut_torn_tail(path: str | Path, valid: Callable[[bytes], bool] = is_json) -> bool:
    """Make ``path`` safe to append to after a killed writer; say whether a torn line was cut.

    The last non-blank line is torn when ``valid`` rejects it: the file is truncated to just
    before it. A valid last line that lacks its newline gets one, so the next append starts a new
    line. A missing or empty file is left alone.
    """
    path = Path(path)
    if not path.exists():
        return False
    with path.open("r+b") as f:
        size = f.seek(0, 2)
        start, tail = _last_line(f, size)
        record, newline, _ = tail.partition(b"\n")
        if not record.strip():
            return False
        if not valid(record):
            f.truncate(start)
            return True
        if not newline:
            f.seek(0, 2)
            f.write(b"\n")
    return False


def json_lines(path: Path, error: type[Exception], *, skip_torn_tail: bool = False) -> Iterator[tuple[int, Any]]:
    """Yield ``(line number, value)`` for every non-blank line; raise ``error`` on invalid JSON.

    With ``skip_torn_tail`` an invalid *last* line is a killed writer's torn line (see
    ``cut_torn_tail``) and is skipped. What a value must look like is the caller's business.
    """
    with path.open("rb") as f:
        lines = ((number, line) for number, line in enumerate(f, start=1) if line.strip())
        ahead = next(lines, None)
        while ahead is not None:
            number, line = ahead
            ahead = next(lines, None)
            try:
                row = json.loads(line.decode("utf-8"))
            except UnicodeDecodeError as e:
                if skip_torn_tail and ahead is None:
                    return
                raise error(f"{path}: line {number} is not valid UTF-8 ({e.reason} at byte {e.start})") from None
            except json.JSONDecodeError as e:
                if skip_torn_tail and ahead is None:
                    return
                raise error(f"{path}: line {number} is not valid JSON ({e.msg})") from None
            yield number, row


def finished_records(path: Path, key: Callable[[Any], Hashable], error: type[Exception]) -> dict[Hashable, Any]:
    """The records of an append-only results file by ``key``, ready for the run to append more.

    The torn last line of a killed run is cut (``cut_torn_tail``, a record being one whose
    ``key`` can be read); a bad line anywhere else raises ``error``. A later record with the same
    key replaces an earlier one.
    """
    if not path.exists():
        return {}

    def valid(line: bytes) -> bool:
        try:
            key(json.loads(line))
        except (KeyError, TypeError, ValueError):
            return False
        return True

    cut_torn_tail(path, valid)
    done: dict[Hashable, Any] = {}
    for number, row in json_lines(path, error):
        try:
            k = key(row)
        except (KeyError, TypeError, ValueError):
            raise error(f"{path}: line {number} is not a valid record; fix or remove it") from None
        done[k] = row
    return done
