"""The GPU speed table of docs/speed.md in one budgeted run: every prior at 16×16 latents / 1024 codes (batch 8 and
64) and SUNDAE at the 1024² paper configuration (dim 2048, depth [2, 10, 2], 32×32 latents, 8192 codes, 100 steps,
prior + decode, batch 1 and 16), in fp32 and bf16, compiled and not.

    python benchmarks/gpu_speed.py --out DIR [--budget-s 480] [--only PATTERN ...] [--device cuda]

Rows run in priority order (the ≤ 0.1 s/img goal row first) and stop starting once ``--budget-s`` has passed; each
finished row is written at once (``DIR/rows.json``, ``DIR/speed.md``, atomically), so a run cut short keeps every
row that finished. A row that fails (out of memory, a compile error) is recorded with its error and the run goes
on. ``DIR/environment.json`` names the device, driver, torch, CUDA and cuDNN versions. ``--tiny`` runs the same plan
at toy sizes (on the CPU in the tests).

On a GPU machine whose python3 holds torch but not vqbench, lpips or torch-fidelity, bring wheels of the three
(pure Python; docs/speed.md says how to build them) and install them beside the image's packages:

    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
    python3 benchmarks/gpu_speed.py --out $OUT
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import platform
import shlex
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vqbench.io import write_json, write_text
from vqbench.report import flatten
from vqbench.speed import format_rows, measure

PRIORS = ("sundae", "absorbing", "autoregressive", "imagebart", "independent")
PAPER_SUNDAE = {"backbone": {"dim": 2048, "depth": [2, 10, 2]}}
TINY_SUNDAE = {"backbone": {"dim": 32, "depth": [1, 1, 1], "heads": 2, "dim_head": 16}}
TINY_PARAMS = {
    "sundae": TINY_SUNDAE,
    "absorbing": {"backbone": {"dim": 32, "depth": 1, "heads": 2, "dim_head": 16}},
    "autoregressive": {"backbone": {"dim": 32, "depth": 1, "heads": 2, "dim_head": 16}},
    "imagebart": {"preset": "cpu", "scales": 2},
    "independent": {},
}
SUNDAE_FIXED = {"early_stop": False}  # random weights: the work of a full run, whatever early stop would do


@dataclass(frozen=True)
class Row:
    """One ``vqbench speed`` measurement."""

    name: str
    prior: str
    shape: tuple[int, int]
    codebook: int
    batch: int
    samples: int
    precision: str
    compile: bool
    params: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    decode_preset: str | None = None

    def command(self, device: str) -> str:
        """The equivalent ``vqbench speed`` command line."""
        parts = [f"vqbench speed {self.prior} --device {device}"]
        parts += [f"--param {shlex.quote(f'{key}={_text(value)}')}" for key, value in flatten(self.params).items()]
        parts += [f"--option {shlex.quote(f'{key}={_text(value)}')}" for key, value in self.options.items()]
        parts += [f"--shape {self.shape[0]}x{self.shape[1]} --codebook {self.codebook} --batch {self.batch}"]
        parts += [f"--samples {self.samples} --precision {self.precision} --compile {'on' if self.compile else 'off'}"]
        if self.decode_preset:
            parts.append(f"--decode-preset {self.decode_preset}")
        return " ".join(parts)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def plan(tiny: bool = False) -> list[Row]:
    """Every row of the table, most important first: the 1024² goal row, bf16 before fp32, eager before compiled."""
    paper: dict[str, Any] = dict(shape=(32, 32), codebook=8192, params=PAPER_SUNDAE, options={"steps": 100} | SUNDAE_FIXED)
    paper["decode_preset"] = "megapixel-f32"
    if tiny:
        paper = dict(shape=(4, 4), codebook=128, params=TINY_SUNDAE, options={"steps": 3} | SUNDAE_FIXED, decode_preset="tiny")

    def paper_row(precision: str, batch: int, compiled: bool) -> Row:
        name = f"sundae-1024px/{precision}/b{batch}{'/compiled' if compiled else ''}"
        return Row(name, "sundae", batch=batch, samples=2 * batch, precision=precision, compile=compiled, **paper)

    def small_rows(precision: str, compiled: bool) -> list[Row]:
        rows = []
        for batch in (64, 8):
            for prior in PRIORS:
                params = TINY_PARAMS[prior] if tiny else {}
                options = {}
                if prior == "sundae":
                    options = SUNDAE_FIXED | ({"steps": 3} if tiny else {})
                shape, codebook = ((4, 4), 16) if tiny else ((16, 16), 1024)
                name = f"{prior}-16x16/{precision}/b{batch}{'/compiled' if compiled else ''}"
                samples = max(batch, 2 if tiny else 64)
                rows.append(Row(name, prior, shape, codebook, batch, samples, precision, compiled, params, options))
        return rows

    return [
        paper_row("bf16", 16, False),
        paper_row("bf16", 16, True),
        paper_row("bf16", 1, False),
        *small_rows("bf16", False),
        *small_rows("bf16", True),
        *small_rows("fp32", False),
        paper_row("fp32", 16, False),
        paper_row("fp32", 1, False),
        paper_row("bf16", 1, True),
        *small_rows("fp32", True),
        paper_row("fp32", 16, True),
        paper_row("fp32", 1, True),
    ]


def environment(device: torch.device) -> dict[str, Any]:
    """Device, driver and library versions for the table's header."""
    env: dict[str, Any] = {"torch": torch.__version__, "python": platform.python_version(), "device": str(device)}
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        env |= {"gpu": torch.cuda.get_device_name(device), "capability": f"{major}.{minor}", "cuda": torch.version.cuda}
        env["cudnn"] = torch.backends.cudnn.version()
        try:
            query = ["nvidia-smi", "--query-gpu=driver_version,memory.total", "--format=csv,noheader"]
            env["nvidia_smi"] = subprocess.run(query, capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError) as error:
            env["nvidia_smi"] = f"unavailable: {error}"
    else:
        env |= {"cpu": platform.processor() or platform.machine(), "cpu_capability": torch.backends.cpu.get_cpu_capability()}
        env["threads"] = torch.get_num_threads()
    return env


def run_row(row: Row, device: torch.device, min_seconds: float) -> dict[str, Any]:
    """The measured figures of one row, or its error; never raises for a failure of the measured code."""
    began = time.perf_counter()
    try:
        figures = measure(
            row.prior, row.params, row.shape, row.codebook, row.batch, row.samples, row.options, row.precision, device,
            row.decode_preset, min_seconds=min_seconds, compile=row.compile,
        )  # fmt: skip
    except Exception as error:  # noqa: BLE001 - one failing configuration must not stop the table
        figures = {"error": f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"}
        traceback.print_exc()
    finally:
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return {"name": row.name, **figures, "wall_s": time.perf_counter() - began}


def write_table(out: Path, env: dict[str, Any], results: list[dict[str, Any]], rows: list[Row], device: str) -> None:
    by_name = {row.name: row for row in rows}
    done = [result for result in results if "skipped" not in result]
    write_json(out / "rows.json", [result | {"command": by_name[result["name"]].command(device)} for result in results])
    header = ", ".join(f"{key} {value}" for key, value in env.items())
    skipped = [result["name"] for result in results if "skipped" in result]
    lines = [f"# vqbench speed\n\n{header}\n", format_rows(done)]
    if skipped:
        lines.append(f"\nNot measured (budget spent): {', '.join(skipped)}")
    write_text(out / "speed.md", "\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--budget-s", type=float, default=480.0, help="start no row after this many seconds")
    parser.add_argument("--only", nargs="+", metavar="PATTERN", help="row names to run (fnmatch patterns)")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--tiny", action="store_true", help="toy sizes (a check of the script, not a measurement)")
    parser.add_argument("--min-seconds", type=float, default=2.0, help="timed backbone calls last at least this long")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("--device cuda: no CUDA device is visible; use --device cpu (with --tiny for a check)", file=sys.stderr)
        return 2
    rows = [row for row in plan(args.tiny) if not args.only or any(fnmatch.fnmatch(row.name, p) for p in args.only)]
    if not rows:
        print(f"--only {' '.join(args.only)}: no row matches; names look like {plan()[0].name}", file=sys.stderr)
        return 2
    env = environment(device)
    write_json(args.out / "environment.json", env)
    began, results = time.perf_counter(), []
    for row in rows:
        if time.perf_counter() - began > args.budget_s:
            results.append({"name": row.name, "skipped": "budget"})
            continue
        print(f"[{time.perf_counter() - began:6.0f} s] {row.command(args.device)}", file=sys.stderr, flush=True)
        results.append(run_row(row, device, args.min_seconds))
        write_table(args.out, env, results, rows, args.device)
    write_table(args.out, env, results, rows, args.device)
    print((args.out / "speed.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
