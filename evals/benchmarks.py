"""Benchmarks: one typed registry, one loader (local JSONL/CSV or the Hugging Face Hub), one hash.

``load_benchmark("math500", data="math500.jsonl")`` reads a local copy (fields ``id``/``problem``/
``answer``, as in ``shared/data/benchmarks``); without ``data`` the dataset is read from the Hub
with ``datasets.load_dataset``. GPQA Diamond is gated and never stored: read it from the Hub with
your own token, or pass a local CSV with GPQA's columns.

GPQA option order follows simple-evals: ``rng = random.Random(0)`` and, for each row in file order,
``perm = rng.sample(range(4), 4)`` applied to ``[correct, incorrect 1, incorrect 2, incorrect 3]``;
option ``A`` is ``options[perm[0]]`` and so on. The permutations are drawn over the whole file
before ``limit`` is applied, so a row's letters never depend on ``limit``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import random
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from longshort._jsonl import json_lines

LETTERS = "ABCD"
GPQA_TERMS_URL = "https://huggingface.co/datasets/Idavidrein/gpqa"
GPQA_COLUMNS = (
    "Question",
    "Correct Answer",
    "Incorrect Answer 1",
    "Incorrect Answer 2",
    "Incorrect Answer 3",
)


class BenchmarkError(ValueError):
    """A benchmark could not be loaded; the message names the file/row/dataset and what to do."""


class BenchmarkFileNotFoundError(BenchmarkError, FileNotFoundError):
    """The local data file does not exist (both a ``BenchmarkError`` and a ``FileNotFoundError``)."""


class BenchmarkItem(BaseModel):
    """One problem. For multiple choice ``choices`` is ``"ABCD"`` and ``answer`` is a letter."""

    id: str
    benchmark: str
    problem: str
    answer: str
    choices: str | None = None


class BenchmarkSpec(BaseModel):
    """Where a benchmark lives on the Hub and which columns hold what (first present one wins)."""

    name: str
    hub_id: str
    split: str
    config: str | None = None
    id_columns: tuple[str, ...] = ("id", "unique_id")
    problem_columns: tuple[str, ...] = ("problem", "question")
    answer_columns: tuple[str, ...] = ("answer",)
    multiple_choice: bool = False
    gated: bool = False


BENCHMARKS: dict[str, BenchmarkSpec] = {
    spec.name: spec
    for spec in (
        # MATH-500: problem, solution, answer, subject, level, unique_id.
        BenchmarkSpec(name="math500", hub_id="HuggingFaceH4/MATH-500", split="test", id_columns=("id", "unique_id")),
        # aime_2024: id, problem, solution, answer, url, year.
        BenchmarkSpec(name="aime24", hub_id="HuggingFaceH4/aime_2024", split="train"),
        # math-ai/aime25: id, problem, answer.
        BenchmarkSpec(name="aime25", hub_id="math-ai/aime25", split="test"),
        # math-ai/amc23: id, question (or problem), answer (float such as 27.0), url.
        BenchmarkSpec(name="amc23", hub_id="math-ai/amc23", split="test"),
        # GPQA: Question, Correct Answer, Incorrect Answer 1-3, Record ID, High-level domain, Subdomain, ...
        BenchmarkSpec(
            name="gpqa",
            hub_id="Idavidrein/gpqa",
            config="gpqa_diamond",
            split="train",
            id_columns=("Record ID",),
            problem_columns=("Question",),
            answer_columns=("Correct Answer",),
            multiple_choice=True,
            gated=True,
        ),
    )
}


#: Benchmarks made in code instead of read from a file or the Hub, by name: ``make(limit) -> items``.
#: ``register_generated`` adds one (``longshort eval`` adds the testbed's held-out split as
#: ``testbed``); the evaluation code itself knows no generated benchmark.
GENERATED: dict[str, Callable[[int | None], list[BenchmarkItem]]] = {}


def register_generated(name: str, make: Callable[[int | None], list[BenchmarkItem]]) -> None:
    """Make ``load_benchmark(name, limit=k)`` return ``make(k)`` (``k`` is None for "the default size")."""
    if name in BENCHMARKS:
        raise ValueError(f"{name!r} is a file/Hub benchmark; a generated one needs another name")
    GENERATED[name] = make


def _spec(name: str) -> BenchmarkSpec:
    if name not in BENCHMARKS:
        valid = ", ".join(sorted([*BENCHMARKS, *GENERATED]))
        raise BenchmarkError(f"unknown benchmark {name!r}; valid names: {valid}")
    return BENCHMARKS[name]


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or not str(value).strip()


def _text(value: Any) -> str:
    """A cell as text; integral floats (``27.0``, as some Hub copies store answers) become ``27``."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _first(row: dict[str, Any], columns: Sequence[str]) -> Any:
    for column in columns:
        if column in row and not _blank(row[column]):
            return row[column]
    return None


#: Every id column of the registry: what names a row in a message before its benchmark's spec applies.
_ID_COLUMNS = tuple(dict.fromkeys(c for spec in BENCHMARKS.values() for c in spec.id_columns))


def _bad_text(value: Any, where: str = "") -> str | None:
    """Where in ``value`` (a row, or a cell of it) a string cannot be UTF-8, and why; None if nowhere.

    JSON's ``"\\ud800"`` decodes to a lone surrogate: Arrow then rejects the whole file with a
    ``DatasetGenerationError`` whose cause is only logged, so the row is checked here first.
    """
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:
            return (
                f"{where or 'a value'} is not valid Unicode text: character {e.start} is "
                f"U+{ord(value[e.start]):04X}, a lone surrogate (e.g. a \\ud800 escape without its pair)"
            )
        return None
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        problem = _bad_text(key, "a column name") or _bad_text(item, f"{where}[{key!r}]" if where else repr(key))
        if problem:
            return problem
    return None


def _check_jsonl(path: Path) -> None:
    """Every non-blank line is a JSON object of valid text (named by line, row and id if not); one at least."""
    rows = 0
    for number, row in json_lines(path, BenchmarkError):
        if not isinstance(row, dict):
            raise BenchmarkError(f"{path}: line {number} is not a JSON object")
        rows += 1
        problem = _bad_text(row)
        if problem:
            row_id = next((row[c] for c in _ID_COLUMNS if isinstance(row.get(c), (str, int))), None)
            named = f", id {_text(row_id)}" if row_id is not None and not _bad_text(row_id) else ""
            raise BenchmarkError(f"{path}: line {number} (row {rows}{named}): {problem}")
    if not rows:
        raise BenchmarkError(f"{path}: no rows (the file is empty or blank); is this the right file?")


def _check_csv(path: Path) -> None:
    """The file is UTF-8 (the bad byte's line named if not) with a row below its header.

    Checked before ``datasets`` reads it: there an empty file is an opaque ``DatasetGenerationError``.
    """
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise BenchmarkError(f"{path}: line {line} is not valid UTF-8 ({e.reason} at byte {e.start})") from None
    rows = [row for row in csv.reader(io.StringIO(text, newline="")) if any(cell.strip() for cell in row)]
    if len(rows) < 2:
        what = "only a header" if rows else "the file is empty"
        raise BenchmarkError(f"{path}: no rows ({what}); is this the right file?")


def _read_local(path: Path) -> tuple[list[dict[str, Any]], str]:
    if not path.is_file():
        raise BenchmarkFileNotFoundError(f"benchmark file not found: {path}")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        kind = "json"
        _check_jsonl(path)
    elif suffix == ".csv":
        kind = "csv"
        _check_csv(path)
    else:
        raise BenchmarkError(f"{path}: unsupported file type {suffix!r} (use .jsonl or .csv)")
    import datasets

    # CSV cells stay text: "+3" or "0.10" must not become numbers, nor "None"/"NA" become missing.
    options: dict[str, Any] = {}
    if kind == "csv":
        with path.open(encoding="utf-8", newline="") as f:
            header = next(csv.reader(f), [])
        features = datasets.Features({column: datasets.Value("string") for column in header})
        options = {"features": features, "keep_default_na": False}
    try:
        ds = datasets.load_dataset(kind, data_files=str(path), split="train", **options)
    except Exception as e:  # pyarrow/pandas type clashes, unreadable bytes, ...
        cause = f" (cause: {type(e.__cause__).__name__}: {e.__cause__})" if e.__cause__ else ""
        raise BenchmarkError(f"{path}: could not read as {kind.upper()}: {type(e).__name__}: {e}{cause}") from e
    return [dict(row) for row in ds], str(path)


def _hub_error(spec: BenchmarkSpec, e: Exception) -> BenchmarkError:
    from huggingface_hub.errors import GatedRepoError

    text = f"{type(e).__name__}: {e}"
    gated = isinstance(e, GatedRepoError) or isinstance(e.__cause__, GatedRepoError) or "gated" in text.lower()
    auth = any(s in text for s in ("401", "403", "authenticated", "Unauthorized"))
    if spec.gated and (gated or auth):
        return BenchmarkError(
            f"{spec.hub_id} is a gated dataset and this account has no access ({text}). Accept its terms at "
            f"{GPQA_TERMS_URL if spec.name == 'gpqa' else 'https://huggingface.co/datasets/' + spec.hub_id}, "
            "then run `huggingface-cli login` or set HF_TOKEN; or pass --data PATH to a local CSV."
        )
    return BenchmarkError(
        f"could not load {spec.hub_id!r}"
        + (f" (config {spec.config!r})" if spec.config else "")
        + f" split {spec.split!r} from the Hugging Face Hub ({text}). If the Hub is unreachable, "
        "pass --data PATH (data=PATH) to a local copy."
    )


def _read_hub(spec: BenchmarkSpec) -> tuple[list[dict[str, Any]], str]:
    import datasets

    args = (spec.hub_id, spec.config) if spec.config else (spec.hub_id,)
    try:
        ds = datasets.load_dataset(*args, split=spec.split)
    except Exception as e:  # ConnectionError, DatasetNotFoundError (gated/missing), HTTP errors, ...
        raise _hub_error(spec, e) from e
    return [dict(row) for row in ds], spec.hub_id


def gpqa_permutations(n: int, seed: int = 0) -> list[list[int]]:
    """The option permutation of each of ``n`` rows (file order), as in simple-evals."""
    rng = random.Random(seed)
    return [rng.sample(range(4), 4) for _ in range(n)]


def _gpqa_items(rows: list[dict[str, Any]], source: str) -> list[BenchmarkItem]:
    if rows:
        missing = [c for c in GPQA_COLUMNS if c not in rows[0]]
        if missing:
            raise BenchmarkError(f"{source}: not a GPQA table, missing columns {missing}")
    items = []
    for number, (row, perm) in enumerate(zip(rows, gpqa_permutations(len(rows)), strict=True), start=1):
        row_id = _text(row.get("Record ID")) if not _blank(row.get("Record ID")) else f"gpqa-{number - 1:03d}"
        empty = [c for c in GPQA_COLUMNS if _blank(row.get(c))]
        if empty:
            raise BenchmarkError(f"{source}: row {number} (id {row_id}) has no {', '.join(empty)}")
        options = [_text(row[c]) for c in GPQA_COLUMNS[1:]]
        shuffled = [options[i] for i in perm]
        answer = LETTERS[perm.index(0)]
        body = "\n".join(f"{letter}) {option}" for letter, option in zip(LETTERS, shuffled, strict=True))
        problem = f"{_text(row['Question'])}\n\n{body}"
        items.append(BenchmarkItem(id=row_id, benchmark="gpqa", problem=problem, answer=answer, choices=LETTERS))
    return items


def _math_items(spec: BenchmarkSpec, rows: list[dict[str, Any]], source: str) -> list[BenchmarkItem]:
    items = []
    for number, row in enumerate(rows, start=1):
        raw_id = _first(row, spec.id_columns)
        row_id = _text(raw_id) if raw_id is not None else f"{spec.name}-{number - 1:03d}"
        problem = _first(row, spec.problem_columns)
        answer = _first(row, spec.answer_columns)
        if problem is None:
            raise BenchmarkError(
                f"{source}: row {number} (id {row_id}) has no problem (looked for {list(spec.problem_columns)})"
            )
        if answer is None:
            raise BenchmarkError(
                f"{source}: row {number} (id {row_id}) has no answer (looked for {list(spec.answer_columns)})"
            )
        items.append(BenchmarkItem(id=row_id, benchmark=spec.name, problem=_text(problem), answer=_text(answer)))
    return items


def load_benchmark(name: str, *, data: str | Path | None = None, limit: int | None = None) -> list[BenchmarkItem]:
    """The items of benchmark ``name``, from the local file ``data`` or else from the Hub.

    ``limit`` keeps the first ``limit`` items (GPQA letters are assigned before truncation).
    Raises ``BenchmarkError`` (a ``ValueError``) with the file, row or dataset named.
    """
    if limit is not None and limit < 0:
        raise BenchmarkError(f"limit must be >= 0, got {limit}")
    if name in GENERATED:
        if data is not None:
            raise BenchmarkError(f"{name} is generated: it takes no --data file")
        return GENERATED[name](limit)
    spec = _spec(name)
    rows, source = _read_local(Path(data)) if data is not None else _read_hub(spec)
    items = _gpqa_items(rows, source) if spec.multiple_choice else _math_items(spec, rows, source)
    ids = [item.id for item in items]
    if len(set(ids)) != len(ids):
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        raise BenchmarkError(f"{source}: duplicate ids {dupes[:5]}")
    return items if limit is None else items[:limit]


def benchmark_hash(items: Iterable[BenchmarkItem]) -> str:
    """sha256 over the items' canonical JSON, in order (for results provenance)."""
    digest = hashlib.sha256()
    for item in items:
        digest.update(json.dumps(item.model_dump(), sort_keys=True, ensure_ascii=False).encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()
