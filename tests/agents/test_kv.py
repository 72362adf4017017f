"""The in-place KV layer holds exactly what transformers' concatenating layer would."""

import torch
from transformers.cache_utils import DynamicLayer

from longshort.agents._kv import GrowingLayer, select_rows, trim_left


def test_growing_layer_matches_dynamic_layer_through_appends_selects_and_trims():
    torch.manual_seed(0)
    grow, ref = GrowingLayer(), DynamicLayer()
    batch = 5
    for step in range(40):
        n = 7 if step == 0 else 1  # a prefill, then one token at a time
        k, v = torch.randn(batch, 2, n, 4), torch.randn(batch, 2, n, 4)
        gk, gv = grow.update(k, v)
        rk, rv = ref.update(k, v)
        assert torch.equal(gk, rk) and torch.equal(gv, rv)
        if step in (10, 25):  # a row finishes
            index = torch.tensor([r for r in range(batch) if r != 1])
            select_rows(grow, index)
            select_rows(ref, index)
            batch -= 1
        if step in (15, 30):  # leading padding columns are trimmed
            trim_left(grow, 2)
            trim_left(ref, 2)
        assert grow.get_seq_length() == ref.get_seq_length()
        assert torch.equal(grow.keys, ref.keys) and torch.equal(grow.values, ref.values)
    assert grow._k.shape[-2] >= grow.get_seq_length()  # spare capacity, not a copy per step


def test_attention_kernels_leave_cudnn_out_on_cuda_only():
    import torch

    from longshort.agents._kv import attention_kernels

    before = torch.backends.cuda.cudnn_sdp_enabled()
    with attention_kernels(torch.device("cuda")):
        assert not torch.backends.cuda.cudnn_sdp_enabled()
        assert torch.backends.cuda.mem_efficient_sdp_enabled()
    assert torch.backends.cuda.cudnn_sdp_enabled() == before
    with attention_kernels(torch.device("cpu")):
        assert torch.backends.cuda.cudnn_sdp_enabled() == before
