"""The ``vqbench`` command line: run, validate, list, report, export, evaluate, encode, speed."""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

from . import __version__
from .errors import (
    EXIT_BAD_INPUT,
    EXIT_CELLS_FAILED,
    EXIT_INTERRUPTED,
    EXIT_LEFT_TO_OTHER_JOBS,
    EXIT_TERMINATED,
    DiskFull,
    Terminated,
    VQBenchError,
)

log = logging.getLogger("vqbench")


def _overrides(items: list[str]):
    from .config import parse_override

    return [parse_override(item) for item in items or []]


def _load(args: argparse.Namespace):
    """Every benchmark in the file (one per YAML document), validated, and the registries."""
    from .plugins import registries
    from .runner.schema import load_yaml, parse_benchmark

    regs = registries()
    overrides = _overrides(args.set)
    return [parse_benchmark(doc, regs.metrics.names(), overrides) for doc in load_yaml(args.file)], regs


def _shard(text: str | None) -> tuple[int, int] | None:
    from .runner.shards import parse_shard

    return parse_shard(text)


def cmd_run(args: argparse.Namespace) -> int:
    from .runner.run import describe_plan, preflight, run_benchmark

    benches, regs = _load(args)
    shard = _shard(args.shard)
    for bench in benches:
        if args.device:
            bench.device = args.device
        if args.reuse_stale:
            bench.reuse_stale = True
    if args.dry_run:  # every check of `validate`; inputs missing on disk are listed, not fatal
        missing = [preflight(bench, regs, plan_only=True) for bench in benches]
        print("\n\n".join(describe_plan(bench, regs, shard, gaps) for bench, gaps in zip(benches, missing)))
        return 0
    for bench in benches:
        preflight(bench, regs)  # every benchmark of the file is checked before any of them runs
    failed, left, broken = [], False, False
    for bench in benches:
        out = Path(args.out) / bench.name if args.out and len(benches) > 1 else (Path(args.out) if args.out else None)
        outcome = run_benchmark(bench, regs, out, shard=shard)
        print((outcome.out / "report.md").read_text())
        print(f"results in {outcome.out}/ (report.md, report.csv, report.tex; runs/<cell>/samples.png, inpainting.png)")
        if outcome.failures or outcome.elsewhere:
            failed.append(f"{bench.name}: {outcome.summary()}")
        left, broken = left or bool(outcome.elsewhere), broken or bool(outcome.failures)
    for line in failed:
        print(f"vqbench: {line}", file=sys.stderr)
    if left:  # "partial" outranks "failed": a rerun is needed either way
        print(
            f"vqbench: exit {EXIT_LEFT_TO_OTHER_JOBS}: cells left to other jobs; rerun once they finish (or their claims go stale) to complete the report",
            file=sys.stderr,
        )
    return EXIT_LEFT_TO_OTHER_JOBS if left else EXIT_CELLS_FAILED if broken else 0


def cmd_validate(args: argparse.Namespace) -> int:
    from .runner.run import plan_cells, preflight

    benches, regs = _load(args)
    for bench in benches:
        preflight(bench, regs)
    cells = sum(len(plan_cells(bench, regs)) for bench in benches)
    print(f"{args.file}: valid ({len(benches)} benchmark{'s' if len(benches) > 1 else ''}, {cells} cells)")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from .listing import detail, overview
    from .plugins import registries

    print(detail(registries(), args.name) if args.name else overview(registries()))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .report import write_report

    paths = write_report(Path(args.dir), mark_near=args.mark_near)
    print(paths["md"].read_text())
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .plugins import registries
    from .runner.export import export_fid_stats, export_samples

    results = Path(args.dir)
    dest = Path(args.out) if args.out else results / "export"
    if args.format == "fid-stats":
        path, summary = export_fid_stats(results, registries(), dest, args.device)
        print(f"{path}: {summary}")
        return 0
    counts = export_samples(results, registries(), dest, args.format, args.device, not args.no_reference)
    for name, count in counts.items():
        print(f"{dest / name}/: {count} images ({args.format})")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .plugins import registries
    from .report import write_report
    from .runner.outside import evaluate_outside

    results = Path(args.dir)
    row = evaluate_outside(results, Path(args.samples), args.label, registries(), args.device)
    paths = write_report(results)
    print(paths["md"].read_text())
    print(f"row {args.label!r} stored in {row.folder}/ and added to {paths['md']}")
    if row.failed:
        print(f"vqbench: metrics failed for {args.label!r} (n/a in the report): {', '.join(sorted(row.failed))}", file=sys.stderr)
        return EXIT_CELLS_FAILED
    return 0


def cmd_encode(args: argparse.Namespace) -> int:
    import numpy as np

    from . import latents
    from .errors import ConfigError
    from .interfaces import ImageSource
    from .io import fingerprint, sha256_file
    from .plugins import registries
    from .runner.data import encode_latents
    from .runner.run import resolve_device

    regs = registries()
    tok_cls = regs.tokenizers.get(args.tokenizer, "--tokenizer")
    device = resolve_device(args.device)
    options = {name: value for name, value in (("config", args.config), ("format", args.format)) if value}
    tokenizer = tok_cls.load(args.checkpoint, **options).to(device)
    trained = tokenizer.trained_resolution  # None for files that do not record it: --resolution is then needed
    resolution = args.resolution or trained
    if not resolution:
        raise ConfigError(
            "--resolution", f"{args.checkpoint} does not record its training resolution; give --resolution (and --resize to resize the images)"
        )
    if trained and resolution != trained and not args.resize:
        raise ConfigError(
            "--resolution", f"the tokenizer was trained at {trained} px, not {resolution}: its latent grid would differ from the benchmark's; "
            f"add --resize to encode at {resolution} px anyway, or drop --resolution",
        )  # fmt: skip
    source_cls = regs.datasets.get("image_folder")
    assert issubclass(source_cls, ImageSource)
    source = source_cls(source_cls.Config(path=args.images), resolution)
    source.check("--images")
    if not args.resize:
        check_native_size(source, resolution)
    sha = sha256_file(args.checkpoint)
    source_meta = {
        "dataset": "image_folder",
        "path": str(args.images),
        "fingerprint": source.fingerprint(),
        "resolution": resolution,
        "resized": args.resize,
    }
    path = encode_latents(
        Path(args.out), tokenizer, source, np.arange(len(source)), device, args.batch_size, job=fingerprint(sha, source_meta, args.tokenizer, tokenizer.config_dict()),
        workers=args.workers, meta={
            "resolution": resolution,
            "tokenizer": {"name": args.tokenizer, "config": tokenizer.config_dict(), "checkpoint_sha256": sha, "trained_resolution": trained},
            "source": source_meta, "split": {"name": "all", "source_count": len(source)},
        },
    )  # fmt: skip
    data = latents.open(path, verify_checksum=False)
    skipped = len(data.meta["skipped_unreadable"])
    print(f"wrote {len(data)} latents of {data.meta['h']}×{data.meta['w']} to {path} ({skipped} unreadable skipped)")
    return 0


def check_native_size(source, resolution: int, sample: int = 64) -> None:
    """Stop when images (the first ``sample`` files) are not ``resolution`` px square: encoding would resize them."""
    from PIL import Image

    from .errors import ConfigError

    for path in source.files[:sample]:
        try:
            with Image.open(path) as image:
                size = image.size
        except OSError:
            continue  # unreadable files are skipped (and listed) by the encode itself
        if size != (resolution, resolution):
            raise ConfigError(
                "--images", f"{path} is {size[0]}×{size[1]} px, the tokenizer works at {resolution}×{resolution}: add --resize to resize "
                "(shorter side, then centre crop), or use a tokenizer trained at this size",
            )  # fmt: skip


def cmd_speed(args: argparse.Namespace) -> int:
    import torch

    from .config import set_dotted
    from .errors import ConfigError
    from .precision import resolve_precision
    from .runner.run import resolve_device
    from .speed import format_rows, measure

    params: dict = {}
    for key, value in _overrides(args.param):
        set_dotted(params, key, value)
    options = dict(_overrides(args.option))
    try:
        h, w = (int(v) for v in args.shape.lower().split("x"))
    except ValueError:
        raise ConfigError("--shape", f"expected HxW like 16x16, got {args.shape!r}") from None
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    rows = []
    for requested in args.precision:
        precision, why = resolve_precision(requested, device)
        print(f"precision {precision} ({why})", file=sys.stderr)
        for compiled in (False, True) if args.compile == "both" else (args.compile == "on",):
            rows.append(
                measure(
                    args.prior,
                    params,
                    (h, w),
                    args.codebook,
                    args.batch,
                    args.samples,
                    options,
                    precision,
                    device,
                    args.decode_preset,
                    compile=compiled,
                )
            )
        print(f"measured {precision}", file=sys.stderr)
    print(f"prior {args.prior} {params} on {h}×{w} latents, {args.codebook} codes; sampling {options}; "
          f"{args.threads} threads, device {device}")  # fmt: skip
    print(format_rows(rows))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vqbench", description="Matched benchmarks of discrete priors over VQ latents.")
    parser.add_argument("--version", action="version", version=f"vqbench {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a benchmark (finished cells are skipped, interrupted ones resume)")
    run.add_argument("file", help="benchmark YAML")
    run.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key (dotted, e.g. budget.steps=100)")
    run.add_argument("--out", help="results folder (default results/<name>)")
    run.add_argument("--device", choices=["auto", "cpu", "cuda"], help="override the benchmark's device")
    run.add_argument("--dry-run", action="store_true", help="print the plan (cells, latent shape, parameters, budget) and stop")
    run.add_argument(
        "--shard",
        metavar="I/N|auto",
        help="run only the cells at plan positions ≡ I mod N (0 ≤ I < N); auto: from SLURM_ARRAY_TASK_* or VQBENCH_SHARD_*",
    )
    run.add_argument(
        "--reuse-stale",
        action="store_true",
        help="keep cached tokenizers, trained priors and finished cells across a code change (recorded in the report)",
    )
    run.set_defaults(func=cmd_run)

    validate = sub.add_parser("validate", help="check a benchmark YAML without running it")
    validate.add_argument("file")
    validate.add_argument("--set", action="append", metavar="KEY=VALUE")
    validate.set_defaults(func=cmd_validate)

    lister = sub.add_parser("list", help="list registered plugins (tokenizers, priors, datasets, metrics, ...)")
    lister.add_argument("name", nargs="?", help="show one plugin in full: origin, docstring, config keys with types and defaults")
    lister.set_defaults(func=cmd_list)

    report = sub.add_parser("report", help="rebuild report.{csv,md,tex} from a results folder without rerunning")
    report.add_argument("dir")
    report.add_argument("--mark-near", action="store_true", help="mark values within one seed-std of the best with †")
    report.set_defaults(func=cmd_report)

    export = sub.add_parser("export", help="decode every cell's samples (and the reference images) to PNG files or npz")
    export.add_argument("dir", help="results folder written by `vqbench run`")
    export.add_argument("--out", help="destination (default DIR/export)")
    export.add_argument("--format", choices=["png", "npz", "fid-stats"], default="png", help="npz: arr_0 (= images); fid-stats: real mu/sigma")
    export.add_argument("--no-reference", action="store_true", help="skip the held-out reference images")
    export.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    export.set_defaults(func=cmd_export)
    evaluate = sub.add_parser("evaluate", help="score samples made elsewhere under a results folder's protocol; adds a report row")
    evaluate.add_argument("dir", help="results folder written by `vqbench run`")
    evaluate.add_argument("--samples", required=True, help="PNG/JPEG folder, .npz of N×H×W×3 uint8 (arr_0 or images), .npy of codes")
    evaluate.add_argument("--label", required=True, help="the row's name in the report (must not name an existing row)")
    evaluate.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    evaluate.set_defaults(func=cmd_evaluate)
    encode = sub.add_parser("encode", help="encode an image folder into a latent dataset")
    encode.add_argument("--tokenizer", default="vqgan")
    encode.add_argument("--checkpoint", required=True, help="tokenizer checkpoint (vqbench file, taming last.ckpt, unleashing vqgan_{step}.th)")
    encode.add_argument("--config", help="taming YAML for a taming checkpoint; hparams YAML/JSON for an unleashing one")
    encode.add_argument("--format", choices=["vqbench", "taming", "unleashing"], help="checkpoint format (default: detected from the file)")
    encode.add_argument("--images", required=True, help="image folder (searched recursively)")
    encode.add_argument("--out", required=True, help="latent dataset directory to write")
    encode.add_argument("--resolution", type=int, help="image size (default: the tokenizer's training resolution)")
    encode.add_argument(
        "--resize", action="store_true", help="resize images (shorter side, centre crop) to the resolution; without it other sizes are an error"
    )
    encode.add_argument("--batch-size", type=int, default=32)
    encode.add_argument("--workers", type=int, help="image loader processes (default min(4, CPUs-1); 0: read in this process)")
    encode.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    encode.set_defaults(func=cmd_encode)
    speed = sub.add_parser("speed", help="measure backbone tokens/s and sample s/img of a prior configuration")
    speed.add_argument("prior", help="registered prior name, e.g. sundae")
    speed.add_argument("--param", action="append", metavar="KEY=VALUE", help="prior parameter (dotted), e.g. backbone.dim=256")
    speed.add_argument("--option", action="append", metavar="KEY=VALUE", help="sampling option, e.g. steps=20")
    speed.add_argument("--shape", default="16x16", help="latent grid HxW (default 16x16)")
    speed.add_argument("--codebook", type=int, default=1024)
    speed.add_argument("--batch", type=int, default=8)
    speed.add_argument("--samples", type=int, default=16, help="images sampled in the timed part")
    speed.add_argument("--precision", nargs="+", choices=["auto", "fp32", "bf16"], default=["fp32", "bf16"])
    speed.add_argument("--threads", type=int, default=torch_threads_default())
    speed.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu")
    speed.add_argument("--decode-preset", help="also time decoding with a randomly initialised vqgan preset")
    speed.add_argument("--compile", choices=["off", "on", "both"], default="off", help="torch.compile the networks (both: one row each)")
    speed.set_defaults(func=cmd_speed)
    return parser


def torch_threads_default() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[list[int]]:
    """While the block runs, SIGTERM raises ``Terminated`` in the main thread (unwinding as Ctrl-C does); the yielded
    list records it, so an error it causes elsewhere (a collective whose peer rank just exited) still ends as 143."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def handler(signum: int, frame: object) -> None:
        if not received:
            received.append(signum)
            raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield received
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    with _sigterm_as_interrupt() as terminated:
        try:
            return args.func(args)
        except BaseException as err:  # noqa: BLE001 - after SIGTERM every error (e.g. a peer rank gone) ends as 143
            return _exit_code(err, bool(terminated))


def _exit_code(err: BaseException, terminated: bool) -> int:
    """The exit code (and one-line message) for an error that ended a command; anything unexpected is re-raised."""
    from .io import is_disk_full

    if terminated and not isinstance(err, SystemExit):
        print("vqbench: terminated (SIGTERM); claims released and finished cells kept, rerun to resume", file=sys.stderr)
        return EXIT_TERMINATED
    if isinstance(err, VQBenchError):
        print(f"vqbench: error: {err}", file=sys.stderr)
        return err.exit_code
    if isinstance(err, KeyboardInterrupt):
        print("vqbench: interrupted; finished cells are kept, rerun to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    if isinstance(err, (OSError, RuntimeError)) and is_disk_full(err):  # outside the atomic writes (folders, log files)
        print(f"vqbench: error: {DiskFull(getattr(err, 'filename', None) or 'the results or cache folder')}", file=sys.stderr)
        return EXIT_BAD_INPUT
    raise err


if __name__ == "__main__":
    sys.exit(main())
