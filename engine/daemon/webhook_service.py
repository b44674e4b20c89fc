"""The daemon's webhook side, started when ``[webhooks] enabled``: the receiver on its own
listener, the mallId map it reads, and the consumer that re-reads what events name."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection

from aiohttp import web

from engine.app.runtime import Runtime
from engine.app.webhooks import MallMap, build_consumer
from engine.daemon.deadline import run_with_deadline
from engine.daemon.health import HealthBoard
from engine.daemon.http import start_http
from engine.daemon.metrics import Metrics
from engine.daemon.supervisor import Supervisor
from engine.daemon.webhooks import create_webhook_app
from engine.errors import describe
from engine.store.events import EventStore
from engine.sync.events import ConsumerSettings
from engine.waits import within

log = logging.getLogger(__name__)

__all__ = ["NAME", "BoardWatch", "start_webhooks"]

NAME = "webhooks"  # the consumer's entry on the health board


class BoardWatch:
    """The consumer's passes on the health board, as the reconciler's are: a pass that fails,
    or makes no progress within the loop's stale limit (then it is cancelled), names
    ``webhooks`` in /healthz; events waiting on a broken consumer would otherwise only show in
    the log."""

    def __init__(self, board: HealthBoard, name: str = NAME) -> None:
        self._board = board
        self._name = name

    async def run(self, work: Awaitable[int]) -> int:
        return await run_with_deadline(
            work,
            idle_s=lambda: self._board.idle_s(self._name),
            limit_s=self._board.stale_after_s(self._name),
        )

    def progress(self) -> None:
        self._board.progress(self._name)

    def succeeded(self) -> None:
        self._board.succeeded(self._name)

    def failed(self, exc: BaseException) -> None:
        self._board.failed(self._name, describe(exc))


async def start_webhooks(
    rt: Runtime,
    *,
    supervisor: Supervisor,
    metrics: Metrics,
    owned_shops: Callable[[], Collection[str]],
    board: HealthBoard | None = None,
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
    watch = None
    if board is not None:
        # A pass runs at least every poll_s; one with nothing to do still reports progress.
        board.register(NAME, ConsumerSettings().poll_s, kind="webhooks")
        watch = BoardWatch(board)
    consumer = build_consumer(rt, store, observer=metrics, shop_ids=owned_shops, watch=watch)
    malls = MallMap(rt)
    try:
        await within(malls.refresh(), rt.settings.database.connect_timeout_s)
    except Exception as exc:
        # Not fatal: until the map loads, an event for an unknown mallId is 503 (Temu retries),
        # and the map's own loop tries again.
        log.warning("loading the mallId map failed: %s; retrying in the background", describe(exc))
    app = create_webhook_app(
        apps={a.app_key: a.app_secret.get() for a in rt.settings.apps},
        shops_for=malls,
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
