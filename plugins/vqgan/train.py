"""VQ-GAN training (Unleashing Transformers §3.4): L1 + LPIPS + codebook/commitment + hinge PatchGAN with an
adaptive weight clamped at λ_max and DiffAugment on discriminator inputs, started at ``disc_start``. Resumable."""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from vqbench.config import positive
from vqbench.distributed import barrier, broadcast, broadcast_module, gather, world
from vqbench.errors import ConfigError, TrainingDiverged
from vqbench.interfaces import ImageSource
from vqbench.io import load_torch, save_torch
from vqbench.metrics.lpips_net import load_lpips
from vqbench.streaming import loader
from vqbench.training import StepLoop

from .discriminator import PatchDiscriminator, diff_augment, hinge_d_loss

log = logging.getLogger(__name__)


@dataclass
class VQGANTrainConfig:
    steps: int = 2000
    batch_size: int = 16
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.9)
    perceptual_weight: float = 1.0
    codebook_weight: float = 1.0
    lpips_net: Literal["alex", "vgg", "squeeze"] = "alex"
    disc_start: int = 1000
    disc_weight: float = 0.8
    max_lambda: float = 1.0  # clamp of the adaptive GAN weight
    diff_augment: bool = True
    disc_layers: int = 3
    disc_channels: int = 64
    dead_code_restart_every: int = 0  # 0 = off; else re-seed unused codes from encoder outputs every N steps
    checkpoint_every: int = 250
    max_minutes: float | None = None

    def validate(self, key: str) -> None:
        for name in ("steps", "batch_size", "lr", "checkpoint_every", "disc_layers", "disc_channels"):
            positive(key, name, getattr(self, name))
        positive(key, "disc_start", self.disc_start, allow_zero=True)
        positive(key, "max_lambda", self.max_lambda)


def adaptive_weight(rec_loss: torch.Tensor, g_loss: torch.Tensor, last_layer: torch.Tensor, max_lambda: float) -> torch.Tensor:
    """λ = ‖∇ rec‖ / (‖∇ gan‖ + 1e-4) at the decoder's last layer, clamped to [0, max_lambda] (gradients averaged
    over ranks first, so every rank uses the global batch's λ)."""
    rec_grad = _rank_mean(torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0])
    gan_grad = _rank_mean(torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0])
    return (rec_grad.norm() / (gan_grad.norm() + 1e-4)).clamp(0.0, max_lambda).detach()


def _rank_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Mean over ranks (the tensor itself in a single process)."""
    if not world().active:
        return tensor
    tensor = tensor.detach().clone()
    torch.distributed.all_reduce(tensor)
    return tensor / world().size


def step_picks(indices: np.ndarray, batch_size: int, seed: int, step: int) -> tuple[np.ndarray, torch.Generator]:
    """The global batch of ``step`` (source indices) and the step's generator, positioned after drawing it."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + step)  # per-step stream: resuming is exact
    return indices[torch.randint(len(indices), (batch_size,), generator=gen).numpy()], gen


def rank_shard(batch_size: int, rank: int, size: int) -> slice:
    """Rows of a global batch that ``rank`` of ``size`` trains on (contiguous, equal: the shards partition it)."""
    per = batch_size // size
    return slice(rank * per, (rank + 1) * per)


class StepBatches:
    """Batch sampler: this rank's shard of the seeded global batch of every step from ``start`` on."""

    def __init__(self, indices: np.ndarray, batch_size: int, seed: int, start: int, steps: int):
        self.indices, self.batch_size, self.seed, self.start, self.steps = indices, batch_size, seed, start, steps

    def __len__(self) -> int:
        return max(0, self.steps - self.start)

    def __iter__(self):
        w = world()
        for step in range(self.start, self.steps):
            yield step_picks(self.indices, self.batch_size, self.seed, step)[0][rank_shard(self.batch_size, w.rank, w.size)].tolist()


def _augment(x: torch.Tensor, gen: torch.Generator, global_batch: int) -> torch.Tensor:
    """DiffAugment with the draws of the whole global batch, this rank's rows applied (one process: plain)."""
    w = world()
    if not w.active:
        return diff_augment(x, gen)
    return diff_augment(x, gen, rows=(rank_shard(global_batch, w.rank, w.size).start, global_batch))


def train_vqgan(
    model: torch.nn.Module,
    source: ImageSource,
    indices: np.ndarray,
    cfg: VQGANTrainConfig,
    checkpoint: Path,
    seed: int = 0,
    device: torch.device | str = "cpu",
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> dict[str, Any]:
    """Train ``model`` in place on images ``source[indices]``; resumes from ``checkpoint`` when it exists.

    Under torchrun the generator runs in DistributedDataParallel and the discriminator's gradients are averaged over
    ranks: each rank trains on its shard of every step's global batch (``cfg.batch_size``, drawn from the shared
    seeded stream), rank 0 alone writes checkpoints, and a checkpoint resumes on any number of ranks."""
    w = world()
    if cfg.batch_size % w.size:
        raise ConfigError("tokenizer.train.batch_size", f"{cfg.batch_size} is not divisible by the {w.size} data-parallel ranks")
    model.to(device).train()
    layers = min(cfg.disc_layers, max(1, int(math.log2(source.resolution / 4))))  # the last 4×4 convs need ≥ 4 px
    if layers != cfg.disc_layers:
        log.info("discriminator depth lowered from %d to %d layers for %d-pixel images", cfg.disc_layers, layers, source.resolution)
    disc = PatchDiscriminator(3, cfg.disc_channels, layers).to(device).train()
    if w.active and torch.device(device).type == "cuda":  # batch statistics of the global batch, as one process has
        disc = torch.nn.SyncBatchNorm.convert_sync_batchnorm(disc)
    lpips_model, lpips_real = load_lpips(cfg.lpips_net, seed=seed)
    lpips_model.to(device)
    opt_g = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=cfg.betas)
    opt_d = torch.optim.Adam(disc.parameters(), lr=cfg.lr, betas=cfg.betas)
    usage = torch.zeros(model.codebook_size, dtype=torch.long)
    step, elapsed, restarts = 0, 0.0, 0
    if w.active:  # rank 0 reads the checkpoint; every rank gets the same state
        state = broadcast(load_torch(checkpoint, map_location="cpu") if w.main and checkpoint.is_file() else None)
    else:
        state = load_torch(checkpoint, map_location=device) if checkpoint.is_file() else None
    if state is not None:
        model.load_state_dict(state["model"])
        disc.load_state_dict(state["disc"])
        opt_g.load_state_dict(state["opt_g"])
        opt_d.load_state_dict(state["opt_d"])
        usage, step, elapsed, restarts = state["usage"].cpu(), int(state["step"]), float(state["elapsed"]), int(state["restarts"])
        log.info("resuming tokenizer training from %s at step %d", checkpoint, step)
    else:
        broadcast_module(model)  # every rank starts from rank 0's initialisation
        broadcast_module(disc)
    net = _parallel(model, device)

    def save() -> None:
        if w.main:
            save_torch(checkpoint, {
                "model": model.state_dict(), "disc": disc.state_dict(), "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(),
                "usage": usage, "step": loop.step, "elapsed": loop.elapsed, "restarts": restarts,
            })  # fmt: skip
        barrier()

    loop = StepLoop(cfg.steps, cfg.checkpoint_every, save, step, elapsed, cfg.max_minutes, "train tokenizer", agree=broadcast)
    last_layer = model.decoder.conv_out.weight
    stats: dict[str, Any] = {}
    batches = loader(source, StepBatches(indices, cfg.batch_size, seed, step, cfg.steps), pin=torch.device(device).type == "cuda")
    for step in loop:
        picks, gen = step_picks(indices, cfg.batch_size, seed, step)
        batch = next(batches)  # this rank's shard of ``picks``, read ahead by the loader's workers
        assert set(batch.kept) <= set(picks.tolist())
        x = batch.floats(device)
        use_disc = step >= cfg.disc_start
        with autocast():
            xrec, q_loss, codes = net(x)
            rec_loss = ((x - xrec).abs().mean(dim=(1, 2, 3)) + cfg.perceptual_weight * lpips_model(x.float(), xrec.float()).flatten()).mean()
            loss = rec_loss + cfg.codebook_weight * q_loss
            if use_disc:
                fake_in = _augment(xrec, gen, cfg.batch_size) if cfg.diff_augment else xrec
                g_loss = -disc(fake_in).mean()
                lam = adaptive_weight(rec_loss, g_loss, last_layer, cfg.max_lambda) * cfg.disc_weight
                loss = loss + lam * g_loss
        value = _rank_mean(loss.detach().double()).item()  # every rank sees the same value and stops together
        if not math.isfinite(value):
            raise TrainingDiverged(f"tokenizer loss became {value} at step {step}; lower tokenizer.train.lr")
        opt_g.zero_grad(set_to_none=True)
        loss.backward()
        opt_g.step()
        if use_disc:
            with autocast():
                real_in = _augment(x, gen, cfg.batch_size) if cfg.diff_augment else x
                fake_in = _augment(xrec.detach(), gen, cfg.batch_size) if cfg.diff_augment else xrec.detach()
                d_loss = hinge_d_loss(disc(real_in), disc(fake_in))
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            _average_gradients(disc)
            opt_d.step()
            stats["d_loss"] = d_loss.item()
        usage += _code_counts(codes, model.codebook_size)
        done = step + 1
        if cfg.dead_code_restart_every and done % cfg.dead_code_restart_every == 0 and done < cfg.steps * 0.8:
            with torch.no_grad():
                restarts += _restart_dead_codes(model, usage, x, gen)
            usage.zero_()
        stats.update(loss=loss.item(), rec_loss=rec_loss.item(), q_loss=q_loss.item())
        loop.show(rec=stats["rec_loss"])
    model.eval()
    stats = {k: _rank_mean(torch.tensor(v, dtype=torch.float64, device=device)).item() for k, v in stats.items()}
    stats.update(steps=loop.step, dead_code_restarts=restarts, lpips_real_weights=lpips_real, minutes=loop.elapsed / 60)
    return {k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in stats.items()}


def _parallel(model: torch.nn.Module, device: torch.device | str) -> torch.nn.Module:
    """``model`` wrapped in DistributedDataParallel under torchrun (itself in a single process)."""
    if not world().active:
        return model
    device = torch.device(device)
    ids = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)


def _average_gradients(module: torch.nn.Module) -> None:
    """Mean of every parameter gradient over ranks (no-op in a single process)."""
    if world().active:
        for p in module.parameters():
            if p.grad is not None:
                torch.distributed.all_reduce(p.grad)
                p.grad /= world().size


def _code_counts(codes: torch.Tensor, codebook_size: int) -> torch.Tensor:
    """Code usage of the step's global batch (summed over ranks), on the CPU."""
    if not world().active:
        return torch.bincount(codes.flatten().cpu(), minlength=codebook_size)
    counts = torch.bincount(codes.flatten(), minlength=codebook_size)
    torch.distributed.all_reduce(counts)
    return counts.cpu()


def _restart_dead_codes(model: torch.nn.Module, usage: torch.Tensor, x: torch.Tensor, gen: torch.Generator) -> int:
    """Re-seed unused codes from the encoder outputs of the global batch (rank 0 draws, every rank gets the result)."""
    if not world().active:
        return int(model.quantize.restart_dead_codes(usage, model.pre_quant(x), gen))
    parts = gather(model.pre_quant(x).cpu())
    count = model.quantize.restart_dead_codes(usage, torch.cat(parts).to(x.device), gen) if parts is not None else 0
    broadcast_module(model.quantize)
    return int(broadcast(count))
