"""In-process Hugging Face backend: one worker thread owns the model and batches every caller's requests.

Why a worker thread: a Long⊗Short run drives many episodes at once (threads or coroutines), each
asking for one continuation at a time. Calling the model per request would waste the accelerator;
so every ``generate``/``agenerate`` call only *enqueues* its requests and waits on futures, while a
single daemon thread gathers whatever is pending into batched forward passes. A row's future is
resolved the moment that row stops, so its episode can submit its next turn while the rest of the
batch keeps decoding; with ``continuous=True`` that next turn joins the running batch between
decode steps (prefilled on its own, then merged into the running KV cache with left padding).

The decoding loop is our own (no ``model.generate``) so that sampling is per row: temperature,
top-p and a per-request seed whose sample does not depend on what else is in the batch.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import inspect
import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from longshort.agents._futures import await_all, wait_all
from longshort.agents._kv import PrefixStore, attention_kernels, growing_cache, select_rows, trim_left
from longshort.agents.base import Backend, GenerationRequest, GenerationResult
from longshort.protocol import clean_text

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

#: seeded rows draw their uniforms in chunks of this size (a fixed size, so a seed's sequence of
#: draws never depends on ``max_new_tokens`` or on the batch)
_UNIFORM_CHUNK = 64


#: open backends, closed at interpreter exit: a worker thread still alive while the interpreter
#: tears down torch can abort the process ("terminate called without an active exception")
_LIVE: weakref.WeakSet[TransformersBackend] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for backend in list(_LIVE):
        backend.close(timeout=5.0)


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


# ----------------------------------------------------------------------------------------------
# loading


def _resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype | str:
    """``None`` → bf16 on CUDA, fp32 elsewhere; strings like "bf16", "float16" or "auto"."""
    if dtype is None:
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    aliases = {
        "bf16": "bfloat16",
        "fp16": "float16",
        "half": "float16",
        "fp32": "float32",
        "float": "float32",
    }
    name = aliases.get(dtype.lower(), dtype.lower())
    if name == "auto":
        return "auto"
    resolved = getattr(torch, name, None)
    if not isinstance(resolved, torch.dtype):
        raise ValueError(f"unknown dtype {dtype!r}; use e.g. 'bfloat16', 'float16', 'float32' or 'auto'")
    return resolved


def _looks_like_path(src: str, given_as_path: bool) -> bool:
    """A missing path must fail as 'not found', not as a confusing hub lookup of '/tmp/x'."""
    if given_as_path or os.path.isabs(src) or src.startswith((".", "~")) or "\\" in src:
        return True
    return src.count("/") > 1  # hub ids are "name" or "org/name"


def _load_model(
    model: str | os.PathLike[str], *, dtype: torch.dtype | str, revision: str | None, trust_remote_code: bool
) -> PreTrainedModel:
    from transformers import AutoModelForCausalLM

    src = os.fspath(model)
    local = Path(src).expanduser()
    if local.exists():
        src = str(local)
    elif _looks_like_path(src, isinstance(model, os.PathLike)):
        raise FileNotFoundError(f"TransformersBackend: model path {src!r} does not exist")
    try:
        return AutoModelForCausalLM.from_pretrained(
            src, dtype=dtype, revision=revision, trust_remote_code=trust_remote_code
        )
    except Exception as e:  # any loader failure becomes one clear message
        where = "a local directory" if local.exists() else "not a local path, so tried as a Hugging Face Hub id"
        raise ValueError(
            f"TransformersBackend: could not load a causal LM from {src!r} ({where}): {_describe(e)}"
        ) from e


def _load_tokenizer(
    src: str | os.PathLike[str], *, revision: str | None, trust_remote_code: bool
) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    name = os.fspath(src)
    local = Path(name).expanduser()
    if local.exists():
        name = str(local)
    elif _looks_like_path(name, isinstance(src, os.PathLike)):
        raise FileNotFoundError(f"TransformersBackend: tokenizer path {name!r} does not exist")
    try:
        return AutoTokenizer.from_pretrained(name, revision=revision, trust_remote_code=trust_remote_code)
    except Exception as e:
        raise ValueError(f"TransformersBackend: could not load a tokenizer from {name!r}: {_describe(e)}") from e


# ----------------------------------------------------------------------------------------------
# per-request and per-batch state


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
        "_generator",
        "_uniforms",
        "enqueued_at",
    )

    def __init__(self, request: GenerationRequest, prompt: list[int], max_new: int, plan: _StopPlan) -> None:
        self.request = request
        self.prompt = prompt
        self.max_new = max_new
        self.plan = plan
        self.future: concurrent.futures.Future[GenerationResult] = concurrent.futures.Future()
        self.enqueued_at = time.monotonic()
        self.reset()

    def reset(self) -> None:
        """Forget generated tokens and rewind the seed (a retried request samples the same again)."""
        self.ids: list[int] = []
        self.logprobs: list[float] = []
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

    @property
    def size(self) -> int:
        return len(self.jobs)

    @property
    def live(self) -> int:
        """Rows still generating (finished rows may stay a while as placeholders)."""
        return sum(not j.future.done() for j in self.jobs)

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


# ----------------------------------------------------------------------------------------------
# the backend


class TransformersBackend(Backend):
    """A local ``transformers`` causal LM served by one batching worker thread.

    Thread- and asyncio-safe: call ``generate`` from many threads or ``agenerate`` from many
    coroutines; requests from all callers share batched forward passes. Results are token-exact
    (``token_ids`` and ``logprobs`` are what the model sampled). ``stats`` counts what the worker did.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | PreTrainedModel,
        tokenizer: str | os.PathLike[str] | PreTrainedTokenizerBase | None = None,
        *,
        device: str | None = None,
        dtype: str | torch.dtype | None = None,
        max_batch_size: int = 64,
        gather_window_s: float = 0.005,
        revision: str | None = None,
        trust_remote_code: bool = False,
        continuous: bool = True,
        max_prefill_tokens: int = 32768,
        prefix_cache_tokens: int = 65536,
        share_prefills: bool = True,
    ) -> None:
        """Load (or adopt) the model and tokenizer and start the worker.

        ``max_prefill_tokens`` caps the padded size (rows × longest prompt) of one prefill forward:
        a burst of long prompts is prefilled in several groups, then merged, instead of one huge
        padded forward that might not fit in memory. ``prefix_cache_tokens`` bounds the KV kept from
        finished requests so that a request extending one (an agent's next turn) prefills only its
        new tail; 0 turns the prefix cache off. With ``share_prefills``, requests in one prefill
        with the same prompt (N samples of one prefix, as in Monte Carlo rollouts) compute it once
        and copy its KV to their rows.
        """
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if gather_window_s < 0:
            raise ValueError(f"gather_window_s must be >= 0, got {gather_window_s}")
        from transformers import PreTrainedTokenizerBase

        if isinstance(model, (str, os.PathLike)):
            self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
            self.model_id = os.fspath(model)
            loaded = _load_model(
                model,
                dtype=_resolve_dtype(dtype, self.device),
                revision=revision,
                trust_remote_code=trust_remote_code,
            )
            loaded.to(self.device)
        else:  # an instance: keep its device and dtype unless told otherwise
            loaded = model
            self.device = torch.device(device) if device else next(loaded.parameters()).device
            self.model_id = str(getattr(loaded, "name_or_path", "") or type(loaded).__name__)
            resolved = _resolve_dtype(dtype, self.device) if dtype is not None else None
            loaded.to(device=self.device, dtype=resolved if isinstance(resolved, torch.dtype) else None)
        if isinstance(tokenizer, PreTrainedTokenizerBase):
            tok = tokenizer
        else:
            src = tokenizer if tokenizer is not None else (model if isinstance(model, (str, os.PathLike)) else None)
            if src is None:
                src = getattr(loaded, "name_or_path", "") or None
            if src is None:
                raise ValueError("TransformersBackend: pass tokenizer= when the model is an instance without a path")
            tok = _load_tokenizer(src, revision=revision, trust_remote_code=trust_remote_code)

        loaded.eval()
        self.model: PreTrainedModel | None = loaded
        self.tokenizer = tok
        config = loaded.config.get_text_config() if hasattr(loaded.config, "get_text_config") else loaded.config
        self.max_context = getattr(config, "max_position_embeddings", None)
        self.vocab_size = int(loaded.get_input_embeddings().num_embeddings)
        self.max_batch_size = max_batch_size
        self.gather_window_s = gather_window_s
        self.max_prefill_tokens = max(1, max_prefill_tokens)

        # Merging/trimming caches edits per-layer key/value tensors directly; only safe for plain
        # full-attention DynamicLayers (not sliding-window or linear-attention layers).
        from transformers import DynamicCache
        from transformers.cache_utils import DynamicLayer

        probe = DynamicCache(config=loaded.config)
        self._plain_cache = all(type(layer) is DynamicLayer for layer in probe.layers)
        self.continuous = continuous and self._plain_cache
        if continuous and not self._plain_cache:
            logger.warning("TransformersBackend: cache of %s is not plain; continuous admission off", self.model_id)
        self.share_prefills = share_prefills and self._plain_cache
        self._prefix = PrefixStore(prefix_cache_tokens) if prefix_cache_tokens > 0 and self._plain_cache else None

        eos: set[int] = set()
        for value in (tok.eos_token_id, getattr(loaded.generation_config, "eos_token_id", None)):
            if isinstance(value, int):
                eos.add(value)
            elif isinstance(value, (list, tuple)):
                eos.update(int(v) for v in value)
        self.eos_token_ids: tuple[int, ...] = tuple(sorted(eos))
        self._eos = torch.tensor(self.eos_token_ids, dtype=torch.long, device=self.device)
        self._pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0

        self._stats: dict[str, int] = dict.fromkeys(
            (
                "requests",
                "rejected",
                "prefills",
                "decode_steps",
                "admitted_mid_batch",
                "max_rows",
                "prefix_hits",
                "prefix_tokens_reused",
                "shared_prefill_rows",
                "cancelled",
                "isolated_retries",
                "admissions_deferred",
                "errors",
                "generated_tokens",
            ),
            0,
        )
        self._plans: dict[tuple[str, ...], _StopPlan] = {}
        self._token_texts: list[str] | None = None
        self._plan_lock = threading.Lock()

        self._logits_to_keep = "logits_to_keep" in inspect.signature(loaded.forward).parameters
        self._box = _Mailbox()
        self._worker = threading.Thread(
            target=_worker_entry,
            args=(weakref.ref(self), self._box),
            name="TransformersBackend-worker",
            daemon=True,
        )
        self._worker.start()
        _LIVE.add(self)

    # ------------------------------------------------------------------ public API

    @property
    def stats(self) -> dict[str, int]:
        """Counters of the worker's activity (a copy): prefills, decode steps, mid-batch admissions…"""
        return dict(self._stats)

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        """Enqueue ``requests`` and block until all are done (other callers batch alongside)."""
        items = self.submit(requests)
        futures = [x for x in items if isinstance(x, concurrent.futures.Future)]
        return _in_order(items, wait_all(futures, self._check_worker, _cancel_all))

    async def agenerate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        """Like ``generate`` without blocking the event loop; cancelling the task frees its rows."""
        items = self.submit(requests)
        futures = [x for x in items if isinstance(x, concurrent.futures.Future)]
        return _in_order(items, await await_all(futures, self._check_worker, _cancel_all))

    def close(self, timeout: float = 30.0) -> None:
        """Stop the worker and drop the model (idempotent); pending callers get a RuntimeError."""
        worker, box = getattr(self, "_worker", None), getattr(self, "_box", None)
        if worker is None or box is None:
            return
        with box.cv:
            already = box.closed
            box.closed = True
            queued = list(box.queue)
            box.queue.clear()
            box.cv.notify_all()
        for job in queued:
            _set_exception(job, _Closed("TransformersBackend was closed before this request ran"))
        if already:
            return
        if worker is not threading.current_thread() and worker.is_alive():
            worker.join(timeout)
        if not worker.is_alive():
            self.model = None  # release the weights (the tokenizer is small and still useful)
            if self.device.type == "cuda":
                torch.cuda.empty_cache()

    def __del__(self) -> None:
        try:
            self.close(timeout=0.0)
        except Exception:  # never raise from a finalizer
            pass

    # ------------------------------------------------------------------ submission (caller threads)

    def submit(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult | concurrent.futures.Future]:
        """Queue ``requests`` without waiting: a future per good request, an error result per bad one.

        The building block of ``generate``/``agenerate`` and of ``ProcessBackend``'s child; cancelling a
        future frees its row.
        """
        self._check_running()
        items: list[GenerationResult | concurrent.futures.Future] = []
        jobs: list[_Job] = []
        for request in requests:
            job_or_error = self._validate(request)
            if isinstance(job_or_error, str):
                items.append(GenerationResult(finish_reason="error", error=job_or_error))
                continue
            job_or_error.future.add_done_callback(self._box.on_done)
            jobs.append(job_or_error)
            items.append(job_or_error.future)
        box = self._box
        with box.cv:
            self._check_running()
            self._stats["rejected"] += len(items) - len(jobs)
            self._stats["requests"] += len(jobs)
            box.queue.extend(jobs)
            box.cv.notify()
        return items

    def _check_worker(self) -> None:
        if not self._worker.is_alive():
            raise RuntimeError(f"TransformersBackend worker is not running ({self._box.dead or 'stopped'})")

    def _check_running(self) -> None:
        if self._box.closed:
            raise RuntimeError("TransformersBackend is closed")
        if self._box.dead is not None or not self._worker.is_alive():
            raise RuntimeError(f"TransformersBackend worker is not running ({self._box.dead or 'stopped'})")

    def _validate(self, request: GenerationRequest) -> _Job | str:
        prompt = request.prompt_ids
        if prompt is None:
            return "TransformersBackend needs prompt_ids (got a messages-only request)"
        n = len(prompt)
        if n == 0:
            return "empty prompt: prompt_ids has no tokens"
        low, high = min(prompt), max(prompt)
        if low < 0 or high >= self.vocab_size:
            bad = [t for t in prompt if not 0 <= t < self.vocab_size][:5]
            return f"prompt_ids outside the vocabulary [0, {self.vocab_size}): {bad}"
        max_new = request.max_new_tokens
        if self.max_context is not None:
            if n >= self.max_context:
                return f"prompt of {n} tokens does not fit: max_context is {self.max_context} (no room for a new token)"
            max_new = min(max_new, self.max_context - n)
        return _Job(request, list(prompt), max_new, self._stop_plan(request.stop))

    def _stop_plan(self, stops: tuple[str, ...]) -> _StopPlan:
        """Id fast path when every stop is one token; else decoded-tail checks, gated by trigger ids."""
        stops = tuple(s for s in stops if s)
        if not stops:
            return _StopPlan()
        with self._plan_lock:
            plan = self._plans.get(stops)
            if plan is not None:
                return plan
            encoded = [self.tokenizer.encode(s, add_special_tokens=False) for s in stops]
            if all(len(e) == 1 for e in encoded):
                plan = _StopPlan(ids=tuple(sorted({e[0] for e in encoded})))
            else:
                plan = _StopPlan(
                    texts=stops,
                    triggers=self._triggers(stops),
                    tail_tokens=4 * max(len(s) for s in stops) + 4,
                )
            self._plans[stops] = plan
            return plan

    def _triggers(self, stops: tuple[str, ...]) -> frozenset[int] | None:
        """Token ids that can complete a stop string: their text holds a stop's last character.

        A stop string is completed by the token that adds its last character, so other tokens need
        no decode. Conservative: tokens that decode to nothing or to U+FFFD (partial UTF-8) are
        included; a stop ending in whitespace disables the gate (decoders may drop lone spaces).
        """
        lasts = {s[-1] for s in stops}
        if any(c.isspace() for c in lasts):
            return None
        if self._token_texts is None:
            self._token_texts = self.tokenizer.batch_decode(
                [[i] for i in range(len(self.tokenizer))], skip_special_tokens=False
            )
        texts = self._token_texts
        ids = {i for i, t in enumerate(texts) if not t or "\ufffd" in t or any(c in t for c in lasts)}
        ids.update(range(len(texts), self.vocab_size))
        return frozenset(ids)

    # ------------------------------------------------------------------ worker

    def _serve_once(self) -> None:
        """Gather one batch and decode it to the end; a bug fails that batch, never the worker."""
        box = self._box
        jobs = self._take(self.max_batch_size, wait=True)
        if not jobs:
            return
        box.owned.update(jobs)
        try:
            with torch.inference_mode(), attention_kernels(self.device):
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
        batch = self._start(jobs)
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
            return self._start(new)
        started = self._start(new)
        try:
            merged = self._merge(batch, started)
            self._stats["admitted_mid_batch"] += len(new)
            return merged
        except Exception as e:  # typically CUDA out of memory; the running batch is untouched
            logger.warning("TransformersBackend: admitting %d rows failed (%s); retrying later", len(new), e)
        self._after_failure()
        self._stats["admissions_deferred"] += 1
        back = [j for j in (started.jobs if started is not None else []) if not j.future.done()]
        with self._box.cv:
            for job in reversed(back):
                job.reset()
                self._box.owned.discard(job)
                self._box.queue.appendleft(job)
        return None

    def _start(self, jobs: list[_Job]) -> _Batch | None:
        """Prefill ``jobs`` (in groups within ``max_prefill_tokens``) and merge them into one batch.

        A job whose prompt extends a finished request's tokens starts from that request's KV and
        prefills only its new tail (on its own: one row, no padding), then joins the batch.
        """
        if not self._plain_cache:
            return self._prefill_group(jobs)
        batch: _Batch | None = None
        if self._prefix is not None:
            misses = []
            for job in jobs:
                hit = self._prefix.longest_prefix(job.prompt)
                if hit is None:
                    misses.append(job)
                else:
                    batch = self._merge(batch, self._prefill_from_prefix(job, *hit))
            jobs = misses
            if not jobs:
                return batch
        group: list[_Job] = []
        rows: set[tuple[int, ...]] = set()  # distinct prompts in the group: the rows a prefill computes
        # similar lengths → less padding; equal prompts adjacent → computed once when shared
        for job in sorted(jobs, key=lambda j: (len(j.prompt), j.prompt)):
            key = tuple(job.prompt) if self.share_prefills else (id(job),)
            if group and key not in rows and (len(rows) + 1) * len(job.prompt) > self.max_prefill_tokens:
                batch = self._merge(batch, self._prefill_group(group))
                group, rows = [], set()
            group.append(job)
            rows.add(key)
        return self._merge(batch, self._prefill_group(group))

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

    def _prefill_from_prefix(self, job: _Job, n: int, layers: list) -> _Batch | None:
        """Prefill ``job.prompt[n:]`` on top of the stored KV of ``job.prompt[:n]``."""
        try:
            assert self.model is not None
            cache = growing_cache(self.model.config)
            for layer, (k, v) in zip(cache.layers, layers, strict=True):
                layer.lazy_initialization(k, v)
                layer.keys, layer.values = k.unsqueeze(0), v.unsqueeze(0)
            dev, long = self.device, torch.long
            tail = torch.tensor([job.prompt[n:]], dtype=long, device=dev)
            mask = torch.ones(1, len(job.prompt), dtype=long, device=dev)
            pos = torch.arange(n, len(job.prompt), dtype=long, device=dev)[None, :]
            self._stats["prefills"] += 1
            self._stats["prefix_hits"] += 1
            self._stats["prefix_tokens_reused"] += n
            logits = self._forward(tail, mask, pos, cache)
            return self._advance(self._new_batch([job], cache, mask), logits)
        except Exception:  # fall back to a full prefill, which isolates a real failure
            logger.debug("prefix prefill failed; prefilling in full", exc_info=True)
            self._after_failure()
            job.reset()
            return self._prefill_group([job])

    def _remember(self, batch: _Batch, rows: list[int]) -> None:
        """Keep the KV of finished rows (their fed tokens) for requests that will extend them."""
        if self._prefix is None:
            return
        try:
            width = batch.mask.shape[1]
            counts = batch.mask.sum(dim=1).tolist()
            for row in rows:
                job, n = batch.jobs[row], int(counts[row])
                fed = tuple((job.prompt + job.ids)[:n])
                layers = [
                    (layer.keys[row, :, width - n :].clone(), layer.values[row, :, width - n :].clone())
                    for layer in batch.cache.layers
                ]
                self._prefix.put(fed, layers)
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

    # ------------------------------------------------------------------ model steps

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor, cache: Any) -> torch.Tensor:
        assert self.model is not None
        extra = {"logits_to_keep": 1} if self._logits_to_keep else {}
        out = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=pos,
            past_key_values=cache,
            use_cache=True,
            **extra,
        )
        return out.logits[:, -1, :]

    def _prefill(self, jobs: list[_Job]) -> tuple[_Batch, torch.Tensor]:
        """Left-pad the prompts, run them through a fresh cache; return the batch and last logits.

        With ``share_prefills`` each distinct prompt is one row of the forward; its KV, mask and
        logits are then copied to every job that asked for it (each samples on its own after).
        """
        row_of, firsts = list(range(len(jobs))), jobs
        if self.share_prefills:
            distinct: dict[tuple[int, ...], int] = {}
            firsts, row_of = [], []
            for job in jobs:
                key = tuple(job.prompt)
                if key not in distinct:
                    distinct[key] = len(firsts)
                    firsts.append(job)
                row_of.append(distinct[key])
        width = max(len(j.prompt) for j in firsts)
        ids = [[self._pad_id] * (width - len(j.prompt)) + j.prompt for j in firsts]
        mask = [[0] * (width - len(j.prompt)) + [1] * len(j.prompt) for j in firsts]
        dev, long = self.device, torch.long
        ids_t = torch.tensor(ids, dtype=long, device=dev)
        mask_t = torch.tensor(mask, dtype=long, device=dev)
        pos_t = (mask_t.cumsum(1) - 1).clamp_(min=0)
        assert self.model is not None
        cache = growing_cache(self.model.config)
        self._stats["prefills"] += 1
        logits = self._forward(ids_t, mask_t, pos_t, cache)
        if len(firsts) < len(jobs):
            index = torch.tensor(row_of, dtype=long, device=dev)
            for layer in cache.layers:
                select_rows(layer, index)
            mask_t, logits = mask_t.index_select(0, index), logits.index_select(0, index)
            self._stats["shared_prefill_rows"] += len(jobs) - len(firsts)
        return self._new_batch(jobs, cache, mask_t), logits

    def _new_batch(self, jobs: list[_Job], cache: Any, mask_t: torch.Tensor) -> _Batch:
        """A batch of freshly prefilled rows (their first token is sampled next)."""
        dev, long = self.device, torch.long
        n_stop = max(1, max(len(j.plan.ids) for j in jobs))
        stop_ids = [list(j.plan.ids) + [-1] * (n_stop - len(j.plan.ids)) for j in jobs]
        batch = _Batch(
            jobs=list(jobs),
            cache=cache,
            mask=mask_t,
            next_tok=torch.zeros(len(jobs), dtype=long, device=dev),
            pos=torch.tensor([len(j.prompt) for j in jobs], dtype=long, device=dev),
            n_gen=torch.zeros(len(jobs), dtype=long, device=dev),
            max_new=torch.tensor([j.max_new for j in jobs], dtype=long, device=dev),
            temp=torch.tensor([j.request.temperature or 1.0 for j in jobs], dtype=torch.float32, device=dev),
            top_p=torch.tensor([j.request.top_p for j in jobs], dtype=torch.float32, device=dev),
            stop_ids=torch.tensor(stop_ids, dtype=long, device=dev),
        )
        batch.refresh()
        return batch

    def _decode_forward(self, batch: _Batch) -> torch.Tensor:
        """Feed every row's pending token (one new mask column), return the next logits."""
        batch.mask = torch.cat([batch.mask, batch.mask.new_ones(batch.size, 1)], dim=1)
        logits = self._forward(batch.next_tok[:, None], batch.mask, batch.pos[:, None], batch.cache)
        batch.pos += 1
        self._stats["decode_steps"] += 1
        return logits

    def _sample(self, batch: _Batch, logits: torch.Tensor) -> torch.Tensor:
        """Greedy argmax, then inverse-CDF sampling for rows with temperature > 0.

        Every sampled row consumes one uniform per step: seeded rows from their own generator (so a
        seed's sample does not depend on the batch), the rest from one batched ``torch.rand``.
        """
        tok = logits.argmax(dim=-1)
        rows = batch.sampled_rows
        if rows is None:
            return tok
        scaled = logits.index_select(0, rows) / batch.temp.index_select(0, rows)[:, None]
        u = torch.rand(rows.numel(), device=logits.device)
        if batch.seeded_pos is not None:
            draws = torch.tensor([j.next_uniform() for j in batch.seeded_jobs], dtype=torch.float32)
            u[batch.seeded_pos] = draws.to(logits.device)
        picked = torch.empty_like(rows)
        if batch.full_pos is not None:
            probs = torch.softmax(scaled.index_select(0, batch.full_pos), dim=-1)
            picked[batch.full_pos] = _inverse_cdf(probs, u.index_select(0, batch.full_pos))
        if batch.topp_pos is not None:
            top_p = batch.top_p.index_select(0, rows).index_select(0, batch.topp_pos)
            sorted_logits, order = scaled.index_select(0, batch.topp_pos).sort(dim=-1, descending=True)
            probs = torch.softmax(sorted_logits, dim=-1)
            # drop tokens whose preceding mass already exceeds top_p (the top token always stays)
            probs = probs.masked_fill((probs.cumsum(dim=-1) - probs) > top_p[:, None], 0.0)
            choice = _inverse_cdf(probs, u.index_select(0, batch.topp_pos))
            picked[batch.topp_pos] = order.gather(1, choice[:, None]).squeeze(1)
        tok[rows] = picked
        return tok

    def _advance(self, batch: _Batch, logits: torch.Tensor) -> _Batch | None:
        """Sample one token per row, record it, resolve the rows that stopped and drop them."""
        logits = logits.float()
        tok = self._sample(batch, logits)
        logprob = logits.gather(1, tok[:, None]).squeeze(1) - torch.logsumexp(logits, dim=-1)
        batch.n_gen += 1
        batch.next_tok = tok
        is_eos = torch.isin(tok, self._eos)
        is_stop = (batch.stop_ids == tok[:, None]).any(dim=1)
        is_len = batch.n_gen >= batch.max_new
        code = torch.where(is_eos, 1, torch.where(is_stop, 2, torch.where(is_len, 3, 0)))
        toks, codes = torch.stack([tok, code]).tolist()  # the one sync per step
        lps = logprob.tolist()

        done: dict[int, str] = {}
        fed = 0
        for row, (job, t, lp, c) in enumerate(zip(batch.jobs, toks, lps, codes, strict=True)):
            if job.future.done():  # finished earlier and kept as a placeholder row, or cancelled
                continue
            fed += 1
            if c == 1:
                done[row] = "eos"  # the eos token is not part of the output
                continue
            job.ids.append(t)
            job.logprobs.append(lp)
            if c:
                done[row] = "stop" if c == 2 else "length"
        for row, job in batch.text_rows:
            if job.future.done() or codes[row] == 1:  # a placeholder row, or the eos (not part of the output)
                continue
            if job.plan.triggers is not None and toks[row] not in job.plan.triggers:
                continue
            tail = self.tokenizer.decode(job.ids[-job.plan.tail_tokens :], skip_special_tokens=False)
            if any(s in tail for s in job.plan.texts):
                done[row] = "stop"
        self._stats["generated_tokens"] += fed
        if not done:
            return batch
        self._remember(batch, list(done))
        for row, reason in done.items():
            self._finish(batch.jobs[row], reason)
        # Dropping rows copies the whole KV; finished rows stay as placeholders until they are an
        # eighth of the batch (they cost one wasted row of compute each meanwhile).
        keep = [r for r, j in enumerate(batch.jobs) if not j.future.done()]
        if len(batch.jobs) - len(keep) < max(1, batch.size // 8) and keep:
            return batch
        return self._select(batch, keep)

    # ------------------------------------------------------------------ batch surgery

    def _select(self, batch: _Batch, keep: list[int]) -> _Batch | None:
        """Keep only rows ``keep`` (cache included), then trim leading columns that are all padding."""
        if not keep:
            return None
        if len(keep) < batch.size:
            index = torch.tensor(keep, dtype=torch.long, device=self.device)
            if self._plain_cache:
                for layer in batch.cache.layers:
                    select_rows(layer, index)
            else:
                batch.cache.batch_select_indices(index)
            for name in _ROW_FIELDS:
                setattr(batch, name, getattr(batch, name).index_select(0, index))
            batch.jobs = [batch.jobs[r] for r in keep]
            batch.refresh()
        if self._plain_cache:
            # row r holds len(prompt) + len(ids) - 1 real columns (its newest token is not fed yet)
            needed = max(len(j.prompt) + len(j.ids) - 1 for j in batch.jobs)
            cut = batch.mask.shape[1] - needed
            if cut > 0:
                for layer in batch.cache.layers:
                    trim_left(layer, cut)
                batch.mask = batch.mask[:, cut:]
        return batch

    def _drop_cancelled(self, batch: _Batch) -> _Batch | None:
        keep = [r for r, j in enumerate(batch.jobs) if not j.future.cancelled()]
        if len(keep) == batch.size:
            return batch
        for job in batch.jobs:
            if job.future.cancelled():
                self._box.owned.discard(job)
        self._stats["cancelled"] += batch.size - len(keep)
        return self._select(batch, keep)

    def _merge(self, a: _Batch | None, b: _Batch | None) -> _Batch | None:
        """Stack two batches' rows: left-pad the shorter cache and mask to a common width."""
        if a is None:
            return b
        if b is None:
            return a
        width = max(a.mask.shape[1], b.mask.shape[1])
        pad_a, pad_b = width - a.mask.shape[1], width - b.mask.shape[1]
        layers = []  # build everything first: a failure here must not leave ``a`` half-merged
        for la, lb in zip(a.cache.layers, b.cache.layers, strict=True):
            keys = torch.cat([F.pad(la.keys, (0, 0, pad_a, 0)), F.pad(lb.keys, (0, 0, pad_b, 0))])
            values = torch.cat([F.pad(la.values, (0, 0, pad_a, 0)), F.pad(lb.values, (0, 0, pad_b, 0))])
            layers.append((keys, values))
        n_stop = max(a.stop_ids.shape[1], b.stop_ids.shape[1])
        fields = {
            "mask": torch.cat([F.pad(a.mask, (pad_a, 0)), F.pad(b.mask, (pad_b, 0))]),
            "stop_ids": torch.cat(
                [
                    F.pad(a.stop_ids, (0, n_stop - a.stop_ids.shape[1]), value=-1),
                    F.pad(b.stop_ids, (0, n_stop - b.stop_ids.shape[1]), value=-1),
                ]
            ),
        }
        for name in _ROW_FIELDS:
            if name not in fields:
                fields[name] = torch.cat([getattr(a, name), getattr(b, name)])
        for layer, (keys, values) in zip(a.cache.layers, layers, strict=True):
            layer.keys, layer.values = keys, values
        for name, value in fields.items():
            setattr(a, name, value)
        a.jobs = a.jobs + b.jobs
        a.refresh()
        return a

    # ------------------------------------------------------------------ results

    def _finish(self, job: _Job, reason: str) -> None:
        text = clean_text(self.tokenizer.decode(job.ids, skip_special_tokens=False))
        result = GenerationResult(
            text=text,
            token_ids=job.ids,
            logprobs=job.logprobs,
            num_tokens=len(job.ids),
            finish_reason=reason,  # type: ignore[arg-type]
        )
        self._resolve(job, result)

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


# ----------------------------------------------------------------------------------------------
# helpers


def _inverse_cdf(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Sample one index per row of (unnormalised) ``probs`` with the given uniforms, batched."""
    cdf = probs.cumsum(dim=-1)
    target = (u * cdf[:, -1])[:, None]
    idx = torch.searchsorted(cdf, target, right=True).squeeze(1)
    # u*total can round up to total: fall back to the most likely index, never a zero-prob one
    return torch.where(idx >= probs.shape[-1], probs.argmax(dim=-1), idx)


def _cancel_all(futures: Sequence[concurrent.futures.Future]) -> None:
    for f in futures:
        f.cancel()  # a no-op for finished ones; the worker drops a cancelled row


def _in_order(items: list, results: list[GenerationResult]) -> list[GenerationResult]:
    """Queued requests' results back in the places of their futures (bad requests kept in place)."""
    done = iter(results)
    return [next(done) if isinstance(x, concurrent.futures.Future) else x for x in items]


def _describe(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"[:2000]


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
