"""A KV-cache layer that grows in place, so a long decode copies the cache O(log L) times, not L.

transformers' ``DynamicLayer`` concatenates every new token onto the whole cache: at 1,500 tokens
and 32 rows that is hundreds of MB copied per decode step, which dominated CPU decoding of the
testbed's long traces. This layer keeps keys and values in a buffer with spare capacity (doubled
when full) and exposes the filled part as a view. Assigning ``keys``/``values`` (as the batching
backend does when it selects, trims or merges rows) adopts the new tensor as the buffer.
"""

from __future__ import annotations

import contextlib

import torch
from transformers.cache_utils import DynamicLayer


class GrowingLayer(DynamicLayer):
    def __init__(self, *args, **kwargs) -> None:
        self._k: torch.Tensor | None = None
        self._v: torch.Tensor | None = None
        self._klen = self._vlen = 0
        super().__init__(*args, **kwargs)

    @property
    def keys(self) -> torch.Tensor | None:
        return self._k if self._k is None or self._k.dim() < 4 else self._k[:, :, : self._klen]

    @keys.setter
    def keys(self, tensor: torch.Tensor | None) -> None:
        self._k, self._klen = tensor, 0 if tensor is None or tensor.dim() < 4 else tensor.shape[-2]

    @property
    def values(self) -> torch.Tensor | None:
        return self._v if self._v is None or self._v.dim() < 4 else self._v[:, :, : self._vlen]

    @values.setter
    def values(self, tensor: torch.Tensor | None) -> None:
        self._v, self._vlen = tensor, 0 if tensor is None or tensor.dim() < 4 else tensor.shape[-2]

    @staticmethod
    def _append(buf: torch.Tensor | None, length: int, new: torch.Tensor) -> tuple[torch.Tensor, int]:
        if buf is None or buf.dim() < 4 or length == 0:
            return new.contiguous(), new.shape[-2]
        need = length + new.shape[-2]
        if need > buf.shape[-2]:
            grown = new.new_empty((*buf.shape[:2], max(need, 2 * buf.shape[-2]), buf.shape[-1]))
            grown[:, :, :length] = buf[:, :, :length]
            buf = grown
        buf[:, :, length:need] = new
        return buf, need

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        self._k, self._klen = self._append(self._k, self._klen, key_states)
        self._v, self._vlen = self._append(self._v, self._vlen, value_states)
        return self.keys, self.values


def growing_cache(config):
    """A ``DynamicCache`` whose full-attention layers grow in place (others are left as they are)."""
    from transformers import DynamicCache

    cache = DynamicCache(config=config)
    cache.layers = [GrowingLayer() if type(layer) is DynamicLayer else layer for layer in cache.layers]
    return cache


def select_rows(layer, index: torch.Tensor) -> None:
    """Keep batch rows ``index``; a growing layer keeps its spare capacity (no re-growth after)."""
    if isinstance(layer, GrowingLayer) and layer._k is not None and layer._k.dim() == 4:
        layer._k, layer._v = layer._k.index_select(0, index), layer._v.index_select(0, index)
    else:
        layer.keys, layer.values = layer.keys.index_select(0, index), layer.values.index_select(0, index)


def trim_left(layer, cut: int) -> None:
    """Drop the first ``cut`` positions (all padding) without copying the rest."""
    if isinstance(layer, GrowingLayer) and layer._k is not None and layer._k.dim() == 4:
        layer._k, layer._v = layer._k[:, :, cut:], layer._v[:, :, cut:]
        layer._klen -= cut
        layer._vlen -= cut
    else:
        layer.keys, layer.values = layer.keys[:, :, cut:], layer.values[:, :, cut:]


class PrefixStore:
    """The KV of finished requests, keyed by the token ids that produced it (LRU, bounded in tokens).

    A Long⊗Short agent's next view is its last view plus the tokens since, so the KV of its last
    request covers all but the new tail: prefilling only that tail turns each turn's cost from the
    whole document into the new part (what vLLM's automatic prefix caching does for its engine).

    Entries are tagged with the version of the weights that computed them (the store holds one
    version: the newest it was told of). A lookup or a store at a newer version drops every entry;
    KV computed with an older version is neither stored nor served. So after the weights change
    (RL) stale KV cannot come back, not even from a batch that was still running with the old ones.

    A lookup costs one dict probe per distinct stored key length, not one comparison of ids per
    stored key: keys are indexed by (length, last two ids), and only a probe that hits compares ids.
    """

    def __init__(self, max_tokens: int) -> None:
        from collections import OrderedDict

        self.max_tokens = max_tokens
        self.tokens = 0
        self.version = 0  # the newest weights version seen
        self.entries: OrderedDict[tuple[int, ...], list[tuple[torch.Tensor, torch.Tensor]]] = OrderedDict()
        self._index: dict[tuple[int, int, int], list[tuple[int, ...]]] = {}  # _slot(key) -> keys
        self._lengths: dict[int, int] = {}  # key length -> how many keys have it

    def put(self, ids: tuple[int, ...], layers: list[tuple[torch.Tensor, torch.Tensor]], *, version: int = 0) -> None:
        if not self._current(version) or not ids or len(ids) > self.max_tokens:
            return
        # a shorter prefix of the same document (or the same key again) is now redundant
        for key in self._stored_prefixes(ids, len(ids) + 1):
            self._drop(key)
        self.entries[ids] = layers
        self._index.setdefault(_slot(ids, len(ids)), []).append(ids)
        self._lengths[len(ids)] = self._lengths.get(len(ids), 0) + 1
        self.tokens += len(ids)
        while self.tokens > self.max_tokens:
            self._drop(next(iter(self.entries)))

    def longest_prefix(
        self, prompt: list[int], *, version: int = 0
    ) -> tuple[int, list[tuple[torch.Tensor, torch.Tensor]]] | None:
        """The longest stored key that is a proper prefix of ``prompt`` (one token must stay to feed)."""
        if not self._current(version):
            return None
        found = self._stored_prefixes(prompt, len(prompt))
        if not found:
            return None
        best = found[-1]
        self.entries.move_to_end(best)
        return len(best), self.entries[best]

    def _stored_prefixes(self, ids, below: int) -> list[tuple[int, ...]]:
        """Stored keys equal to ``ids[:k]`` for some k < ``below``, shortest first."""
        limit = min(below - 1, len(ids))
        found = []
        for k in self._lengths:
            if k <= limit:
                keys = self._index.get(_slot(ids, k))
                if keys:
                    prefix = tuple(ids[:k])
                    found.extend(key for key in keys if key == prefix)
        found.sort(key=len)
        return found

    def _current(self, version: int) -> bool:
        """Whether ``version`` is the newest seen; a newer one first drops every entry (all older)."""
        if version > self.version:
            self.entries.clear()
            self._index.clear()
            self._lengths.clear()
            self.tokens = 0
            self.version = version
        return version == self.version

    def _drop(self, key: tuple[int, ...]) -> None:
        n = len(key)
        self.tokens -= n
        del self.entries[key]
        slot = _slot(key, n)
        keys = self._index[slot]
        keys.remove(key)
        if not keys:
            del self._index[slot]
        self._lengths[n] -= 1
        if not self._lengths[n]:
            del self._lengths[n]


def _slot(ids, k: int) -> tuple[int, int, int]:
    """Where PrefixStore indexes ``ids[:k]``: its length and last two ids."""
    return k, ids[k - 1], ids[k - 2] if k > 1 else -1


def attention_kernels(device: torch.device) -> contextlib.AbstractContextManager:
    """SDPA without the cuDNN backend on CUDA, for decoding with a growing key length.

    Measured on an H200 (torch 2.11, bf16, 4-layer testbed-size Qwen2, 256 rows, 300 keys): a
    decode step took 40-58 ms with the default dispatch, which picks cuDNN attention, although its
    kernels ran for 0.13 ms; the same step in fp32 (memory-efficient kernel) took 2.5-3.2 ms. The
    key length changes at every decode step, and cuDNN's per-shape set-up dominates. Flash and
    memory-efficient attention have no per-shape set-up. See ``bench/NOTES.md``.
    """
    if device.type != "cuda":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])
