"""A run killed right after any one write of a tiny benchmark (``os._exit(137)``, as a SIGKILL leaves the files) and
then rerun exits 0 with the report of an uninterrupted run; a cache entry is never visible half-written.

The runs are ``python -m vqbench run`` in forked children of one driver process (the imports are paid once); the
driver wraps the write primitives (``os.replace``, ``os.rename``, ``os.link``, exclusive ``os.open``, ``torch.save``,
``np.save``, ``np.lib.format.open_memmap``), logs every write under the run's folder and kills the run at the N-th.
"""

from __future__ import annotations

import copy
import fnmatch
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml

import vqbench
from vqbench import latents
from vqbench.report import settings_table

DRIVER = r"""
import json, os, runpy, signal, sys, traceback
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot  # noqa: F401
import numpy as np
import torch
import vqbench, vqbench.cli, vqbench.report, vqbench.runner.run, vqbench_plugins  # noqa: F401 - the heavy imports, once
from vqbench.plugins import registries
from vqbench.provenance import code_digest

registries()  # and the plugins and the source digests, which the children inherit
code_digest(vqbench_plugins)

job = {"root": "/nonexistent", "count": 0, "kill": 0, "log": os.devnull}


def note(kind, path):
    path = os.path.realpath(os.fspath(path))
    if not path.startswith(job["root"] + os.sep):
        return
    job["count"] += 1
    with open(job["log"], "a") as log:
        log.write(f"{kind}\t{os.path.relpath(path, job['root'])}\n")
    if job["count"] == job["kill"]:
        os._exit(137)


def wrap(owner, name, target):
    original = getattr(owner, name)

    def wrapper(*args, **kwargs):
        result = original(*args, **kwargs)
        path = target(*args, **kwargs)
        if path is not None:
            note(name, path)
        return result

    setattr(owner, name, wrapper)


def named(value):
    return value if isinstance(value, (str, os.PathLike)) else None


wrap(os, "replace", lambda src, dst, **_: dst)
wrap(os, "rename", lambda src, dst, **_: dst)
wrap(os, "link", lambda src, dst, **_: dst)
wrap(os, "open", lambda path, flags, *a, **_: path if flags & os.O_CREAT and flags & os.O_EXCL else None)
wrap(torch, "save", lambda obj, f, *a, **_: named(f))
wrap(np, "save", lambda f, *a, **_: named(f))
wrap(np.lib.format, "open_memmap", lambda f, mode="r+", *a, **_: named(f) if mode.startswith("w") else None)
print(json.dumps({"vqbench": vqbench.__file__}), flush=True)

while line := sys.stdin.readline():
    spec = json.loads(line)
    pid = os.fork()
    if pid == 0:
        job.update(root=os.path.realpath(spec["root"]), kill=spec["kill"], log=spec["log"])
        output = os.open(spec["output"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(output, 1)
        os.dup2(output, 2)
        signal.alarm(spec["timeout"])
        sys.argv = ["vqbench", *spec["argv"]]
        code = 1
        try:
            runpy.run_module("vqbench", run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else 1
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    print(json.dumps({"rc": os.waitstatus_to_exitcode(status)}), flush=True)
"""

BENCH = {
    "name": "tiny",
    "dataset": {"name": "toyfaces", "resolution": 16, "params": {"count": 96}, "test_fraction": 0.25},
    "tokenizer": {
        "preset": "tiny",
        "params": {"n_embed": 32, "ddconfig": {"resolution": 16, "ch": 16}},
        "train": {"steps": 4, "batch_size": 8, "disc_start": 2, "checkpoint_every": 2},
    },
    "priors": [{"name": "autoregressive", "params": {"backbone": {"name": "transformer", "dim": 32, "depth": 1, "heads": 2, "dim_head": 16}}}],
    "seeds": [0],
    "budget": {"steps": 4, "batch_size": 8, "checkpoint_every": 2},
    "sampling": {"num_samples": 12, "batch_size": 12, "grid_size": 2},
    "metrics": {"enabled": ["fid", "nll"], "feature_extractor": "random-cnn", "num_real": 12},
    "device": "cpu",
    "precision": "fp32",
}

# kill points of the fast tests: the first write to each path matching these (the rest run with -m slow)
FAST = {
    "tokenizer": ("cache/tokenizers/*",),
    "latents": ("cache/latents/*-train-*/progress.json", "cache/latents/*-train-*/labels.npy", "cache/latents/*-train-*/meta.json"),
    "features": ("cache/features/*",),
    "cell": ("cache/priors/*", "out/runs/*/claim.json", "out/runs/*/train_state.pt", "out/runs/*/metrics.json"),
}
REUSED = "weights shared with an identical training run"


@dataclass
class Job:
    rc: int
    writes: list[str]  # "kind<TAB>path relative to the run's folder", in order
    output: str


class Driver:
    """The driver process: ``run`` runs one ``vqbench`` command in a fresh fork, killed at write ``kill`` (0: never)."""

    def __init__(self, folder: Path):
        self.folder = folder
        script = folder / "driver.py"
        script.write_text(DRIVER)
        env = {**os.environ, "VQBENCH_DATA_WORKERS": "0", "OMP_NUM_THREADS": "1"}  # one process at a time, one thread
        self.process = subprocess.Popen(
            [sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=(folder / "driver.err").open("w"), text=True, env=env
        )  # fmt: skip
        self.vqbench = self._answer()["vqbench"]
        self.jobs = 0

    def _answer(self) -> dict:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line, f"the driver stopped: {(self.folder / 'driver.err').read_text()[-3000:]}"
        return json.loads(line)

    def run(self, root: Path, kill: int = 0, timeout: int = 120) -> Job:
        assert self.process.stdin is not None
        self.jobs += 1
        log, output = self.folder / f"writes-{self.jobs}.txt", self.folder / f"output-{self.jobs}.txt"
        spec = {"argv": ["run", str(bench_file(root))], "root": str(root), "kill": kill, "log": str(log), "output": str(output), "timeout": timeout}
        self.process.stdin.write(json.dumps(spec) + "\n")
        self.process.stdin.flush()
        rc = self._answer()["rc"]
        return Job(rc, log.read_text().splitlines() if log.is_file() else [], output.read_text())

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=60)


def bench_file(root: Path) -> Path:
    """The tiny benchmark, writing to ``root/out`` and ``root/cache``."""
    path = root / "bench.yaml"
    if not path.is_file():
        root.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump({**copy.deepcopy(BENCH), "out": str(root / "out"), "cache": str(root / "cache")}))
    return path


def visible(write: str) -> bool:
    """A write to a path a reader can see (not inside a temporary, dot-named file or folder)."""
    return not any(part.startswith(".") for part in write.split("\t")[1].split("/"))


def kill_points(writes: list[str], patterns: tuple[str, ...]) -> list[int]:
    """1-based numbers of the first visible write to each path matching one of ``patterns``."""
    seen, points = set(), []
    for n, write in enumerate(writes, 1):
        path = write.split("\t")[1]
        if visible(write) and path not in seen and any(fnmatch.fnmatch(path, p) for p in patterns):
            seen.add(path)
            points.append(n)
    return points


def report(root: Path) -> dict[str, str]:
    """The report's CSV, its Markdown up to the settings, and the settings table without the note that trained weights
    came from the cache (a rerun after a kill takes its own earlier training from there)."""
    out = root / "out"
    if not (out / "report.csv").is_file():  # no finished cell
        return {"md": (out / "report.md").read_text()}
    settings = settings_table(out)
    settings["notes"] = settings["notes"].str.replace(REUSED, "").str.strip("; ")
    return {"csv": (out / "report.csv").read_text(), "md": (out / "report.md").read_text().split("## Settings")[0], "settings": settings.to_csv()}


def assert_entries_whole(root: Path, context: str) -> None:
    """Every cache entry a reader can find is complete."""
    cache = root / "cache"
    for folder in visible_children(cache / "tokenizers"):
        if folder.is_dir():
            assert {p.name for p in folder.iterdir()} >= {"tokenizer.pt", "train.json"}, f"{context}: {folder} is visible half-written"
    for weights in (cache / "priors").glob("*.pt"):
        assert isinstance(torch.load(weights, weights_only=True).get("curve"), str), f"{context}: {weights} is visible without its curve"
    for folder in visible_children(cache / "latents"):
        if (folder / "meta.json").is_file():
            latents.open(folder)  # raises on any inconsistency


def visible_children(folder: Path) -> Iterator[Path]:
    return (p for p in sorted(folder.iterdir()) if not p.name.startswith(".")) if folder.is_dir() else iter(())


@pytest.fixture(scope="module")
def driver(tmp_path_factory) -> Iterator[Driver]:
    driver = Driver(tmp_path_factory.mktemp("driver"))
    yield driver
    driver.close()


@dataclass
class Baseline:
    """An uninterrupted run: its folder, writes and report."""

    root: Path
    writes: list[str]
    report: dict[str, str]


@pytest.fixture(scope="module")
def baseline(driver, tmp_path_factory) -> Baseline:
    root = tmp_path_factory.mktemp("baseline")
    job = driver.run(root)
    assert job.rc == 0, job.output[-3000:]
    assert not list(root.rglob("claim.json")), "claims are released"
    return Baseline(root, job.writes, report(root))


def test_the_driver_runs_this_checkout(driver):
    assert Path(driver.vqbench).resolve() == Path(vqbench.__file__).resolve()


def check_kills(driver: Driver, baseline: Baseline, points: list[int], root: Path) -> None:
    """For each write number: kill there, check what is visible, rerun, compare the report with the baseline's."""
    writes, expected = baseline.writes, baseline.report
    assert points
    for n in points:
        shutil.rmtree(root, ignore_errors=True)
        context = f"killed after write {n} ({writes[n - 1]})"
        killed = driver.run(root, kill=n)
        assert killed.rc == 137 and killed.writes[-1] == writes[n - 1], f"{context}: rc {killed.rc}, last write {killed.writes[-1:]}"
        assert_entries_whole(root, context)
        rerun = driver.run(root)
        assert rerun.rc == 0, f"{context}: the rerun exited {rerun.rc}:\n{rerun.output[-3000:]}"
        assert report(root) == expected, f"{context}: the rerun's report differs from the uninterrupted run's"
        assert_entries_whole(root, context)
        assert not list(root.rglob("claim.json")), f"{context}: claims or locks left after the rerun"
        left = [str(p.relative_to(root)) for p in root.rglob(".*~*")]
        assert not left, f"{context}: temporaries of the killed job left after the rerun: {left}"
        assert not [p for p in (root / "cache").glob("latents/*/progress.json") if p.with_name("meta.json").is_file()], context


@pytest.mark.parametrize("entry", sorted(FAST))
def test_killed_at_a_write_of_the_entry_and_rerun_gives_the_uninterrupted_report(entry, driver, baseline, tmp_path):
    check_kills(driver, baseline, kill_points(baseline.writes, FAST[entry]), tmp_path / "run")


@pytest.mark.slow
def test_killed_at_every_other_write_and_rerun_gives_the_uninterrupted_report(driver, baseline, tmp_path):
    writes = baseline.writes
    fast = {n for patterns in FAST.values() for n in kill_points(writes, patterns)}
    check_kills(driver, baseline, [n for n, write in enumerate(writes, 1) if visible(write) and n not in fast], tmp_path / "run")


def test_half_written_entries_of_an_older_version_are_recomputed(driver, baseline, tmp_path):
    root = tmp_path / "run"
    shutil.copytree(baseline.root / "cache", root / "cache")
    tokenizer = next((root / "cache" / "tokenizers").iterdir())
    (tokenizer / "train.json").unlink()  # tokenizer.pt written, then killed
    weights = next((root / "cache" / "priors").glob("*.pt"))
    entry = torch.load(weights, weights_only=True)
    torch.save({k: v for k, v in entry.items() if k != "curve"}, weights)  # written before curves moved into the entry
    job = driver.run(root)
    assert job.rc == 0, job.output[-3000:]
    log = (root / "out" / "run.log").read_text()
    assert f"tokenizer cache entry {tokenizer} is incomplete (no train.json): recomputed" in log
    assert f"trained-prior cache entry {weights} has no training curve (an older entry): retrained" in log
    assert report(root) == baseline.report
    assert_entries_whole(root, "after recomputing")


def test_an_older_half_written_tokenizer_folder_hands_over_its_training_state(tmp_path, caplog):
    from vqbench.runner.data import _tokenizer_entry_complete

    folder, state = tmp_path / "vqgan-tiny-key", tmp_path / "vqgan-tiny-key.train_state.pt"
    folder.mkdir()
    (folder / "train_state.pt").write_bytes(b"state")
    assert not _tokenizer_entry_complete(folder, state)
    assert state.read_bytes() == b"state" and not (folder / "train_state.pt").exists()  # training resumes from it
    assert f"tokenizer cache entry {folder} is incomplete (no tokenizer.pt or train.json): recomputed" in caplog.text
    for name in ("tokenizer.pt", "train.json"):
        (folder / name).write_text("x")
    assert _tokenizer_entry_complete(folder, state) and not state.exists()  # a finished entry's leftover state goes
