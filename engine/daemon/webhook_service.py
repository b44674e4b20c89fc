"""The daemon's webhook side, started when ``[webhooks] enabled``: the receiver on its own
listener, the mallId map it reads, and the consumer that re-reads what events name."""

from __future__ import annotations

from collections.abc import Callable, Collection

from aiohttp import web

from engine.app.runtime import Runtime
from engine.app.webhooks import MallMap, build_consumer
from engine.daemon.http import start_http
from engine.daemon.metrics import Metrics
from engine.daemon.supervisor import Supervisor
from engine.daemon.webhooks import create_webhook_app
from engine.store.events import EventStore

__all__ = ["start_webhooks"]


async def start_webhooks(
    rt: Runtime,
    *,
    supervisor: Supervisor,
    metrics: Metrics,
    owned_shops: Callable[[], Collection[str]],
) -> web.AppRunner | None:
    """Starts both halves; returns the receiver's runner (None when webhooks are off).

    Every daemon of a cluster receives (Temu posts wherever the proxy sends it, and any
    daemon can store an event durably) but the consumer only claims events of the shops whose
    app leases this process holds at that moment (``owned_shops``, asked before each claim),
    so a re-read always goes through the pacer of the app's owner."""
    cfg = rt.settings.webhooks
    if not cfg.enabled:
        return None
    store = EventStore(rt.pool)
    consumer = build_consumer(rt, store, observer=metrics, shop_ids=owned_shops)
    malls = MallMap(rt)
    await malls.refresh()
    app = create_webhook_app(
        apps={a.app_key: a.app_secret.get() for a in rt.settings.apps},
        shop_for_mall=malls,
        events=cfg.events,
        store=store,
        observer=metrics,
        on_stored=consumer.wake,
        path=cfg.path,
    )
    runner = await start_http(app, cfg.listen, handler_cancellation=False)
    supervisor.start("webhooks:malls", malls.run)
    supervisor.start("webhooks", consumer.run)
    return runner
