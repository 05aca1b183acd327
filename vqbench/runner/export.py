"""Export a results folder's samples as images, so FID can be cross-checked with other tools (torch-fidelity,
clean-fid) on exactly the images vqbench scored."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from ..config import parse
from ..errors import DataError
from ..io import atomic_path, read_json
from ..plugins import Registries
from .data import decode_to_uint8, prepare_data
from .evaluate import image_sampling, metric_configs, reference_split
from .run import resolve_device
from .schema import Benchmark

log = logging.getLogger(__name__)


def _write_images(folder: Path, batches: Iterator[torch.Tensor], fmt: str) -> int:
    """uint8 B×3×H×W batches → numbered PNGs in ``folder``, or one ``images.npz`` (N×H×W×3) there. The folder is
    written under a temporary name and renamed into place, replacing an earlier export whole."""
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
            np.savez_compressed(tmp / "images.npz", images=np.stack(arrays) if arrays else np.zeros((0, 0, 0, 3), np.uint8))
    return count


@torch.inference_mode()
def export_samples(
    results: Path, regs: Registries, dest: Path, fmt: str = "png", device_name: str = "auto", with_reference: bool = True
) -> dict[str, int]:
    """Decode every cell's ``samples.npy`` with the run's tokenizer (from the cache) into ``dest/<cell>/``, and the
    held-out reference images the features were computed on into ``dest/reference/``. Returns images per folder."""
    if not (results / "results.json").is_file():
        raise DataError(f"{results}: no results.json here; export needs a results folder written by `vqbench run`")
    record = read_json(results / "results.json")
    bench = parse(Benchmark, record["benchmark"], "results.json:benchmark")
    bench.precision = record.get("precision", "fp32")
    device = resolve_device(device_name)
    cache = Path(bench.cache or Path("results") / ".cache")
    data = prepare_data(bench, regs, cache, device, lambda: torch.autocast(device.type, enabled=False))
    if data.tokenizer is None:
        raise DataError(f"{results}: this benchmark has no tokenizer (latent-only): its samples are code grids, see runs/<cell>/samples.npy")
    used = {(read_json(m).get("protocol") or {}).get("data", {}).get("tokenizer") for m in (results / "runs").glob("*/metrics.json")} - {None}
    current = str((data.train.meta.get("tokenizer") or {}).get("checkpoint_sha256"))
    if used and used != {current}:
        raise DataError(f"{results}: the cached tokenizer ({current[:12]}…) is not the one these samples were decoded with; rerun the benchmark")
    tokenizer = data.tokenizer.eval()
    counts = {}
    for samples in sorted((results / "runs").glob("*/samples.npy")):
        codes = torch.from_numpy(np.load(samples).astype(np.int64))
        batches = (decode_to_uint8(tokenizer, c, device) for c in codes.split(64))
        counts[samples.parent.name] = _write_images(dest / samples.parent.name, batches, fmt)
        log.info("exported %d images of %s", counts[samples.parent.name], samples.parent.name)
    if with_reference:
        n = reference_split(bench.metrics, metric_configs(bench.metrics, regs, image_sampling(bench)), len(data.test))
        decode = lambda c: decode_to_uint8(tokenizer, c, device)  # noqa: E731
        counts["reference"] = _write_images(dest / "reference", (images for images, _ in data.reference_batches(n, 64, decode)), fmt)
    return counts
