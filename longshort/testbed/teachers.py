"""Teachers for the testbed: an R1-style long trace, a one-shot short trace, and what lies between.

The long teacher writes thoughts separated by blank lines, each labelled with a type and with
``needed``: whether it carries information the answer needs that the base model cannot reliably
produce in one shot. By construction that is exactly the ``decompose`` thought of each hard step
(a two-digit product reduced to multiplications by one digit and one addition); everything else
(restating, plans, re-verification by another route, rechecks, summaries, easy steps, the review,
the final statement) is redundant for a model that adds and subtracts well. As in R1 traces, the
needed part is small: about 6-9% of the trace's tokens. The importance analysis (Monte Carlo
rollouts + the bounded metric) can therefore be scored against the truth.

Training formats (all as plain text; the trainers tokenize them exactly as the graph does):

- reasoner (long-only): [system long, user question] -> ``<think>\\n{long}\\n</think><answer> \\boxed{X} </answer>``
- base (short-only): [system short, user question], empty document -> ``<answer> {short} </answer>``
- switch (base): [system short, user question] + document ``<think>\\n{first k thoughts}\\n</think>``
  -> ``<answer> {continuation} </answer>``; k = 0 has no document at all (= the short-only example).
- oracle episode: long turns = the decompose thoughts, short turns = the easy steps between them.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Collection, Sequence
from typing import Literal, NamedTuple

from pydantic import BaseModel, computed_field, field_validator

from longshort.protocol import (
    ALL_TAGS,
    ANSWER_CLOSE,
    ANSWER_OPEN,
    RETHINK_CLOSE,
    SYSTEM_PROMPTS,
    THINK_CLOSE,
    THINK_OPEN,
    Role,
)
from longshort.testbed.tasks import Op, Problem
from longshort.trace import TokenCounts

ThoughtType = Literal["restate", "plan", "decompose", "verify", "recheck", "summary", "easy_step", "review", "final"]
Messages = list[dict[str, str]]
Counter = Callable[[str], int]

#: The long teacher adds rechecks until the needed share (by ``count_tokens``) is at most this.
NEEDED_TARGET = 0.085

# A digit, a run of newlines, the space before a number (its own token under digit splitting),
# a word, or one punctuation character.
_TOKEN = re.compile(r"\d|\n+| (?=\d)|[A-Za-z]+|[^\sA-Za-z\d]")


def count_tokens(text: str) -> int:
    """Approximate token count under the testbed tokenizer, without training one.

    Digits are split one by one there, and the byte-level pre-tokenizer leaves the space before a
    number as a token of its own; words and punctuation are counted as one each. Measured on long
    traces: exact on the needed (arithmetic) thoughts, within ~3% of a 1024-token vocabulary on
    whole traces; a smaller vocabulary splits words further (512: traces ~35% longer), so the
    needed share this gives is an upper bound on the real one.
    """
    return len(_TOKEN.findall(text))


def tokenizer_counter(tokenizer) -> Counter:
    """A counter from a real (Hugging Face) tokenizer, for the stats functions."""
    return lambda text: len(tokenizer.encode(text, add_special_tokens=False))


class Thought(BaseModel):
    """One thought of the long trace: a paragraph without blank lines."""

    text: str
    type: ThoughtType
    needed: bool = False
    op_index: int | None = None

    @field_validator("text")
    @classmethod
    def _one_paragraph(cls, text: str) -> str:
        # Thoughts are chunked on blank lines downstream; a blank line inside one would split it.
        if not text.strip() or "\n\n" in text or text != text.strip():
            raise ValueError(f"a thought is one non-empty paragraph without outer whitespace, got {text!r}")
        if any(tag in text for tag in ALL_TAGS):
            raise ValueError(f"a thought must not contain protocol tags: {text!r}")
        return text


class LongTrace(BaseModel):
    """The long teacher's trace: thoughts joined by blank lines."""

    thoughts: list[Thought]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def text(self) -> str:
        return self.prefix(len(self.thoughts))

    def prefix(self, k: int) -> str:
        """The first ``k`` thoughts, as the trace's text (cut at a thought boundary)."""
        return "\n\n".join(t.text for t in self.thoughts[:k])

    def needed_fraction(self, count: Counter = count_tokens) -> float:
        """Share of the trace's tokens in needed thoughts."""
        return sum(count(t.text) for t in self.thoughts if t.needed) / max(1, count(self.text))


# --------------------------------------------------------------------------- arithmetic phrases


def _product(a: int, b: int) -> str:
    """``a * b`` through the tens and ones of ``b``: two multiplications by one digit, one sum."""
    tens, ones = divmod(b, 10)
    return f"{a} * {b} = {a} * {tens * 10} + {a} * {ones} = {a * tens * 10} + {a * ones} = {a * b}"


def _column(a: int, d: int) -> str:
    """``a * d`` (d one digit) digit by digit, with the carry."""
    a1, a0 = divmod(a, 10)
    low = a0 * d
    carry, digit = divmod(low, 10)
    high = a1 * d
    if carry:
        return (
            f"{a0} * {d} = {low}, so I write {digit} and carry {carry}. "
            f"{a1} * {d} = {high}, and {high} + {carry} = {high + carry}. So {a} * {d} = {a * d}"
        )
    return f"{a0} * {d} = {low}, so I write {digit} with nothing to carry. {a1} * {d} = {high}. So {a} * {d} = {a * d}"


def _rounded(a: int, b: int) -> str:
    """``a * b`` from the nearest ten of ``a``."""
    a0 = a % 10
    if a0 >= 5:
        up, d = a + 10 - a0, 10 - a0
        return f"{a} * {b} = {up} * {b} - {d} * {b} = {up * b} - {d * b} = {a * b}"
    down = a - a0
    return f"{a} * {b} = {down} * {b} + {a0} * {b} = {down * b} + {a0 * b} = {a * b}"


def _apply(value: int, op: Op) -> str:
    sign = "+" if op.kind == "add" else "-"
    return f"{value} {sign} {op.amount} = {op.value}"


def _combine(value: int, op: Op) -> str:
    """Fold a product into the running total carefully: hundreds first, then the rest.

    A four-digit sum or difference in one shot is where a small model slips (measured: most of
    the first reasoner's errors), so it belongs to the hard step's needed thought.
    """
    hundreds, rest = op.amount - op.amount % 100, op.amount % 100
    if not hundreds or not rest:
        return _apply(value, op)
    sign = "+" if op.kind == "add" else "-"
    mid = value + hundreds if op.kind == "add" else value - hundreds
    return f"{value} {sign} {op.amount} = {value} {sign} {hundreds} {sign} {rest} = {mid} {sign} {rest} = {op.value}"


def _undo(value: int, op: Op) -> str:
    sign = "-" if op.kind == "add" else "+"
    return f"{op.value} {sign} {op.amount} = {value}"


def _quote(sentence: str) -> str:
    """A question sentence to quote after "Next:" (without its own leading "Then")."""
    return sentence[5].upper() + sentence[6:] if sentence.startswith("Then ") else sentence


def _spaced(problem: Problem) -> str:
    return re.sub(r"([*+-])", r" \1 ", problem.expression)


# --------------------------------------------------------------------------- long teacher


def _rechecks(a: int, b: int, rng: random.Random) -> list[str]:
    """Re-verifications of ``a * b`` by other routes, in a seeded order (all redundant)."""
    tens, ones = divmod(b, 10)
    b_ones = a % 10
    options = [
        rng.choice(
            (
                "Wait, let me double-check {a} * {u} digit by digit. {col}, as before.",
                "Hmm, let me make sure about {a} * {u}. {col}, which matches.",
            )
        ).format(a=a, u=ones, col=_column(a, ones)),
        rng.choice(
            (
                "And the tens part: {a} * {t} = {at}, so {a} * {t0} = {at0}. That is right too.",
                "Let me also recheck the tens part. {a} * {t} = {at}, and with a zero appended {a} * {t0} = {at0}.",
            )
        ).format(a=a, t=tens, at=a * tens, t0=tens * 10, at0=a * tens * 10),
        rng.choice(
            (
                "Let me sanity-check with rounding: {r}. Consistent.",
                "Another way to be sure is to round {a} to a multiple of ten: {r}. Same answer.",
            )
        ).format(a=a, r=_rounded(a, b)),
        rng.choice(
            (
                "Wait, in the other route I used {b} * {v}. Digit by digit: {col}. Fine.",
                "Hmm, let me recheck {b} * {v} from the second route. {col}. Good.",
            )
        ).format(b=b, v=b_ones, col=_column(b, b_ones)),
        rng.choice(
            (
                "Is {p} even reasonable? {lo} * {b} = {plo} and {hi} * {b} = {phi}, and {p} lies in between. Yes.",
                "Quick size check: {lo} * {b} = {plo} and {hi} * {b} = {phi}, so {p} is in the right range.",
            )
        ).format(
            p=a * b, b=b, lo=a // 10 * 10, plo=a // 10 * 10 * b, hi=a // 10 * 10 + 10, phi=(a // 10 * 10 + 10) * b
        ),
    ]
    rng.shuffle(options)
    return options


def _hard_thoughts(problem: Problem, i: int, rng: random.Random) -> tuple[list[Thought], list[str]]:
    """The thoughts of hard step ``i``, and spare rechecks to add if the trace is too lean."""
    op, unit = problem.ops[i], problem.unit
    a, b = op.factors  # type: ignore[misc]
    before = problem.ops[i - 1].value if i else 0
    if i == 0:
        intro = rng.choice(
            (
                "First, the starting amount. {s} So I need {a} * {b}, and I should be careful with this product.",
                "Let me start with the first step. {s} That is {a} * {b}, which I will break into pieces.",
                "Step one: {s} So the starting amount is {a} * {b}. Let me split it up.",
            )
        )
    else:
        intro = rng.choice(
            (
                "Next: {s} That is another product, {a} * {b}, which I then {verb} the {before} from before.",
                "Now the next part. {s} So I need {a} * {b} first, and then I {verb} the running total of {before}.",
            )
        )
    verb = "add to" if op.kind == "add" else "subtract from"
    thoughts = [
        Thought(text=intro.format(s=_quote(op.sentence), a=a, b=b, verb=verb, before=before), type="plan", op_index=i)
    ]
    decompose = _product(a, b) + "." + (f" Then {_combine(before, op)}." if i else "")
    thoughts.append(Thought(text=decompose, type="decompose", needed=True, op_index=i))
    verify = rng.choice(
        (
            "Let me verify this another way by splitting {a} instead. {swap}. Both ways give {p}, good.",
            "To be safe, let me compute it the other way around: {swap}. That matches {p}.",
            "Let me check that by swapping the factors. {swap}. Same result, {p}.",
        )
    )
    thoughts.append(Thought(text=verify.format(a=a, swap=_product(b, a), p=a * b), type="verify", op_index=i))
    checks = _rechecks(a, b, rng)
    keep = rng.randint(2, 3)
    thoughts += [Thought(text=c, type="recheck", op_index=i) for c in checks[:keep]]
    if i:
        combine = rng.choice(
            (
                "Now I combine it with what we had: {apply}. Let me check: {undo}. Good.",
                "So the running total becomes {apply}. Checking backwards, {undo}. Correct.",
            )
        )
        thoughts.append(
            Thought(text=combine.format(apply=_apply(before, op), undo=_undo(before, op)), type="easy_step", op_index=i)
        )
    summary = rng.choice(
        (
            "Okay, so after this step there are {v} {unit}.",
            "So far: {v} {unit}.",
            "So the running total is now {v} {unit}.",
        )
    )
    thoughts.append(Thought(text=summary.format(v=op.value, unit=unit), type="summary", op_index=i))
    spares = checks[keep:]
    if i:  # the combination can be rechecked too, when the trace needs more redundancy
        spares += [
            f"Hold on, let me redo the combination backwards: {_undo(before, op)}. It checks out.",
            f"One more look at the running total: {_apply(before, op)}, so {op.value} {unit} at this point.",
        ]
    return thoughts, spares


def _easy_thoughts(problem: Problem, i: int, rng: random.Random) -> list[Thought]:
    op, unit = problem.ops[i], problem.unit
    before = problem.ops[i - 1].value
    verb = "add" if op.kind == "add" else "subtract"
    step = rng.choice(
        (
            "Next: {s} So I {verb}: {apply}. Let me check by undoing it: {undo}. Yes.",
            "Then: {s} That gives {apply}. Double-checking, {undo}, so that is right.",
            "Now: {s} So {apply}. Check: {undo}. Correct.",
        )
    )
    text = step.format(s=_quote(op.sentence), verb=verb, apply=_apply(before, op), undo=_undo(before, op))
    thoughts = [Thought(text=text, type="easy_step", op_index=i)]
    if rng.random() < 0.7:
        summary = rng.choice(("So now there are {v} {unit}.", "That leaves {v} {unit} so far.", "Running total: {v}."))
        thoughts.append(Thought(text=summary.format(v=op.value, unit=unit), type="summary", op_index=i))
    return thoughts


def long_trace(problem: Problem, seed: int = 0) -> LongTrace:
    """The R1-style trace of ``problem``; the phrasing varies with ``seed``, the arithmetic never."""
    rng = random.Random(f"long:{seed}:{problem.id}")
    n_hard = problem.n_hard
    opener = rng.choice(
        (
            "Okay, let me read the problem carefully.",
            "Alright, let me restate the problem to make sure I have it right.",
            "Let me start by understanding what is being asked.",
        )
    )
    thoughts = [
        Thought(text=f"{opener} {problem.question} So I need the number of {problem.unit} at the end.", type="restate")
    ]
    products = "one product" if n_hard == 1 else f"{n_hard} products"
    plan = rng.choice(
        (
            "So the whole computation is {e}. There {be} {p} here: products of two-digit numbers are the hard part, so "
            "I will work {each} out carefully and verify it before combining. The additions and subtractions are "
            "easy, but I will check those too.",
            "Let me plan. The whole thing is {e}, with {p} in it. I will do the multiplication carefully by splitting "
            "it into simpler pieces, check it another way, and then go through the remaining steps one at a time.",
        )
    )
    be = "is" if n_hard == 1 else "are"
    thoughts.append(
        Thought(
            text=plan.format(e=_spaced(problem), p=products, be=be, each="it" if n_hard == 1 else "each one"),
            type="plan",
        )
    )
    spares: list[tuple[int, str]] = []  # (position after which to insert, recheck text)
    for i, op in enumerate(problem.ops):
        if op.hard:
            step, spare = _hard_thoughts(problem, i, rng)
            thoughts += step
            at = len(thoughts) - 1 - (1 if i else 0)  # before the combine step and the summary
            spares += [(at, s) for s in spare]
        else:
            thoughts += _easy_thoughts(problem, i, rng)
    lines = []
    for i, op in enumerate(problem.ops):
        if op.hard:
            lines.append(f"{op.factors[0]} * {op.factors[1]} = {op.amount}.")  # type: ignore[index]
        if i:
            lines.append(_apply(problem.ops[i - 1].value, op) + ".")
    review = rng.choice(
        (
            "Let me go over the whole solution once more. {l} Every step checks out.",
            "Before I answer, let me review all the steps. {l} Everything is consistent.",
        )
    )
    thoughts.append(Thought(text=review.format(l=" ".join(lines)), type="review"))
    answer = problem.answer
    final = rng.choice(
        (
            "So there are {x} {unit} at the end, and the answer is \\boxed{{{x}}}.",
            "Therefore the final count is {x} {unit}. The answer is \\boxed{{{x}}}.",
        )
    )
    thoughts.append(Thought(text=final.format(x=answer, unit=problem.unit), type="final"))
    # R1 traces are mostly redundancy; keep the needed share at most NEEDED_TARGET by adding the
    # spare rechecks where they belong (after that hard step's other checks), first step first.
    trace = LongTrace(thoughts=thoughts)
    while trace.needed_fraction() > NEEDED_TARGET and spares:
        at, text = spares.pop(0)
        op_index = trace.thoughts[at].op_index
        trace.thoughts.insert(at, Thought(text=text, type="recheck", op_index=op_index))
        spares = [(p + 1 if p >= at else p, s) for p, s in spares]
    # Still too lean (many hard steps): review the whole solution again before the final line.
    second = "Wait, I want to be completely sure. Going through it again: {l} Yes, all consistent."
    while trace.needed_fraction() > NEEDED_TARGET:
        trace.thoughts.insert(len(trace.thoughts) - 1, Thought(text=second.format(l=" ".join(lines)), type="review"))
    return trace


# --------------------------------------------------------------------------- short teacher


def op_lines(problem: Problem, i: int, *, from_above: bool = False) -> list[str]:
    """The short teacher's lines for step ``i``: its product (hard steps), then its combination (i > 0).

    ``from_above`` quotes a hard step whose ``decompose`` thought the long part already holds
    ("From above, 45 * 78 = 3510"); otherwise the product is written one-shot.
    """
    op = problem.ops[i]
    lines = []
    if op.hard:
        product = f"{op.factors[0]} * {op.factors[1]} = {op.amount}"  # type: ignore[index]
        lines.append(f"From above, {product}" if from_above else product)
    if i:
        step = _apply(problem.ops[i - 1].value, op)
        lines.append(f"From above, {step}" if op.hard and from_above else step)
    return lines


def _short_lines(problem: Problem, reused: Collection[int] = ()) -> list[str]:
    """One line per computation; products in ``reused`` are quoted from the long part."""
    return [line for i in range(len(problem.ops)) for line in op_lines(problem, i, from_above=i in reused)]


def short_trace(problem: Problem) -> str:
    """The concise solution: one line per computation, one-shot results, then the boxed answer."""
    return "\n".join([*_short_lines(problem), f"\\boxed{{{problem.answer}}}"])


# --------------------------------------------------------------------------- training formats


def prompt_messages(role: Role, question: str) -> Messages:
    """What an agent of ``role`` is prompted with (``Agent.prompt_messages`` with the default prompts)."""
    return [{"role": "system", "content": SYSTEM_PROMPTS[role]}, {"role": "user", "content": question}]


def think_turn(text: str) -> str:
    """A long turn around ``text`` (what the long agent generates, stop string included)."""
    return f"{THINK_OPEN}\n{text}\n{THINK_CLOSE}"


def answer_turn(text: str, *, final: bool = True) -> str:
    return f"{ANSWER_OPEN} {text} {ANSWER_CLOSE if final else RETHINK_CLOSE}"


def reasoner_example(problem: Problem, seed: int = 0) -> tuple[Messages, str]:
    """Long-only SFT pair. It stops at ``</think>`` as a long agent and still answers on its own."""
    completion = think_turn(long_trace(problem, seed).text) + answer_turn(f"\\boxed{{{problem.answer}}}")
    return prompt_messages("long", problem.question), completion


def base_example(problem: Problem) -> tuple[Messages, str]:
    """Short-only SFT pair: the short agent's view with an empty document."""
    return prompt_messages("short", problem.question), answer_turn(short_trace(problem))


class SwitchExample(NamedTuple):
    """A base-model example continuing a long prefix of ``k`` thoughts.

    The trainer builds the token view as the graph does: the short agent's prompt ids for
    ``question`` (``prompt_messages("short", question)`` through the chat template), then the ids
    of ``document``, then the target ids of ``completion``.
    """

    question: str
    document: str
    completion: str
    k: int


def switch_example(problem: Problem, k: int, seed: int = 0, trace: LongTrace | None = None) -> SwitchExample:
    """The base continues after the first ``k`` long thoughts.

    It quotes the products whose ``decompose`` thought is in the prefix ("From above, …") and
    computes the others and every easy step in one shot. ``k = 0`` gives no document at all rather
    than an empty think block: that is exactly the short-only situation (P_0 of the rollouts) and
    the graph never produces an empty long turn.
    """
    trace = trace or long_trace(problem, seed)
    if not 0 <= k <= len(trace.thoughts):
        raise ValueError(f"k must lie in 0..{len(trace.thoughts)}, got {k}")
    return selection_example(problem, range(1, k + 1), seed, trace)


def selection_example(
    problem: Problem, kept: Sequence[int], seed: int = 0, trace: LongTrace | None = None
) -> SwitchExample:
    """The base continues after the long thoughts ``kept`` (1-based, in order), the others removed.

    This is the document the thought analysis's functional check and the cold-start data give the
    short agent: the selected thoughts only. ``k`` is the number of kept thoughts.
    """
    trace = trace or long_trace(problem, seed)
    kept = sorted(set(kept))
    if kept and not 1 <= kept[0] <= kept[-1] <= len(trace.thoughts):
        raise ValueError(f"kept thoughts must lie in 1..{len(trace.thoughts)}, got {kept}")
    thoughts = [trace.thoughts[i - 1] for i in kept]
    reused = {t.op_index for t in thoughts if t.type == "decompose" and t.op_index is not None}
    document = think_turn("\n\n".join(t.text for t in thoughts)) if thoughts else ""
    lines = [*_short_lines(problem, reused), f"\\boxed{{{problem.answer}}}"]
    return SwitchExample(problem.question, document, answer_turn("\n".join(lines)), len(kept))


def random_selection(trace: LongTrace, rng: random.Random, p_needed: float = 0.8, p_other: float = 0.15) -> list[int]:
    """A gapped selection like the analysis makes: most needed thoughts, a few others, never none."""
    kept = [i for i, t in enumerate(trace.thoughts, 1) if rng.random() < (p_needed if t.needed else p_other)]
    return kept or [rng.randrange(1, len(trace.thoughts) + 1)]


def switch_examples(problem: Problem, seed: int = 0) -> list[SwitchExample]:
    """One example per prefix, k = 0..n (n = number of thoughts)."""
    trace = long_trace(problem, seed)
    return [switch_example(problem, k, seed, trace) for k in range(len(trace.thoughts) + 1)]


def oracle_episode(problem: Problem, seed: int = 0) -> list[tuple[Role, str]]:
    """The ideal Long⊗Short episode: the long agent writes exactly the needed thoughts.

    Long turns are the ``decompose`` thoughts verbatim; each short turn quotes the product just
    decomposed, does the easy steps up to the next hard one, and hands back with ``</rethink>``
    ("Next: a * b"), or closes with the boxed answer after the last hard step.
    """
    trace = long_trace(problem, seed)
    decompose = {t.op_index: t.text for t in trace.thoughts if t.type == "decompose"}
    hard = [i for i, op in enumerate(problem.ops) if op.hard]
    turns: list[tuple[Role, str]] = []
    for n, i in enumerate(hard):
        turns.append(("long", think_turn(decompose[i])))
        stop = hard[n + 1] if n + 1 < len(hard) else len(problem.ops)
        op = problem.ops[i]
        lines = [f"From above, {op.factors[0]} * {op.factors[1]} = {op.amount}"]  # type: ignore[index]
        if i:
            lines.append(f"From above, {_apply(problem.ops[i - 1].value, op)}")
        lines += [_apply(problem.ops[j - 1].value, problem.ops[j]) for j in range(i + 1, stop)]
        if stop < len(problem.ops):
            a, b = problem.ops[stop].factors  # type: ignore[misc]
            turns.append(("short", answer_turn("\n".join([*lines, f"Next: {a} * {b}"]), final=False)))
        else:
            turns.append(("short", answer_turn("\n".join([*lines, f"\\boxed{{{problem.answer}}}"]))))
    return turns


def turn_token_counts(turns: Sequence[tuple[Role, str]], count: Counter = count_tokens) -> TokenCounts:
    """Token counts per agent of an episode given as (role, text) turns."""
    long = sum(count(text) for role, text in turns if role == "long")
    short = sum(count(text) for role, text in turns if role == "short")
    return TokenCounts(long=long, short=short, total=long + short)


# --------------------------------------------------------------------------- stats


class TeacherStats(BaseModel):
    """How the teachers' formats compare on a set of problems (tokens per completion)."""

    n: int
    mean_long_tokens: float
    mean_short_tokens: float
    ratio: float
    needed_fraction: float
    max_needed_fraction: float
    mean_oracle_tokens: float


def teacher_stats(problems: Sequence[Problem], seed: int = 0, count: Counter = count_tokens) -> TeacherStats:
    """Mean reasoner / base / oracle completion tokens and the needed share of the long traces.

    ``needed_fraction`` is pooled (needed tokens over all long-trace tokens); pass
    ``tokenizer_counter(tok)`` as ``count`` to measure with a real tokenizer.
    """
    if not problems:
        raise ValueError("teacher_stats needs at least one problem")
    long_tokens, short_tokens, oracle_tokens, needed, trace_tokens, worst = [], [], [], 0, 0, 0.0
    for p in problems:
        trace = long_trace(p, seed)
        long_tokens.append(count(reasoner_example(p, seed)[1]))
        short_tokens.append(count(base_example(p)[1]))
        oracle_tokens.append(turn_token_counts(oracle_episode(p, seed), count).total)
        n_needed = sum(count(t.text) for t in trace.thoughts if t.needed)
        n_trace = count(trace.text)
        needed, trace_tokens = needed + n_needed, trace_tokens + n_trace
        worst = max(worst, n_needed / n_trace)
    mean_long, mean_short = sum(long_tokens) / len(problems), sum(short_tokens) / len(problems)
    return TeacherStats(
        n=len(problems),
        mean_long_tokens=mean_long,
        mean_short_tokens=mean_short,
        ratio=mean_long / mean_short,
        needed_fraction=needed / trace_tokens,
        max_needed_fraction=worst,
        mean_oracle_tokens=sum(oracle_tokens) / len(problems),
    )
