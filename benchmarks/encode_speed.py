"""Streaming encode throughput and peak memory: render a folder of toyfaces PNGs, then encode it with the tiny
VQ-GAN (untrained: throughput only) through ``vqbench.runner.data.encode_latents``, once per ``--count`` in a fresh
process, printing images/s and peak resident memory of the encoding process and of its loader workers.

    .venv/bin/python benchmarks/encode_speed.py --resolution 256 --count 500 2000
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def generate(folder: Path, resolution: int, count: int, unique: int) -> float:
    """Write ``count`` PNGs (faces 0…unique-1 rendered, the rest byte copies of them); returns seconds spent."""
    from vqbench_plugins.toyfaces import render, sample_factors

    folder.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    for i in range(count):
        path = folder / f"{i:06d}.png"
        if path.is_file():
            continue
        if i < unique:
            Image.fromarray(render(*sample_factors(0, i), resolution)).save(path, compress_level=1)
        else:
            shutil.copyfile(folder / f"{i % unique:06d}.png", path)
    return time.perf_counter() - began


def encode(folder: Path, resolution: int, count: int, batch_size: int, workers: int | None, params: dict) -> dict:
    """Encode the first ``count`` images of ``folder``; timing and peak memory of this process and its workers."""
    from vqbench_plugins.image_folder import ImageFolder, ImageFolderConfig
    from vqbench_plugins.vqgan.plugin import VQGAN

    from vqbench.runner.data import encode_latents

    torch.manual_seed(0)
    tokenizer = VQGAN.from_preset("tiny", params).eval()
    source = ImageFolder(ImageFolderConfig(path=str(folder), max_images=count), resolution)
    source.check("--folder")
    with tempfile.TemporaryDirectory() as out:
        began = time.perf_counter()
        path = encode_latents(Path(out) / "latents", tokenizer, source, np.arange(len(source)), torch.device("cpu"), batch_size, workers=workers)
        seconds = time.perf_counter() - began
        shape = list(np.load(path / "codes.npy", mmap_mode="r").shape)
    return {
        "images": len(source), "seconds": round(seconds, 2), "images_per_s": round(len(source) / seconds, 2), "codes": shape,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "peak_worker_rss_mib": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--count", type=int, nargs="+", default=[500, 2000], help="images to encode (one fresh process each)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, help="loader processes (default min(4, CPUs-1))")
    parser.add_argument("--threads", type=int, default=None, help="torch threads of the encoding process")
    parser.add_argument("--unique", type=int, default=None, help="distinct faces rendered (default all); the rest are copies")
    parser.add_argument("--params", default="{}", help='JSON overrides of the tiny preset, e.g. {"ddconfig": {"ch": 16}}')
    parser.add_argument("--folder", help="image folder (default: a temporary folder per resolution)")
    parser.add_argument("--encode-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    folder = Path(args.folder or Path(tempfile.gettempdir()) / f"vqbench-encode-{args.resolution}")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.encode_only:
        print(json.dumps(encode(folder, args.resolution, args.count[0], args.batch_size, args.workers, json.loads(args.params))))
        return
    seconds = generate(folder, args.resolution, max(args.count), args.unique or max(args.count))
    print(f"generated {max(args.count)} images at {args.resolution}² in {folder} ({seconds:.0f} s; not part of the encode time)", flush=True)
    for count in args.count:
        command = [sys.executable, __file__, "--encode-only", "--resolution", str(args.resolution), "--count", str(count)]
        command += ["--batch-size", str(args.batch_size), "--params", args.params, "--folder", str(folder)]
        command += ["--workers", str(args.workers)] if args.workers is not None else []
        command += ["--threads", str(args.threads)] if args.threads else []
        result = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
        print(
            f"{args.resolution}² × {result['images']}: {result['images_per_s']} images/s ({result['seconds']} s), codes {result['codes']}, "
            f"peak RSS {result['peak_rss_mib']} MiB (loader workers: {result['peak_worker_rss_mib']} MiB each at most)",
            flush=True,
        )


if __name__ == "__main__":
    main()
