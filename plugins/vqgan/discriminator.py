"""PatchGAN discriminator (taming's NLayerDiscriminator) and differentiable augmentation for its inputs."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PatchDiscriminator(nn.Module):
    def __init__(self, in_channels: int = 3, ndf: int = 64, n_layers: int = 3):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2**n, 8)
            stride = 2 if n < n_layers else 1
            layers += [
                nn.Conv2d(ndf * prev, ndf * mult, 4, stride, 1, bias=False),
                nn.BatchNorm2d(ndf * mult),
                nn.LeakyReLU(0.2, True),
            ]
        layers.append(nn.Conv2d(ndf * mult, 1, 4, 1, 1))
        self.main = nn.Sequential(*layers)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, 0.0, 0.02)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.normal_(module.weight, 1.0, 0.02)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def diff_augment(x: torch.Tensor, generator: torch.Generator, translation: float = 0.125, rows: tuple[int, int] | None = None) -> torch.Tensor:
    """Differentiable colour (brightness, saturation, contrast) and translation augmentation (DiffAugment),
    drawn independently per image; applied to every discriminator input, real and reconstructed. ``rows=(first,
    total)``: ``x`` is rows first… of a batch of ``total`` (one data-parallel rank's shard); the draws are those of
    the whole batch, so the result does not depend on how it was split."""
    b = x.shape[0]
    first, total = rows if rows is not None else (0, b)

    def rand(*shape: int) -> torch.Tensor:
        drawn = torch.rand(total, *shape[1:], generator=generator, device="cpu")[first : first + b]
        return drawn.to(x.device, x.dtype)

    x = x + (rand(b, 1, 1, 1) - 0.5)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (rand(b, 1, 1, 1) * 2.0) + mean
    mean = x.mean(dim=[1, 2, 3], keepdim=True)
    x = (x - mean) * (rand(b, 1, 1, 1) + 0.5) + mean
    h, w = x.shape[2], x.shape[3]
    sy, sx = int(h * translation + 0.5), int(w * translation + 0.5)
    if sy == 0 and sx == 0:
        return x
    shift_y = (rand(b) * (2 * sy + 1)).long() - sy
    shift_x = (rand(b) * (2 * sx + 1)).long() - sx
    grid_y = (torch.arange(h, device=x.device)[None, :] + shift_y[:, None] + 1).clamp(0, h + 1)
    grid_x = (torch.arange(w, device=x.device)[None, :] + shift_x[:, None] + 1).clamp(0, w + 1)
    padded = F.pad(x, (1, 1, 1, 1))
    rows = padded.gather(2, grid_y[:, None, :, None].expand(b, x.shape[1], h, w + 2))
    return rows.gather(3, grid_x[:, None, None, :].expand(b, x.shape[1], h, w))
