"""In-process Hugging Face backend: one worker thread owns the model and batches every caller's requests.

Every ``generate``/``agenerate`` call only *enqueues* its requests and waits on futures, while a
single daemon thread gathers whatever is pending into batched forward passes. A row's future is
resolved the moment that row stops, so its episode can submit its next turn while the rest of the
batch keeps decoding; with ``continuous=True`` that next turn joins the running batch between
decode steps (prefilled on its own, then merged into the running KV cache with left padding; on
CUDA, copied into a free slot of the static layout whose decode steps replay as CUDA graphs).

This module is the public face and the lifecycle (construction, submission, ``close``, ``stats``,
``weights_changed``). The rest lives beside it, one job per module: ``_hf_load`` (loading or
adopting the model and tokenizer), ``_hf_scheduler`` (the worker thread and its batching policy),
``_hf_decode`` (forwards, per-row sampling, logprobs, stop checks), ``_hf_batch`` (per-request and
per-batch state, row surgery), ``_hf_slots`` (the static KV slot layout and its CUDA graphs) and
``_kv`` (the growing KV cache and the prefix store).
"""

from __future__ import annotations

import atexit
import concurrent.futures
import inspect
import logging
import os
import threading
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from longshort.agents._futures import await_all, wait_all
from longshort.agents._hf_batch import _Job, _StopPlan
from longshort.agents._hf_decode import _StopPlanner
from longshort.agents._hf_load import _adopted_device, _load_model, _load_tokenizer, _resolve_dtype
from longshort.agents._hf_scheduler import _Closed, _Mailbox, _Scheduler, _set_exception, _worker_entry
from longshort.agents._hf_slots import SlotPool, supports_slots
from longshort.agents._kv import PrefixStore
from longshort.agents.base import Backend, GenerationRequest, GenerationResult, IncrementalDetokenizer

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = ["TransformersBackend"]

logger = logging.getLogger(__name__)

#: open backends, closed at interpreter exit: a worker thread still alive while the interpreter
#: tears down torch can abort the process ("terminate called without an active exception")
_LIVE: weakref.WeakSet[TransformersBackend] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for backend in list(_LIVE):
        backend.close(timeout=5.0)


class TransformersBackend(_Scheduler, Backend):
    """A local ``transformers`` causal LM served by one batching worker thread.

    Thread- and asyncio-safe: call ``generate`` from many threads or ``agenerate`` from many
    coroutines; requests from all callers share batched forward passes. Results are token-exact
    (``token_ids`` are what the model sampled; ``logprobs`` are under the distribution sampled
    from, ``log_softmax(logits / T)``, or of the raw logits for greedy rows). ``stats`` counts what
    the worker did.

    A model given by path or hub id is loaded, moved to ``device`` and put in eval mode. A live
    model instance (e.g. one being trained) is adopted as it is: the backend never calls
    ``.eval()``/``.train()`` or ``.to()`` on it, so the caller owns its mode (an RL rollout sets
    ``model.eval()`` for generation, then restores ``model.train()``), and a ``device``/``dtype``
    that differs from the instance's is a ``ValueError``. Generation runs without autograd
    (``torch.no_grad`` for an adopted model, so no inference tensors reach its state;
    ``torch.inference_mode`` for a loaded one). After changing the weights in place, call
    ``weights_changed()`` so that no KV computed with the old ones is reused.

    A request with an ``on_token`` hook gets its text pieces from the worker thread as each of
    its tokens is sampled (incremental detokenization of that row only); rows without a hook pay
    nothing, not even a per-step check (the batch keeps the list of rows that stream).
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
        cuda_graphs: bool | None = None,
    ) -> None:
        """Load (or adopt) the model and tokenizer and start the worker.

        ``max_prefill_tokens`` caps the padded size (rows × longest prompt) of one prefill forward:
        a burst of long prompts is prefilled in several groups, then merged, instead of one huge
        padded forward that might not fit in memory. ``prefix_cache_tokens`` bounds the KV kept from
        finished requests so that a request extending one (an agent's next turn) prefills only its
        new tail; 0 turns the prefix cache off. With ``share_prefills``, requests in one prefill
        with the same prompt (N samples of one prefix, as in Monte Carlo rollouts) compute it once
        and copy its KV to their rows.

        ``cuda_graphs`` decodes over preallocated KV slots and replays each decode step as a CUDA
        graph (``_hf_slots``): ``None`` (default) turns it on for a model this backend loaded onto a
        CUDA device, off for an adopted instance (a model being trained changes mode and hooks
        under the backend); ``True`` on a CPU device runs the same slot layout eagerly. With
        ``cuda_graphs=None``, the environment variable ``LONGSHORT_CUDA_GRAPHS=0`` (or ``1``) decides
        for every backend of a process and its children (the CLI's commands included).
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
            loaded.eval()
            self._grad_off = torch.inference_mode
        else:  # an instance: its device, dtype and training mode are the caller's
            loaded = model
            self.device = _adopted_device(loaded, device, dtype)
            self.model_id = str(getattr(loaded, "name_or_path", "") or type(loaded).__name__)
            self._grad_off = torch.no_grad
        if isinstance(tokenizer, PreTrainedTokenizerBase):
            tok = tokenizer
        else:
            src = tokenizer if tokenizer is not None else (model if isinstance(model, (str, os.PathLike)) else None)
            if src is None:
                src = getattr(loaded, "name_or_path", "") or None
            if src is None:
                raise ValueError("TransformersBackend: pass tokenizer= when the model is an instance without a path")
            tok = _load_tokenizer(src, revision=revision, trust_remote_code=trust_remote_code)

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
        self._weights_version = 0
        self._version_lock = threading.Lock()
        self._slots = self._slot_pool(loaded, cuda_graphs, adopted=not isinstance(model, (str, os.PathLike)))

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
                "slot_fallbacks",
            ),
            0,
        )
        self._stops = _StopPlanner(tok, self.vocab_size)

        # A PEFT model's forward takes **kwargs and hands them to its base model: ask the base (else every
        # prefill of an adapter being trained computes logits at all positions)
        core = loaded.get_base_model() if hasattr(loaded, "get_base_model") else loaded
        params = inspect.signature(core.forward).parameters
        self._logits_to_keep = "logits_to_keep" in params
        # transformers 5.25 renamed past_key_values to cache (the old name warns, and goes in 5.40)
        self._cache_kwarg = "cache" if "cache" in params else "past_key_values"
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
        pool = getattr(self, "_slots", None)
        return {**self._stats, **(pool.stats if pool is not None else SlotPool.no_stats())}

    def _slot_pool(self, model, cuda_graphs: bool | None, *, adopted: bool) -> SlotPool | None:
        """The KV slot pool the decode steps run over, or ``None`` for the dynamic layout."""
        if cuda_graphs is None and os.environ.get("LONGSHORT_CUDA_GRAPHS", "") in ("0", "1"):
            cuda_graphs = os.environ["LONGSHORT_CUDA_GRAPHS"] == "1"  # every backend of a run, from outside
        wanted = cuda_graphs if cuda_graphs is not None else (self.device.type == "cuda" and not adopted)
        if not wanted:
            return None
        why = supports_slots(model) if self._plain_cache else "its cache is not plain full attention"
        if why is not None:
            if cuda_graphs:
                logger.warning("TransformersBackend: %s cannot decode over KV slots (%s); eager", self.model_id, why)
            return None
        return SlotPool(model, self.device, slots=self.max_batch_size, max_context=self.max_context, graphs=True)

    @property
    def weights_version(self) -> int:
        """How many times ``weights_changed()`` was called."""
        return self._weights_version

    def weights_changed(self) -> None:
        """Say that the model's weights were changed in place: never reuse KV computed before.

        Call it after every update of the weights (an optimizer step, loading a new state dict).
        From then on the prefix cache serves only KV computed after the call; the KV of requests
        that were running meanwhile (partly with the old weights) is dropped when they finish.
        Requests in flight during the update are not restarted: their tokens may mix both weights.
        """
        with self._version_lock:
            self._weights_version += 1

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
            if self._slots is not None:
                self._slots.close()
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
        stream = IncrementalDetokenizer(self.tokenizer, request.on_token) if request.on_token is not None else None
        return _Job(request, list(prompt), max_new, self._stop_plan(request.stop), stream)

    def _stop_plan(self, stops: tuple[str, ...]) -> _StopPlan:
        """How ``stops`` are checked: token ids when each is one token, else the decoded tail."""
        return self._stops.plan(stops)


def _cancel_all(futures: Sequence[concurrent.futures.Future]) -> None:
    for f in futures:
        f.cancel()  # a no-op for finished ones; the worker drops a cancelled row


def _in_order(items: list, results: list[GenerationResult]) -> list[GenerationResult]:
    """Queued requests' results back in the places of their futures (bad requests kept in place)."""
    done = iter(results)
    return [next(done) if isinstance(x, concurrent.futures.Future) else x for x in items]
