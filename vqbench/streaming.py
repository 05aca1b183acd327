"""Streaming image batches: images are read, decoded and resized in DataLoader workers a bounded number of batches
ahead (``workers × prefetch``), so no image set is ever held in memory. Batches come out in the order asked for, and
under ``torchrun`` ``map_batches`` splits them across ranks (batch b on rank b mod N) and gathers results on rank 0."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, NamedTuple, TypeVar

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .distributed import gather_batches, world
from .errors import DataError
from .interfaces import ImageSource, uint8_to_float
from .workers import exit_with_parent

log = logging.getLogger(__name__)
T = TypeVar("T")
WORKERS_ENV = "VQBENCH_DATA_WORKERS"


class ImageBatch(NamedTuple):
    """One batch: uint8 images B×3×H×W of the readable ``kept`` indices, and (index, reason) of unreadable ones."""

    images: torch.Tensor
    kept: list[int]
    skipped: list[tuple[int, str]]

    def floats(self, device: torch.device | str | None = None) -> torch.Tensor:
        """The images as float in [-1, 1] (what ``ImageSource.batch`` returns), on ``device`` if given: the uint8
        batch travels (a quarter of the bytes; from pinned memory without blocking) and is converted there."""
        images = self.images if device is None else self.images.to(device, non_blocking=self.images.is_pinned())
        return uint8_to_float(images)


class SourceImages(Dataset):
    """Item i: (source index, uint8 H×W×3 array), or (source index, reason) when the file cannot be decoded.
    With ``indices=None`` item i is source image i."""

    def __init__(self, source: ImageSource, indices: Sequence[int] | np.ndarray | None = None):
        self.source = source
        self.indices = None if indices is None else np.asarray(indices, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.source) if self.indices is None else len(self.indices)

    def __getitem__(self, position: int) -> tuple[int, np.ndarray | str]:
        index = position if self.indices is None else int(self.indices[position])
        try:
            return index, self.source.image(index)
        except OSError as err:
            return index, str(err)


class Collate:
    """Stack the readable images of a batch (uint8 B×3×H×W) and list the unreadable ones."""

    def __init__(self, resolution: int):
        self.resolution = resolution

    def __call__(self, items: list[tuple[int, np.ndarray | str]]) -> ImageBatch:
        arrays = [a for _, a in items if not isinstance(a, str)]
        kept = [i for i, a in items if not isinstance(a, str)]
        skipped = [(i, a) for i, a in items if isinstance(a, str)]
        if not arrays:
            return ImageBatch(torch.empty(0, 3, self.resolution, self.resolution, dtype=torch.uint8), kept, skipped)
        return ImageBatch(torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2), kept, skipped)


def default_workers() -> int:
    """Loader processes: ``$VQBENCH_DATA_WORKERS`` if set, else min(4, CPUs − 1) (0 reads in the main process)."""
    if os.environ.get(WORKERS_ENV, "").strip():
        return max(0, int(os.environ[WORKERS_ENV]))
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(4, cpus - 1))


def batch_count(items: int, batch_size: int) -> int:
    return -(-items // batch_size)


def loader(
    source: ImageSource, index_lists: Iterable[Sequence[int]], *, workers: int | None = None, prefetch: int = 2, pin: bool = False
) -> Iterator[ImageBatch]:
    """The images of each list of source indices, in order, read ahead by ``workers`` processes (at most
    ``workers × prefetch`` batches in flight; they exit if this process dies). Unreadable images are skipped, logged
    once and added to ``source.skipped``; a ``DataError`` stops a source none of whose images can be read."""
    workers = default_workers() if workers is None else workers
    data = DataLoader(
        SourceImages(source), batch_sampler=index_lists, num_workers=workers, collate_fn=Collate(source.resolution),  # type: ignore[arg-type]
        pin_memory=pin, prefetch_factor=prefetch if workers else None, worker_init_fn=exit_with_parent() if workers else None,
    )  # fmt: skip
    readable = False  # an image of the source has been read
    for batch in data:
        note_skipped(source, batch.skipped)
        if batch.kept:
            readable = True
        elif batch.skipped and not readable:  # an empty batch, and nothing read yet: stop here if nothing ever will be
            require_readable(source, batch.skipped[0][1])
            readable = True
        yield batch


PROBE_NOTE = 8  # unreadable images in a row after which ``first_readable`` says it goes on looking


def first_readable(source: ImageSource) -> tuple[int | None, str | None]:
    """The index of the first image of ``source`` that can be read (None if none can; it reads them in order, so a
    source whose first image is fine costs one read) and why the first unreadable one before it failed."""
    reason = None
    for index in range(len(source)):
        try:
            source.image(index)
            return index, reason
        except OSError as err:
            reason = reason or str(err)
        if index + 1 == PROBE_NOTE and len(source) > PROBE_NOTE:
            log.warning(
                "the first %d images cannot be read (%s); looking for a readable one among the other %d", PROBE_NOTE, reason, len(source) - PROBE_NOTE
            )
    return None, reason


def require_readable(source: ImageSource, reason: str = "") -> None:
    """A ``DataError`` when not one image of ``source`` can be read (``reason``: why one failed, if known)."""
    index, first = first_readable(source)
    if index is None:
        raise DataError(
            f"none of the {len(source)} images of dataset {type(source).__name__} can be read (e.g. {first or reason}); "
            "replace the unreadable files or point the dataset at readable images"
        )


def note_skipped(source: ImageSource, skipped: Iterable[tuple[int, str]]) -> None:
    """Log and record unreadable images (as ``ImageSource.batch`` does)."""
    for index, reason in skipped:
        if index not in source.skipped:
            log.warning("skipping unreadable image: %s", reason)
        source.skipped.add(index)


def stream_batches(
    source: ImageSource, indices: Sequence[int] | np.ndarray, batch_size: int, batches: Sequence[int] | None = None,
    *, workers: int | None = None, prefetch: int = 2, pin: bool = False,
) -> Iterator[tuple[int, ImageBatch]]:  # fmt: skip
    """(b, batch) for batch numbers ``batches`` (default all) of ``indices`` cut into ``batch_size`` pieces, in order."""
    indices = np.asarray(indices, dtype=np.int64)
    numbers = list(range(batch_count(len(indices), batch_size)) if batches is None else batches)
    lists = [indices[b * batch_size : (b + 1) * batch_size].tolist() for b in numbers]
    if not lists:
        return
    yield from zip(numbers, loader(source, lists, workers=workers, prefetch=prefetch, pin=pin))


def map_batches(
    source: ImageSource, indices: Sequence[int] | np.ndarray, batch_size: int, compute: Callable[[ImageBatch], T],
    *, start: int = 0, workers: int | None = None, pin: bool = False,
) -> Iterator[tuple[int, T]]:  # fmt: skip
    """``compute`` over the batches ``start…`` of ``indices``: batch b runs on rank b mod N and rank 0 yields every
    (b, result) in batch order (results travel to rank 0, so keep them small and on the CPU); the other ranks yield
    nothing but must iterate to the end. One process: every batch, in order."""
    w = world()
    count = batch_count(len(indices), batch_size)
    rounds = [None if r is None else start + r for r in w.rounds(max(0, count - start))]
    mine = stream_batches(source, indices, batch_size, [b for b in rounds if b is not None], workers=workers, pin=pin)
    for b in rounds:
        local: list[tuple[int, Any]] = []
        if b is not None:
            got, batch = next(mine)
            assert got == b
            local.append((b, (b, compute(batch))))
        gathered = gather_batches(local)
        if gathered is not None:
            yield from gathered
