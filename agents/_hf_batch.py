"""The state the transformers backend's worker keeps per request and per running batch.

Kept apart from the scheduler and the decoding step because it is plain data plus the two pieces
of row surgery every path needs (dropping rows, stacking two batches): no model, no threads. The
invariants written on ``_Batch`` are what the decoding step and the scheduler both rely on.
"""

from __future__ import annotations

import concurrent.futures
import time
import weakref
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from longshort.agents._kv import select_rows, trim_left
from longshort.agents.base import GenerationRequest, GenerationResult, IncrementalDetokenizer

#: seeded rows draw their uniforms in chunks of this size (a fixed size, so a seed's sequence of
#: draws never depends on ``max_new_tokens`` or on the batch)
_UNIFORM_CHUNK = 64


@dataclass(frozen=True)
class _StopPlan:
    """How one request's stop strings are checked (computed once per distinct ``stop`` tuple)."""

    #: fast path: every stop string is exactly one token id → compare ids on the device
    ids: tuple[int, ...] = ()
    #: text path: check the decoded tail of the generated ids
    texts: tuple[str, ...] = ()
    #: ids whose text can complete one of ``texts`` (others cannot: skip the decode); None = all
    triggers: frozenset[int] | None = None
    #: how many trailing tokens to decode so the window surely covers a just-completed stop string
    tail_tokens: int = 0


class _Job:
    """One validated request travelling through the worker: its future and its generated tokens."""

    __slots__ = (
        "request",
        "prompt",
        "max_new",
        "plan",
        "future",
        "ids",
        "logprobs",
        "kv_version",
        "_generator",
        "_uniforms",
        "enqueued_at",
        "stream",
        "done",
        "__weakref__",
    )

    def __init__(
        self,
        request: GenerationRequest,
        prompt: list[int],
        max_new: int,
        plan: _StopPlan,
        stream: IncrementalDetokenizer | None = None,
    ) -> None:
        self.request = request
        self.prompt = prompt
        self.max_new = max_new
        self.plan = plan
        #: the text pieces of a request with an ``on_token`` hook (None: nobody listens, nothing decoded)
        self.stream = stream
        self.future: concurrent.futures.Future[GenerationResult] = concurrent.futures.Future()
        #: ``future.done()`` without its lock, for the per-row checks of every decode step: set by a
        #: done callback (on a result, an exception or a caller's cancel, in the thread that did it)
        self.done = False
        self.future.add_done_callback(_DoneFlag(self))
        self.enqueued_at = time.monotonic()
        self.reset()

    def reset(self) -> None:
        """Forget generated tokens and rewind the seed (a retried request samples the same again)."""
        if self.stream is not None:
            self.stream.rewind()  # what was streamed is not streamed twice
        self.ids: list[int] = []
        self.logprobs: list[float] = []
        #: the weights version its KV was computed with (set when it is prefilled; see PrefixStore)
        self.kv_version = -1
        self._uniforms: list[float] = []
        self._generator: torch.Generator | None = None
        if self.request.seed is not None and self.request.temperature > 0:
            self._generator = torch.Generator(device="cpu")
            self._generator.manual_seed(self.request.seed % (1 << 64))

    def next_uniform(self) -> float:
        """The next U[0,1) draw of this request's own generator (drawn in fixed-size chunks)."""
        if not self._uniforms:
            assert self._generator is not None
            self._uniforms = torch.rand(_UNIFORM_CHUNK, generator=self._generator).tolist()[::-1]
        return self._uniforms.pop()


class _DoneFlag:
    """A future's done callback that sets its job's ``done`` (holding the job only weakly)."""

    __slots__ = ("job",)

    def __init__(self, job: _Job) -> None:
        self.job = weakref.ref(job)

    def __call__(self, future: concurrent.futures.Future) -> None:
        job = self.job()
        if job is not None:
            job.done = True


#: per-row tensors of a batch, all indexed by row (dim 0)
_ROW_FIELDS = ("mask", "next_tok", "pos", "n_gen", "max_new", "temp", "top_p", "stop_ids")


@dataclass(eq=False)
class _Batch:
    """A running batch: rows = jobs, a KV cache of T columns and a left-padded mask of width T.

    Invariant between steps: the cache holds each row's tokens except ``next_tok`` (sampled, not yet
    fed), right-aligned at column T-1; ``pos`` is the position id ``next_tok`` will get.
    """

    jobs: list[_Job]
    cache: Any  # transformers.DynamicCache
    mask: torch.Tensor  # [B, T] long
    next_tok: torch.Tensor  # [B] long
    pos: torch.Tensor  # [B] long
    n_gen: torch.Tensor  # [B] long, tokens sampled so far
    max_new: torch.Tensor  # [B] long
    temp: torch.Tensor  # [B] float, 1.0 for greedy rows (unused there)
    top_p: torch.Tensor  # [B] float
    stop_ids: torch.Tensor  # [B, S] long, -1 = no stop id
    # derived from ``jobs`` whenever the composition changes (not per step)
    sampled_rows: torch.Tensor | None = None
    full_pos: torch.Tensor | None = None  # positions within sampled_rows with top_p == 1
    topp_pos: torch.Tensor | None = None  # positions within sampled_rows with top_p < 1
    seeded_pos: torch.Tensor | None = None  # positions within sampled_rows with a seed
    seeded_jobs: list[_Job] = field(default_factory=list)
    text_rows: list[tuple[int, _Job]] = field(default_factory=list)
    stream_rows: list[tuple[int, _Job]] = field(default_factory=list)  # rows whose request has a hook

    @property
    def size(self) -> int:
        return len(self.jobs)

    @property
    def live(self) -> int:
        """Rows still generating (finished rows may stay a while as placeholders)."""
        return sum(not j.done for j in self.jobs)

    def refresh(self) -> None:
        """Recompute the row groups used by sampling and stop checks (python work per composition)."""
        device = self.mask.device
        sampled = [r for r, j in enumerate(self.jobs) if j.request.temperature > 0]

        def idx(values: list[int]) -> torch.Tensor | None:
            return torch.tensor(values, dtype=torch.long, device=device) if values else None

        self.sampled_rows = idx(sampled)
        self.full_pos = idx([i for i, r in enumerate(sampled) if self.jobs[r].request.top_p >= 1.0])
        self.topp_pos = idx([i for i, r in enumerate(sampled) if self.jobs[r].request.top_p < 1.0])
        seeded = [i for i, r in enumerate(sampled) if self.jobs[r].request.seed is not None]
        self.seeded_pos = idx(seeded)
        self.seeded_jobs = [self.jobs[sampled[i]] for i in seeded]
        self.text_rows = [(r, j) for r, j in enumerate(self.jobs) if j.plan.texts]
        self.stream_rows = [(r, j) for r, j in enumerate(self.jobs) if j.stream is not None]


# ----------------------------------------------------------------------------------------------
# row surgery


def keep_rows(batch: _Batch, keep: list[int], *, plain_cache: bool) -> _Batch | None:
    """Keep only rows ``keep`` (cache included), then trim leading columns that are all padding."""
    if not keep:
        return None
    if len(keep) < batch.size:
        index = torch.tensor(keep, dtype=torch.long, device=batch.mask.device)
        if plain_cache:
            for layer in batch.cache.layers:
                select_rows(layer, index)
        else:
            batch.cache.batch_select_indices(index)
        for name in _ROW_FIELDS:
            setattr(batch, name, getattr(batch, name).index_select(0, index))
        batch.jobs = [batch.jobs[r] for r in keep]
        batch.refresh()
    if plain_cache:
        # row r holds len(prompt) + len(ids) - 1 real columns (its newest token is not fed yet)
        needed = max(len(j.prompt) + len(j.ids) - 1 for j in batch.jobs)
        cut = batch.mask.shape[1] - needed
        if cut > 0:
            for layer in batch.cache.layers:
                trim_left(layer, cut)
            batch.mask = batch.mask[:, cut:]
    return batch


def merge_batches(a: _Batch | None, b: _Batch | None) -> _Batch | None:
    """Stack two batches' rows into ``a``: left-pad the shorter cache and mask to a common width."""
    return merge_all([a, b])


def merge_all(batches: list[_Batch | None]) -> _Batch | None:
    """Stack the rows of ``batches`` (in order) into the first one, with one copy of each tensor.

    Left-pads every cache and mask to the widest; ``None`` entries are skipped. Merging k batches
    one pair at a time would copy the growing result k times (and regroup its rows k times).
    """
    parts = [x for x in batches if x is not None]
    if not parts:
        return None
    if len(parts) == 1:
        return parts[0]
    a = parts[0]
    width = max(x.mask.shape[1] for x in parts)
    pads = [width - x.mask.shape[1] for x in parts]
    layers = []  # build everything first: a failure here must not leave ``a`` half-merged
    for group in zip(*(x.cache.layers for x in parts), strict=True):
        keys = torch.cat(
            [F.pad(la.keys, (0, 0, pad, 0)) if pad else la.keys for la, pad in zip(group, pads, strict=True)]
        )
        values = torch.cat(
            [F.pad(la.values, (0, 0, pad, 0)) if pad else la.values for la, pad in zip(group, pads, strict=True)]
        )
        layers.append((keys, values))
    n_stop = max(x.stop_ids.shape[1] for x in parts)
    fields = {
        "mask": torch.cat([F.pad(x.mask, (pad, 0)) if pad else x.mask for x, pad in zip(parts, pads, strict=True)]),
        "stop_ids": torch.cat([F.pad(x.stop_ids, (0, n_stop - x.stop_ids.shape[1]), value=-1) for x in parts]),
    }
    for name in _ROW_FIELDS:
        if name not in fields:
            fields[name] = torch.cat([getattr(x, name) for x in parts])
    for layer, (keys, values) in zip(a.cache.layers, layers, strict=True):
        layer.keys, layer.values = keys, values
    for name, value in fields.items():
        setattr(a, name, value)
    a.jobs = [job for x in parts for job in x.jobs]
    a.refresh()
    return a
