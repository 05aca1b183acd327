"""Where sampling time goes: one torch.profiler trace per sampler at the reference-comparison configuration
(16×16 latents, 1024 codes, batch 8, random weights), the top operators by self CPU time.

    .venv/bin/python benchmarks/profile_samplers.py [--priors autoregressive sundae absorbing] [--precision fp32|bf16]
        [--threads 2] [--rows 12]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

import vqbench
from vqbench.config import parse
from vqbench.precision import inference_weights, make_autocast

TRANSFORMER = {"name": "transformer", "dim": 256, "depth": 8, "heads": 8, "dim_head": 32}
CONFIGS = {  # prior → (params, sampling options): the configurations of benchmarks/reference_speed.py
    "autoregressive": ({"backbone": TRANSFORMER}, {}),
    "sundae": ({"backbone": {"name": "hourglass", "dim": 256, "depth": [2, 4, 2], "heads": 8, "dim_head": 64}}, {"steps": 20, "early_stop": False}),
    "absorbing": ({"backbone": TRANSFORMER}, {"steps": 50}),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--priors", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rows", type=int, default=12)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    regs = vqbench.registries()
    device = torch.device("cpu")
    autocast = make_autocast(device, args.precision)
    for name in args.priors:
        params, options = CONFIGS[name]
        cls = regs.priors.get(name)
        torch.manual_seed(0)
        prior = cls(parse(cls.Config, params), 1024, (16, 16)).eval()
        generator = torch.Generator().manual_seed(0)
        with inference_weights(prior, args.precision), torch.inference_mode(), autocast():
            prior.sample(args.batch, (16, 16), generator, **options)  # warm-up
            started = time.perf_counter()
            prior.sample(args.batch, (16, 16), generator, **options)
            seconds = (time.perf_counter() - started) / args.batch
            with profile(activities=[ProfilerActivity.CPU]) as trace:
                prior.sample(args.batch, (16, 16), generator, **options)
        print(f"\n## {name} {options} — {args.precision}, batch {args.batch}, {args.threads} threads: {seconds:.3f} s/img unprofiled")
        print(trace.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))


if __name__ == "__main__":
    main()
