"""Decoding over a static KV layout, so that a decode step can be one replayed CUDA graph.

Why: on a GPU the engine is host-bound. At N = 256 rows of the 4.3M-parameter testbed model an H200
ran about 150 decode steps per second while the kernels of a step take well under a millisecond:
the time goes to launching the transformers forward's hundred-odd kernels from Python. A CUDA graph
replays a recorded step with one launch, but only over fixed addresses and shapes, and the dynamic
layout of ``_kv.GrowingLayer`` (rows right-aligned, the key length growing every step, compaction
and merges copying the cache) changes both at every step.

Here every row owns a *slot* of buffers preallocated per layer, ``[slots, kv_heads, capacity,
head_dim]``, its KV left-aligned from column 0. A new token is written at the row's own column
(its position id), so rows of any lengths share a step without padding; a finished row frees its
slot (nothing is copied); a newcomer, prefilled as before with a dynamic cache (prefix hits and
shared prefills included), has its KV copied into a free slot. A step attends over the first
``length`` columns of the first ``rows`` slots, both rounded up to powers of two, with a mask that
keeps each row to its own columns; one graph is captured per (rows, length) bucket the first time
it is needed, and replayed after that. Sampling, stop checks and everything per row stay as they
are (``_hf_decode._step``): only the model forward is captured.

On CPU (or with graphs off) the same layout runs eagerly: that is what the equivalence tests
compare with the dynamic layout. A bucket whose capture runs out of memory runs eagerly for that
step (counted in ``graph_fallbacks``); a model whose forward cannot be captured runs eagerly from
then on, after one warning.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from transformers.cache_utils import DynamicLayer

from longshort.agents._hf_batch import _ROW_FIELDS, _Batch, _Job, _StopPlan
from longshort.agents.base import GenerationRequest, GenerationResult

logger = logging.getLogger("longshort.agents.hf")

#: the fewest columns a step attends over (smaller buckets would only add graphs)
_MIN_LENGTH = 64


def bucket(n: int, floor: int = 1) -> int:
    """The smallest power of two ≥ ``n`` (and ≥ ``floor``)."""
    return max(floor, 1 << max(0, n - 1).bit_length())


def supports_slots(model: Any) -> str | None:
    """Why ``model`` cannot decode over slots (``None`` if it can).

    The slot step hands the model a ready 4D mask, which transformers passes to SDPA and eager
    attention untouched; flash-attention kernels take no such mask.
    """
    impl = getattr(model.config, "_attn_implementation", None) or "eager"
    if impl not in ("sdpa", "eager", DECODE_SDPA):
        return f"attention implementation {impl!r} takes no 4D mask"
    return None


#: the attention implementation a slot pool gives a grouped-query model (``decode_sdpa``)
DECODE_SDPA = "longshort_decode_sdpa"


def decode_sdpa(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None, **kwargs):
    """transformers' SDPA attention, except that a masked one-token step of grouped-query attention
    runs on the KV heads, with the query heads of each group as its rows, instead of first copying
    every KV head to its group (``repeat_kv``).

    transformers 5.17 (the GPU image's) makes that copy whenever a mask is given, i.e. at every
    slot step: on a Qwen2.5-7B-shaped model at 64 rows the copies were the largest kernel time of a
    captured step (5.24 packs the query itself). Other calls go to transformers' function unchanged.
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    groups = getattr(module, "num_key_value_groups", 1)
    packable = (
        groups > 1
        and query.shape[2] == 1
        and attention_mask is not None
        and attention_mask.dim() == 4
        and attention_mask.shape[1] == 1
        and kwargs.get("position_bias") is None
        and not (module.training and dropout)
    )
    if not packable:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, is_causal=is_causal, **kwargs
        )
    rows, heads, _, dim = query.shape
    packed = query.reshape(rows, heads // groups, groups, dim)  # query head g*i+j reads KV head i
    out = torch.nn.functional.scaled_dot_product_attention(packed, key, value, attn_mask=attention_mask, scale=scaling)
    return out.reshape(rows, heads, 1, value.shape[-1]).transpose(1, 2).contiguous(), None


def _use_decode_sdpa(model: Any) -> None:
    """Give a grouped-query SDPA model ``decode_sdpa`` (registered with transformers once)."""
    config = model.config
    heads, kv_heads = getattr(config, "num_attention_heads", 0), getattr(config, "num_key_value_heads", None)
    if getattr(config, "_attn_implementation", None) != "sdpa" or not kv_heads or kv_heads >= heads:
        return
    try:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
    except ImportError:  # an older transformers: keep its own SDPA path
        return

    AttentionInterface.register(DECODE_SDPA, decode_sdpa)
    # the masks transformers builds (prefills) must stay SDPA's: an unknown name gets no mask at all
    AttentionMaskInterface.register(DECODE_SDPA, sdpa_mask)
    config._attn_implementation = DECODE_SDPA


def _sentinel() -> _Job:
    """A finished job that holds a free slot's place in a batch's rows (sampled, then ignored)."""
    job = _Job(GenerationRequest(prompt_ids=[0], max_new_tokens=1), [0], 1, _StopPlan())
    job.future.set_result(GenerationResult(finish_reason="error", error="free slot"))
    return job


_FREE = _sentinel()


class SlotLayer(DynamicLayer):
    """One layer of the pool, seen by the model as a cache layer: write each row's token at its column."""

    def __init__(self, pool: SlotPool, index: int) -> None:
        super().__init__()
        self.pool, self.index = pool, index
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        pool = self.pool
        k, v = pool.k[self.index], pool.v[self.index]
        if pool.subset is not None:  # a batched prefill of some slots (``prefill_tails``): many tokens each
            slots, cols = pool.subset
            k[slots[:, None], :, cols] = key_states.transpose(1, 2)
            v[slots[:, None], :, cols] = value_states.transpose(1, 2)
            return k.index_select(0, slots)[:, :, : pool.length], v.index_select(0, slots)[:, :, : pool.length]
        rows = key_states.shape[0]
        r, c = pool.rows[:rows], pool.write[:rows]
        k[r, :, c] = key_states[:, :, -1]
        v[r, :, c] = value_states[:, :, -1]
        return k[:rows, :, : pool.length], v[:rows, :, : pool.length]

    def get_seq_length(self) -> int:
        return self.pool.length - 1

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.pool.length, 0


class SlotPool:
    """The backend's preallocated KV slots, their static step inputs and the captured graphs.

    One pool per backend, reused by every batch; it grows (a copy, and the graphs are dropped) when
    a row needs more columns than it has, up to the model's context.
    """

    def __init__(self, model: Any, device: torch.device, *, slots: int, max_context: int | None, graphs: bool) -> None:
        self.model, self.device = model, device
        _use_decode_sdpa(model)
        self.slots = bucket(slots)
        self.max_context = max_context
        self.use_graphs = graphs and device.type == "cuda"
        self.k: list[torch.Tensor] = []
        self.v: list[torch.Tensor] = []
        self.capacity = 0  # columns per slot
        self.length = 0  # columns the current step attends over
        self.cache: Any = None
        #: (slots, columns [rows, tokens]) while ``prefill_tails`` runs a forward over some slots
        self.subset: tuple[torch.Tensor, torch.Tensor] | None = None
        self._graphs: dict[tuple[int, int], tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self._failed: set[tuple[int, int]] = set()
        self._mempool: Any = None
        self.stats = self.no_stats()

    @staticmethod
    def no_stats() -> dict[str, int]:
        """The pool's counters, all zero (a backend without a pool reports these)."""
        return {"graph_captures": 0, "graph_replays": 0, "graph_fallbacks": 0, "eager_steps": 0}

    # ------------------------------------------------------------------ memory

    def ensure(self, template: list[tuple[torch.Tensor, torch.Tensor]], columns: int) -> None:
        """Have at least ``columns`` columns per slot (allocated like ``template``'s layers)."""
        if columns <= self.capacity:
            return
        capacity = bucket(columns, _MIN_LENGTH)
        if self.max_context is not None:
            capacity = max(columns, min(capacity, self.max_context))
        ks, vs = [], []
        for i, (k, v) in enumerate(template):  # build first: a failure leaves the pool as it was
            shape = (self.slots, k.shape[1], capacity, k.shape[-1])
            nk, nv = k.new_zeros(shape), v.new_zeros((*shape[:3], v.shape[-1]))
            if self.capacity:
                nk[:, :, : self.capacity] = self.k[i]
                nv[:, :, : self.capacity] = self.v[i]
            ks.append(nk)
            vs.append(nv)
        self.k, self.v, self.capacity = ks, vs, capacity
        self._drop_graphs()  # they read the old buffers
        self.rows = torch.arange(self.slots, device=self.device)
        self.cols = torch.arange(capacity, device=self.device)
        if self.cache is None:
            from transformers import DynamicCache

            self.ids = torch.zeros(self.slots, dtype=torch.long, device=self.device)
            self.write = torch.zeros(self.slots, dtype=torch.long, device=self.device)
            self.cache = DynamicCache(config=self.model.config)
            self.cache.layers = [SlotLayer(self, i) for i in range(len(template))]

    def _drop_graphs(self) -> None:
        """Forget every graph, and their memory pool with them (a pool whose graphs are all gone is freed)."""
        self._graphs.clear()
        self._failed.clear()
        self._mempool = None

    def put(self, slot: int, layers: list[tuple[torch.Tensor, torch.Tensor]], row: int, first: int, n: int) -> None:
        """Copy columns ``first:first+n`` of row ``row`` of ``layers`` into columns ``0:n`` of ``slot``."""
        for i, (k, v) in enumerate(layers):
            self.k[i][slot, :, :n] = k[row, :, first : first + n]
            self.v[i][slot, :, :n] = v[row, :, first : first + n]

    def row_kv(self, slot: int, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """A copy of the first ``n`` columns of ``slot`` (for the prefix store)."""
        return [(k[slot, :, :n].clone(), v[slot, :, :n].clone()) for k, v in zip(self.k, self.v, strict=True)]

    def close(self) -> None:
        self._drop_graphs()
        self.k, self.v, self.cache = [], [], None

    # ------------------------------------------------------------------ the step

    def logits(self, forward: Callable[..., torch.Tensor], rows: int, columns: int) -> torch.Tensor:
        """Logits of the tokens in ``ids[:rows]`` written at ``write[:rows]``, attending over ``columns``."""
        self.length = min(bucket(columns, _MIN_LENGTH), self.capacity)
        key = (rows, self.length)
        if self.use_graphs and key not in self._failed:
            graph = self._graphs.get(key) or self._capture(forward, key)
            if graph is not None:
                graph[0].replay()
                self.stats["graph_replays"] += 1
                return graph[1]
        self.stats["eager_steps"] += 1
        return self._run(forward, rows)

    def mask(self, visible: torch.Tensor) -> torch.Tensor:
        """The 4D attention mask ``[rows, 1, queries, length]`` for ``visible`` ``[rows, queries, length]``:
        boolean for SDPA, additive (0 / most negative) for eager attention."""
        if getattr(self.model.config, "_attn_implementation", None) == "eager":
            dtype = self.k[0].dtype
            additive = torch.zeros(visible.shape, dtype=dtype, device=self.device)
            return additive.masked_fill(~visible, torch.finfo(dtype).min)[:, None]
        return visible[:, None]

    def _run(self, forward: Callable[..., torch.Tensor], rows: int) -> torch.Tensor:
        write = self.write[:rows]
        visible = self.cols[None, None, : self.length] <= write[:, None, None]  # [rows, 1, length]
        return forward(self.ids[:rows, None], self.mask(visible), write[:, None], self.cache)

    def _capture(self, forward: Callable[..., torch.Tensor], key: tuple[int, int]):
        """Record the step for ``key``; the warm-up is the real step (its KV writes are idempotent)."""
        rows = key[0]
        try:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                self._run(forward, rows)
            torch.cuda.current_stream().wait_stream(side)
            if self._mempool is None:
                self._mempool = torch.cuda.graph_pool_handle()
            graph = torch.cuda.CUDAGraph()
            # thread-local: another backend's worker in this process may launch kernels meanwhile
            with torch.cuda.graph(graph, pool=self._mempool, capture_error_mode="thread_local"):
                out = self._run(forward, rows)
        except torch.cuda.OutOfMemoryError:
            self._failed.add(key)
            self.stats["graph_fallbacks"] += 1
            torch.cuda.empty_cache()
            return None
        except Exception as e:  # the architecture cannot be captured: eager from now on
            logger.warning("TransformersBackend: decode step cannot be captured as a CUDA graph (%s); eager", e)
            self.use_graphs = False
            return None
        self.stats["graph_captures"] += 1
        self._graphs[key] = (graph, out)
        return self._graphs[key]


# ----------------------------------------------------------------------------------------------
# batches over slots


@dataclass(eq=False)
class _SlotBatch(_Batch):
    """A running batch over a ``SlotPool``: row r is slot r; free slots hold the ``_FREE`` job.

    ``mask`` is unused (each row's columns are ``0..pos``); ``alive`` is 1 on rows that hold a job,
    0 on free slots (which then write and read column 0 only, whatever their ``pos``); ``top`` is
    the largest column a live row has filled, tracked on the host so a step needs no sync.
    """

    pool: SlotPool | None = None
    alive: torch.Tensor | None = None  # [B] long
    top: int = 0


#: the per-row tensors of a slot batch: a dynamic batch's, less the mask, plus ``alive``
_SLOT_FIELDS = (*(name for name in _ROW_FIELDS if name != "mask"), "alive")


def _row_defaults(name: str, rows: int, like: torch.Tensor) -> torch.Tensor:
    """Free-slot values of one per-row field (a finished-looking greedy row)."""
    fill = {"temp": 1.0, "top_p": 1.0, "stop_ids": -1, "max_new": 1}.get(name, 0)
    return like.new_full((rows, *like.shape[1:]), fill)


def _fed(job: _Job) -> int:
    """Columns of KV a running row holds: its prompt and every sampled token but the newest."""
    return len(job.prompt) + len(job.ids) - 1


def reserve(pool: SlotPool, batch: _SlotBatch | None, count: int) -> list[int]:
    """The slots ``count`` newcomers will take: the batch's free ones first, then new ones after it."""
    jobs = batch.jobs if batch is not None else []
    # free: done and not cancelled (a cancelled row keeps its slot until the worker drops and counts it)
    slots = [r for r, j in enumerate(jobs) if j.done and not j.future.cancelled()][:count]
    slots += range(len(jobs), len(jobs) + count - len(slots))
    if slots and bucket(max(slots) + 1) > pool.slots:
        raise RuntimeError(f"{max(slots) + 1} rows do not fit the pool's {pool.slots} slots")
    return slots


def place(pool: SlotPool, batch: _SlotBatch | None, new: _Batch | None) -> _SlotBatch | None:
    """Copy the live rows of ``new`` (a dynamic batch just prefilled) into free slots of ``batch``.

    Everything is built before ``batch`` is touched, so a failure (out of memory) leaves it intact.
    """
    if new is None:
        return batch
    incoming = [r for r, j in enumerate(new.jobs) if not j.done]
    if not incoming:
        return batch
    slots = reserve(pool, batch, len(incoming))
    width = new.mask.shape[1]
    fed = [_fed(new.jobs[r]) for r in incoming]
    layers = [(layer.keys, layer.values) for layer in new.cache.layers]
    pool.ensure(layers, max([*fed, batch.top if batch is not None else 0]) + 1)
    for slot, r, n in zip(slots, incoming, fed, strict=True):
        pool.put(slot, layers, r, width - n, n)
    return adopt(pool, batch, new, incoming, slots)


def adopt(pool: SlotPool, batch: _SlotBatch | None, new: _Batch, rows: list[int], slots: list[int]) -> _SlotBatch:
    """Make rows ``rows`` of ``new`` (their KV already in ``slots``) rows ``slots`` of ``batch``."""
    jobs = list(batch.jobs) if batch is not None else []
    size = bucket(max(len(jobs), max(slots) + 1))
    top = max([*(_fed(new.jobs[r]) for r in rows), batch.top if batch is not None else 0])
    dev = new.mask.device
    at = torch.tensor(slots, dtype=torch.long, device=dev)
    src = torch.tensor(rows, dtype=torch.long, device=dev)
    fields = {}
    for name in _SLOT_FIELDS:
        theirs = getattr(new, name) if name != "alive" else torch.ones(new.size, dtype=torch.long, device=dev)
        ours = getattr(batch, name) if batch is not None else theirs[:0]
        if name == "stop_ids":  # a common number of stop ids
            n_stop = max(ours.shape[1], theirs.shape[1])
            ours = torch.nn.functional.pad(ours, (0, n_stop - ours.shape[1]), value=-1)
            theirs = torch.nn.functional.pad(theirs, (0, n_stop - theirs.shape[1]), value=-1)
        merged = torch.cat([ours, _row_defaults(name, size - ours.shape[0], theirs)])
        merged[at] = theirs.index_select(0, src)
        fields[name] = merged
    jobs += [_FREE] * (size - len(jobs))
    for slot, r in zip(slots, rows, strict=True):
        jobs[slot] = new.jobs[r]
    out = batch if batch is not None else _SlotBatch(jobs=[], cache=pool.cache, mask=new.mask[:0], **fields)
    for name, value in fields.items():
        setattr(out, name, value)
    out.jobs, out.pool, out.top = jobs, pool, top
    out.mask = new.mask.new_zeros(size, 0)
    out.refresh()
    return out


def prefill_tails(
    pool: SlotPool,
    forward: Callable[..., torch.Tensor],
    slots: list[int],
    hits: list[tuple[list[int], int, list[tuple[torch.Tensor, torch.Tensor]]]],
    pad_id: int,
) -> torch.Tensor:
    """Prefill many prefix hits in one forward, straight into their slots; return each one's next logits.

    A hit is (prompt, n, layers): the stored KV of ``prompt[:n]``. Its KV is copied into its slot,
    then the tails ``prompt[n:]`` run as one left-padded forward in which each real token writes at
    its own column (n, n + 1, …) and sees its slot's columns up to itself, so the stored KV is used
    as it is and nothing is recomputed. A pad position writes past its row's last real column,
    where it is masked from the real tokens and overwritten by the row's next decode steps.
    """
    dev = pool.device
    width = max(len(prompt) - n for prompt, n, _ in hits)  # the longest tail
    pool.ensure([(k[None], v[None]) for k, v in hits[0][2]], max(n for _, n, _ in hits) + width + 1)
    ids, cols, positions = [], [], []
    for slot, (prompt, n, layers) in zip(slots, hits, strict=True):
        for i, (k, v) in enumerate(layers):
            pool.k[i][slot, :, :n] = k
            pool.v[i][slot, :, :n] = v
        tail = len(prompt) - n
        pads = width - tail
        ids.append([pad_id] * pads + prompt[n:])
        # real token j of the tail at column n + j; pads after the tail's end (n + tail, …)
        cols.append([n + tail + j for j in range(pads)] + [n + j for j in range(tail)])
        positions.append([n + j for j in range(pads)] + [n + j for j in range(tail)])
    col = torch.tensor(cols, dtype=torch.long, device=dev)
    pool.length = min(bucket(int(col.max()) + 1, _MIN_LENGTH), pool.capacity)
    mask = pool.mask(pool.cols[None, None, : pool.length] <= col[:, :, None])  # visible: [rows, width, length]
    pool.subset = (torch.tensor(slots, dtype=torch.long, device=dev), col)
    try:
        ids_t = torch.tensor(ids, dtype=torch.long, device=dev)
        return forward(ids_t, mask, torch.tensor(positions, dtype=torch.long, device=dev), pool.cache)
    finally:
        pool.subset = None


def release(batch: _SlotBatch, keep: list[int]) -> _SlotBatch | None:
    """Free every slot not in ``keep`` (no copy) and shrink the rows to the bucket of the last live one."""
    keep = [r for r in keep if not batch.jobs[r].done]  # a free slot is never "kept"
    if not keep:
        return None
    kept = set(keep)
    freed = [r for r in range(batch.size) if r not in kept and batch.jobs[r] is not _FREE]
    if freed:
        for r in freed:
            batch.jobs[r] = _FREE
        batch.alive[torch.tensor(freed, dtype=torch.long, device=batch.alive.device)] = 0
    size = bucket(max(keep) + 1)
    if size < batch.size:
        for name in _SLOT_FIELDS:
            setattr(batch, name, getattr(batch, name)[:size])
        batch.jobs = batch.jobs[:size]
        batch.mask = batch.mask[:size]
    batch.top = max(_fed(j) for j in batch.jobs if not j.done)
    batch.refresh()
    return batch


def decode_logits(batch: _SlotBatch, forward: Callable[..., torch.Tensor]) -> torch.Tensor:
    """One decode forward of a slot batch: feed every row's pending token at its own column."""
    pool = batch.pool
    assert pool is not None and batch.alive is not None
    rows = batch.size
    pool.ids[:rows].copy_(batch.next_tok)
    torch.mul(batch.pos, batch.alive, out=pool.write[:rows])  # free slots write column 0
    if batch.top + 1 > pool.capacity:
        pool.ensure(list(zip(pool.k, pool.v, strict=True)), batch.top + 1)
    logits = pool.logits(forward, rows, batch.top + 1)
    batch.top += 1
    return logits
