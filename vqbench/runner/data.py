"""Shared data for a benchmark: image source and split, tokenizer (trained or loaded, cached), latent datasets
(cached by content fingerprint) and the tokenizer-quality report."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .. import latents as latent_io
from ..config import parse, required, to_dict
from ..errors import ConfigError
from ..interfaces import ImageSource, LatentSource, Tokenizer, TrainableTokenizer, float_to_uint8
from ..io import fingerprint, read_json, sha256_file, write_json
from ..metrics.inpainting import psnr_in_region
from ..metrics.latent_stats import codebook_stats
from ..metrics.lpips_net import load_lpips
from ..plugins import Registries
from ..provenance import code_digest
from .schema import Benchmark

log = logging.getLogger(__name__)


@dataclass
class DataBundle:
    train: latent_io.LatentDataset
    test: latent_io.LatentDataset
    tokenizer: Tokenizer | None = None
    source: ImageSource | None = None
    test_indices: np.ndarray | None = None  # image index of every test latent (aligned with test codes)
    tokenizer_info: dict[str, Any] = field(default_factory=dict)
    image_metrics_off: str | None = None  # why image-level metrics are skipped, if they are

    @property
    def latent_shape(self) -> tuple[int, int]:
        return self.train.latent_shape

    @property
    def codebook_size(self) -> int:
        return self.train.codebook_size

    @property
    def reference_kind(self) -> str:
        if self.source is not None and self.test_indices is not None:
            return "real held-out images"
        return "decoded held-out latents (no image dataset given)"

    def reference_batches(self, count: int, batch_size: int, decode: Callable[[torch.Tensor], torch.Tensor], first: int = 0):
        """Yield (uint8 images, codes) for ``count`` held-out items from item ``first`` on, ``batch_size`` at a time."""
        n = min(first + count, len(self.test))
        for start in range(first, n, batch_size):
            stop = min(n, start + batch_size)
            codes = self.test.tensor(slice(start, stop))
            if self.source is not None and self.test_indices is not None:
                images, _ = self.source.batch(self.test_indices[start:stop])
                yield float_to_uint8(images), codes
            else:
                yield decode(codes), codes

    def reference_images(self, count: int, decode: Callable[[torch.Tensor], torch.Tensor], start: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """(uint8 images, their codes) for up to ``count`` held-out items from item ``start`` on."""
        pairs = list(self.reference_batches(count, 64, decode, start))
        return torch.cat([p[0] for p in pairs]), torch.cat([p[1] for p in pairs])


def split_indices(count: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic train/test split of ``range(count)`` (both sorted)."""
    perm = np.random.default_rng(seed).permutation(count)
    n_test = min(count - 1, max(1, round(count * test_fraction)))
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def prepare_data(bench: Benchmark, regs: Registries, cache: Path, device: torch.device, autocast: Callable) -> DataBundle:
    if bench.latents is not None:
        return _from_latents(bench, regs, device)
    ds = required(bench.dataset, "dataset")
    source_cls = regs.datasets.get(ds.name, "dataset.name")
    if issubclass(source_cls, LatentSource):
        return _from_latent_source(bench, source_cls, cache)
    source = source_cls(parse(source_cls.Config, ds.params, "dataset.params"), ds.resolution)
    source.check("dataset.params")
    train_idx, test_idx = split_indices(len(source), ds.test_fraction, ds.split_seed)
    split = {"test_fraction": ds.test_fraction, "seed": ds.split_seed, "source_count": len(source)}
    tokenizer, tok_file, tok_info = _tokenizer(bench, regs, source, train_idx, cache, device, autocast)
    tok_sha = sha256_file(tok_file)
    labels = source.labels()
    common = {
        "tokenizer": {"name": required(bench.tokenizer, "tokenizer").name, "config": tokenizer.config_dict(), "checkpoint_sha256": tok_sha},
        "source": {"dataset": ds.name, "fingerprint": source.fingerprint(), "resolution": ds.resolution},
    }
    sets = {}
    for split_name, idx in (("train", train_idx), ("test", test_idx)):
        key = fingerprint(tok_sha, source.fingerprint(), split, split_name)
        path = cache / "latents" / f"{ds.name}-{split_name}-{key}"
        if not (path / "meta.json").is_file():
            codes, kept = encode_images(tokenizer, source, idx, device, desc=f"encode {split_name}")
            latent_io.write(
                path, codes, tokenizer.codebook_size, labels=None if labels is None else labels[kept],
                split={**split, "name": split_name}, source_indices_sha256=fingerprint(kept.tolist()),
                skipped_unreadable=sorted(int(i) for i in set(idx.tolist()) - set(kept.tolist())), **common,
            )  # fmt: skip
            np.save(path / "source_index.npy", kept)
        sets[split_name] = latent_io.open(path)
    test_index = np.load(sets["test"].path / "source_index.npy")
    info = _tokenizer_quality(tokenizer, source, test_index, sets["train"], device, cache, tok_sha) | tok_info
    return DataBundle(sets["train"], sets["test"], tokenizer, source, test_index, info)


def trainable(tok_cls: type[Tokenizer], name: str) -> type[TrainableTokenizer]:
    """The tokenizer class, if it can be trained from a preset; else a ConfigError saying what to give instead."""
    if not issubclass(tok_cls, TrainableTokenizer):
        raise ConfigError(
            "tokenizer.preset",
            f"tokenizer '{name}' cannot be trained from a preset (it does not implement TrainableTokenizer); give tokenizer.checkpoint",
        )
    return tok_cls


def _tokenizer(bench, regs, source, train_idx, cache, device, autocast) -> tuple[Tokenizer, Path, dict]:
    tc = required(bench.tokenizer, "tokenizer")
    tok_cls = regs.tokenizers.get(tc.name, "tokenizer.name")
    if tc.checkpoint is not None:
        path = Path(tc.checkpoint).expanduser()
        if not path.is_file():
            raise ConfigError("tokenizer.checkpoint", f"file {str(path)!r} not found")
        options = {"config": tc.config} if tc.config else {}
        return tok_cls.load(path, **options).to(device), path, {"origin": f"loaded from {path}"}
    tok_cls = trainable(tok_cls, tc.name)
    train_defaults = tok_cls.preset_training.get(tc.preset or "", {})
    train_cfg: Any = parse(tok_cls.TrainConfig, {**train_defaults, **tc.train}, "tokenizer.train")
    model = tok_cls.from_preset(tc.preset or "", tc.params)
    code = code_digest(model, tok_cls, tok_cls.fit, importlib.import_module(tok_cls.__module__.rpartition(".")[0] or tok_cls.__module__), core=False)
    key = fingerprint(
        tc.name, tc.preset, to_dict(model.config), to_dict(train_cfg), tc.seed, bench.precision, source.fingerprint(), train_idx.tolist(), code
    )
    folder = cache / "tokenizers" / f"{tc.name}-{tc.preset}-{key}"
    final = folder / "tokenizer.pt"
    if final.is_file():
        log.info("tokenizer from cache %s", final)
        return tok_cls.load(final).to(device), final, read_json(folder / "train.json")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(tc.seed)
        model = tok_cls.from_preset(tc.preset or "", tc.params)
        stats = tok_cls.fit(model, source, train_idx, train_cfg, checkpoint=folder / "train_state.pt", seed=tc.seed, device=device, autocast=autocast)
    model.save(final)
    info = {"origin": f"trained preset {tc.preset}", "train": stats}
    write_json(folder / "train.json", info)
    return model.eval(), final, info


@torch.inference_mode()
def encode_images(
    tokenizer: Tokenizer, source: ImageSource, indices: np.ndarray, device: torch.device, batch_size: int = 64, desc: str = "encode"
) -> tuple[np.ndarray, np.ndarray]:
    """Codes (N×h×w) of the readable images among ``indices`` and the indices kept."""
    codes, kept = [], []
    for start in tqdm(range(0, len(indices), batch_size), desc=desc, unit="batch", leave=False):
        images, ok = source.batch(indices[start : start + batch_size])
        if ok:
            codes.append(tokenizer.encode(images.to(device)).cpu())
            kept.extend(ok)
    if source.skipped:
        log.warning("%d unreadable images were skipped", len(source.skipped))
    if not kept:
        raise ConfigError("dataset", "no readable images in this split")
    return torch.cat(codes).numpy(), np.asarray(kept, dtype=np.int64)


@torch.inference_mode()
def decode_to_uint8(tokenizer: Tokenizer, codes: torch.Tensor, device: torch.device, batch_size: int = 64) -> torch.Tensor:
    return torch.cat([float_to_uint8(tokenizer.decode(c.to(device))).cpu() for c in codes.split(batch_size)])


@torch.inference_mode()
def _tokenizer_quality(tokenizer, source, test_index, train_set, device, cache, tok_sha, count: int = 256) -> dict[str, Any]:
    """Reconstruction PSNR/LPIPS on held-out images and codebook usage on the training latents (cached)."""
    path = cache / "tokenizer-quality" / f"{tok_sha[:16]}-{source.fingerprint()}.json"
    if path.is_file():
        return read_json(path)
    images, _ = source.batch(test_index[:count])
    codes = torch.cat([tokenizer.encode(x.to(device)).cpu() for x in images.split(64)])
    recon = decode_to_uint8(tokenizer, codes, device)
    original = float_to_uint8(images)
    lpips_model, real = load_lpips("alex")
    lpips_model.to(device)
    lp = torch.cat([lpips_model(a.to(device), b.to(device)).flatten().cpu() for a, b in zip(images.split(64), (recon.float() / 127.5 - 1).split(64))])
    full = torch.ones(original.shape[0], *original.shape[2:], dtype=torch.bool)
    usage = codebook_stats(train_set.tensor(), tokenizer.codebook_size)
    info = {
        "recon_psnr": float(psnr_in_region(original, recon, full).mean()),
        "recon_lpips": float(lp.mean()),
        "recon_lpips_backbone": "pretrained" if real else "random (offline)",
        "codebook_size": tokenizer.codebook_size,
        "used_codes": int(usage["used_codes"]),
        "code_perplexity": usage["perplexity"],
        "checkpoint_sha256": tok_sha,
    }
    write_json(path, info)
    return info


def _from_latent_source(bench: Benchmark, source_cls: type[LatentSource], cache: Path) -> DataBundle:
    """Generate (or reuse) the train/test latents of a source that produces codes directly."""
    ds = required(bench.dataset, "dataset")
    source = source_cls(parse(source_cls.Config, ds.params, "dataset.params"))
    key = fingerprint(source.fingerprint(), ds.test_fraction, ds.split_seed)
    paths = {split: cache / "latents" / f"{ds.name}-{split}-{key}" for split in ("train", "test")}
    if not all((p / "meta.json").is_file() for p in paths.values()):
        codes = source.generate(source.config.count, seed=ds.split_seed)
        train_idx, test_idx = split_indices(len(codes), ds.test_fraction, ds.split_seed)
        truth = source.truth()
        for split, idx in (("train", train_idx), ("test", test_idx)):
            latent_io.write(
                paths[split], codes[idx], source.codebook_size, truth=truth,
                source={"dataset": ds.name, "fingerprint": source.fingerprint(), "params": ds.params},
                split={"name": split, "seed": ds.split_seed, "test_fraction": ds.test_fraction, "source_count": len(codes)},
            )  # fmt: skip
    train, test = latent_io.open(paths["train"]), latent_io.open(paths["test"])
    return DataBundle(train, test, image_metrics_off=f"{ds.name} generates codes directly: latent-level metrics only")


def _from_latents(bench: Benchmark, regs: Registries, device: torch.device) -> DataBundle:
    given = required(bench.latents, "latents")
    train, test = latent_io.open(given.train), latent_io.open(given.test)
    if (train.codebook_size, train.latent_shape) != (test.codebook_size, test.latent_shape):
        raise ConfigError(
            "latents",
            f"train and test latents differ in codebook size or shape: {train.meta['h']}×{train.meta['w']}/{train.codebook_size} vs {test.meta['h']}×{test.meta['w']}/{test.codebook_size}",
        )
    tc = bench.tokenizer
    if tc is None or tc.checkpoint is None:
        return DataBundle(train, test, image_metrics_off="no tokenizer checkpoint given: latent-level metrics only")
    wanted = (train.meta.get("tokenizer") or {}).get("checkpoint_sha256")
    path = Path(tc.checkpoint).expanduser()
    if not path.is_file():
        raise ConfigError("tokenizer.checkpoint", f"file {str(path)!r} not found")
    if wanted and sha256_file(path) != wanted:
        raise ConfigError(
            "tokenizer.checkpoint", f"{path} is not the tokenizer these latents were encoded with (meta.json names sha256 {wanted[:12]}…)"
        )
    tokenizer = regs.tokenizers.get(tc.name, "tokenizer.name").load(path, **({"config": tc.config} if tc.config else {})).to(device)
    return DataBundle(train, test, tokenizer, tokenizer_info={"origin": f"loaded from {path}"})
