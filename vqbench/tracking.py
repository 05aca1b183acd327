"""Experiment trackers: training curves, sample images and final metrics of each cell sent to TensorBoard (built in)
or any tracker a plugin registers (``vqbench_register_trackers``). The benchmark's ``tracking`` key names the ones to
use; one tracker instance follows one cell."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from .errors import ConfigError

if TYPE_CHECKING:
    from .plugins import Registries

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CellInfo:
    """What a tracker knows of the cell it follows."""

    benchmark: str  # the benchmark's name
    cell: str  # the cell's id, unique within the benchmark (a folder name)
    row: str  # the report row the cell belongs to
    seed: int
    out: Path  # the benchmark's results folder
    settings: dict[str, Any] = field(default_factory=dict)  # prior, variant, params, lr, budget


class Tracker(ABC):
    """One cell's record in an experiment tracker. Steps count finished training steps (0: before training).

    ``requires`` lists the modules the tracker imports; a benchmark naming it is refused before anything runs when
    one is missing, with ``install`` as the remedy."""

    requires: ClassVar[tuple[str, ...]] = ()
    install: ClassVar[str] = ""

    @abstractmethod
    def start(self, cell: CellInfo) -> None:
        """Open the cell's record (called once, before any other call)."""

    @abstractmethod
    def log_scalars(self, step: int, values: dict[str, float]) -> None:
        """Scalars at a training step: ``train/loss``, ``train/lr``, ``val/nll_bpt``."""

    @abstractmethod
    def log_image(self, step: int, name: str, image: np.ndarray) -> None:
        """An H×W×3 uint8 image (the cell's samples grid)."""

    @abstractmethod
    def log_final(self, params: dict[str, Any], metrics: dict[str, float]) -> None:
        """The row's settings (flat: dotted keys → str, number or bool) and the cell's metric values."""

    def close(self) -> None:  # noqa: B027 - optional: not every tracker holds something to release
        """Flush and release the record (always called, also after a failure)."""

    @classmethod
    def check(cls, key: str) -> None:
        """Raise a ConfigError naming ``key`` when a module in ``requires`` is not installed."""
        for module in cls.requires:
            try:
                found = importlib.util.find_spec(module) is not None
            except (ImportError, ValueError):
                found = False
            if not found:
                remedy = f": {cls.install}" if cls.install else ""
                raise ConfigError(key, f"tracker {cls.__name__} needs the package '{module}', which is not installed{remedy}")


def tracker_names(value: str | Sequence[str] | None) -> list[str]:
    """The benchmark's ``tracking`` value as a list of names (none: tracking is off)."""
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def check_tracking(value: str | Sequence[str] | None, regs: Registries | None = None) -> None:
    """Every name in ``tracking`` is a registered tracker whose packages are installed (ConfigError otherwise)."""
    names = tracker_names(value)
    if not names:
        return
    if regs is None:
        from .plugins import registries

        regs = registries()
    for i, name in enumerate(names):
        key = "tracking" if isinstance(value, str) else f"tracking[{i}]"
        if names.index(name) != i:
            raise ConfigError(key, f"tracker '{name}' is listed twice")
        regs.trackers.get(name, key).check(key)


class Tracking:
    """The trackers of one cell, called as one. Without trackers it is false and every call does nothing; a tracker
    that raises is logged and dropped, so tracking never fails a cell."""

    def __init__(self, trackers: Sequence[Tracker] = ()):
        self.trackers = list(trackers)

    def __bool__(self) -> bool:
        return bool(self.trackers)

    def _each(self, method: str, *args: Any) -> None:
        for tracker in list(self.trackers):
            try:
                getattr(tracker, method)(*args)
            except Exception as err:  # noqa: BLE001 - a tracker's failure must not lose the cell
                log.warning("tracker %s failed in %s (%s: %s): dropped for this cell", type(tracker).__name__, method, type(err).__name__, err)
                self.trackers.remove(tracker)
                if method != "close":
                    self._close(tracker)

    @staticmethod
    def _close(tracker: Tracker) -> None:
        with contextlib.suppress(Exception):  # already reported as failed
            tracker.close()

    def start(self, cell: CellInfo) -> None:
        self._each("start", cell)

    def log_scalars(self, step: int, values: dict[str, float]) -> None:
        self._each("log_scalars", step, values)

    def log_image(self, step: int, name: str, image: np.ndarray) -> None:
        self._each("log_image", step, name, image)

    def log_final(self, params: dict[str, Any], metrics: dict[str, float]) -> None:
        self._each("log_final", params, metrics)

    def close(self) -> None:
        self._each("close")


NO_TRACKING = Tracking()


@contextlib.contextmanager
def open_tracking(value: str | Sequence[str] | None, regs: Registries, cell: CellInfo) -> Iterator[Tracking]:
    """The started trackers named by ``tracking`` for one cell; closed on leaving (also after an error)."""
    names = tracker_names(value)
    if not names:
        yield NO_TRACKING
        return
    check_tracking(value, regs)
    tracking = Tracking([regs.trackers.get(name, "tracking")() for name in names])
    tracking.start(cell)
    try:
        yield tracking
    finally:
        tracking.close()


def hparams(settings: dict[str, Any]) -> dict[str, str | float | int | bool]:
    """Flat settings as tracker hyperparameters: numbers, strings and booleans kept, None left out, the rest as text."""
    out: dict[str, str | float | int | bool] = {}
    for key, value in settings.items():
        if value is None:
            continue
        out[key] = value if isinstance(value, (str, int, float, bool)) else str(value)
    return out


def finite_metrics(values: dict[str, Any]) -> dict[str, float]:
    """The numeric metric values (a failed metric's NaN is left out)."""
    return {k: float(v) for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
