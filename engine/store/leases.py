"""Postgres side of running several daemons on one database: the ``daemons`` heartbeat table
and the per-app leases (``sql/queries/leases.sql``). No policy here: who takes what and when
is ``engine/cluster/``'s business."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from engine.store.queries import default_queries

__all__ = ["DaemonRow", "Lease", "LeaseStore"]


@dataclass(frozen=True)
class Lease:
    app_key: str
    owner: str
    owner_host: str
    owner_local: str
    acquired_at: datetime
    heartbeat_at: datetime
    expires_at: datetime
    live: bool = True


@dataclass(frozen=True)
class DaemonRow:
    owner: str
    host: str
    pid: int
    local_id: str
    listen: str
    started_at: datetime
    heartbeat_at: datetime
    expires_at: datetime
    live: bool = True


def _lease(r: Any) -> Lease:  # an asyncpg Record
    return Lease(
        app_key=r["app_key"],
        owner=r["owner"],
        owner_host=r["owner_host"],
        owner_local=r["owner_local"],
        acquired_at=r["acquired_at"],
        heartbeat_at=r["heartbeat_at"],
        expires_at=r["expires_at"],
        live=bool(r.get("live", True)),
    )


def _daemon(r: Any) -> DaemonRow:
    return DaemonRow(
        owner=r["owner"],
        host=r["host"],
        pid=r["pid"],
        local_id=r["local_id"],
        listen=r["listen"],
        started_at=r["started_at"],
        heartbeat_at=r["heartbeat_at"],
        expires_at=r["expires_at"],
        live=bool(r.get("live", True)),
    )


class LeaseStore:
    def __init__(self, pool: asyncpg.Pool, *, queries: Mapping[str, str] | None = None) -> None:
        self._pool = pool
        self._q = default_queries() if queries is None else queries

    async def heartbeat(
        self, owner: str, *, host: str, pid: int, local_id: str, listen: str, ttl_s: float
    ) -> list[DaemonRow]:
        """Registers or refreshes ``owner``; returns every live daemon, ``owner`` first."""
        rows = await self._pool.fetch(
            self._q["daemon_heartbeat"], owner, host, pid, local_id, listen, ttl_s
        )
        mine = [_daemon(r) for r in rows if r["owner"] == owner]
        return mine + [_daemon(r) for r in rows if r["owner"] != owner]

    async def remove_daemon(self, owner: str) -> None:
        await self._pool.execute(self._q["daemon_remove"], owner)

    async def prune_daemons(self, dead_for_s: float) -> None:
        await self._pool.execute(self._q["daemon_prune"], dead_for_s)

    async def daemons(self) -> list[DaemonRow]:
        return [_daemon(r) for r in await self._pool.fetch(self._q["daemons_all"])]

    async def acquire(
        self,
        app_key: str,
        owner: str,
        *,
        host: str,
        local_id: str,
        ttl_s: float,
        replacing: str | None = None,
    ) -> Lease | None:
        """The lease when ``owner`` now holds it; None when another process does."""
        row = await self._pool.fetchrow(
            self._q["lease_acquire"], app_key, owner, host, local_id, ttl_s, replacing
        )
        return None if row is None else _lease(row)

    async def renew(self, app_keys: Sequence[str], owner: str, *, ttl_s: float) -> set[str]:
        """The apps whose lease ``owner`` still held and extended."""
        if not app_keys:
            return set()
        rows = await self._pool.fetch(self._q["lease_renew"], list(app_keys), owner, ttl_s)
        return {r["app_key"] for r in rows}

    async def release(self, app_keys: Sequence[str], owner: str, *, cooldown_s: float) -> set[str]:
        if not app_keys:
            return set()
        rows = await self._pool.fetch(self._q["lease_release"], list(app_keys), owner, cooldown_s)
        return {r["app_key"] for r in rows}

    async def leases(self) -> list[Lease]:
        return [_lease(r) for r in await self._pool.fetch(self._q["lease_list"])]
