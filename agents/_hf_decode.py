"""One decoding step of the transformers backend: forwards, per-row sampling, logprobs, stop checks.

The loop is our own (no ``model.generate``) so that sampling is per row: temperature, top-p and a
per-request seed whose sample does not depend on what else is in the batch. This module says what
token each row gets next and whether it stopped; which rows run together, and what happens to a
row that stopped, is the scheduler's business (``_hf_scheduler``).

Logprobs are those of the distribution sampled from: ``log_softmax(logits / T)`` for rows with
temperature T > 0 (what an RL trainer computes, with logits / T), ``log_softmax(logits)`` for greedy
rows. Top-p truncation is not folded in.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import torch

from longshort.agents._hf_batch import _Batch, _Job, _StopPlan
from longshort.agents._hf_slots import _SlotBatch, decode_logits
from longshort.agents._kv import growing_cache, select_rows
from longshort.agents.base import GenerationResult
from longshort.protocol import clean_text

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


class _StopPlanner:
    """Turns a request's stop strings into a ``_StopPlan`` (cached per distinct ``stop`` tuple)."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, vocab_size: int) -> None:
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size
        self._plans: dict[tuple[str, ...], _StopPlan] = {}
        self._token_texts: list[str] | None = None
        self._lock = threading.Lock()

    def plan(self, stops: tuple[str, ...]) -> _StopPlan:
        """Id fast path when every stop is one token; else decoded-tail checks, gated by trigger ids."""
        stops = tuple(s for s in stops if s)
        if not stops:
            return _StopPlan()
        with self._lock:
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


def _inverse_cdf(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Sample one index per row of (unnormalised) ``probs`` with the given uniforms, batched."""
    cdf = probs.cumsum(dim=-1)
    target = (u * cdf[:, -1])[:, None]
    idx = torch.searchsorted(cdf, target, right=True).squeeze(1)
    # u*total can round up to total: fall back to the most likely index, never a zero-prob one
    return torch.where(idx >= probs.shape[-1], probs.argmax(dim=-1), idx)


class _Decoding:
    """Model steps and sampling, mixed into ``TransformersBackend`` (which sets these attributes)."""

    model: PreTrainedModel | None
    tokenizer: PreTrainedTokenizerBase
    device: torch.device
    share_prefills: bool
    _stats: dict[str, int]
    _eos: torch.Tensor
    _pad_id: int
    _logits_to_keep: bool
    _cache_kwarg: str
    _weights_version: int

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor, cache: Any) -> torch.Tensor:
        assert self.model is not None
        extra = {"logits_to_keep": 1} if self._logits_to_keep else {}
        extra[self._cache_kwarg] = cache
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, **extra)
        return out.logits[:, -1, :]

    def _prefill(self, jobs: list[_Job]) -> tuple[_Batch, torch.Tensor]:
        """Left-pad the prompts, run them through a fresh cache; return the batch and last logits.

        With ``share_prefills`` each distinct prompt is one row of the forward; its KV, mask and
        logits are then copied to every job that asked for it (each samples on its own after).
        """
        version = self._weights_version  # read before the forward: a change during it makes it stale
        for job in jobs:
            job.kv_version = version
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

    def _prefill_tail(self, job: _Job, n: int, layers: list, version: int) -> tuple[_Batch, torch.Tensor]:
        """Prefill ``job.prompt[n:]`` on top of ``layers``, the stored KV (of ``version``) of its first n ids."""
        job.kv_version = version
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
        return self._new_batch([job], cache, mask), logits

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
        """Feed every row's pending token (one new mask column, or its slot's next column), return the next logits."""
        if isinstance(batch, _SlotBatch):
            logits = decode_logits(batch, self._forward)
        else:
            batch.mask = torch.cat([batch.mask, batch.mask.new_ones(batch.size, 1)], dim=1)
            logits = self._forward(batch.next_tok[:, None], batch.mask, batch.pos[:, None], batch.cache)
        batch.pos += 1
        self._stats["decode_steps"] += 1
        return logits

    def _sample(self, batch: _Batch, logits: torch.Tensor, scaled: torch.Tensor) -> torch.Tensor:
        """Greedy argmax, then inverse-CDF sampling for rows with temperature > 0.

        ``scaled`` is ``logits / T`` (T = 1.0 in greedy rows). Every sampled row consumes one
        uniform per step: seeded rows from their own generator (so a seed's sample does not depend
        on the batch), the rest from one batched ``torch.rand``. When every row samples (or every
        sampled row has the same top-p kind) the row subsets are the whole batch and are not copied.
        """
        rows = batch.sampled_rows
        if rows is None:
            return logits.argmax(dim=-1)
        every = rows.numel() == batch.size
        if not every:
            scaled = scaled.index_select(0, rows)
        u = torch.rand(rows.numel(), device=logits.device)
        if batch.seeded_pos is not None:
            draws = torch.tensor([j.next_uniform() for j in batch.seeded_jobs], dtype=torch.float32)
            if len(batch.seeded_jobs) == rows.numel():
                u = draws.to(logits.device)
            else:
                u[batch.seeded_pos] = draws.to(logits.device)
        full, topp = batch.full_pos, batch.topp_pos
        if topp is None:  # every sampled row is top-p 1
            picked = _inverse_cdf(torch.softmax(scaled, dim=-1), u)
        else:
            picked = torch.empty_like(rows)
            if full is not None:
                probs = torch.softmax(scaled.index_select(0, full), dim=-1)
                picked[full] = _inverse_cdf(probs, u.index_select(0, full))
            top_p = batch.top_p.index_select(0, rows).index_select(0, topp)
            sub = scaled if full is None else scaled.index_select(0, topp)
            sorted_logits, order = sub.sort(dim=-1, descending=True)
            probs = torch.softmax(sorted_logits, dim=-1)
            # drop tokens whose preceding mass already exceeds top_p (the top token always stays)
            probs = probs.masked_fill((probs.cumsum(dim=-1) - probs) > top_p[:, None], 0.0)
            choice = _inverse_cdf(probs, u if full is None else u.index_select(0, topp))
            picked_topp = order.gather(1, choice[:, None]).squeeze(1)
            if full is None:
                picked = picked_topp
            else:
                picked[topp] = picked_topp
        if every:
            return picked
        tok = logits.argmax(dim=-1)
        tok[rows] = picked
        return tok

    def _step(self, batch: _Batch, logits: torch.Tensor) -> dict[int, str]:
        """Sample one token per row and record it; return {row: finish reason} of the rows that stopped."""
        logits = logits.float()
        # the distribution sampled from, and the logprobs': logits / T (T is 1.0 in greedy rows)
        scaled = logits if batch.sampled_rows is None else logits / batch.temp[:, None]
        tok = self._sample(batch, logits, scaled)
        logprob = scaled.gather(1, tok[:, None]).squeeze(1) - torch.logsumexp(scaled, dim=-1)
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
            if job.done:  # finished earlier and kept as a placeholder row, or cancelled
                continue
            fed += 1
            if c:
                if c == 1:
                    done[row] = "eos"  # the eos token is not part of the output
                    continue
                done[row] = "stop" if c == 2 else "length"
            job.ids.append(t)
            job.logprobs.append(lp)
        for row, job in batch.text_rows:
            if job.done or codes[row] == 1:  # a placeholder row, or the eos (not part of the output)
                continue
            if job.plan.triggers is not None and toks[row] not in job.plan.triggers:
                continue
            tail = self.tokenizer.decode(job.ids[-job.plan.tail_tokens :], skip_special_tokens=False)
            if any(s in tail for s in job.plan.texts):
                done[row] = "stop"
        for row, job in batch.stream_rows:  # empty unless someone listens: no decoding otherwise
            if job.done or codes[row] == 1:
                continue
            job.stream.push(toks[row])
        self._stats["generated_tokens"] += fed
        return done

    def _result(self, job: _Job, reason: str) -> GenerationResult:
        """The finished job as a result: its ids, their text and logprobs."""
        text = clean_text(self.tokenizer.decode(job.ids, skip_special_tokens=False))
        if job.stream is not None:
            job.stream.finish(text)  # before the future resolves: every piece precedes the result
        return GenerationResult(
            text=text,
            token_ids=job.ids,
            logprobs=job.logprobs,
            num_tokens=len(job.ids),
            finish_reason=reason,  # type: ignore[arg-type]
        )
