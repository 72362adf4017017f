"""GPU time from ``torch.profiler``: what the device did, apart from how long the host took."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


def profiled(fn: Callable[[], Any], *, top: int = 8) -> tuple[Any, dict]:
    """Run ``fn`` under the profiler; return its result and the device time it took, in ms.

    On CPU only the host wall time is meaningful, and ``cuda`` says so. ``top`` lists the kernels
    with the most device time (name, ms, calls), which is where a step's GPU time goes.
    """
    import time

    from torch.profiler import ProfilerActivity, profile

    cuda = torch.cuda.is_available()
    activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if cuda else [])]
    with profile(activities=activities) as prof:
        start = time.perf_counter()
        result = fn()
        if cuda:
            torch.cuda.synchronize()
        wall = time.perf_counter() - start
    out: dict[str, Any] = {"profiled_wall_s": wall}
    if not cuda:
        out["cuda"] = "absent: CPU run, host (wall) time per decode step only"
        return result, out
    kernels = other = 0.0  # microseconds on the device: kernels, and memcpy/memset
    rows = []
    for event in prof.key_averages():
        if event.device_type != torch.autograd.DeviceType.CUDA:
            continue
        us = getattr(event, "self_device_time_total", None)
        us = event.self_cuda_time_total if us is None else us
        if event.key.startswith(("Memcpy", "Memset")):
            other += us
        else:
            kernels += us
            rows.append((event.key[:80], us / 1e3, event.count))
    out["cuda_kernel_ms"] = kernels / 1e3
    out["cuda_memcpy_memset_ms"] = other / 1e3
    out["cuda_busy_fraction"] = (kernels + other) / 1e6 / wall  # an upper bound: streams overlap
    out["top_kernels"] = sorted(rows, key=lambda r: -r[1])[:top]
    return result, out
