"""The step scaffolding every training loop shares: resume point, wall-clock cap, progress bar, checkpoint cadence."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator

from tqdm.auto import tqdm

from .distributed import world

log = logging.getLogger(__name__)


class StepLoop:
    """Iterate over steps ``start..total-1``; after each step, ``save`` runs every ``checkpoint_every`` steps, at the
    last step, and when the loop ends early (wall-clock cap; under torchrun rank 0's clock decides for all ranks). ``step`` and ``elapsed`` always describe finished work,
    so ``save`` can store them and a resumed loop continues exactly."""

    def __init__(
        self, total: int, checkpoint_every: int, save: Callable[[], None], start: int = 0, elapsed: float = 0.0,
        max_minutes: float | None = None, desc: str = "train", agree: Callable[[bool], bool] = bool,
    ):  # fmt: skip
        self.agree = agree  # turns this process's stop decision into the one every rank takes (rank 0's)
        self.total, self.checkpoint_every, self.save = total, checkpoint_every, save
        self.step, self.elapsed, self.max_minutes, self.desc = start, elapsed, max_minutes, desc
        self._bar: tqdm | None = None

    def __iter__(self) -> Iterator[int]:
        clock, saved_at = time.monotonic() - self.elapsed, None
        with tqdm(total=self.total, initial=self.step, desc=self.desc, unit="step", leave=False, disable=not world().main) as self._bar:
            while self.step < self.total:
                if self.max_minutes is not None and self.agree(self.elapsed > self.max_minutes * 60):
                    log.info("%s: wall-clock cap of %.1f min reached at step %d", self.desc, self.max_minutes, self.step)
                    break
                yield self.step
                self.step += 1
                self.elapsed = time.monotonic() - clock
                self._bar.update(1)
                if self.step % self.checkpoint_every == 0 or self.step == self.total:
                    self.save()
                    saved_at = self.step
        if saved_at != self.step:  # stopped early, or nothing was left to do
            self.save()

    def show(self, **values: float) -> None:
        """Display running values next to the progress bar."""
        if self._bar is not None:
            self._bar.set_postfix({k: f"{v:.4f}" for k, v in values.items()})
