"""Shared data for a benchmark: image source and split, tokenizer (trained or loaded, cached), latent datasets
(cached by content fingerprint) and the tokenizer-quality report."""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .. import latents as latent_io
from ..config import parse, required, to_dict
from ..distributed import barrier, broadcast, world
from ..errors import ConfigError
from ..interfaces import ImageSource, LatentSource, Tokenizer, TrainableTokenizer, float_to_uint8
from ..io import atomic_path, fingerprint, read_json, sha256_file, write_json
from ..metrics.inpainting import psnr_in_region
from ..metrics.latent_stats import codebook_stats
from ..metrics.lpips_net import load_lpips
from ..plugins import Registries
from ..provenance import code_digest, code_keyed
from ..streaming import ImageBatch, batch_count, loader, map_batches, note_skipped, stream_batches
from .claims import exclusive
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
    workers: int | None = None  # image loader processes (None: ``streaming.default_workers()``)

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

    def reference_batch_count(self, count: int, batch_size: int, first: int = 0) -> int:
        """How many batches ``reference_batches`` yields for these arguments."""
        return batch_count(max(0, min(first + count, len(self.test)) - first), batch_size)

    def reference_batches(
        self, count: int, batch_size: int, decode: Callable[[torch.Tensor], torch.Tensor], first: int = 0, batches: Sequence[int] | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield (uint8 images, codes) for ``count`` held-out items from item ``first`` on, ``batch_size`` at a time
        (only batch numbers ``batches``, in that order, when given). Real images stream through the loader
        (``workers`` processes read ahead)."""
        n = min(first + count, len(self.test))
        numbers = list(range(batch_count(max(0, n - first), batch_size)) if batches is None else batches)
        spans = [(first + b * batch_size, min(n, first + (b + 1) * batch_size)) for b in numbers]
        if self.source is not None and self.test_indices is not None:
            lists = [self.test_indices[start:stop].tolist() for start, stop in spans]
            images = loader(self.source, lists, workers=self.workers) if lists else iter(())
            for (start, stop), batch in zip(spans, images):
                yield batch.images, self.test.tensor(slice(start, stop))
        else:
            for start, stop in spans:
                codes = self.test.tensor(slice(start, stop))
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
    common: dict[str, Any] = {
        "tokenizer": {"name": required(bench.tokenizer, "tokenizer").name, "config": tokenizer.config_dict(), "checkpoint_sha256": tok_sha},
        "source": {"dataset": ds.name, "fingerprint": source.fingerprint(), "resolution": ds.resolution},
    }
    sets = {}
    for split_name, idx in (("train", train_idx), ("test", test_idx)):
        key = fingerprint(tok_sha, source.fingerprint(), split, split_name)
        path = cache / "latents" / f"{ds.name}-{split_name}-{key}"
        if not broadcast((path / "meta.json").is_file()):
            # rank 0 holds the dataset's lock while the ranks encode, so concurrent jobs sharing the cache never
            # write one memory-mapped file at once; a job that waited finds the dataset finished
            with exclusive(cache / "locks" / path.name) if world().main else contextlib.nullcontext():
                if not broadcast((path / "meta.json").is_file()):
                    encode_latents(
                        path, tokenizer, source, idx, device, job=key, labels=labels, desc=f"encode {split_name}",
                        meta={**common, "split": {**split, "name": split_name}},
                    )  # fmt: skip
        sets[split_name] = latent_io.open(path)
    test_index = np.load(sets["test"].path / "source_index.npy")
    quality = _tokenizer_quality(tokenizer, source, test_index, sets["train"], device, cache, tok_sha) if world().main else None
    shared: dict[str, Any] | None = broadcast(quality)
    info: dict[str, Any] = {**(shared or {}), **tok_info}
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
        return tok_cls.load(path, **tc.load_options()).to(device), path, {"origin": f"loaded from {path}"}
    tok_cls = trainable(tok_cls, tc.name)
    train_defaults = tok_cls.preset_training.get(tc.preset or "", {})
    train_cfg: Any = parse(tok_cls.TrainConfig, {**train_defaults, **tc.train}, "tokenizer.train")
    model = tok_cls.from_preset(tc.preset or "", tc.params)
    code = code_digest(model, tok_cls, tok_cls.fit, importlib.import_module(tok_cls.__module__.rpartition(".")[0] or tok_cls.__module__), core=False)
    ranks = {"ranks": world().size} if world().active else {}  # per-rank noise and statistics: N is part of the run
    key = fingerprint(
        tc.name, tc.preset, to_dict(model.config), to_dict(train_cfg), tc.seed, bench.precision, source.fingerprint(), train_idx.tolist(),
        *([ranks] if ranks else []),
    )  # fmt: skip
    folder = code_keyed(
        cache / "tokenizers",
        f"{tc.name}-{tc.preset}-{key}",
        code,
        complete=lambda p: (p / "tokenizer.pt").is_file() and (p / TOKENIZER_INFO).is_file(),
    )
    final = folder / "tokenizer.pt"
    state = folder.with_name(f"{folder.name}.train_state.pt")  # resumable training state, beside the entry
    # rank 0 holds the tokenizer's lock while the ranks train, so concurrent jobs never train it into one checkpoint
    with exclusive(cache / "locks" / folder.name) if world().main else contextlib.nullcontext():
        if broadcast(world().main and _tokenizer_entry_complete(folder, state)):
            log.info("tokenizer from cache %s", final)
            return tok_cls.load(final).to(device), final, read_json(folder / TOKENIZER_INFO)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(tc.seed)
            model = tok_cls.from_preset(tc.preset or "", tc.params)
            stats = tok_cls.fit(model, source, train_idx, train_cfg, checkpoint=state, seed=tc.seed, device=device, autocast=autocast)
        info = {"origin": f"trained preset {tc.preset}", "train": stats | ranks}
        model.trained_resolution = required(bench.dataset, "dataset").resolution  # saved with it, checked by `encode`
        if world().main:  # the entry appears whole: both files are written in a temporary folder renamed into place
            with atomic_path(folder) as tmp:
                tmp.mkdir()
                model.save(tmp / final.name)
                write_json(tmp / TOKENIZER_INFO, info)
            state.unlink(missing_ok=True)
        barrier()
    return model.eval(), final, info


TOKENIZER_INFO = "train.json"


def _tokenizer_entry_complete(folder: Path, state: Path) -> bool:
    """True when the cached tokenizer ``folder`` holds both of its files (a leftover training ``state`` is removed).
    An incomplete folder, as an interrupted older vqbench left it (it wrote the files one by one in place), is logged
    as recomputed; training resumes from the state it holds, if any."""
    missing = [name for name in ("tokenizer.pt", TOKENIZER_INFO) if not (folder / name).is_file()]
    if not missing:
        state.unlink(missing_ok=True)  # left when a run stopped right after renaming the entry into place
        return True
    if folder.exists():
        log.warning("tokenizer cache entry %s is incomplete (no %s): recomputed", folder, " or ".join(missing))
        if (folder / "train_state.pt").is_file() and not state.is_file():
            os.replace(folder / "train_state.pt", state)
    return False


def _encoder(tokenizer: Tokenizer, device: torch.device) -> Callable[[ImageBatch], tuple[torch.Tensor | None, list[int], list[tuple[int, str]]]]:
    def encode(batch: ImageBatch) -> tuple[torch.Tensor | None, list[int], list[tuple[int, str]]]:
        with torch.inference_mode():
            codes = tokenizer.encode(batch.floats(device)).cpu() if batch.kept else None
        return codes, batch.kept, batch.skipped

    return encode


def encode_batches(
    tokenizer: Tokenizer, source: ImageSource, indices: np.ndarray, device: torch.device, batch_size: int = 64, *,
    start: int = 0, workers: int | None = None, desc: str = "encode",
) -> Iterator[tuple[int, torch.Tensor | None, list[int], list[int]]]:  # fmt: skip
    """(b, codes or None, kept indices, unreadable indices) for batches ``start…`` of ``indices``, in order, on rank 0
    (batch b is encoded on rank b mod N; the other ranks yield nothing). Images stream through the loader."""
    w = world()
    total = max(0, batch_count(len(indices), batch_size) - start)
    pin = device.type == "cuda"
    with tqdm(total=total, desc=desc, unit="batch", leave=False, disable=not w.main) as bar:
        for b, (codes, kept, skipped) in map_batches(source, indices, batch_size, _encoder(tokenizer, device), start=start, workers=workers, pin=pin):
            note_skipped(source, skipped)
            bar.update(1)
            yield b, codes, kept, [i for i, _ in skipped]


def encode_images(
    tokenizer: Tokenizer, source: ImageSource, indices: np.ndarray, device: torch.device, batch_size: int = 64, desc: str = "encode",
    workers: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Codes (N×h×w) of the readable images among ``indices`` and the indices kept (in memory; rank 0 gets them, the
    other ranks empty arrays). ``encode_latents`` writes to disk instead, resumably."""
    codes, kept = [], []
    for _, batch_codes, batch_kept, _ in encode_batches(tokenizer, source, indices, device, batch_size, workers=workers, desc=desc):
        if batch_codes is not None:
            codes.append(batch_codes)
            kept.extend(batch_kept)
    if source.skipped:
        log.warning("%d unreadable images were skipped", len(source.skipped))
    if not broadcast(bool(kept)):
        raise ConfigError("dataset", "no readable images in this split")
    if not world().main:
        return np.zeros((0, 0, 0), dtype=np.int64), np.zeros(0, dtype=np.int64)
    return torch.cat(codes).numpy(), np.asarray(kept, dtype=np.int64)


def encode_latents(
    path: Path, tokenizer: Tokenizer, source: ImageSource, indices: np.ndarray, device: torch.device, batch_size: int = 64, *,
    job: str = "", meta: dict[str, Any] | None = None, labels: np.ndarray | None = None, workers: int | None = None, desc: str = "encode",
) -> Path:  # fmt: skip
    """Encode ``source[indices]`` into the latent dataset at ``path`` batch by batch (memory-mapped, resumable: an
    interrupted encode continues after its last complete batch). ``job`` names the inputs (tokenizer and source
    hashes); progress left by another job is discarded. ``labels`` are the source's labels (the kept rows are stored);
    ``meta`` goes into meta.json with ``skipped_unreadable`` and ``source_indices_sha256``. Under torchrun every rank
    encodes its share and rank 0 alone writes; every rank returns once the dataset is finished."""
    job = fingerprint(job, batch_size, len(indices), hashlib.sha256(np.ascontiguousarray(indices, dtype=np.int64).tobytes()).hexdigest())
    writer = latent_io.LatentWriter(path, len(indices), tokenizer.codebook_size, job) if world().main else None
    start = broadcast(writer.batches if writer is not None else 0)
    if start:
        log.info("resuming encode of %s after batch %d", path, start)
    for b, codes, kept, skipped in encode_batches(tokenizer, source, indices, device, batch_size, start=start, workers=workers, desc=desc):
        assert writer is not None
        writer.append(b, np.zeros((0, 0, 0), dtype=np.int64) if codes is None else codes.numpy(), kept, skipped)
    if not broadcast(writer is None or writer.rows > 0):
        raise ConfigError("dataset", "no readable images in this split")
    if writer is not None:
        if writer.skipped:
            log.warning("%d unreadable images were skipped", len(writer.skipped))
        index = np.load(path / "source_index.npy", mmap_mode="r")[: writer.rows]
        extra = {"skipped_unreadable": sorted(set(writer.skipped)), "source_indices_sha256": fingerprint(np.asarray(index).tolist())}
        writer.finish(labels, **{**extra, **(meta or {})})
    barrier()
    return path


@torch.inference_mode()
def decode_to_uint8(tokenizer: Tokenizer, codes: torch.Tensor, device: torch.device, batch_size: int = 64) -> torch.Tensor:
    return torch.cat([float_to_uint8(tokenizer.decode(c.to(device))).cpu() for c in codes.split(batch_size)])


@torch.inference_mode()
def _tokenizer_quality(tokenizer, source, test_index, train_set, device, cache, tok_sha, count: int = 256) -> dict[str, Any]:
    """Reconstruction PSNR/LPIPS on held-out images and codebook usage on the training latents (cached)."""
    path = cache / "tokenizer-quality" / f"{tok_sha[:16]}-{source.fingerprint()}.json"
    if path.is_file():
        return read_json(path)
    lpips_model, real = load_lpips("alex")
    lpips_model.to(device)
    psnr, lp = [], []
    for _, batch in stream_batches(source, test_index[:count], 64, pin=device.type == "cuda"):  # one batch in memory at a time
        images = batch.floats(device)
        recon = decode_to_uint8(tokenizer, tokenizer.encode(images).cpu(), device)
        psnr.append(psnr_in_region(batch.images, recon, torch.ones(len(recon), *recon.shape[2:], dtype=torch.bool)))
        lp.append(lpips_model(images, (recon.float() / 127.5 - 1).to(device)).flatten().cpu())
    usage = codebook_stats(train_set.tensor(), tokenizer.codebook_size)
    info = {
        "recon_psnr": float(torch.cat(psnr).mean()),
        "recon_lpips": float(torch.cat(lp).mean()),
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
    tokenizer = regs.tokenizers.get(tc.name, "tokenizer.name").load(path, **tc.load_options()).to(device)
    return DataBundle(train, test, tokenizer, tokenizer_info={"origin": f"loaded from {path}"})
