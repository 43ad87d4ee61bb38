"""Which float type the scorer's large matmuls run in.

bf16 halves the memory traffic, and where the hardware has it (a GPU, a CPU with AVX512-BF16 or
AMX) runs about 1.8x faster than fp32 at the cost of 0.6% of top-10 slots. A CPU without it
(AVX2 only: many AMD EPYC and older Intel parts) falls back to a path about 40x slower than fp32
(measured: a [126 x 260 x 600] @ [600 x 256] bmm, 6.6 s in bf16 against 0.15 s in fp32, one
thread). So `auto` (the default) times both on a matmul of the scorer's shape, once per process
and device, and takes the faster.
"""

from __future__ import annotations

import functools
import time

PRECISIONS = ("auto", "fp32", "bf16")


def _seconds(device: str, rounds: int = 6) -> dict[str, float]:
    """The best of `rounds` timed runs of a small batched matmul of the scorer's shape in each
    dtype, the two alternated: a load that comes and goes (another process, a Ray actor starting
    beside this one) then slows both alike instead of deciding the choice."""
    import torch  # here: the settings import this module's names without torch

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 256, 512, generator=gen)
    w = torch.randn(2, 512, 256, generator=gen)
    args = {n: (x.to(device=device, dtype=getattr(torch, n)), w.to(device=device, dtype=getattr(torch, n)))
            for n in ("bfloat16", "float32")}
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    best = dict.fromkeys(args, float("inf"))
    for i in range(rounds + 1):  # the first round warms up (kernel choice, caches)
        for name, (a, b) in args.items():
            sync()
            t = time.perf_counter()
            torch.bmm(a, b)
            sync()
            if i:
                best[name] = min(best[name], time.perf_counter() - t)
    return best


@functools.lru_cache(maxsize=None)
def bf16_is_faster(device: str = "cpu") -> bool:
    """Whether bf16 matmuls beat fp32 here (measured once per process and device)."""
    best = _seconds(device)
    return best["bfloat16"] < best["float32"]


def resolve_precision(precision: str, device: object = "cpu") -> str:
    """`fp32` or `bf16` as asked; `auto`: bf16 where it is faster on `device`, else fp32."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision != "auto":
        return precision
    return "bf16" if bf16_is_faster(str(device)) else "fp32"


__all__ = ["PRECISIONS", "bf16_is_faster", "resolve_precision"]
