"""Microseconds per linear layer at the sizes of a decode step (8 rows) and of a full 16×16 sequence (2048 rows), fp32
and bf16, through ``F.linear`` and oneDNN's prepacked path — why the autoregressive decode gains nothing from bf16 on a
CPU while full-sequence samplers do.

    .venv/bin/python benchmarks/linear_sizes.py --threads 2
"""

from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F


def per_call_us(fn: Callable[[], object], calls: int) -> float:
    for _ in range(max(10, calls // 40)):
        fn()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--out-dim", type=int, default=768)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"CPU capability {torch.backends.cpu.get_cpu_capability()}, {args.threads} threads, {args.dim}→{args.out_dim}")
    for rows, calls in ((8, 2000), (2048, 200)):
        for dtype in (torch.float32, torch.bfloat16):
            x, w, b = (
                torch.randn(rows, args.dim, dtype=dtype),
                torch.randn(args.out_dim, args.dim, dtype=dtype),
                torch.randn(args.out_dim, dtype=dtype),
            )
            packed = torch.ops.mkldnn._reorder_linear_weight(w, rows)
            with torch.inference_mode():
                plain = per_call_us(functools.partial(F.linear, x, w, b), calls)
                prepacked = per_call_us(functools.partial(torch.ops.mkldnn._linear_pointwise, x, packed, b, "none", [], ""), calls)
            print(f"{rows:5d} rows {str(dtype).removeprefix('torch.'):9s} F.linear {plain:8.1f} µs   oneDNN prepacked {prepacked:8.1f} µs")


if __name__ == "__main__":
    main()
