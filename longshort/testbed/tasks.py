"""Multi-step arithmetic word problems with exact answers: the testbed's miniature of MATH.

Each problem is a chain. Its first step is always a *hard* product of two two-digit numbers
("A shop has 37 crates of 24 apples."); every later step is either *easy* (add or subtract a
one- or two-digit number: "It sells 9 apples.") or hard again (add or subtract another two-digit
product: "It buys 15 boxes of 12 apples."). So every hard step is a 2-digit x 2-digit product,
which a small transformer cannot reliably do in one shot but can do when decomposed into
multiplications by one digit, and every combination is a sum or difference of at most five-digit
numbers, which it can. Answers stay positive.

Splits never overlap: a problem's split is a stable hash of its canonical expression (factors of
each product sorted, so ``37*24`` and ``24*37`` land in the same split), 90/5/5. Generation draws
candidates from a seeded stream and keeps those of the asked split until it has ``n``.

    from longshort.testbed.tasks import generate_problems
    problems = generate_problems("train", 1000, seed=0, n_ops=3, n_hard=(1, 2))
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, get_args

from pydantic import BaseModel, Field

if TYPE_CHECKING:
    from datasets import Dataset

Split = Literal["train", "validation", "test"]
SPLITS: tuple[str, ...] = get_args(Split)
#: Percent of the hash space per split, in order (train 0-89, validation 90-94, test 95-99).
SPLIT_PERCENT: dict[str, int] = {"train": 90, "validation": 5, "test": 5}

#: Two-digit factors without a zero units digit, so every product really decomposes into two parts.
FACTORS: tuple[int, ...] = tuple(x for x in range(12, 100) if x % 10)
EASY_MIN, EASY_MAX = 2, 99


class Op(BaseModel):
    """One step of the chain.

    ``kind`` is ``mul`` for the opening product and ``add``/``sub`` for later steps. A step is hard
    when it carries ``factors`` (the two-digit product it needs); ``amount`` is the number the step
    combines into the running value (the product itself for hard steps), ``value`` the running
    value after it, ``sentence`` the question's sentence for it (the teachers quote it).
    """

    kind: Literal["mul", "add", "sub"]
    factors: tuple[int, int] | None = None
    amount: int
    value: int
    sentence: str = ""

    @property
    def hard(self) -> bool:
        return self.factors is not None

    @property
    def term(self) -> str:
        """The step as written in the expression (``37*24``, ``+9``, ``-15*12``)."""
        body = f"{self.factors[0]}*{self.factors[1]}" if self.factors else str(self.amount)
        return body if self.kind == "mul" else ("+" if self.kind == "add" else "-") + body


class Problem(BaseModel):
    """A word problem, its integer answer (as text, as graders expect) and its steps."""

    id: str
    question: str
    answer: str
    ops: list[Op]
    split: Split
    unit: str = Field("", description="what is counted, plural ('apples'); the teachers use it")

    @property
    def expression(self) -> str:
        """The chain as written (``37*24+9-15*12``), factor order as in the question."""
        return "".join(op.term for op in self.ops)

    @property
    def n_hard(self) -> int:
        return sum(op.hard for op in self.ops)


def canonical_expression(ops: Sequence[Op | _Step]) -> str:
    """The expression with each product's factors sorted: the identity used for ids and splits."""
    parts = []
    for op in ops:
        body = "*".join(str(f) for f in sorted(op.factors)) if op.factors else str(op.amount)
        parts.append(body if op.kind == "mul" else ("+" if op.kind == "add" else "-") + body)
    return "".join(parts)


def _digest(expression: str) -> str:
    return hashlib.sha256(expression.encode()).hexdigest()


def split_of(expression: str) -> Split:
    """The split a canonical expression belongs to (stable across runs, machines and seeds)."""
    bucket = int(_digest(expression)[:8], 16) % 100
    edge = 0
    for split in SPLITS:
        edge += SPLIT_PERCENT[split]
        if bucket < edge:
            return split  # type: ignore[return-value]
    raise AssertionError("SPLIT_PERCENT must sum to 100")


def problem_id(expression: str) -> str:
    return "tb-" + _digest(expression)[:12]


# --------------------------------------------------------------------------- wording


@dataclass(frozen=True)
class _Scene:
    """Templates of one setting. ``{a}``/``{b}`` are factors, ``{x}`` an easy amount."""

    unit: str
    start: tuple[str, ...]
    add: tuple[str, ...]
    sub: tuple[str, ...]
    add_group: tuple[str, ...]
    sub_group: tuple[str, ...]
    ask: tuple[str, ...]


_NAMES = ("Mia", "Omar", "Lena", "Ravi", "Sofia", "Tom", "Aiko", "Jonas", "Nora", "Diego")

_SCENES: tuple[_Scene, ...] = (
    _Scene(
        "apples",
        ("A shop has {a} crates with {b} apples in each crate.", "A shop stocks {a} crates of {b} apples each."),
        ("It receives {x} more apples.", "A farmer brings {x} more apples.", "A customer returns {x} apples."),
        ("It sells {x} apples.", "{x} apples go bad and are thrown away.", "A baker buys {x} apples."),
        ("Then {a} boxes of {b} apples each are delivered.", "It buys {a} more crates holding {b} apples each."),
        ("It ships out {a} boxes with {b} apples in each.", "It sells {a} crates of {b} apples each."),
        ("How many apples does the shop have now?", "How many apples does the shop have at the end?"),
    ),
    _Scene(
        "books",
        ("A library has {a} shelves with {b} books on each shelf.", "A library owns {a} shelves of {b} books each."),
        ("It gets {x} new books as a gift.", "Readers return {x} books that were on loan.", "It buys {x} new books."),
        ("Readers borrow {x} books.", "{x} worn-out books are thrown away.", "It lends {x} books to a school."),
        ("It adds {a} more shelves holding {b} books each.", "A school donates {a} boxes of {b} books each."),
        ("It gives away {a} boxes of {b} books each.", "It sends {a} crates of {b} books each to another branch."),
        ("How many books are in the library now?", "How many books does the library have at the end?"),
    ),
    _Scene(
        "stamps",
        ("{name} has {a} albums with {b} stamps in each.", "{name} collects {a} pages of {b} stamps each."),
        ("{name} buys {x} more stamps.", "A friend gives {name} {x} stamps.", "{name} finds {x} old stamps."),
        ("{name} gives {x} stamps to a friend.", "{name} loses {x} stamps.", "{name} swaps away {x} stamps."),
        ("Then {name} gets {a} packs of {b} stamps each.", "{name} buys {a} more sets of {b} stamps each."),
        ("{name} sells {a} sets of {b} stamps each.", "{name} trades away {a} packs of {b} stamps each."),
        ("How many stamps does {name} have now?", "How many stamps does {name} have in the end?"),
    ),
    _Scene(
        "eggs",
        ("A farm collects {a} cartons of {b} eggs.", "A farm fills {a} trays with {b} eggs on each tray."),
        ("The hens lay {x} more eggs.", "A neighbour brings {x} eggs.", "It finds {x} more eggs in the barn."),
        ("{x} eggs break.", "The farm uses {x} eggs for baking.", "It sells {x} eggs at the market."),
        ("Then it collects {a} more trays with {b} eggs each.", "It buys {a} cartons of {b} eggs each."),
        ("It sells {a} trays of {b} eggs each.", "It delivers {a} cartons of {b} eggs each to a bakery."),
        ("How many eggs does the farm have at the end?", "How many eggs does the farm have now?"),
    ),
    _Scene(
        "pencils",
        ("A school orders {a} boxes of {b} pencils.", "A school has {a} packs with {b} pencils in each."),
        ("A parent donates {x} pencils.", "The teachers find {x} more pencils.", "It buys {x} more pencils."),
        ("The students lose {x} pencils.", "{x} pencils break.", "It gives {x} pencils to a club."),
        ("It orders {a} more packs with {b} pencils in each.", "Then {a} boxes of {b} pencils each arrive."),
        ("It hands out {a} bundles of {b} pencils each.", "It gives {a} classes {b} pencils each."),
        ("How many pencils does the school have now?", "How many pencils are left at the school at the end?"),
    ),
    _Scene(
        "bottles",
        ("A warehouse holds {a} pallets of {b} bottles.", "A warehouse stores {a} racks with {b} bottles on each."),
        ("A truck brings {x} more bottles.", "{x} bottles are returned by a store.", "It buys {x} more bottles."),
        ("{x} bottles are shipped to a store.", "{x} bottles are found broken and removed.", "It sells {x} bottles."),
        ("Another {a} pallets of {b} bottles arrive.", "It receives {a} more racks of {b} bottles each."),
        ("It sends out {a} pallets of {b} bottles each.", "{a} stores each pick up {b} bottles."),
        ("How many bottles are in the warehouse now?", "How many bottles does the warehouse hold at the end?"),
    ),
    _Scene(
        "seats",
        ("A theater has {a} rows of {b} seats.", "A stadium section has {a} rows with {b} seats in each row."),
        ("{x} folding seats are added.", "The staff set up {x} extra seats.", "A sponsor pays for {x} more seats."),
        ("{x} seats are removed for repairs.", "{x} seats are blocked off for cameras.", "{x} seats are broken."),
        ("Then {a} new rows of {b} seats are built.", "It adds {a} balconies with {b} seats each."),
        ("{a} rows of {b} seats each are closed.", "It removes {a} rows with {b} seats in each."),
        ("How many seats are there now?", "How many seats are available at the end?"),
    ),
)


# --------------------------------------------------------------------------- generation


@dataclass(frozen=True)
class _Step:
    kind: Literal["mul", "add", "sub"]
    factors: tuple[int, int] | None
    amount: int


def _draw_chain(rng: random.Random, n_ops: int, n_hard: int) -> list[_Step]:
    """Numbers only: the first step a product, ``n_hard - 1`` more products at random positions."""
    hard_at = {0, *rng.sample(range(1, n_ops), n_hard - 1)}
    a, b = rng.choice(FACTORS), rng.choice(FACTORS)
    steps = [_Step("mul", (a, b), a * b)]
    value = a * b
    for i in range(1, n_ops):
        if i in hard_at:
            factors = (rng.choice(FACTORS), rng.choice(FACTORS))
            amount = factors[0] * factors[1]
        else:
            factors = None
            amount = rng.randint(EASY_MIN, 9) if rng.random() < 0.5 else rng.randint(10, EASY_MAX)
        kind: Literal["add", "sub"] = "sub" if rng.random() < 0.5 and value - amount >= 1 else "add"
        value = value + amount if kind == "add" else value - amount
        steps.append(_Step(kind, factors, amount))
    return steps


def _render(steps: list[_Step], rng: random.Random) -> tuple[list[Op], str, str]:
    """Words for a chain: one sentence per step from one scene, plus the question sentence."""
    scene = rng.choice(_SCENES)
    name = rng.choice(_NAMES)
    ops: list[Op] = []
    used: set[str] = set()
    value = 0
    for step in steps:
        if step.kind == "mul":
            templates = scene.start
        elif step.factors:
            templates = scene.add_group if step.kind == "add" else scene.sub_group
        else:
            templates = scene.add if step.kind == "add" else scene.sub
        a, b = step.factors or (0, 0)
        fresh = [t for t in templates if t not in used] or list(templates)  # no sentence twice
        template = rng.choice(fresh)
        used.add(template)
        sentence = template.format(a=a, b=b, x=step.amount, name=name)
        sentence = sentence[0].upper() + sentence[1:]
        value = step.amount if step.kind == "mul" else value + (step.amount if step.kind == "add" else -step.amount)
        ops.append(Op(kind=step.kind, factors=step.factors, amount=step.amount, value=value, sentence=sentence))
    ask = rng.choice(scene.ask).format(name=name)
    question = " ".join([op.sentence for op in ops] + [ask])
    return ops, question, scene.unit


def _hard_range(n_ops: int, n_hard: int | tuple[int, int]) -> tuple[int, int]:
    lo, hi = (n_hard, n_hard) if isinstance(n_hard, int) else tuple(n_hard)
    if n_ops < 1:
        raise ValueError(f"n_ops must be >= 1, got {n_ops}")
    if not 1 <= lo <= hi <= n_ops:
        raise ValueError(f"n_hard must lie in 1..n_ops={n_ops} (an int or an inclusive (lo, hi)), got {n_hard}")
    return lo, hi


def generate_problems(
    split: Split,
    n: int,
    seed: int = 0,
    n_ops: int = 3,
    n_hard: int | tuple[int, int] = (1, 2),
) -> list[Problem]:
    """``n`` distinct problems of ``split``, deterministic for (seed, n_ops, n_hard).

    ``n_ops`` counts all steps; ``n_hard`` (an int or an inclusive range, drawn uniformly per
    problem) counts the two-digit products, the opening one included; the rest are easy.
    Raises ``RuntimeError`` when the knobs allow too few distinct problems of that split.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    lo, hi = _hard_range(n_ops, n_hard)
    rng = random.Random(f"longshort-testbed:{seed}:{n_ops}:{lo}:{hi}")
    seen: set[str] = set()
    problems: list[Problem] = []
    budget = 100 * n + 10_000  # ~20 candidates per problem of a 5% split; more means the space ran out
    for _ in range(budget):
        if len(problems) >= n:
            break
        steps = _draw_chain(rng, n_ops, rng.randint(lo, hi))
        canon = canonical_expression(steps)
        if canon in seen or split_of(canon) != split:
            continue
        seen.add(canon)
        # Wording from its own stream, so it does not depend on how many candidates were skipped.
        ops, question, unit = _render(steps, random.Random(f"{seed}:{canon}"))
        problems.append(
            Problem(id=problem_id(canon), question=question, answer=str(ops[-1].value), ops=ops, split=split, unit=unit)
        )
    if len(problems) < n:
        raise RuntimeError(
            f"drew only {len(problems)} distinct {split} problems of {n} asked with n_ops={n_ops}, "
            f"n_hard={n_hard}: ask for fewer or allow longer chains"
        )
    return problems


def to_dataset(problems: Sequence[Problem]) -> Dataset:
    """A ``datasets.Dataset`` with one row per problem (ops as a list of structs)."""
    from datasets import Dataset

    rows = {
        "id": [p.id for p in problems],
        "question": [p.question for p in problems],
        "answer": [p.answer for p in problems],
        "expression": [p.expression for p in problems],
        "split": [p.split for p in problems],
        "unit": [p.unit for p in problems],
        "n_ops": [len(p.ops) for p in problems],
        "n_hard": [p.n_hard for p in problems],
        "ops": [
            [
                {
                    "kind": op.kind,
                    "factors": list(op.factors) if op.factors else None,
                    "amount": op.amount,
                    "value": op.value,
                    "sentence": op.sentence,
                }
                for op in p.ops
            ]
            for p in problems
        ],
    }
    return Dataset.from_dict(rows)
