# palette_tokenizer.py — a trainable tokenizer written from vqbench.interfaces alone
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

import vqbench
from vqbench.config import parse
from vqbench.interfaces import TrainableTokenizer
from vqbench.io import load_torch


@dataclass
class PaletteConfig:
    codes: int = 16  # palette size K
    factor: int = 4  # one code per f×f patch: the palette colour nearest its mean


@dataclass
class PaletteTraining:
    iterations: int = 10  # Lloyd (k-means) iterations over patch means


class PaletteTokenizer(TrainableTokenizer):
    """Each f×f patch becomes the nearest of K palette colours, fitted by k-means on patch means."""

    Config, TrainConfig = PaletteConfig, PaletteTraining
    presets = {"small": {"codes": 16, "factor": 4}}
    preset_training = {"small": {"iterations": 10}}

    def __init__(self, config: PaletteConfig):
        super().__init__()
        self.config, self.codebook_size, self.downsample_factor = config, config.codes, config.factor
        self.register_buffer("palette", torch.zeros(config.codes, 3))

    def patch_means(self, images):  # B×3×H×W in [-1, 1] → B×h×w×3
        return F.avg_pool2d(images, self.downsample_factor).permute(0, 2, 3, 1)

    def encode(self, images):
        means = self.patch_means(images)
        return torch.cdist(means.flatten(0, 2), self.palette).argmin(1).view(means.shape[:3])

    def decode(self, codes):
        return F.interpolate(self.palette[codes].permute(0, 3, 1, 2), scale_factor=self.downsample_factor)

    def config_dict(self):
        return asdict(self.config)

    @classmethod
    def load(cls, path, **options):
        state = load_torch(path)
        model = cls(PaletteConfig(**state["config"]))
        model.load_state_dict(state["state_dict"])
        return model

    @classmethod
    def from_preset(cls, preset, overrides=None, key="tokenizer"):
        return cls(parse(PaletteConfig, {**cls.presets[preset], **(overrides or {})}, f"{key}.params"))

    @classmethod
    def fit(cls, model, source, indices, config, *, checkpoint, seed, device="cpu", autocast=None):
        images, _ = source.batch(indices[:2048])
        points = model.patch_means(images).reshape(-1, 3)
        generator = torch.Generator().manual_seed(seed)
        palette = points[torch.randperm(len(points), generator=generator)[: model.codebook_size]].clone()
        for _ in range(config.iterations):
            nearest = torch.cdist(points, palette).argmin(1)
            sums = torch.zeros_like(palette).index_add_(0, nearest, points)
            counts = torch.bincount(nearest, minlength=len(palette))[:, None]
            palette = torch.where(counts > 0, sums / counts.clamp(min=1), palette)
        model.palette.copy_(palette)
        return {"points": len(points)}


@vqbench.hookimpl
def vqbench_register_tokenizers(registry):
    registry.register("palette", PaletteTokenizer)
