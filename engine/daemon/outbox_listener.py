"""LISTEN on the schema's outbox channel, kept open for the daemon's lifetime.

The channel (``outbox_channel()``, migration 14: channels are database-wide, the name tells
schemas apart) is listened to on a connection of its own, outside the pool: a pooled
connection held for the loop's lifetime would leave one fewer for the writes. The reconciler
runs on its timer whatever happens here; this only wakes it early. So every step has a
deadline (a server that stalls while the daemon starts must not hold the loop), a connection
that breaks or goes silent is replaced with backoff (a Postgres restart would otherwise leave
the daemon on its timer for good), and each new connection wakes the loop once, for the
NOTIFYs it missed while not listening.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg

from engine.app.runtime import Runtime
from engine.errors import describe
from engine.retry import capped_exponential, sleep_or_any, sleep_or_stop
from engine.store.pool import server_settings
from engine.waits import within

__all__ = ["OutboxListener"]

log = logging.getLogger(__name__)

# How often a quiet LISTEN connection is asked whether it is still there: a silent network
# never closes it.
CHECK_EVERY_S = 30.0
REOPEN_CAP_S = 60.0


class OutboxListener:
    def __init__(self, rt: Runtime, wake: asyncio.Event, *, check_every_s: float = CHECK_EVERY_S):
        self._rt = rt
        self._wake = wake
        self._check_every_s = check_every_s
        self.connections = 0  # opened so far (tests, logs)

    async def run(self, stop: asyncio.Event) -> None:
        failures = 0
        while not stop.is_set():
            conn = await self._open()
            if conn is None:
                failures += 1
            else:
                failures = 0
                self.connections += 1
                if self.connections > 1:
                    log.info("reconciler: LISTEN on the outbox channel again")
                self._wake.set()  # NOTIFYs sent while nobody listened are lost: look now
                try:
                    lost = await self._until_lost(conn, stop)
                finally:
                    await _close(conn)
                if not lost:
                    return
                log.warning("reconciler: the LISTEN connection was lost; reopening it")
            delay = capped_exponential(1.0, REOPEN_CAP_S, max(1, failures))
            if await sleep_or_stop(stop, delay):
                return

    async def _open(self) -> asyncpg.Connection | None:
        db = self._rt.settings.database
        conn: asyncpg.Connection | None = None
        channel = "the outbox channel"
        try:
            # connect's own timeout covers the whole start-up exchange.
            conn = await asyncpg.connect(
                self._rt.database_url,
                server_settings=server_settings(db.schema),
                timeout=db.connect_timeout_s,
            )
            channel = await within(conn.fetchval("SELECT outbox_channel()"), db.connect_timeout_s)
            await within(conn.add_listener(channel, self._notified), db.connect_timeout_s)
        except Exception as exc:
            log.warning(
                "reconciler: LISTEN %s failed (%s); running on the timer until it works",
                channel,
                describe(exc),
            )
            if conn is not None:
                conn.terminate()
            return None
        return conn

    def _notified(self, *_: object) -> None:
        self._wake.set()

    async def _until_lost(self, conn: asyncpg.Connection, stop: asyncio.Event) -> bool:
        """Waits until ``stop`` (False) or until the connection is gone or silent (True)."""
        timeout = self._rt.settings.database.connect_timeout_s
        gone = asyncio.Event()
        conn.add_termination_listener(lambda _conn: gone.set())
        while True:
            await sleep_or_any(self._check_every_s, stop, gone)
            if stop.is_set():
                return False
            if gone.is_set() or conn.is_closed():
                return True
            try:
                await within(conn.fetchval("SELECT 1"), timeout)
            except Exception as exc:
                log.debug("LISTEN connection check failed: %s", describe(exc))
                return True


async def _close(conn: asyncpg.Connection) -> None:
    with contextlib.suppress(Exception):
        await within(conn.close(), 2.0)
    if not conn.is_closed():
        conn.terminate()
