"""Assembly of the webhook pieces from a Runtime: the mallId -> shop map (from the access-token
checks), the event store and the consumer that turns stored events into targeted re-reads."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection

from engine.app.runtime import Runtime
from engine.errors import describe
from engine.retry import sleep_or_stop
from engine.store.events import EventStore
from engine.store.token_checks import TokenChecks
from engine.sync.events import ConsumerObserver, ConsumerSettings, EventConsumer, event_shop

log = logging.getLogger(__name__)

__all__ = ["MallMap", "build_consumer"]


class MallMap:
    """(app_key, mallId) -> shop id, from each shop's last ``bg.open.accesstoken.info.get``
    answer (kept in ``token_checks``); refreshed while the daemon runs, since a shop's first
    check comes with its first pass."""

    def __init__(self, rt: Runtime, *, every_s: float = 60.0) -> None:
        self._rt = rt
        self._every = every_s
        self._map: dict[tuple[str, int], str] = {}

    def __call__(self, app_key: str, mall_id: int) -> str | None:
        return self._map.get((app_key, int(mall_id)))

    async def refresh(self) -> None:
        app_of = {s.id: s.app_key for s in self._rt.settings.shops}
        fresh: dict[tuple[str, int], str] = {}
        for check in await TokenChecks(self._rt.pool).all():
            app = app_of.get(check.shop_id)
            if app is not None and check.mall_id is not None and str(check.mall_id).isdigit():
                fresh[(app, int(check.mall_id))] = check.shop_id
        self._map = fresh

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
    )
