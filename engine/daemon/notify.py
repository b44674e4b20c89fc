"""The systemd notify protocol (sd_notify), without a libsystemd dependency.

Messages are newline-separated ``KEY=VALUE`` pairs in one datagram to ``$NOTIFY_SOCKET``.
Outside systemd the socket is unset and every call is a no-op, so the daemon code never asks
"am I under systemd?".
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Mapping

__all__ = ["Notifier", "watchdog_interval", "watchdog_pinger"]

log = logging.getLogger(__name__)


class Notifier:
    """Sends notifications to the service manager; never raises."""

    def __init__(self, address: str | None) -> None:
        self._address: str | None = None
        self._failed_once = False
        if not address:
            return
        if address.startswith("@"):
            # Linux abstract namespace: a leading NUL instead of a filesystem path.
            self._address = "\0" + address[1:]
        elif address.startswith("/"):
            self._address = address
        else:
            # e.g. systemd's vsock: addresses, which only VMs use.
            log.debug("NOTIFY_SOCKET %r is not a unix socket address; notifications off", address)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Notifier:
        return cls(env.get("NOTIFY_SOCKET"))

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def send(self, *fields: str) -> bool:
        """Sends one datagram made of ``fields``; True if it was handed to the socket."""
        if self._address is None or not fields:
            return False
        payload = "\n".join(fields).encode("utf-8")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                # A stuck service manager must not stall the event loop: drop the datagram.
                sock.setblocking(False)
                sock.sendto(payload, self._address)
        except OSError as exc:
            if not self._failed_once:
                self._failed_once = True
                log.debug("systemd notification failed (further failures not logged): %s", exc)
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.send("READY=1", *([f"STATUS={_one_line(status)}"] if status else []))

    def status(self, text: str) -> bool:
        return self.send(f"STATUS={_one_line(text)}")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def stopping(self, status: str | None = None) -> bool:
        return self.send("STOPPING=1", *([f"STATUS={_one_line(status)}"] if status else []))

    def reloading(self) -> bool:
        # Type=notify-reload (systemd 253+) requires the monotonic timestamp with RELOADING=1.
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def extend_timeout(self, seconds: float) -> bool:
        """Asks for more start/stop time (a long migration, a slow shutdown flush)."""
        return self.send(f"EXTEND_TIMEOUT_USEC={max(0, int(seconds * 1_000_000))}")


def _one_line(text: str) -> str:
    # A newline would start a new KEY=VALUE pair that systemd would try to interpret.
    return " ".join(text.split())


def watchdog_interval(env: Mapping[str, str], pid: int | None = None) -> float | None:
    """Seconds between WATCHDOG=1 pings (half of ``WatchdogSec``), or None when the watchdog
    is off or meant for another process."""
    raw = env.get("WATCHDOG_USEC", "")
    try:
        usec = int(raw)
    except ValueError:
        return None
    if usec <= 0:
        return None
    owner = env.get("WATCHDOG_PID")
    if owner:
        try:
            if int(owner) != (os.getpid() if pid is None else pid):
                # Inherited by a child (e.g. an ExecStartPre step): not ours to ping.
                return None
        except ValueError:
            return None
    return usec / 1_000_000 / 2


async def watchdog_pinger(notifier: Notifier, interval: float) -> None:
    """Pings until cancelled.

    It pings unconditionally on purpose: the ping proves the event loop is not blocked, which
    is what a restart can fix. A Temu outage also stops progress, but a restart would not fix
    that, so loop health belongs to /healthz, not to the watchdog.
    """
    while True:
        notifier.watchdog()
        await asyncio.sleep(interval)
