"""Builds the long-lived pieces of one process from Settings and tears them down in order.

Every command opens one Runtime: the database (embedded or configured), the pool, migrations,
one aiohttp session, one pacer per app_key (shared by all of its shops and loops), the call
statistics and the row counters. Nothing here knows about command-line arguments.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import aiohttp
import asyncpg

from engine.config import Settings
from engine.counters import RowObserver, RunCounters, build_summary
from engine.store.embedded import EmbeddedPostgres
from engine.store.migrate import migrate
from engine.store.pool import create_pool
from engine.store.store import Store
from engine.store.token_checks import TokenChecks
from engine.sync.orders import OrdersAdapter
from engine.sync.pager import StreamAdapter
from engine.sync.returns import ReturnsAdapter
from engine.sync.service import ShopHandle, SyncService
from engine.sync.tokens import TokenChecker, TokenGate, TokenStatus
from engine.temu.api import TemuShopApi
from engine.temu.limiter import AppPacer
from engine.temu.stats import CallStats, DurationObserver
from engine.temu.token_info import needed_scopes
from engine.temu.transport import TemuTransport, send_fence

log = logging.getLogger(__name__)

RequestObserver = Callable[[str, str, str], None]


@dataclass(frozen=True)
class Observers:
    """What the process that opens a Runtime wants to hear of, and the gate every Temu send
    passes (a daemon sharing the database: refused unless this process holds the app's
    lease). One-shot commands pass none."""

    request: RequestObserver | None = None  # (app_key, api_type, outcome) per request
    request_duration: DurationObserver | None = None  # (app_key, api_type, seconds)
    rows: RowObserver | None = None  # rows written, per entity
    oc_token_refresh: Callable[[], None] | None = None
    send_gate: Callable[[str], Callable[[], None]] | None = None  # app_key -> gate
    token: Callable[[TokenStatus], None] | None = None  # each access-token check


# Connections per remote: Temu's for every app's calls together (at 20 req/s each, a few
# seconds of latency already needs tens in flight), Orange Connex's for the reconciler.
TEMU_CONNECTIONS = 200
OC_CONNECTIONS = 32


@dataclass
class Runtime:
    settings: Settings
    pool: asyncpg.Pool
    store: Store
    session: aiohttp.ClientSession  # Temu's calls only
    stats: CallStats
    counters: RunCounters
    pacers: dict[str, AppPacer]
    transports: dict[str, TemuTransport]
    shop_apis: dict[str, TemuShopApi]
    embedded: EmbeddedPostgres | None = None
    started: float = field(default_factory=time.monotonic)
    observers: Observers = field(default_factory=Observers)
    # For the few uses that need a connection of their own, outside the pool (LISTEN).
    database_url: str = ""
    # Orange Connex's own connection pool: a slow Temu filling Temu's connector never starves
    # the warehouse calls, nor the reverse. Created on first use (most commands never call OC).
    _oc_session: aiohttp.ClientSession | None = None

    @property
    def oc_session(self) -> aiohttp.ClientSession:
        if self._oc_session is None:
            self._oc_session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=OC_CONNECTIONS, enable_cleanup_closed=True)
            )
        return self._oc_session

    def sync_service(self, clock: Callable[[], float] = time.time) -> SyncService:
        """``clock``: the wall clock its windows end by (tests move it instead of sleeping)."""
        shops = []
        for shop in self.settings.shops:
            api = self.shop_apis[shop.id]
            adapters: dict[str, StreamAdapter] = {
                "orders": OrdersAdapter(
                    shop.id,
                    api,
                    self.store,
                    self.counters,
                    page_size=self.settings.sync.orders_page_size,
                ),
                "returns": ReturnsAdapter(
                    shop.id,
                    api,
                    self.store,
                    self.counters,
                    page_size=self.settings.sync.returns_page_size,
                ),
            }
            shops.append(ShopHandle(shop_id=shop.id, app_key=shop.app_key, adapters=adapters))
        return SyncService(
            store=self.store,
            shops=shops,
            settings=self.settings.sync,
            counters=self.counters,
            # The sync needs its own streams' API types only: a token without the label
            # upload's must not stop a shop's orders (the reconciler's calls fail on their own,
            # and `status` still names every type the configuration needs).
            tokens=self.token_gate(
                needed_scopes(
                    orders=self.settings.sync.orders,
                    returns=self.settings.sync.returns,
                    reconciler=False,
                )
            ),
            clock=clock,
        )

    def token_gate(self, needed: Iterable[str] | None = None) -> TokenGate:
        """``needed``: the API types the caller is about to use (a command calling only a few
        requires only those); default: every type the configured sync and reconciler call.
        Every gate reads and writes the same stored answers, whatever it requires."""
        s = self.settings
        if needed is None:
            needed = needed_scopes(
                orders=s.sync.orders, returns=s.sync.returns, reconciler=s.reconciler.enabled
            )
        checker = TokenChecker(TokenChecks(self.pool), needed)
        return TokenGate(checker, self.shop_apis, self.observers.token)

    def summary(self) -> dict[str, object]:
        return build_summary(
            self.counters,
            requests=self.stats.requests,
            rate_limited=self.stats.rate_limited,
            retries=self.stats.retries,
            elapsed_s=time.monotonic() - self.started,
        )

    def reset_clock(self) -> None:
        self.started = time.monotonic()

    def since(self, started: float | None) -> None:
        """The summary's elapsed_s counts from ``started`` (time.monotonic: a command's own
        start, so a run of a few requests does not read as a rate no pacer allowed); None:
        from when the runtime opened."""
        if started is not None:
            self.started = started

    async def close(self, *, pool_timeout_s: float = 5.0) -> None:
        await self.session.close()
        if self._oc_session is not None:
            await self._oc_session.close()
        try:
            # pool.close() waits for every borrowed connection; a query stuck on a dead server
            # must not keep the process (and the embedded Postgres) from stopping.
            await asyncio.wait_for(self.pool.close(), pool_timeout_s)
        except TimeoutError:
            log.warning("database pool did not close within %.0f s; terminating it", pool_timeout_s)
            self.pool.terminate()
        if self.embedded is not None:
            await asyncio.to_thread(self.embedded.stop)


async def open_database(settings: Settings) -> tuple[str, EmbeddedPostgres | None]:
    if settings.database.url:
        return settings.database.url, None
    embedded = EmbeddedPostgres(settings.database.data_dir)
    url = await asyncio.to_thread(embedded.start)
    return url, embedded


async def open_runtime(
    settings: Settings,
    *,
    observers: Observers | None = None,
    apply_migrations: bool = True,
) -> Runtime:
    url, embedded = await open_database(settings)
    pool: asyncpg.Pool | None = None
    try:
        db = settings.database
        pool = await create_pool(
            url,
            db.schema,
            min_size=db.pool_min,
            max_size=db.pool_max,
            statement_timeout_s=db.statement_timeout_s,
            lock_timeout_s=db.lock_timeout_s,
            connect_timeout_s=db.connect_timeout_s,
        )
        if apply_migrations:
            await migrate(pool, settings.database.schema)
    except BaseException:
        # A failed migration must not leak the pool: the daemon retries opening forever.
        if pool is not None:
            pool.terminate()
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)
        raise
    observers = observers or Observers()
    stats = CallStats(observer=observers.request, duration_observer=observers.request_duration)
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=TEMU_CONNECTIONS, enable_cleanup_closed=True),
        trace_configs=[send_fence()],
    )
    # Every Temu call holds one of these from its pacer grant to its answer (see
    # TemuTransport): as many as the connector has connections, so a grant always finds one.
    slots = asyncio.Semaphore(TEMU_CONNECTIONS)
    gate = observers.send_gate
    pacers = {
        a.app_key: AppPacer(a.qps, gate=None if gate is None else gate(a.app_key))
        for a in settings.apps
    }
    transports = {
        a.app_key: TemuTransport(session, a, pacers[a.app_key], stats, connection_slots=slots)
        for a in settings.apps
    }
    shop_apis = {
        s.id: TemuShopApi(transports[s.app_key], s.id, s.access_token.get()) for s in settings.shops
    }
    return Runtime(
        settings=settings,
        pool=pool,
        store=Store(pool),
        session=session,
        stats=stats,
        counters=RunCounters(observer=observers.rows),
        pacers=pacers,
        transports=transports,
        shop_apis=shop_apis,
        embedded=embedded,
        observers=observers,
        database_url=url,
    )
