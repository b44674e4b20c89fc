"""Assembly of the webhook pieces from a Runtime: the mallId -> shop map (from the access-token
checks), the event store and the consumer that turns stored events into targeted re-reads."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Collection

from engine.app.runtime import Runtime
from engine.errors import describe
from engine.retry import sleep_or_stop
from engine.store.events import EventStore
from engine.store.token_checks import TokenChecks
from engine.sync.events import (
    ConsumerObserver,
    ConsumerSettings,
    EventConsumer,
    PassWatch,
    event_shop,
)
from engine.waits import within

log = logging.getLogger(__name__)

__all__ = ["MallMap", "MallNotKnownYet", "build_consumer"]


class MallNotKnownYet(Exception):
    """An event's mallId matches no shop yet, but some shop of its app has not been tried yet
    (no token check answered or refused: its first pass has not run): the event may well be
    that shop's, so it must not be acknowledged and dropped; Temu delivers it again later
    (503)."""


class MallMap:
    """(app_key, mallId) -> shop id, from each shop's last ``bg.open.accesstoken.info.get``
    answer (kept in ``token_checks``). Refreshed every ``every_s`` and, at most every
    ``miss_refresh_s``, when an event names a mallId not in the map (a shop's first check comes
    with its first pass, after the daemon started), within ``miss_timeout_s`` since the
    receiver answers on Temu's 500 ms clock.

    A shop counts as tried once its check was answered (``token_checks``) or refused for its
    current token (``token_check_failures``: revoked, expired...): a mallId unknown once every
    shop of the app is tried is no shop's. The checks come with each pass of the app's owner,
    so the untried window after start-up lasts until each shop's first pass reaches Temu."""

    def __init__(
        self,
        rt: Runtime,
        *,
        every_s: float = 60.0,
        miss_refresh_s: float = 1.0,
        miss_timeout_s: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._rt = rt
        self._every = every_s
        self._miss_refresh_s = miss_refresh_s
        self._miss_timeout_s = miss_timeout_s
        self._clock = clock
        self._map: dict[tuple[str, int], str] = {}
        # app_key -> shops with no check answered/refused. Until a refresh succeeds nothing is
        # known to have been tried: an unknown mallId is then 503, never acknowledged and lost.
        self._untried = self._untried_of(tried=set())
        self._refreshed_at = -math.inf
        self._lock = asyncio.Lock()

    async def __call__(self, app_key: str, mall_id: int | None) -> list[str]:
        """The shops an event is for: the one that is that mall; none when no configured shop
        is. Raises MallNotKnownYet when a shop of the app may still turn out to be it. An
        event without a mallId (a shape the spec did not foresee, a hint for a wider re-read)
        is for every shop of its app: which one it meant cannot be told."""
        if mall_id is None:
            return [s.id for s in self._rt.settings.shops if s.app_key == app_key]
        key = (app_key, int(mall_id))
        shop = self._map.get(key)
        if shop is not None:
            return [shop]
        async with self._lock:  # one refresh for a burst of misses
            if self._clock() - self._refreshed_at >= self._miss_refresh_s:
                try:
                    await within(self.refresh(), self._miss_timeout_s)
                except Exception as exc:  # keep the map we have; the answer says what to do
                    log.warning("refreshing the mallId map failed: %s", describe(exc))
                    self._refreshed_at = self._clock()
        shop = self._map.get(key)
        if shop is None and self._untried.get(app_key):
            raise MallNotKnownYet(
                f"mallId {mall_id} unknown while shop(s) of app {app_key} have not had a "
                "token check yet"
            )
        return [] if shop is None else [shop]

    async def refresh(self) -> None:
        app_of = {s.id: s.app_key for s in self._rt.settings.shops}
        checks = TokenChecks(self._rt.pool)
        fresh: dict[tuple[str, int], str] = {}
        tried: set[str] = set()
        for check in await checks.all():
            tried.add(check.shop_id)  # answered, with or without a mallId
            app = app_of.get(check.shop_id)
            if app is not None and check.mall_id is not None and str(check.mall_id).isdigit():
                fresh[(app, int(check.mall_id))] = check.shop_id
        apis = self._rt.shop_apis
        for failure in await checks.failures():
            api = apis.get(failure.shop_id)
            # A refusal of a token since replaced in config.toml says nothing of the new one.
            if api is not None and failure.token_sha256 == api.token_fingerprint:
                tried.add(failure.shop_id)
        self._map, self._untried = fresh, self._untried_of(tried)
        self._refreshed_at = self._clock()

    def _untried_of(self, tried: set[str]) -> dict[str, set[str]]:
        """app_key -> its configured shops not in ``tried``."""
        untried: dict[str, set[str]] = {}
        for shop in self._rt.settings.shops:
            if shop.id not in tried:
                untried.setdefault(shop.app_key, set()).add(shop.id)
        return untried

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.refresh()
            except Exception as exc:  # the next round tries again; events wait in the meantime
                log.warning("refreshing the mallId map failed: %s", describe(exc))
            if await sleep_or_stop(stop, self._every):
                return


def build_consumer(
    rt: Runtime,
    store: EventStore,
    *,
    observer: ConsumerObserver | None = None,
    shop_ids: Collection[str] | Callable[[], Collection[str]] | None = None,
    watch: PassWatch | None = None,
) -> EventConsumer:
    """``shop_ids``: the shops whose events this consumer claims (a callable is asked before
    every claim, so the set follows the app leases); None: every configured shop."""
    sync = rt.settings.sync
    shops = [
        event_shop(
            s.id,
            rt.shop_apis[s.id],
            rt.store,
            rt.counters,
            orders=sync.orders,
            returns=sync.returns,
            orders_page_size=sync.orders_page_size,
            returns_page_size=sync.returns_page_size,
        )
        for s in rt.settings.shops
    ]
    return EventConsumer(
        events=store,
        shops=shops,
        settings=ConsumerSettings(recent_s=sync.overlap_s),
        observer=observer,
        shop_ids=shop_ids,
        watch=watch,
    )
