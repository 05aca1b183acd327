"""The shared training loop every trainable prior runs under one budget; resumable from its checkpoint."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from .. import distributed
from ..errors import ConfigError, TrainingDiverged
from ..interfaces import Prior
from ..io import load_torch, save_torch, write_text
from ..latents import LatentDataset
from ..tracking import NO_TRACKING, Tracking
from ..training import StepLoop
from .schema import BudgetSection

log = logging.getLogger(__name__)


def class_labels(data: LatentDataset) -> torch.Tensor | None:
    """The class of every grid (label column 0), or None when the dataset has no labels."""
    return torch.from_numpy(data.labels[:, 0].astype("int64")) if data.labels is not None else None


def lr_at(step: int, base: float, warmup: int) -> float:
    return base * min(1.0, (step + 1) / warmup) if warmup else base


class PriorLoss(torch.nn.Module):
    """``prior.loss`` as a module's forward, so DistributedDataParallel can wrap it (its gradients are averaged
    over ranks during ``backward``)."""

    def __init__(self, prior: Prior):
        super().__init__()
        self.prior = prior

    def forward(self, codes: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        return self.prior.loss(codes, labels)


def step_batch(seed: int, step: int, count: int, batch_size: int, world: distributed.World) -> torch.Tensor:
    """This rank's share of step ``step``'s global batch (sorted dataset indices). The global batch comes from the
    stream seeded by (seed, step) whatever the number of ranks; rank r takes every N-th item from item r. The
    random state afterwards seeds the rank's noise (rank 0's continues the stream, as a single process does)."""
    base = seed * 1_000_003 + step
    torch.manual_seed(base)
    idx = torch.randint(count, (batch_size,)).sort().values
    if world.rank:
        torch.manual_seed(base + world.rank * 2_147_483_629)
    return idx[world.rank :: world.size]


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Host → device copy; on CUDA through pinned memory without blocking the host."""
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


CURVE_FILE = "train_curve.csv"


@torch.inference_mode()
def validation_nll(prior: Prior, data: LatentDataset, grids: int, batch_size: int, device: torch.device, autocast: Callable[[], Any]) -> float:
    """Mean NLL (bits per token) of the first ``grids`` held-out grids, with a fixed generator (comparable across steps)."""
    g = torch.Generator(device=device).manual_seed(15485863)
    labels_all = class_labels(data)
    total, count = 0.0, 0
    was_training = prior.training
    prior.eval()
    for start in range(0, min(grids, len(data)), batch_size):
        stop = min(grids, len(data), start + batch_size)
        codes = data.tensor(slice(start, stop)).to(device)
        extra = {"labels": labels_all[start:stop].to(device)} if labels_all is not None else {}
        with autocast():
            values = prior.nll(codes, generator=g, **extra)
        total, count = total + float(values.double().sum()), count + len(values)
    prior.train(was_training)
    return total / max(count, 1)


def write_curve(path: Path, losses: list[float], validation: dict[int, float]) -> None:
    """``train_curve.csv``: training loss after every step and validation NLL where it was measured (step 0: before
    training)."""
    rows = ["step,train_loss,val_nll_bpt"]
    rows += [
        f"{step},{losses[step - 1] if step else ''},{validation.get(step, '')}" for step in sorted(set(range(1, len(losses) + 1)) | set(validation))
    ]
    write_text(path, "\n".join(rows) + "\n")


def step_scalars(step: int, losses: list[float], validation: dict[int, float], lr: float, warmup: int) -> dict[str, float]:
    """A tracker's scalars at ``step`` (finished steps): that step's loss and learning rate, the validation NLL if
    measured there (as in ``train_curve.csv``)."""
    values = {"train/loss": losses[step - 1], "train/lr": lr_at(step - 1, lr, warmup)} if step else {}
    return values | ({"val/nll_bpt": validation[step]} if step in validation else {})


def log_curve(tracking: Tracking, losses: list[float], validation: dict[int, float], lr: float, warmup: int) -> None:
    """Send a curve computed earlier (a resumed run's first steps, or reused training) to the trackers."""
    if tracking:
        for step in sorted(set(range(1, len(losses) + 1)) | set(validation)):
            tracking.log_scalars(step, step_scalars(step, losses, validation, lr, warmup))


def read_curve(text: str) -> tuple[list[float], dict[int, float]]:
    """(losses, validation NLL by step) of ``train_curve.csv`` text."""
    losses, validation = [], {}
    for line in text.splitlines()[1:]:
        step, loss, nll = line.split(",")
        if loss:
            losses.append(float(loss))
        if nll:
            validation[int(step)] = float(nll)
    return losses, validation


def train_prior(
    prior: Prior,
    data: LatentDataset,
    budget: BudgetSection,
    lr: float,
    seed: int,
    checkpoint: Path,
    device: torch.device,
    autocast: Callable[[], Any],
    validation: LatentDataset | None = None,
    tracking: Tracking = NO_TRACKING,
) -> dict[str, Any]:
    """Train for ``budget.steps`` (or until ``budget.max_minutes``); every step draws its batch and noise from a
    stream seeded by (seed, step), so an interrupted run resumes exactly.

    Under torchrun each rank trains on its share of every global batch (``step_batch``) with DistributedDataParallel;
    rank 0 alone writes the checkpoint, which every rank resumes from, with any number of ranks.

    The loss of every step, and with ``budget.eval_every`` the NLL of ``budget.eval_grids`` ``validation`` grids every
    that many steps (rank 0, priors with a likelihood), go to ``train_curve.csv`` next to the checkpoint and to
    ``tracking`` (with the learning rate; a resumed run first sends the steps it resumes from)."""
    world = distributed.world()
    if budget.batch_size % world.size:
        raise ConfigError("budget.batch_size", f"{budget.batch_size} cannot be split evenly over {world.size} ranks; use a multiple of {world.size}")
    params = [p for p in prior.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.99), weight_decay=budget.weight_decay)
    step, elapsed, losses, val = 0, 0.0, [], {}
    if distributed.broadcast(checkpoint.is_file()):  # the results folder is shared by every rank
        state = load_torch(checkpoint, map_location=device)
        prior.load_state_dict(state["prior"])
        optimizer.load_state_dict(state["optimizer"])
        step, elapsed, losses = int(state["step"]), float(state["elapsed"]), list(state["losses"])
        val = {int(k): float(v) for k, v in state.get("validation", {}).items()}
        log.info("resuming from %s at step %d", checkpoint, step)
    evaluate = budget.eval_every is not None and validation is not None and prior.supports_likelihood and world.main

    def measure_validation(at: int) -> None:
        if evaluate and at not in val and (at % (budget.eval_every or 1) == 0 or at == budget.steps):
            val[at] = validation_nll(prior, validation, budget.eval_grids, budget.batch_size, device, autocast)  # type: ignore[arg-type]

    def save() -> None:
        if not world.main:
            return
        state = {
            "prior": prior.state_dict(),
            "optimizer": optimizer.state_dict(),
            "losses": losses,
            "validation": {str(k): v for k, v in val.items()},
        }
        save_torch(checkpoint, state | {"step": loop.step, "elapsed": loop.elapsed})
        write_curve(checkpoint.parent / CURVE_FILE, losses, val)

    measure_validation(step)
    log_curve(tracking, losses, val, lr, budget.warmup_steps)

    loop = StepLoop(budget.steps, budget.checkpoint_every, save, step, elapsed, budget.max_minutes, "train prior", agree=distributed.broadcast)
    labels_all = class_labels(data)
    model: torch.nn.Module = PriorLoss(prior)
    if world.active:  # unused parameters are allowed: some priors use a part of the network per step
        ids = [device.index] if device.type == "cuda" else None
        model = DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)
    prior.train()
    for step in loop:
        idx = step_batch(seed, step, len(data), budget.batch_size, world).numpy()
        codes = to_device(data.tensor(idx), device)
        labels = to_device(labels_all[idx], device) if labels_all is not None else None
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, lr, budget.warmup_steps)
        with autocast():
            loss = model(codes, labels)
        value = distributed.all_reduce_mean(loss.item(), device)  # the global batch's loss, the same on every rank
        if not math.isfinite(value):
            raise TrainingDiverged(f"prior loss became {value} at step {step}; lower the learning rate (budget.lr or priors[].lr)")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if budget.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, budget.grad_clip)
        optimizer.step()
        losses.append(value)
        measure_validation(step + 1)
        if tracking:
            tracking.log_scalars(step + 1, step_scalars(step + 1, losses, val, lr, budget.warmup_steps))
        loop.show(loss=value, **({"val_nll": val[step + 1]} if step + 1 in val else {}))
    prior.eval()
    tail = losses[-max(1, len(losses) // 10) :]
    return {"steps": loop.step, "train_minutes": loop.elapsed / 60, "final_loss": sum(tail) / len(tail) if tail else math.nan}
