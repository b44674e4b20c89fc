"""Pieces every engine scenario uses: settings for a simulator in another process, a fresh
schema, per-shop row counting, and a once-a-second sampler of the engine process."""

from __future__ import annotations

import asyncio
import resource
import time
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import psutil

from engine.app.runtime import Runtime
from engine.config import (
    AppSettings,
    DatabaseSettings,
    HttpSettings,
    OrangeConnexSettings,
    ReconcilerSettings,
    Secret,
    Settings,
    ShopSettings,
    SyncSettings,
)
from engine.store.pool import quote_ident
from engine.store.store import CursorAdvance
from engine.sync.pager import StreamAdapter
from engine.sync.service import ShopHandle, SyncService
from engine.sync.windows import Window
from engine.temu.api import Page
from engine.temu.limiter import Lane

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class BenchContext:
    """What the orchestrator hands to every scenario."""

    database_url: str
    quick: bool
    machine: dict[str, Any]
    results: Path = RESULTS


def settings_for(
    info: Mapping[str, Any],
    *,
    database_url: str,
    schema: str,
    sync: Mapping[str, Any] | None = None,
    reconciler: Mapping[str, Any] | None = None,
) -> Settings:
    """Settings pointing at the simulator described by ``info`` (its hello line).

    The same choices as engine/simwire.py makes for an in-process simulator: sync starts where
    the data starts and the safety lag is short because the simulator stamps changes "now".
    """
    apps = tuple(
        AppSettings(
            app_key=a["app_key"],
            app_secret=Secret(a["app_secret"]),
            base_url=info["temu_url"],
            qps=float(a["qps"]),
        )
        for a in info["apps"]
    )
    shops = tuple(
        ShopSettings(id=s["shop_id"], app_key=s["app_key"], access_token=Secret(s["access_token"]))
        for s in info["shops"]
    )
    start = datetime.fromtimestamp(info["data_range"]["start_ts"], tz=UTC)
    base = {"start": start, "safety_lag_s": 1, "overlap_s": 120, "poll_interval_s": 5.0}
    return Settings(
        database=DatabaseSettings(url=database_url, schema=schema),
        apps=apps,
        shops=shops,
        sync=SyncSettings(**{**base, **(sync or {})}),
        reconciler=ReconcilerSettings(**{"interval_s": 2.0, **(reconciler or {})}),
        orange_connex=OrangeConnexSettings(
            enabled=True,
            base_url=info["oc_base_url"],
            oauth_base_url=info["oc_oauth_url"],
            client_id=info["oc_client_id"],
            refresh_token=Secret(info["oc"]["refresh_token"]),
        ),
        http=HttpSettings(listen=""),
        source="<bench>",
    )


def fresh_schema(scenario: str) -> str:
    return f"bench_{scenario}_{uuid.uuid4().hex[:8]}"


async def drop_schema(url: str, schema: str) -> None:
    # A 200k-order schema is ~1 GB; the suite must not fill the disk run after run.
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {quote_ident(schema)} CASCADE")
    finally:
        await conn.close()


class CountingAdapter:
    """Wraps a stream adapter to count the records each shop wrote (for progress plots)."""

    def __init__(self, inner: StreamAdapter, shop_id: str, rows: Counter[str]) -> None:
        self.stream = inner.stream
        self.page_size = inner.page_size
        self._inner = inner
        self._shop = shop_id
        self._rows = rows

    async def fetch(
        self, page: int, window: Window, lane: Lane, created: Window | None = None
    ) -> Page:
        return await self._inner.fetch(page, window, lane, created)

    def key(self, item: dict[str, Any]) -> str | None:
        return self._inner.key(item)

    async def write(self, items: list[dict[str, Any]], advance: CursorAdvance | None) -> None:
        await self._inner.write(items, advance)
        self._rows[self._shop] += len(items)

    async def after_walk(self, lane: Lane, started: datetime) -> None:
        await self._inner.after_walk(lane, started)

    async def set_aside(self, elements: Sequence[Any]) -> None:
        await self._inner.set_aside(elements)


def counting_service(rt: Runtime, rows: Counter[str]) -> SyncService:
    """The runtime's sync service with every adapter counted per shop."""
    base = rt.sync_service()
    shops = [
        ShopHandle(
            shop_id=h.shop_id,
            app_key=h.app_key,
            adapters={k: CountingAdapter(a, h.shop_id, rows) for k, a in h.adapters.items()},
        )
        for h in base.shops
    ]
    return SyncService(store=rt.store, shops=shops, settings=rt.settings.sync, counters=rt.counters)


def cpu_s() -> float:
    """CPU seconds of THIS process (user + system), the engine's cost without the simulator's
    or Postgres's."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


@dataclass
class Sample:
    t: float  # epoch seconds
    rss_mib: float
    cpu_s: float
    rows: dict[str, int]


@dataclass
class Sampler:
    """Once a second: RSS, CPU and rows written per shop, until stopped."""

    rows: Counter[str]
    interval_s: float = 1.0
    samples: list[Sample] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._proc = psutil.Process()
        self._take()
        self._task = asyncio.create_task(self._run())

    def _take(self) -> None:
        self.samples.append(
            Sample(time.time(), self._proc.memory_info().rss / 2**20, cpu_s(), dict(self.rows))
        )

    async def _run(self) -> None:
        # Drift-free ticks, so a slow event loop shows up as late samples, not fewer of them.
        nxt = time.monotonic()
        while True:
            nxt += self.interval_s
            await asyncio.sleep(max(0.0, nxt - time.monotonic()))
            self._take()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._take()

    def series(self, t0: float) -> dict[str, Any]:
        """Columns for the JSON and the plots, time relative to ``t0``."""
        shops = sorted({k for s in self.samples for k in s.rows})
        return {
            "t_s": [round(s.t - t0, 3) for s in self.samples],
            "rss_mib": [round(s.rss_mib, 2) for s in self.samples],
            "cpu_s": [round(s.cpu_s, 3) for s in self.samples],
            "rows_by_shop": {k: [s.rows.get(k, 0) for s in self.samples] for k in shops},
        }
