"""The ``tensorboard`` tracker: TensorBoard event files, one folder per cell under ``<out>/tensorboard/``."""

from __future__ import annotations

import shutil
from typing import Any

import numpy as np

import vqbench
from vqbench.tracking import CellInfo, Tracker

FOLDER = "tensorboard"


class TensorBoardTracker(Tracker):
    """TensorBoard event files in ``<out>/tensorboard/<cell>/``: the training loss and learning rate of every step, the
    validation NLL where measured, the samples grid, and the final metrics (``metrics/<column>``) with the row's
    settings as hparams. ``tensorboard --logdir <out>/tensorboard`` shows every cell. A cell that is computed again
    starts its folder afresh (a resumed training run sends its earlier steps again)."""

    requires = ("tensorboard",)
    install = "pip install 'vqbench[tracking]'"

    def __init__(self) -> None:
        self.writer: Any = None
        self.step = 0

    def start(self, cell: CellInfo) -> None:
        from torch.utils.tensorboard import SummaryWriter

        folder = cell.out / FOLDER / cell.cell
        if folder.exists():
            shutil.rmtree(folder)
        self.writer = SummaryWriter(str(folder))

    def log_scalars(self, step: int, values: dict[str, float]) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)
        self.step = max(self.step, step)

    def log_image(self, step: int, name: str, image: np.ndarray) -> None:
        self.writer.add_image(name, image, step, dataformats="HWC")
        self.step = max(self.step, step)

    def log_final(self, params: dict[str, Any], metrics: dict[str, float]) -> None:
        # run_name ".": the hparams session is the cell's own folder, next to its curves
        self.writer.add_hparams(params, {f"metrics/{name}": value for name, value in metrics.items()}, run_name=".", global_step=self.step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


@vqbench.hookimpl
def vqbench_register_trackers(registry):
    registry.register("tensorboard", TensorBoardTracker)
