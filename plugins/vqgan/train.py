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
from vqbench.errors import TrainingDiverged
from vqbench.interfaces import ImageSource
from vqbench.io import load_torch, save_torch
from vqbench.metrics.lpips_net import load_lpips
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
    """λ = ‖∇ rec‖ / (‖∇ gan‖ + 1e-4) at the decoder's last layer, clamped to [0, max_lambda]."""
    rec_grad = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    gan_grad = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    return (rec_grad.norm() / (gan_grad.norm() + 1e-4)).clamp(0.0, max_lambda).detach()


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
    """Train ``model`` in place on images ``source[indices]``; resumes from ``checkpoint`` when it exists."""
    model.to(device).train()
    layers = min(cfg.disc_layers, max(1, int(math.log2(source.resolution / 4))))  # the last 4×4 convs need ≥ 4 px
    if layers != cfg.disc_layers:
        log.info("discriminator depth lowered from %d to %d layers for %d-pixel images", cfg.disc_layers, layers, source.resolution)
    disc = PatchDiscriminator(3, cfg.disc_channels, layers).to(device).train()
    lpips_model, lpips_real = load_lpips(cfg.lpips_net, seed=seed)
    lpips_model.to(device)
    opt_g = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=cfg.betas)
    opt_d = torch.optim.Adam(disc.parameters(), lr=cfg.lr, betas=cfg.betas)
    usage = torch.zeros(model.codebook_size, dtype=torch.long)
    step, elapsed, restarts = 0, 0.0, 0
    if checkpoint.is_file():
        state = load_torch(checkpoint, map_location=device)
        model.load_state_dict(state["model"])
        disc.load_state_dict(state["disc"])
        opt_g.load_state_dict(state["opt_g"])
        opt_d.load_state_dict(state["opt_d"])
        usage, step, elapsed, restarts = state["usage"].cpu(), int(state["step"]), float(state["elapsed"]), int(state["restarts"])
        log.info("resuming tokenizer training from %s at step %d", checkpoint, step)

    def save() -> None:
        save_torch(checkpoint, {
            "model": model.state_dict(), "disc": disc.state_dict(), "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(),
            "usage": usage, "step": loop.step, "elapsed": loop.elapsed, "restarts": restarts,
        })  # fmt: skip

    loop = StepLoop(cfg.steps, cfg.checkpoint_every, save, step, elapsed, cfg.max_minutes, "train tokenizer")
    last_layer = model.decoder.conv_out.weight
    stats: dict[str, Any] = {}
    for step in loop:
        gen = torch.Generator().manual_seed(seed * 1_000_003 + step)  # per-step stream: resuming is exact
        picks = indices[torch.randint(len(indices), (cfg.batch_size,), generator=gen).numpy()]
        x = source.batch(picks)[0].to(device)
        use_disc = step >= cfg.disc_start
        with autocast():
            xrec, q_loss, codes = model(x)
            rec_loss = ((x - xrec).abs().mean(dim=(1, 2, 3)) + cfg.perceptual_weight * lpips_model(x.float(), xrec.float()).flatten()).mean()
            loss = rec_loss + cfg.codebook_weight * q_loss
            if use_disc:
                fake_in = diff_augment(xrec, gen) if cfg.diff_augment else xrec
                g_loss = -disc(fake_in).mean()
                lam = adaptive_weight(rec_loss, g_loss, last_layer, cfg.max_lambda) * cfg.disc_weight
                loss = loss + lam * g_loss
        if not torch.isfinite(loss):
            raise TrainingDiverged(f"tokenizer loss became {loss.item()} at step {step}; lower tokenizer.train.lr")
        opt_g.zero_grad(set_to_none=True)
        loss.backward()
        opt_g.step()
        if use_disc:
            with autocast():
                real_in = diff_augment(x, gen) if cfg.diff_augment else x
                fake_in = diff_augment(xrec.detach(), gen) if cfg.diff_augment else xrec.detach()
                d_loss = hinge_d_loss(disc(real_in), disc(fake_in))
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            stats["d_loss"] = d_loss.item()
        usage += torch.bincount(codes.flatten().cpu(), minlength=model.codebook_size)
        done = step + 1
        if cfg.dead_code_restart_every and done % cfg.dead_code_restart_every == 0 and done < cfg.steps * 0.8:
            with torch.no_grad():
                restarts += model.quantize.restart_dead_codes(usage, model.pre_quant(x), gen)
            usage.zero_()
        stats.update(loss=loss.item(), rec_loss=rec_loss.item(), q_loss=q_loss.item())
        loop.show(rec=stats["rec_loss"])
    model.eval()
    stats.update(steps=loop.step, dead_code_restarts=restarts, lpips_real_weights=lpips_real, minutes=loop.elapsed / 60)
    return {k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in stats.items()}
