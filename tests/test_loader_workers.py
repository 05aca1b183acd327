"""Image loader workers exit with their parent: a parent killed with SIGKILL while its workers are busy reading leaves
no orphan behind, whether the kernel kills them (Linux ``PR_SET_PDEATHSIG``) or their polling thread does."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="needs /proc to follow the worker processes")

# The parent: a source whose every read blocks (far longer than the test waits), iterated by two loader workers; each
# worker leaves a file named by its pid as it starts reading. argv: marks folder, "prctl" or "poll" (no death signal).
PARENT = """
import os, sys, time
from pathlib import Path
import numpy as np
import vqbench.workers
from vqbench.interfaces import ImageSource
from vqbench.streaming import loader

marks = Path(sys.argv[1])
if sys.argv[2] == "poll":
    vqbench.workers._death_signal = lambda: False  # as where prctl is unavailable: the polling thread must do it

class Blocking(ImageSource):
    def __len__(self):
        return 8
    def image(self, index):
        (marks / str(os.getpid())).touch()
        time.sleep(600)
        return np.zeros((4, 4, 3), np.uint8)
    def fingerprint(self):
        return "blocking"

for batch in loader(Blocking(None, 4), [[i] for i in range(8)], workers=2):
    pass
"""


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, parent pid, start time) of process ``pid``, or None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[1]), int(fields[19])


def _running(pid: int, start: int) -> bool:
    """Process ``pid`` (started at ``start``) still runs; a zombie (dead, not yet reaped by init) does not count."""
    stat = _stat(pid)
    return stat is not None and stat[0] != "Z" and stat[2] == start


@pytest.mark.parametrize("mode", ["prctl", "poll"])
def test_workers_exit_when_their_parent_is_killed(tmp_path, mode):
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(tmp_path), mode], cwd=ROOT)
    workers: dict[int, int] = {}  # pid → start time
    try:
        deadline = time.monotonic() + 120
        while len(workers) < 2:
            assert parent.poll() is None, "the parent process ended before its workers started reading"
            assert time.monotonic() < deadline, "the loader workers never started reading"
            for mark in tmp_path.iterdir():
                stat = _stat(int(mark.name))
                if stat is not None:
                    assert stat[1] == parent.pid, "a mark left by a process that is not a worker of the parent"
                    workers[int(mark.name)] = stat[2]
            time.sleep(0.1)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=30)
        deadline = time.monotonic() + 30
        while any(_running(pid, start) for pid, start in workers.items()) and time.monotonic() < deadline:
            time.sleep(0.1)
        orphans = [pid for pid, start in workers.items() if _running(pid, start)]
        assert not orphans, f"loader workers {orphans} outlived their parent (killed with SIGKILL) by 30 s"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        for pid, start in workers.items():  # only the workers this test started, should they have survived
            if _running(pid, start):
                os.kill(pid, signal.SIGKILL)


def test_a_worker_whose_parent_is_already_gone_exits_at_once():
    # the recorded parent is not this process's parent: as if the parent died before the worker could arm the signal
    code = "from vqbench.workers import watch_parent; watch_parent(os.getppid() + 1 if os.getppid() != 1 else 2); print('survived')"
    done = subprocess.run([sys.executable, "-c", f"import os; {code}"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and not done.stdout and not done.stderr, done


def test_a_worker_init_for_this_process_keeps_the_worker_alive():
    # a child whose recorded parent is its real parent carries on (and so, in the loader, reads images)
    code = "import os; from vqbench.workers import watch_parent; watch_parent(os.getppid()); print('alive')"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "alive" in done.stdout, done


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_on_linux_the_kernel_is_asked_to_kill_the_worker():
    # PR_GET_PDEATHSIG (2) reads back the signal a worker gets when its parent dies: SIGKILL once armed
    code = (
        "import ctypes, os; from vqbench.workers import watch_parent; watch_parent(os.getppid()); sig = ctypes.c_int(0); "
        "ctypes.CDLL(None).prctl(2, ctypes.byref(sig), 0, 0, 0); print(sig.value)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == str(int(signal.SIGKILL)), done
