"""The transformers backend's worker thread: gathering requests into batches and running them.

Why a worker thread: a Long⊗Short run drives many episodes at once (threads or coroutines), each
asking for one continuation at a time. Calling the model per request would waste the accelerator;
so callers only *enqueue* their requests (``_Mailbox``) and wait on futures, while one daemon
thread gathers whatever is pending into batched forward passes. This module is that thread's
policy: which rows run together (gathering, prefill groups within a token budget, shared prompts,
the prefix cache), continuous admission of newcomers into a running batch, what happens to a row
that stopped (its future resolved at once, its KV kept for the request that will extend it), and
failure isolation (a failed forward is retried row by row; a merge that runs out of memory defers
the newcomers instead of failing the running rows).
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
import weakref
from collections import deque
from typing import TYPE_CHECKING

import torch

from longshort.agents._hf_batch import _Batch, _Job, keep_rows, merge_all, merge_batches
from longshort.agents._hf_decode import _Decoding
from longshort.agents._hf_load import _describe
from longshort.agents._hf_slots import SlotPool, _SlotBatch, adopt, place, prefill_tails, release, reserve
from longshort.agents._kv import PrefixStore, attention_kernels
from longshort.agents.base import GenerationResult

if TYPE_CHECKING:
    import contextlib
    from collections.abc import Callable

    from longshort.agents.hf import TransformersBackend

logger = logging.getLogger("longshort.agents.hf")


class _Closed(RuntimeError):
    """Raised to callers whose requests were pending when the backend was closed."""


class _Mailbox:
    """State shared by callers and the worker thread, kept apart from the backend object.

    The worker holds this strongly but the backend only weakly while idle, so a backend that is
    dropped without ``close()`` is still garbage-collected (its ``__del__`` closes the mailbox).
    """

    def __init__(self) -> None:
        self.cv = threading.Condition()
        self.queue: deque[_Job] = deque()
        self.owned: set[_Job] = set()  # taken by the worker and not yet resolved
        self.closed = False
        self.dead: str | None = None
        self.cancel_seen = False

    def on_done(self, future: concurrent.futures.Future) -> None:
        if future.cancelled():
            self.cancel_seen = True  # the worker scans its rows only when this is set


def _set_exception(job: _Job, error: BaseException) -> None:
    try:
        if not job.future.done():
            job.future.set_exception(error)
    except concurrent.futures.InvalidStateError:
        pass


def _worker_entry(ref: weakref.ReferenceType[TransformersBackend], box: _Mailbox) -> None:
    """The worker thread: wait for work holding only the mailbox, serve it holding the backend.

    Holding the backend only while serving lets an abandoned backend be garbage-collected; whatever
    ends this thread, every request still queued or running gets an exception, never a hang.
    """
    reason = "closed"
    try:
        while True:
            with box.cv:
                while not box.queue and not box.closed:
                    box.cv.wait()
                if box.closed:
                    return
            backend = ref()
            if backend is None:
                return
            backend._serve_once()
            del backend
    except BaseException as e:
        reason = f"worker died: {_describe(e)}"
        raise
    finally:
        with box.cv:
            box.dead = reason
            left = [*box.queue, *box.owned]
            box.queue.clear()
        for job in left:
            _set_exception(job, RuntimeError(f"TransformersBackend worker stopped ({reason})"))


class _Scheduler(_Decoding):
    """The worker's batching policy, mixed into ``TransformersBackend`` (which sets these attributes)."""

    max_batch_size: int
    gather_window_s: float
    max_prefill_tokens: int
    continuous: bool
    _plain_cache: bool
    _prefix: PrefixStore | None
    _slots: SlotPool | None  # the static KV layout the decode steps run over (None: the dynamic one)
    _box: _Mailbox
    #: ``torch.inference_mode`` for a model the backend loaded, ``torch.no_grad`` for an adopted one
    _grad_off: Callable[[], contextlib.AbstractContextManager]

    def _serve_once(self) -> None:
        """Gather one batch and decode it to the end; a bug fails that batch, never the worker."""
        box = self._box
        jobs = self._take(self.max_batch_size, wait=True)
        if not jobs:
            return
        box.owned.update(jobs)
        try:
            # grad mode is thread-local: it is switched off here, in the thread that runs forwards
            with self._grad_off(), attention_kernels(self.device):
                self._run(jobs)
        except Exception as e:
            logger.exception("TransformersBackend: unexpected error in the decode loop")
            message = f"internal error in TransformersBackend: {_describe(e)}"
            for job in list(box.owned):
                self._resolve(job, GenerationResult(finish_reason="error", error=message))
        for job in list(box.owned):  # safety net: no caller may wait forever
            if box.closed:
                _set_exception(job, _Closed("TransformersBackend was closed while this request ran"))
            else:
                self._resolve(job, GenerationResult(finish_reason="error", error="request dropped by the worker"))
        box.owned.clear()

    def _take(self, limit: int, *, wait: bool) -> list[_Job] | None:
        """Pop up to ``limit`` live jobs; with ``wait``, block for the first and then gather a while."""
        box = self._box
        with box.cv:
            if wait:
                while not box.closed:
                    while not box.queue and not box.closed:
                        box.cv.wait()
                    if box.closed:
                        return None
                    deadline = box.queue[0].enqueued_at + self.gather_window_s
                    while len(box.queue) < limit and not box.closed:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            break
                        box.cv.wait(remaining)
                    jobs = self._pop(limit)
                    if jobs:
                        return jobs
                return None
            return self._pop(limit)

    def _pop(self, limit: int) -> list[_Job]:
        jobs: list[_Job] = []
        while self._box.queue and len(jobs) < limit:
            job = self._box.queue.popleft()
            if job.future.done():  # cancelled while queued: skip, never prefill it
                self._stats["cancelled"] += 1
                continue
            jobs.append(job)
        return jobs

    def _run(self, jobs: list[_Job]) -> None:
        """Prefill ``jobs`` and decode until the batch is empty, admitting newcomers when continuous."""
        box = self._box
        batch = self._begin(None, jobs)
        cap = self.max_batch_size  # lowered when admitting more rows ran out of memory
        while not box.closed:
            if batch is not None and box.cancel_seen:
                box.cancel_seen = False
                batch = self._drop_cancelled(batch)
            if self.continuous:
                room = cap - (batch.live if batch is not None else 0)
                # Admitting means a prefill and a copy of the whole batch's KV (the merge): wait until
                # a good share of the batch is free, so the copies are amortised over many newcomers.
                enough = batch is None or room >= max(1, cap // 8)
                new = self._take(room, wait=False) if room > 0 and enough else None
                if new:
                    box.owned.update(new)
                    admitted = self._admit(batch, new)
                    if admitted is None:  # no memory for them beside the running rows: later, fewer
                        cap = max(1, batch.live)
                    else:
                        batch = admitted
            if batch is None:
                return
            self._stats["max_rows"] = max(self._stats["max_rows"], batch.size)
            try:
                logits = self._decode_forward(batch)
                batch = self._advance(batch, logits)
                continue
            except Exception as e:
                error = _describe(e)
            # The cache may be half-updated: restart every unfinished row on its own.
            left = [j for j in batch.jobs if not j.future.done()]
            batch = None
            self._after_failure()
            if len(left) == 1:
                self._fail(left[0], error)
            else:
                self._stats["isolated_retries"] += 1
                for job in left:
                    self._run_solo(job)

    def _admit(self, batch: _Batch | None, new: list[_Job]) -> _Batch | None:
        """Prefill ``new`` and merge them into ``batch``; ``None`` if that ran out of memory.

        A failed prefill already fails only its culprit (``_prefill_group``); what is left is the
        merge, which copies the whole running batch's KV and is where memory runs out when the
        batch is large. The running rows must not pay for that: the newcomers are rewound and put
        back at the front of the queue, to be admitted when rows have finished.
        """
        if batch is None:
            return self._begin(None, new)
        try:
            merged = self._begin(batch, new)
            self._stats["admitted_mid_batch"] += len(new)
            return merged
        except Exception as e:  # typically CUDA out of memory; the running rows are untouched
            logger.warning("TransformersBackend: admitting %d rows failed (%s); retrying later", len(new), e)
        self._after_failure()
        self._stats["admissions_deferred"] += 1
        running = {id(j) for j in batch.jobs}  # (slots may have taken some newcomers before the failure)
        back = [j for j in new if not j.future.done() and id(j) not in running]
        with self._box.cv:
            for job in reversed(back):
                job.reset()
                self._box.owned.discard(job)
                self._box.queue.appendleft(job)
        return None

    def _begin(self, batch: _Batch | None, jobs: list[_Job]) -> _Batch | None:
        """Prefill ``jobs`` and add them to the running ``batch`` (or start one).

        Over KV slots, the prefix hits among them are prefilled together, straight into their
        slots (``_prefill_hits``); otherwise each is its own one-row prefill (``_start``).
        """
        over_slots = self._slots is not None and (batch is None or isinstance(batch, _SlotBatch))
        if not over_slots or self._prefix is None:
            return self._place(batch, self._start(jobs))
        version = self._weights_version  # only KV computed with the current weights is served
        hits, misses = self._lookup(jobs, version)
        if misses:
            batch = self._place(batch, self._start(misses, lookup=False))
        if not hits:
            return batch
        if batch is not None and not isinstance(batch, _SlotBatch):  # the pool failed: the dynamic layout
            return merge_all([batch, *(self._prefill_from_prefix(j, n, kv, version) for j, n, kv in hits)])
        group: list[tuple[_Job, int, list]] = []  # groups within max_prefill_tokens (rows x longest tail)
        for hit in sorted(hits, key=lambda h: len(h[0].prompt) - h[1]):
            if group and (len(group) + 1) * (len(hit[0].prompt) - hit[1]) > self.max_prefill_tokens:
                batch = self._prefill_hits(batch, group, version)
                group = []
            group.append(hit)
        return self._prefill_hits(batch, group, version)

    def _prefill_hits(self, batch: _SlotBatch | None, hits: list[tuple[_Job, int, list]], version: int):
        """One forward for the tails of ``hits`` (job, n, stored KV of its first n ids), in free slots.

        If it fails, each hit is prefilled alone as in the dynamic layout (which falls back to a
        full prefill, isolating a real culprit) and then placed.
        """
        pool = self._slots
        assert pool is not None
        jobs = [job for job, _, _ in hits]
        try:
            slots = reserve(pool, batch, len(hits))
            for job in jobs:
                job.kv_version = version
            logits = prefill_tails(pool, self._forward, slots, [(j.prompt, n, kv) for j, n, kv in hits], self._pad_id)
            self._stats["prefills"] += 1
            self._stats["prefix_hits"] += len(hits)
            self._stats["prefix_tokens_reused"] += sum(n for _, n, _ in hits)
            new = self._new_batch(jobs, None, torch.zeros(len(jobs), 0, dtype=torch.long, device=self.device))
            done = self._step(new, logits)
        except Exception:
            logger.debug("batched prefix prefill failed; one by one", exc_info=True)
            self._after_failure()
            for job in jobs:
                job.reset()
            return self._place(batch, merge_all([self._prefill_from_prefix(j, n, kv, version) for j, n, kv in hits]))
        for row, reason in done.items():  # stopped at their first token: keep their KV, resolve them
            job = jobs[row]
            if self._prefix is not None and job.kv_version == self._weights_version:
                self._prefix.put(tuple(job.prompt), pool.row_kv(slots[row], len(job.prompt)), version=version)
            self._finish(job, reason)
        live = [r for r in range(len(jobs)) if r not in done]
        return adopt(pool, batch, new, live, [slots[r] for r in live]) if live else batch

    def _start(self, jobs: list[_Job], *, lookup: bool = True) -> _Batch | None:
        """Prefill ``jobs`` (in groups within ``max_prefill_tokens``) and merge them into one batch.

        A job whose prompt extends a finished request's tokens starts from that request's KV and
        prefills only its new tail (on its own: one row, no padding), then joins the batch
        (``lookup=False``: the caller looked them up already and these are all misses).
        """
        if not self._plain_cache:
            return self._prefill_group(jobs)
        parts: list[_Batch | None] = []  # merged once at the end: one copy of the KV, not one per part
        if self._prefix is not None and lookup:
            version = self._weights_version  # only KV computed with the current weights is served
            hits, jobs = self._lookup(jobs, version)
            parts.extend(self._prefill_from_prefix(job, n, kv, version) for job, n, kv in hits)
            if not jobs:
                return merge_all(parts)
        group: list[_Job] = []
        rows: set[tuple[int, ...]] = set()  # distinct prompts in the group: the rows a prefill computes
        # similar lengths → less padding; equal prompts adjacent → computed once when shared
        for job in sorted(jobs, key=lambda j: (len(j.prompt), j.prompt)):
            key = tuple(job.prompt) if self.share_prefills else (id(job),)
            if group and key not in rows and (len(rows) + 1) * len(job.prompt) > self.max_prefill_tokens:
                parts.append(self._prefill_group(group))
                group, rows = [], set()
            group.append(job)
            rows.add(key)
        parts.append(self._prefill_group(group))
        return merge_all(parts)

    def _lookup(self, jobs: list[_Job], version: int) -> tuple[list[tuple[_Job, int, list]], list[_Job]]:
        """Split ``jobs`` into prefix hits (job, n, the stored KV of its first n ids) and misses."""
        assert self._prefix is not None
        hits, misses = [], []
        for job in jobs:
            hit = self._prefix.longest_prefix(job.prompt, version=version)
            if hit is None:
                misses.append(job)
            else:
                hits.append((job, *hit))
        return hits, misses

    def _prefill_group(self, jobs: list[_Job]) -> _Batch | None:
        """One prefill forward; if it fails, retry each job alone so only the culprit errors."""
        try:
            return self._advance(*self._prefill(jobs))
        except Exception as e:
            error = _describe(e)
        self._after_failure()
        jobs = [j for j in jobs if not j.future.done()]
        if len(jobs) == 1:
            self._fail(jobs[0], error)
            return None
        self._stats["isolated_retries"] += 1
        if not self._plain_cache:  # cannot merge single-row caches: finish each alone now
            for job in jobs:
                self._run_solo(job)
            return None
        batch: _Batch | None = None
        for job in jobs:
            job.reset()
            batch = self._merge(batch, self._prefill_group([job]))
        return batch

    def _prefill_from_prefix(self, job: _Job, n: int, layers: list, version: int) -> _Batch | None:
        """Prefill ``job.prompt[n:]`` on top of the stored KV of ``job.prompt[:n]``."""
        try:
            return self._advance(*self._prefill_tail(job, n, layers, version))
        except Exception:  # fall back to a full prefill, which isolates a real failure
            logger.debug("prefix prefill failed; prefilling in full", exc_info=True)
            self._after_failure()
            job.reset()
            return self._prefill_group([job])

    def _advance(self, batch: _Batch, logits: torch.Tensor) -> _Batch | None:
        """Sample one token per row, resolve the rows that stopped and drop them."""
        done = self._step(batch, logits)
        if not done:
            return batch
        self._remember(batch, list(done))
        for row, reason in done.items():
            self._finish(batch.jobs[row], reason)
        # Dropping rows copies the whole KV; finished rows stay as placeholders until they are an
        # eighth of the batch (they cost one wasted row of compute each meanwhile).
        keep = [r for r, j in enumerate(batch.jobs) if not j.done]
        slots = isinstance(batch, _SlotBatch)  # freeing a slot copies nothing: always at once
        if not slots and len(batch.jobs) - len(keep) < max(1, batch.size // 8) and keep:
            return batch
        return self._select(batch, keep)

    def _remember(self, batch: _Batch, rows: list[int]) -> None:
        """Keep the KV of finished rows (their fed tokens) for requests that will extend them.

        Each entry is tagged with the weights version its row was prefilled with; a row whose
        weights changed meanwhile is not kept (and the store never serves an older version).
        """
        if self._prefix is None:
            return
        try:
            slots = batch.pool if isinstance(batch, _SlotBatch) else None
            width = batch.mask.shape[1]
            # the columns each row has fed: its position in a slot, its mask's ones otherwise
            counts = (batch.pos if slots is not None else batch.mask.sum(dim=1)).tolist()
            for row in rows:
                job, n = batch.jobs[row], int(counts[row])
                if job.kv_version != self._weights_version:
                    continue
                fed = tuple((job.prompt + job.ids)[:n])
                if slots is not None:
                    layers = slots.row_kv(row, n)
                else:
                    layers = [
                        (layer.keys[row, :, width - n :].clone(), layer.values[row, :, width - n :].clone())
                        for layer in batch.cache.layers
                    ]
                self._prefix.put(fed, layers, version=job.kv_version)
        except Exception:  # the cache is an optimisation: never let it fail a request
            logger.debug("could not keep a finished row's KV", exc_info=True)

    def _run_solo(self, job: _Job) -> None:
        """Generate one request alone from scratch (the isolation path after a batched failure)."""
        if job.future.done():  # cancelled meanwhile
            return
        job.reset()
        try:
            batch = self._advance(*self._prefill([job]))
            while batch is not None and not self._box.closed and not job.future.done():
                batch = self._advance(batch, self._decode_forward(batch))
            return
        except Exception as e:
            error = _describe(e)
        self._after_failure()
        self._fail(job, error)

    # ------------------------------------------------------------------ batch surgery

    def _select(self, batch: _Batch, keep: list[int]) -> _Batch | None:
        """Keep rows ``keep``; a cancelled row that leaves is counted here, whoever dropped it."""
        kept = set(keep)
        for r, job in enumerate(batch.jobs):
            if r not in kept and job.future.cancelled():
                self._box.owned.discard(job)
                self._stats["cancelled"] += 1
        if isinstance(batch, _SlotBatch):
            return release(batch, keep)
        return keep_rows(batch, keep, plain_cache=self._plain_cache)

    def _place(self, batch: _Batch | None, started: _Batch | None) -> _Batch | None:
        """Add freshly prefilled rows to the running batch: into free slots, or by a merge.

        The first rows of a run go into the slot pool when there is one; if that fails (no memory
        for the pool) this run decodes in the dynamic layout instead (``slot_fallbacks``).
        """
        if isinstance(batch, _SlotBatch):
            return place(batch.pool, batch, started)
        if batch is None and self._slots is not None and started is not None:
            try:
                return place(self._slots, None, started)
            except Exception as e:
                logger.warning("TransformersBackend: no room for the KV slots (%s); dynamic layout", _describe(e))
                self._stats["slot_fallbacks"] += 1
                self._after_failure()
        return self._merge(batch, started)

    def _merge(self, a: _Batch | None, b: _Batch | None) -> _Batch | None:
        return merge_batches(a, b)

    def _drop_cancelled(self, batch: _Batch) -> _Batch | None:
        keep = [r for r, j in enumerate(batch.jobs) if not j.future.cancelled()]
        if len(keep) == batch.size:
            return batch
        return self._select(batch, keep)  # counts them

    # ------------------------------------------------------------------ results

    def _finish(self, job: _Job, reason: str) -> None:
        self._resolve(job, self._result(job, reason))

    def _fail(self, job: _Job, error: str) -> None:
        self._stats["errors"] += 1
        self._resolve(job, GenerationResult(finish_reason="error", error=error))

    def _resolve(self, job: _Job, result: GenerationResult) -> None:
        try:
            if not job.future.done():
                job.future.set_result(result)
        except concurrent.futures.InvalidStateError:  # cancelled meanwhile
            pass
        self._box.owned.discard(job)

    def _after_failure(self) -> None:
        """After a failed forward (often OOM) give memory back before retrying."""
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
