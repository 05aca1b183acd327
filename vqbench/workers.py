"""DataLoader workers that exit with the process that started them. A worker whose parent is killed (SIGKILL, the
OOM killer, a preempted job) would otherwise live on as an orphan, holding its memory, until its current read ends
and PyTorch's own check (made only between reads) notices."""

from __future__ import annotations

import ctypes
import functools
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
POLL_SECONDS = 1.0


def exit_with_parent() -> Callable[[int], None]:
    """A ``worker_init_fn`` that makes every worker exit when this process dies; call it in the process that starts
    the workers, from the thread that iterates the loader (Linux signals the worker when that thread ends)."""
    method = multiprocessing.get_start_method(allow_none=True) or multiprocessing.get_all_start_methods()[0]
    # fork and spawn workers are children of this process; fork-server ones are children of the server, which exits
    # with this process: they watch whichever parent they have
    return functools.partial(watch_parent, None if method == "forkserver" else os.getpid())


def watch_parent(parent: int | None, worker_id: int = 0) -> None:
    """In a worker: arrange to be killed when ``parent`` (default: the current parent) exits, or exit now if it
    already has. Linux: the kernel sends SIGKILL (``prctl(PR_SET_PDEATHSIG)``); elsewhere a daemon thread polls."""
    parent = os.getppid() if parent is None else parent
    armed = _death_signal()
    if os.getppid() != parent:  # the parent died before the signal was armed (we now belong to init or a subreaper)
        os._exit(1)
    if not armed:
        threading.Thread(target=_poll, args=(parent,), name="vqbench-parent-watch", daemon=True).start()


def _death_signal() -> bool:
    """Ask Linux to SIGKILL this process when its parent exits; False where that is unavailable."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)  # this process's symbols, libc's among them
        return int(libc.prctl(PR_SET_PDEATHSIG, ctypes.c_ulong(signal.SIGKILL), 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def _poll(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(POLL_SECONDS)
    os._exit(1)
