"""Who this process is, for leases and claims: one owner id format for every holder.

An owner id is ``host:pid:random8``; ``owner_pid`` reads the pid back, so a process can tell
that a lease holder on the same machine (same boot and pid namespace) has died.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Identity", "new_owner_id", "owner_pid", "pid_alive"]


def new_owner_id(host: str | None = None, pid: int | None = None) -> str:
    """``host:pid:random8``: unique per process start, readable in `status` and logs."""
    host = socket.gethostname() if host is None else host
    pid = os.getpid() if pid is None else pid
    return f"{host}:{pid}:{uuid.uuid4().hex[:8]}"


def _local_id(host: str) -> str:
    """Same value for processes that can see each other's pids (same boot, same pid
    namespace); anything else gets a unique value, so it never judges a foreign pid."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        ns = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return f"{host}:{uuid.uuid4().hex}"
    return f"{boot}:{ns}"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # e.g. EPERM: it exists, owned by someone else
    return True


@dataclass(frozen=True)
class Identity:
    owner: str
    host: str
    pid: int
    local_id: str
    listen: str = ""

    @classmethod
    def of_this_process(cls, listen: str = "") -> Identity:
        host = socket.gethostname()
        pid = os.getpid()
        return cls(new_owner_id(host, pid), host, pid, _local_id(host), listen)


def owner_pid(owner: str) -> int | None:
    parts = owner.rsplit(":", 2)
    if len(parts) != 3 or not parts[1].isdigit():
        return None
    return int(parts[1])
