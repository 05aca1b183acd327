"""Does one training step fit? A probe before any file is written, so a batch too large for the device is bad input
(exit 2, the setting named) rather than a traceback after the run has started."""

from __future__ import annotations

from typing import Any

import torch

from ..config import parse
from ..errors import ConfigError
from ..plugins import Registries
from ..precision import make_autocast
from .schema import Benchmark


def is_out_of_memory(err: BaseException) -> bool:
    """An allocation failure on any device (CUDA's OutOfMemoryError, the CPU allocator's RuntimeError)."""
    text = str(err)
    return isinstance(err, torch.OutOfMemoryError) or "can't allocate memory" in text or "out of memory" in text.lower()


def probe_training_memory(
    bench: Benchmark, regs: Registries, cells: list[Any], geometry: tuple[tuple[int, int], int], device: torch.device, ranks: int = 1
) -> None:
    """One training step (forward, backward, optimizer) of every trainable variant at this rank's share of
    ``budget.batch_size`` on random codes; an allocation failure becomes a ConfigError naming the setting and what was asked for. Any other
    error is left for the cell itself to report. The global random state is left as it was."""
    shape, vocab = geometry
    batch = max(1, bench.budget.batch_size // ranks)
    autocast = make_autocast(device, bench.precision)
    seen: set[tuple[str, str]] = set()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        for cell in cells:
            if (cell.key, cell.variant.name) in seen:
                continue
            seen.add((cell.key, cell.variant.name))
            cls = regs.priors.get(cell.section.name, f"{cell.key}.name")
            prior: Any = None
            loss: Any = None
            try:
                prior = cls(parse(cls.Config, cell.variant.params, f"{cell.key}.params"), vocab, shape, 0)
                if not prior.trainable:
                    continue
                prior.to(device).train()
                with autocast():
                    loss = prior.loss(torch.randint(vocab, (batch, *shape), device=device))
                loss.backward()
                torch.optim.AdamW(prior.parameters(), lr=0.0).step()  # the optimizer's state is allocated at step 1 too
            except Exception as err:  # noqa: BLE001 - only allocation failures are this probe's business
                if is_out_of_memory(err):
                    raise ConfigError("budget.batch_size", out_of_memory_message(cell.variant.row, batch, device, err)) from None
            finally:
                prior = loss = None  # noqa: F841 - free before the next variant
                if device.type == "cuda":
                    torch.cuda.empty_cache()


def out_of_memory_message(row: str, batch: int, device: torch.device, err: BaseException) -> str:
    first = (str(err).strip().splitlines() or [type(err).__name__])[0]
    return f"{row}: one training step at batch {batch} does not fit in {device.type} memory ({first}); lower budget.batch_size or the prior's size"
