"""Metric-equalised ImageBART schedules on a benchmark's own data and tokenizer.

    python -m vqbench_plugins.imagebart.schedule BENCHMARK.yaml --scales 2 [--images 256] [--grid 21]

prepares the benchmark's tokenizer and held-out latents exactly as ``vqbench run`` does (cached), measures the mean
LPIPS between decodes of held-out codes and of the same codes noised to ᾱ on a grid from 1 to 0, and prints the
schedule ``alphacum: [1, ᾱ_1, …, 0]`` whose scales are evenly spaced in that distance (their FFHQ n = 2 result was
ᾱ_1 = 0.636). Paste it into the benchmark as ``params: {alphacum: [...]}``. Offline, LPIPS runs on a randomly
initialised backbone; the output says so.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from .chain import MultinomialChain, equalised_alphacum


@torch.inference_mode()
def distance_curve(
    codes: torch.Tensor,
    num_codes: int,
    decode: Callable[[torch.Tensor], torch.Tensor],
    distance: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    grid: Sequence[float],
    generator: torch.Generator,
) -> list[float]:
    """Mean ``distance(decode(codes), decode(noised))`` for codes noised to each ᾱ of ``grid`` (q(x_s | x0) with
    ᾱ_s = ᾱ: each token redrawn uniformly with probability 1 − ᾱ)."""
    chain = MultinomialChain([1.0, 0.0], num_codes)
    clean = decode(codes)
    return [float(distance(clean, decode(chain.redraw(codes, 1.0 - a, generator))).mean()) for a in grid]


def main(argv: list[str] | None = None) -> int:
    from vqbench.cli import _load
    from vqbench.errors import ConfigError, DataError
    from vqbench.metrics.lpips_net import load_lpips
    from vqbench.precision import make_autocast
    from vqbench.runner.data import decode_to_uint8, prepare_data
    from vqbench.runner.run import preflight, resolve_device

    parser = argparse.ArgumentParser(prog="python -m vqbench_plugins.imagebart.schedule", description=__doc__.split("\n\n")[0])
    parser.add_argument("file", help="benchmark YAML (its first document)")
    parser.add_argument("--scales", type=int, default=2, help="n, the number of scales (the paper's T = n + 1)")
    parser.add_argument("--images", type=int, default=256, help="held-out grids to average over")
    parser.add_argument("--grid", type=int, default=21, help="ᾱ values measured, evenly spaced from 1 to 0")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a benchmark key, as in vqbench run")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        if args.scales < 1 or args.images < 1 or args.grid < 2:
            raise ConfigError("--scales/--images/--grid", "need scales ≥ 1, images ≥ 1 and grid ≥ 2")
        benches, regs = _load(args)
        bench = benches[0]
        preflight(bench, regs)
        if bench.tokenizer is None:
            raise ConfigError("tokenizer", "a metric-equalised schedule needs a tokenizer to decode codes to images")
        device = resolve_device(bench.device)
        cache = Path(bench.cache or Path("results") / ".cache")
        data = prepare_data(bench, regs, cache, device, make_autocast(device, "fp32"))
    except (ConfigError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    codes = data.test.tensor()[: args.images]
    lpips, real = load_lpips("alex", seed=args.seed)
    lpips.to(device)

    def distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        to_float = lambda x: x.to(device).float() / 127.5 - 1.0  # noqa: E731
        return torch.cat([lpips(to_float(x), to_float(y)).flatten().cpu() for x, y in zip(a.split(64), b.split(64))])

    grid = [1.0 - i / (args.grid - 1) for i in range(args.grid)]
    curve = distance_curve(
        codes, data.codebook_size, lambda c: decode_to_uint8(data.tokenizer, c, device), distance, grid, torch.Generator().manual_seed(args.seed)
    )
    schedule = equalised_alphacum(curve, grid, args.scales)
    print(
        f"# {bench.name}: LPIPS-alex ({'real' if real else 'RANDOM, offline: not comparable to published'} weights) over {len(codes)} held-out grids"
    )
    for a, d in zip(grid, curve):
        print(f"#   ᾱ = {a:.3f}: {d:.4f}")
    print(f"alphacum: [{', '.join(f'{a:.3f}' for a in schedule)}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
