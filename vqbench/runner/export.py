"""Export a results folder's samples as images, so FID can be cross-checked with other tools (torch-fidelity,
clean-fid, OpenAI's ADM evaluator) on exactly the images vqbench scored, or its reference statistics (``fid-stats``)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from ..config import parse
from ..errors import DataError
from ..io import atomic_path, read_json
from ..metrics.reference_stats import extractor_identity, show_identity, write_fid_stats
from ..plugins import Registries
from ..precision import make_autocast
from .data import DataBundle, decode_to_uint8, prepare_data
from .evaluate import image_sampling, metric_configs, reference_split
from .run import reference_features, resolve_device
from .schema import Benchmark

log = logging.getLogger(__name__)
FID_STATS_FILE = "fid-stats.npz"


def _write_images(folder: Path, batches: Iterator[torch.Tensor], fmt: str) -> int:
    """uint8 B×3×H×W batches → numbered PNGs in ``folder``, or one ``images.npz`` (N×H×W×3) there, the array stored
    as ``arr_0`` (OpenAI's ADM evaluator's key) and as ``images``. The folder is written under a temporary name and
    renamed into place, replacing an earlier export whole."""
    from PIL import Image

    count, arrays = 0, []
    with atomic_path(folder) as tmp:
        tmp.mkdir()
        for batch in batches:
            for image in batch.permute(0, 2, 3, 1).numpy():
                if fmt == "png":
                    Image.fromarray(image).save(tmp / f"{count:06d}.png", format="PNG")
                else:
                    arrays.append(image)
                count += 1
        if fmt == "npz":
            stacked = np.stack(arrays) if arrays else np.zeros((0, 0, 0, 3), np.uint8)
            np.savez_compressed(tmp / "images.npz", arr_0=stacked, images=stacked)
    return count


def open_results(results: Path, regs: Registries, device: torch.device) -> tuple[Benchmark, DataBundle, Path]:
    """The benchmark as run (from ``results.json``), its data with the tokenizer the samples were decoded with (from
    the cache) and the cache folder; a DataError when ``results`` is not a results folder or the cache holds another
    tokenizer."""
    if not (results / "results.json").is_file():
        raise DataError(f"{results}: no results.json here; give a results folder written by `vqbench run`")
    record = read_json(results / "results.json")
    bench = parse(Benchmark, record["benchmark"], "results.json:benchmark")
    bench.precision = record.get("precision", "fp32")
    cache = Path(bench.cache or Path("results") / ".cache")
    data = prepare_data(bench, regs, cache, device, lambda: torch.autocast(device.type, enabled=False))
    if data.tokenizer is None:
        raise DataError(f"{results}: this benchmark has no tokenizer (latent-only): its samples are code grids, see runs/<cell>/samples.npy")
    used = {(read_json(m).get("protocol") or {}).get("data", {}).get("tokenizer") for m in (results / "runs").glob("*/metrics.json")} - {None}
    current = str((data.train.meta.get("tokenizer") or {}).get("checkpoint_sha256"))
    if used and used != {current}:
        raise DataError(f"{results}: the cached tokenizer ({current[:12]}…) is not the one these samples were decoded with; rerun the benchmark")
    data.tokenizer.eval()
    return bench, data, cache


def export_samples(
    results: Path, regs: Registries, dest: Path, fmt: str = "png", device_name: str = "auto", with_reference: bool = True
) -> dict[str, int]:
    """Decode every cell's ``samples.npy`` with the run's tokenizer (from the cache) into ``dest/<cell>/``, in the
    run's sampling batches and precision (the images the cell scored), and the held-out reference images the features
    were computed on into ``dest/reference/``. Returns images per folder."""
    device = resolve_device(device_name)
    bench, data, _ = open_results(results, regs, device)  # may train a tokenizer missing from the cache: not in inference mode
    tokenizer, autocast = data.tokenizer, make_autocast(device, bench.precision)
    assert tokenizer is not None
    counts = {}
    for samples in sorted((results / "runs").glob("*/samples.npy")):
        codes = torch.from_numpy(np.load(samples).astype(np.int64))
        batches = (decode_batch(tokenizer, c, device, autocast) for c in codes.split(bench.sampling.batch_size))
        counts[samples.parent.name] = _write_images(dest / samples.parent.name, batches, fmt)
        log.info("exported %d images of %s", counts[samples.parent.name], samples.parent.name)
    if with_reference:
        n = reference_split(bench.metrics, metric_configs(bench.metrics, regs, image_sampling(bench)), len(data.test))
        decode = lambda c: decode_to_uint8(tokenizer, c, device)  # noqa: E731
        with torch.inference_mode():
            counts["reference"] = _write_images(dest / "reference", (images for images, _ in data.reference_batches(n, 64, decode)), fmt)
    return counts


def decode_batch(tokenizer, codes: torch.Tensor, device: torch.device, autocast) -> torch.Tensor:
    """uint8 images of one batch of code grids, decoded as a cell decodes its samples (under the run's autocast)."""
    from ..interfaces import float_to_uint8

    with torch.inference_mode(), autocast():
        return float_to_uint8(tokenizer.decode(codes.to(device))).cpu()


def export_fid_stats(results: Path, regs: Registries, dest: Path, device_name: str = "auto") -> tuple[Path, str]:
    """Write the real-image feature mean and covariance of ``results``' protocol to ``dest/fid-stats.npz`` (mu,
    sigma as float64, the feature network's name and weights digest, the feature count); returns (path, summary)."""
    device = resolve_device(device_name)
    bench, data, cache = open_results(results, regs, device)
    reference = reference_features(bench, regs, data, cache, device)
    if reference is None:
        raise DataError(f"{results}: this benchmark computes no image features (no image metric enabled): there are no reference statistics")
    identity = extractor_identity(bench.metrics.feature_extractor, reference.extractor)
    path = dest / FID_STATS_FILE
    mu, _ = write_fid_stats(path, reference.real, identity)
    return path, f"mu ({len(mu)}), sigma ({len(mu)}×{len(mu)}) of {len(reference.real)} real features, {show_identity(identity)}"
