"""Several jobs on one results folder: cell claims, stale-claim takeover, shards, and two concurrent processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

from vqbench.cli import main
from vqbench.errors import EXIT_LEFT_TO_OTHER_JOBS
from vqbench.runner.claims import CLAIM_FILE, claim_cell


def test_a_claimed_cell_is_refused_to_a_second_job_until_released(tmp_path):
    with claim_cell(tmp_path / "cell") as first:
        assert first.held
        with claim_cell(tmp_path / "cell") as second:
            assert not second.held and second.owner == first.owner
    assert not (tmp_path / "cell" / CLAIM_FILE).exists()
    with claim_cell(tmp_path / "cell") as third:
        assert third.held


def test_a_stale_claim_of_a_killed_job_is_taken_over(tmp_path):
    folder = tmp_path / "cell"
    folder.mkdir()
    (folder / CLAIM_FILE).write_text(json.dumps({"owner": "dead-host:1", "token": "x"}))
    old = time.time() - 600
    os.utime(folder / CLAIM_FILE, (old, old))
    with claim_cell(folder, stale_after=300) as claim:
        assert claim.held
    (folder / CLAIM_FILE).write_text(json.dumps({"owner": "live-host:2", "token": "y"}))  # fresh heartbeat: kept
    with claim_cell(folder, stale_after=300) as claim:
        assert not claim.held and claim.owner == "live-host:2"


def test_the_heartbeat_keeps_a_long_claim_fresh(tmp_path):
    folder = tmp_path / "cell"
    with claim_cell(folder, heartbeat=0.05) as claim:
        assert claim.held
        old = time.time() - 600
        os.utime(folder / CLAIM_FILE, (old, old))
        time.sleep(0.3)
        assert time.time() - (folder / CLAIM_FILE).stat().st_mtime < 5


def sweep_config(config: dict) -> dict:
    config["priors"] = [{"name": "independent", "sweep": {"temperature": [0.6, 0.7, 0.8, 0.9]}}]
    return config


def test_shards_split_the_plan_and_refuse_bad_values(smoke_config, tmp_path, capsys):
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(sweep_config(smoke_config)))
    assert main(["run", str(path), "--shard", "1/2"]) == 0
    runs = Path(smoke_config["out"]) / "runs"
    done = sorted(p.parent.name for p in runs.glob("*/metrics.json"))
    assert done == ["independent__temperature=0.7__seed0", "independent__temperature=0.9__seed0"]
    for bad in ("2/2", "x/2"):
        assert main(["run", str(path), "--shard", bad]) == 2
        assert "--shard" in capsys.readouterr().err


def test_two_concurrent_jobs_on_one_folder_compute_every_cell_exactly_once(smoke_config, tmp_path):
    config = sweep_config(smoke_config)
    config["cache"] = str(tmp_path / "cache")
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-c", "import sys; from vqbench.cli import main; sys.exit(main(sys.argv[1:]))", "run", str(path)]
    jobs = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [job.communicate(timeout=600)[0] for job in jobs]
    # 0, or 75 for a job that left a cell to the other (still computing it then)
    assert {job.returncode for job in jobs} <= {0, EXIT_LEFT_TO_OTHER_JOBS}, outputs
    out = Path(config["out"])
    cells = sorted(p.name for p in (out / "runs").iterdir())
    assert len(cells) == 4 and all((out / "runs" / c / "metrics.json").is_file() for c in cells)
    log = (out / "run.log").read_text()
    for cell in cells:  # computed by exactly one job (the other skipped it as finished or left it to its owner)
        assert log.count(f"cell {cell}: done") == 1, log
    assert not list((out / "runs").glob(f"*/{CLAIM_FILE}"))  # every claim released
    report = (out / "report.md").read_text()
    assert all(f"temperature={t}" in report for t in ("0.6", "0.7", "0.8", "0.9"))


def test_a_run_leaves_cells_claimed_by_another_job_and_a_rerun_completes_them(smoke_config, tmp_path, capsys):
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(sweep_config(smoke_config)))
    runs = Path(smoke_config["out"]) / "runs"
    held = "independent__temperature=0.7__seed0"
    with claim_cell(runs / held) as other_job:  # as if a second job were computing this cell right now
        assert main(["run", str(path)]) == EXIT_LEFT_TO_OTHER_JOBS
        assert "1 cell(s) left to other jobs (independent__temperature=0.7__seed0)" in (runs.parent / "run.log").read_text()
        assert f"`{held}` was being computed by {other_job.owner}" in (runs.parent / "report.md").read_text()
    done = sorted(p.parent.name for p in runs.glob("*/metrics.json"))
    assert held not in done and len(done) == 3 and other_job.held
    assert main(["run", str(path)]) == 0  # the claim is gone: the rerun computes the missing cell only
    assert (runs / held / "metrics.json").is_file()
    assert (runs.parent / "run.log").read_text().count("already finished: skipped") == 3


def test_exclusive_work_waits_for_the_job_holding_it(tmp_path):
    import threading

    from vqbench.runner.claims import exclusive

    order: list[str] = []
    entered = threading.Event()

    def second_job() -> None:
        with exclusive(tmp_path / "lock", poll=0.01):
            order.append("second")
            entered.set()

    with exclusive(tmp_path / "lock"):
        thread = threading.Thread(target=second_job)
        thread.start()
        assert not entered.wait(0.3)  # still held here
        order.append("first done")
    thread.join(timeout=10)
    assert order == ["first done", "second"]
