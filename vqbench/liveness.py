"""Which process owns a claim, lock or temporary file, and whether it still runs.

An owner is recorded as host, process namespace, pid and the process's start time (Linux: ``/proc/<pid>/stat``), so a
pid reused by a later process — common in containers, where every job starts with small pids — is not mistaken for
the owner. Only owners in this host and process namespace can be checked; others are reported as alive.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
from functools import cache
from pathlib import Path
from typing import Any


@cache
def process_space() -> str:
    """The host, boot and process namespace this process's pids are valid in (hostnames and namespace numbers can
    repeat across machines, a boot id does not)."""
    try:
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        namespace = 0
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = ""
    return f"{socket.gethostname()}/{boot}/{namespace}"


def start_time(pid: int) -> int | None:
    """Start time of process ``pid`` in clock ticks since boot (None where /proc is unavailable or it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2 :].split()[19])  # field 22; the name in parentheses may hold spaces


def me() -> dict[str, Any]:
    """This process as an owner record."""
    return {"host": socket.gethostname(), "space": process_space(), "pid": os.getpid(), "start": start_time(os.getpid())}


def gone(owner: dict[str, Any]) -> bool:
    """True when ``owner`` ran in this host and process namespace and no longer runs (pid gone, or the pid now
    belongs to a process that started at another time)."""
    pid = owner.get("pid")
    if owner.get("space") != process_space() or not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # exists, owned by another user
        pass
    started = owner.get("start")
    return isinstance(started, int) and start_time(pid) not in (None, started)


def _space_tag() -> str:
    return hashlib.sha256(process_space().encode()).hexdigest()[:8]


def tag() -> str:
    """This process in a file name: ``<pid>.<start>@<space>``."""
    return f"{os.getpid()}.{start_time(os.getpid()) or 0}@{_space_tag()}"


_TAG = re.compile(r"~(\d+)\.(\d+)@([0-9a-f]{8})~")


def tagged_owner_gone(name: str) -> bool:
    """True when the file name ``name`` carries a ``~tag~`` of a process of this host that no longer runs."""
    match = _TAG.search(name)
    if match is None or match[3] != _space_tag():
        return False
    started = int(match[2])
    return gone({"space": process_space(), "pid": int(match[1]), "start": started or None})
