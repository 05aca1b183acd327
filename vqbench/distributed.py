"""Data parallelism under ``torchrun``: one process per device, work split by batch, results gathered on rank 0,
which alone writes files. Without torchrun (or with one process) every helper here is a no-op."""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


@dataclass(frozen=True)
class World:
    """This process's place among the ranks of a torchrun job (``size == 1``: a plain single process)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the one process that writes files, logs progress and computes metrics."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.size > 1

    def mine(self, count: int) -> range:
        """The batch numbers among ``range(count)`` this rank computes (round robin: b ≡ rank mod size)."""
        return range(self.rank, count, self.size)

    def rounds(self, count: int) -> Iterator[int | None]:
        """Batch numbers in rounds of ``size``: every rank takes part in every round (``None`` when it has no batch
        left in the last one), so per-round collectives line up across ranks."""
        for first in range(0, count, self.size):
            b = first + self.rank
            yield b if b < count else None


def world() -> World:
    """The current process group (or a single process when none was initialised)."""
    if not (dist.is_available() and dist.is_initialized()):
        return World()
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def init_from_env(device_type: str) -> World:
    """Join the process group torchrun describes in the environment (``WORLD_SIZE`` > 1): NCCL on CUDA, gloo on CPU.
    Each rank then uses CUDA device ``LOCAL_RANK``. Ranks wait for each other up to ``$VQBENCH_DIST_TIMEOUT_MIN``
    minutes (120): raise it when rank 0 alone works longer (a long metric, waiting for another job's encode)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1 or (dist.is_available() and dist.is_initialized()):
        return world()
    if device_type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    minutes = float(os.environ.get("VQBENCH_DIST_TIMEOUT_MIN", "120"))  # the longest rank-0-only stretch (e.g. metrics)
    dist.init_process_group("nccl" if device_type == "cuda" else "gloo", timeout=datetime.timedelta(minutes=minutes))
    return world()


def barrier() -> None:
    if world().active:
        dist.barrier()


def broadcast(value: T) -> T:
    """Rank 0's ``value`` on every rank (any picklable object)."""
    if not world().active:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(value: T) -> list[T] | None:
    """Every rank's ``value`` as a list in rank order on rank 0; ``None`` on the other ranks."""
    w = world()
    if not w.active:
        return [value]
    boxes: list[Any] | None = [None] * w.size if w.main else None
    dist.gather_object(value, boxes, dst=0)
    return boxes


def gather_batches(mine: Sequence[tuple[int, T]]) -> list[T] | None:
    """Rank 0: the (batch number, item) pairs of all ranks, items ordered by batch number; ``None`` elsewhere."""
    parts = gather(list(mine))
    if parts is None:
        return None
    return [item for _, item in sorted((pair for part in parts for pair in part), key=lambda pair: pair[0])]


def broadcast_module(module: torch.nn.Module) -> None:
    """Copy rank 0's parameters and buffers to every rank (after rank 0 alone loaded weights)."""
    if not world().active:
        return
    for tensor in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(tensor.data, src=0)


def all_reduce_mean(value: float, device: torch.device) -> float:
    """Mean of a scalar over ranks (e.g. the loss every rank computed on its shard)."""
    if not world().active:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item()) / world().size
