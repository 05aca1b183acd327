"""The shared training loop every trainable prior runs under one budget; resumable from its checkpoint."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..errors import TrainingDiverged
from ..interfaces import Prior
from ..io import load_torch, save_torch
from ..latents import LatentDataset
from ..training import StepLoop
from .schema import BudgetSection

log = logging.getLogger(__name__)


def class_labels(data: LatentDataset) -> torch.Tensor | None:
    """The class of every grid (label column 0), or None when the dataset has no labels."""
    return torch.from_numpy(data.labels[:, 0].astype("int64")) if data.labels is not None else None


def lr_at(step: int, base: float, warmup: int) -> float:
    return base * min(1.0, (step + 1) / warmup) if warmup else base


def train_prior(
    prior: Prior,
    data: LatentDataset,
    budget: BudgetSection,
    lr: float,
    seed: int,
    checkpoint: Path,
    device: torch.device,
    autocast: Callable[[], Any],
) -> dict[str, Any]:
    """Train for ``budget.steps`` (or until ``budget.max_minutes``); every step draws its batch and noise from a
    stream seeded by (seed, step), so an interrupted run resumes exactly."""
    params = [p for p in prior.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.99), weight_decay=budget.weight_decay)
    step, elapsed, losses = 0, 0.0, []
    if checkpoint.is_file():
        state = load_torch(checkpoint, map_location=device)
        prior.load_state_dict(state["prior"])
        optimizer.load_state_dict(state["optimizer"])
        step, elapsed, losses = int(state["step"]), float(state["elapsed"]), list(state["losses"])
        log.info("resuming from %s at step %d", checkpoint, step)

    def save() -> None:
        state = {"prior": prior.state_dict(), "optimizer": optimizer.state_dict(), "losses": losses}
        save_torch(checkpoint, state | {"step": loop.step, "elapsed": loop.elapsed})

    loop = StepLoop(budget.steps, budget.checkpoint_every, save, step, elapsed, budget.max_minutes, "train prior")
    labels_all = class_labels(data)
    prior.train()
    for step in loop:
        torch.manual_seed(seed * 1_000_003 + step)
        idx = torch.randint(len(data), (budget.batch_size,)).sort().values.numpy()
        codes = data.tensor(idx).to(device)
        labels = labels_all[idx].to(device) if labels_all is not None else None
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, lr, budget.warmup_steps)
        with autocast():
            loss = prior.loss(codes, labels)
        if not torch.isfinite(loss):
            raise TrainingDiverged(f"prior loss became {loss.item()} at step {step}; lower the learning rate (budget.lr or priors[].lr)")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if budget.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, budget.grad_clip)
        optimizer.step()
        losses.append(loss.item())
        loop.show(loss=losses[-1])
    prior.eval()
    tail = losses[-max(1, len(losses) // 10) :]
    return {"steps": loop.step, "train_minutes": loop.elapsed / 60, "final_loss": sum(tail) / len(tail) if tail else math.nan}
