"""Preemption-safe reruns: a killed job's claims and temporaries, SIGTERM, foreign claims and the exit codes that tell
"done" from "partial" (README "Exit codes")."""

from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from vqbench import cli, liveness
from vqbench.cli import main
from vqbench.errors import EXIT_LEFT_TO_OTHER_JOBS, EXIT_TERMINATED
from vqbench.io import atomic_path, remove_leftovers
from vqbench.runner.claims import CLAIM_FILE, claim_cell, exclusive

from .conftest import SMOKE

AR = {"name": "autoregressive", "params": {"backbone": {"dim": 32, "depth": 1, "heads": 2, "dim_head": 16}}}
CELL = "autoregressive__seed0"


def _bench(smoke_config: dict, tmp_path: Path, steps: int = 8) -> Path:
    config = copy.deepcopy(smoke_config)
    config["priors"] = [AR]
    config["budget"] = {"steps": steps, "batch_size": 8, "checkpoint_every": 2}
    config["metrics"]["enabled"] = ["nll"]
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _tagged(root: Path) -> list[Path]:
    return [p for p in root.rglob(".*") if "~" in p.name]


def _start(path: Path, env: dict[str, str] | None = None, command: list[str] | None = None) -> subprocess.Popen:
    command = command or [sys.executable, "-m", "vqbench", "run", str(path)]
    return subprocess.Popen(
        command, env=os.environ | {"OMP_NUM_THREADS": "1"} | (env or {}), stderr=subprocess.PIPE, text=True, start_new_session=True
    )


def _wait_for(check, job: subprocess.Popen, what: str, timeout: float = 300) -> None:
    """Poll ``check`` until it holds (the job must still run); a generous limit, not a timing assertion."""
    deadline = time.monotonic() + timeout
    while not check():
        assert job.poll() is None, f"the job ended before {what}: {job.stderr.read()[-3000:] if job.stderr else ''}"
        assert time.monotonic() < deadline, f"no {what} after {timeout} s"
        time.sleep(0.05)


def _training_checkpointed(out: Path) -> bool:
    return (out / "runs" / CELL / "train_state.pt").is_file() and (out / "runs" / CELL / CLAIM_FILE).is_file()


@pytest.fixture(scope="module")
def warm_cache(tmp_path_factory) -> Path:
    """A cache holding the smoke benchmark's tokenizer, latents and reference features (built once per module)."""
    root = tmp_path_factory.mktemp("warm")
    config = copy.deepcopy(SMOKE) | {"out": str(root / "out"), "cache": str(root / "cache")}
    assert main(["run", str(_bench(config, root, steps=2))]) == 0
    return root / "cache"


@pytest.fixture
def prepared(smoke_config, tmp_path, warm_cache):
    """A benchmark whose tokenizer and latents are cached, so a job reaches its cell's training quickly; the cell
    trains long enough to be caught between checkpoints."""
    shutil.copytree(warm_cache, smoke_config["cache"])
    return _bench(smoke_config, tmp_path, steps=400), Path(smoke_config["out"])


def test_a_rerun_right_after_kill_9_resumes_the_killed_cell(prepared):
    path, out = prepared
    job = _start(path)
    _wait_for(lambda: _training_checkpointed(out), job, "training checkpoint")
    os.killpg(job.pid, signal.SIGKILL)
    job.wait()
    assert (out / "runs" / CELL / CLAIM_FILE).is_file()  # the dead job's fresh claim is still there
    assert main(["run", str(path)]) == 0
    log = (out / "run.log").read_text()
    assert "left to it" not in log and "resuming from" in (out / "runs" / CELL / "log.txt").read_text()
    assert (out / "runs" / CELL / "metrics.json").is_file() and "\nautoregressive," in (out / "report.csv").read_text()
    assert not (out / "runs" / CELL / CLAIM_FILE).exists()


def test_sigterm_exits_143_releases_claims_and_the_rerun_resumes(prepared):
    path, out = prepared
    job = _start(path)
    _wait_for(lambda: _training_checkpointed(out), job, "training checkpoint")
    job.send_signal(signal.SIGTERM)
    _, err = job.communicate(timeout=120)
    assert job.returncode == EXIT_TERMINATED, err[-3000:]
    assert err.strip().splitlines()[-1].startswith("vqbench: terminated (SIGTERM)")
    assert not list(out.rglob(CLAIM_FILE))
    assert main(["run", str(path)]) == 0
    assert "resuming from" in (out / "runs" / CELL / "log.txt").read_text()
    # SIGTERM may land between an atomic write's temporary and its cleanup: the rerun removes what it left
    assert not _tagged(out) and not _tagged(path.parent / "cache")


def test_sigterm_under_torchrun_ends_every_rank_with_143(prepared):
    path, out = prepared
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "vqbench", "run", str(path)]
    job = _start(path, command=command)
    _wait_for(lambda: _training_checkpointed(out), job, "training checkpoint")
    os.killpg(job.pid, signal.SIGTERM)  # as SLURM preemption does: every process of the job step
    _, err = job.communicate(timeout=180)
    assert err.count("vqbench: terminated (SIGTERM)") == 2, err[-4000:]
    assert job.returncode != 0
    assert not list(out.rglob(CLAIM_FILE))
    assert main(["run", str(path)]) == 0
    assert not _tagged(out)
    assert (out / "runs" / CELL / "metrics.json").is_file() and "\nautoregressive," in (out / "report.csv").read_text()


def test_a_claim_of_a_reused_pid_is_taken_over_at_once(tmp_path):
    folder = tmp_path / "cell"
    folder.mkdir()
    me = liveness.me()  # this very pid, but "started" at another time: the pid was reused
    (folder / CLAIM_FILE).write_text(json.dumps({"owner": "x:1", "token": "t", **me, "start": (me["start"] or 0) + 1}))
    with claim_cell(folder) as claim:
        assert claim.held
    (folder / CLAIM_FILE).write_text(json.dumps({"owner": "x:1", "token": "t", **me}))  # the live owner itself: kept
    with claim_cell(folder) as claim:
        assert not claim.held


def _foreign_claim(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    claim = {"owner": "node7:4242", "token": "t", "host": "node7", "space": "node7/1", "pid": 4242, "start": 1}
    (folder / CLAIM_FILE).write_text(json.dumps(claim))


def test_a_cell_claimed_by_another_host_is_left_reported_and_exits_75(smoke_config, tmp_path, capsys):
    path = _bench(smoke_config, tmp_path, steps=2)
    out = Path(smoke_config["out"])
    _foreign_claim(out / "runs" / CELL)
    assert main(["run", str(path)]) == EXIT_LEFT_TO_OTHER_JOBS == 75
    assert "rerun once they finish" in capsys.readouterr().err
    assert f"`{CELL}` was being computed by node7:4242" in (out / "report.md").read_text()
    (out / "runs" / CELL / CLAIM_FILE).unlink()  # that job finished (or its claim went stale)
    assert main(["run", str(path)]) == 0
    assert "not in this report" not in (out / "report.md").read_text()


def test_a_lock_held_by_another_host_waits_naming_it_until_its_claim_goes_stale(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("VQBENCH_CLAIM_HEARTBEAT", "0.1")
    monkeypatch.setenv("VQBENCH_CLAIM_STALE", "2")
    _foreign_claim(tmp_path / "lock")
    with caplog.at_level("WARNING"), exclusive(tmp_path / "lock", poll=0.05):
        assert json.loads((tmp_path / "lock" / CLAIM_FILE).read_text())["pid"] == os.getpid()
    assert "waiting for lock, held by node7:4242 (heartbeat" in caplog.text and "older than 2 s" in caplog.text


@pytest.mark.parametrize(("name", "value"), [("VQBENCH_CLAIM_STALE", "soon"), ("VQBENCH_CLAIM_HEARTBEAT", "-1"), ("VQBENCH_CLAIM_STALE", "10")])
def test_bad_claim_timings_are_refused_by_name(smoke_config, tmp_path, monkeypatch, capsys, name, value):
    monkeypatch.setenv("VQBENCH_CLAIM_HEARTBEAT", "30")
    monkeypatch.setenv(name, value)
    path = _bench(smoke_config, tmp_path, steps=2)
    assert main(["run", str(path)]) == 2
    assert capsys.readouterr().err.startswith(f"vqbench: error: {name}: must")
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name], "bad input must leave nothing behind"


def test_leftovers_of_killed_processes_are_removed_and_live_ones_kept(smoke_config, tmp_path):
    path = _bench(smoke_config, tmp_path, steps=2)
    out, cache = Path(smoke_config["out"]), Path(smoke_config["cache"])
    killed = f"""
import os, sys
from pathlib import Path
sys.path[:0] = {sys.path!r}
from vqbench import cli
from vqbench.io import atomic_path, remove_leftovers
from vqbench.runner.claims import claim_cell
with atomic_path({str(out / "runs" / CELL / "metrics.json")!r}) as tmp, claim_cell(Path({str(cache / "locks" / "x")!r})):
    tmp.write_text("half")
    os._exit(137)
"""
    subprocess.run([sys.executable, "-c", killed], check=False)
    assert _tagged(out) and (cache / "locks" / "x" / CLAIM_FILE).is_file()
    with atomic_path(out / "live.json") as mine:  # this process's own temporary survives the sweep
        mine.write_text("{}")
        latents = cache / "latents" / "done"
        latents.mkdir(parents=True)
        (latents / "meta.json").write_text("{}")
        (latents / "progress.json").write_text("{}")  # killed between meta.json and the progress delete
        assert main(["run", str(path)]) == 0
        assert mine.parent.is_dir()
    assert not _tagged(out) and not (cache / "locks" / "x" / CLAIM_FILE).exists()
    assert not (latents / "progress.json").exists() and (latents / "meta.json").is_file()
    assert "leftover(s) of killed jobs" in (out / "run.log").read_text()


def test_an_error_after_sigterm_still_exits_143(monkeypatch, capsys):
    def command(args):  # SIGTERM, then the failure it causes elsewhere (e.g. a collective whose peer rank is gone)
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        finally:
            raise RuntimeError("Connection closed by peer")

    monkeypatch.setattr(cli, "cmd_validate", command)
    assert main(["validate", "whatever.yaml"]) == EXIT_TERMINATED
    assert capsys.readouterr().err.startswith("vqbench: terminated (SIGTERM)")


def test_a_dead_claim_taken_over_by_another_job_meanwhile_is_left_to_it(tmp_path, monkeypatch):
    folder = tmp_path / "cell"
    _foreign_claim(folder)
    live = {"owner": "other:7", "token": "fresh", "host": "other", "space": "other/1", "pid": 7, "start": 1}

    def judged_dead_then_taken(owner):  # another job takes the dead claim over right after this job judged it
        (folder / CLAIM_FILE).write_text(json.dumps(live))
        return True

    monkeypatch.setattr(liveness, "gone", judged_dead_then_taken)
    with claim_cell(folder) as claim:
        assert not claim.held
    assert json.loads((folder / CLAIM_FILE).read_text())["token"] == "fresh"  # the live job's claim is back


def test_a_folder_replacement_killed_between_its_renames_is_restored(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    tag = f"{dead.pid}.1@{liveness._space_tag()}"
    old = tmp_path / f".entry.old~{tag}~"
    old.mkdir()
    (old / "tokenizer.pt").write_text("weights")  # the previous version, moved aside; the new one never arrived
    remove_leftovers(tmp_path)
    assert (tmp_path / "entry" / "tokenizer.pt").read_text() == "weights" and not old.exists()
