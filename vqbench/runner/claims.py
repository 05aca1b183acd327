"""Claims on cells, so several jobs (a SLURM array, two machines on a shared file system) can share one results folder.

A job claims a cell by creating ``claim.json`` in the cell's folder, whole, with a hard link from a temporary file
(atomic on local and NFS v3+ file systems; ``O_CREAT | O_EXCL`` where hard links are unsupported), keeps it alive with
a heartbeat (the file's modification time), and removes it when the cell is done. A claim whose heartbeat is older
than ``stale_after`` seconds belongs to a killed job and is taken over, and so at once is a claim whose process is
known to be gone (same host and process namespace, no such process).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

CLAIM_FILE = "claim.json"


@dataclass
class Claim:
    """The outcome of ``claim_cell``: ``held`` True when this job owns the cell, else ``owner`` names the job that does."""

    held: bool
    owner: str = ""


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _process_space() -> str:
    """The host and process namespace this process's id is valid in."""
    try:
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        namespace = 0
    return f"{socket.gethostname()}/{namespace}"


def _create(path: Path, token: str) -> bool:
    """Create the claim ``path`` with its content, unless it exists."""
    text = json.dumps({"owner": _owner(), "token": token, "since": time.time(), "space": _process_space(), "pid": os.getpid()})
    tmp = path.with_name(f".{path.name}.{token}")
    tmp.write_text(text)
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    except OSError:  # no hard links on this file system
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(text)
    finally:
        tmp.unlink(missing_ok=True)
    return True


def _owner_gone(claim: dict) -> bool:
    """True when the claim's process ran in this host and process namespace and no longer exists."""
    if claim.get("space") != _process_space() or not isinstance(claim.get("pid"), int):
        return False
    try:
        os.kill(claim["pid"], 0)
    except ProcessLookupError:
        return True
    except OSError:  # exists, owned by another user
        return False
    return False


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):  # gone, or being written this instant
        return {}


def _take_over_if_stale(path: Path, stale_after: float, token: str) -> bool:
    """Move a stale claim, or one of a process that is gone, aside (a rename: only one job wins it) and claim the
    cell afresh."""
    try:
        if time.time() - path.stat().st_mtime < stale_after and not _owner_gone(_read(path)):
            return False
        aside = path.with_name(f".stale-{token}")
        os.rename(path, aside)
    except FileNotFoundError:  # released or taken over meanwhile
        return _create(path, token)
    aside.unlink(missing_ok=True)
    return _create(path, token)


@contextlib.contextmanager
def claim_cell(folder: Path, heartbeat: float = 30.0, stale_after: float = 300.0) -> Iterator[Claim]:
    """Claim the cell in ``folder`` for the duration of the block (``Claim.held`` says whether this job got it)."""
    folder.mkdir(parents=True, exist_ok=True)
    path, token = folder / CLAIM_FILE, uuid.uuid4().hex
    if not (_create(path, token) or _take_over_if_stale(path, stale_after, token)):
        yield Claim(False, _read(path).get("owner", "another job"))
        return
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(heartbeat):
            if _read(path).get("token") == token:
                with contextlib.suppress(FileNotFoundError):
                    os.utime(path)

    thread = threading.Thread(target=beat, name=f"claim-heartbeat-{folder.name}", daemon=True)
    thread.start()
    try:
        yield Claim(True, _owner())
    finally:
        stop.set()
        thread.join()
        if _read(path).get("token") == token:
            path.unlink(missing_ok=True)


@contextlib.contextmanager
def exclusive(folder: Path, poll: float = 1.0) -> Iterator[None]:
    """Hold the claim on ``folder`` for the block, waiting while another job holds it (a killed job's stale claim is
    taken over as for cells). Guards shared work that must not run twice at once, e.g. writing one latent dataset."""
    while True:
        with claim_cell(folder) as claim:
            if claim.held:
                yield
                return
        time.sleep(poll)
