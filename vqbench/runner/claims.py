"""Claims on cells, so several jobs (a SLURM array, two machines on a shared file system) can share one results folder.

A job claims a cell by creating ``claim.json`` in the cell's folder, whole, with a hard link from a temporary file
(atomic on local and NFS v3+ file systems; ``O_CREAT | O_EXCL`` where hard links are unsupported), keeps it alive with
a heartbeat (the file's modification time), and removes it when the cell is done. A claim whose heartbeat is older
than ``stale_after`` seconds belongs to a killed job and is taken over, and so at once is a claim whose process is
known to be gone (same host and process namespace, no such process or one started at another time).

The heartbeat period and the staleness limit default to 30 s and 300 s; ``VQBENCH_CLAIM_HEARTBEAT`` and
``VQBENCH_CLAIM_STALE`` (seconds) change them, e.g. for file systems that update modification times slowly.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .. import liveness
from ..errors import ConfigError

CLAIM_FILE = "claim.json"
log = logging.getLogger(__name__)


def timing() -> tuple[float, float]:
    """(heartbeat period, staleness limit) in seconds, from the environment or the defaults 30 and 300."""
    values = []
    for name, default in (("VQBENCH_CLAIM_HEARTBEAT", 30.0), ("VQBENCH_CLAIM_STALE", 300.0)):
        text = os.environ.get(name, "")
        try:
            value = float(text) if text else default
        except ValueError:
            value = float("nan")
        if not value > 0 or value == float("inf"):
            raise ConfigError(name, f"must be a positive number of seconds, got {text!r}")
        values.append(value)
    heartbeat, stale = values
    if stale <= heartbeat:
        raise ConfigError("VQBENCH_CLAIM_STALE", f"must exceed VQBENCH_CLAIM_HEARTBEAT ({stale:g} ≤ {heartbeat:g} s): a live claim would look stale")
    return heartbeat, stale


@dataclass
class Claim:
    """The outcome of ``claim_cell``: ``held`` True when this job owns the cell, else ``owner`` names the job that does."""

    held: bool
    owner: str = ""
    age: float = 0.0  # seconds since the owner's last heartbeat


def _owner() -> str:
    return f"{liveness.me()['host']}:{os.getpid()}"


def _create(path: Path, token: str) -> bool:
    """Create the claim ``path`` with its content, unless it exists."""
    text = json.dumps({"owner": _owner(), "token": token, "since": time.time(), **liveness.me()})
    tmp = path.with_name(f".{path.name}.~{liveness.tag()}~{token}")
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


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):  # gone, or being written this instant
        return {}


def _take_over_if_stale(path: Path, stale_after: float, token: str) -> bool:
    """Move a stale claim, or one of a process that is gone, aside (a rename: only one job wins it) and claim the
    cell afresh. If what was moved is not the claim that was judged (another job took it over in between), it is
    put back and the cell left to that job."""
    judged = _read(path)
    try:
        if time.time() - path.stat().st_mtime < stale_after and not liveness.gone(judged):
            return False
        aside = path.with_name(f".stale.~{liveness.tag()}~{token}")
        os.rename(path, aside)
    except FileNotFoundError:  # released or taken over meanwhile
        return _create(path, token)
    if _read(aside).get("token") != judged.get("token"):  # a live job's fresh claim: restore it
        with contextlib.suppress(FileExistsError):
            os.link(aside, path)
        aside.unlink(missing_ok=True)
        return False
    aside.unlink(missing_ok=True)
    return _create(path, token)


@contextlib.contextmanager
def claim_cell(folder: Path, heartbeat: float | None = None, stale_after: float | None = None) -> Iterator[Claim]:
    """Claim the cell in ``folder`` for the duration of the block (``Claim.held`` says whether this job got it)."""
    defaults = timing()
    heartbeat, stale_after = heartbeat or defaults[0], stale_after or defaults[1]
    folder.mkdir(parents=True, exist_ok=True)
    path, token = folder / CLAIM_FILE, uuid.uuid4().hex
    if not (_create(path, token) or _take_over_if_stale(path, stale_after, token)):
        yield Claim(False, _read(path).get("owner", "another job"), _age(path))
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


def _age(path: Path) -> float:
    try:
        return max(0.0, time.time() - path.stat().st_mtime)
    except FileNotFoundError:
        return 0.0


@contextlib.contextmanager
def exclusive(folder: Path, poll: float = 1.0, report_every: float = 60.0) -> Iterator[None]:
    """Hold the claim on ``folder`` for the block, waiting while another job holds it (a killed job's stale claim is
    taken over as for cells; the wait is logged, naming the owner, at once and every ``report_every`` seconds).
    Guards shared work that must not run twice at once, e.g. writing one latent dataset."""
    reported = -float("inf")
    while True:
        with claim_cell(folder) as claim:
            if claim.held:
                yield
                return
        if time.monotonic() - reported >= report_every:
            log.warning(
                "waiting for %s, held by %s (heartbeat %.3g s ago; taken over once older than %.3g s)",
                folder.name, claim.owner, claim.age, timing()[1],
            )  # fmt: skip
            reported = time.monotonic()
        time.sleep(poll)
