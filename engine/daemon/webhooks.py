"""The HTTP endpoint Temu POSTs webhook events to (interface.md "Webhooks").

Verify, store durably, answer: the only work on Temu's 500 ms clock is one INSERT with a short
deadline. The re-read an event asks for happens later, in the consumer (engine/sync/events.py).

Answers: bad signature or unknown app_key 401; a body that does not decrypt or parse, or is too
large, 400; neither stores anything. A well-signed event for an unknown mallId or for a code
not in ``events`` is 200 (so Temu stops retrying), logged, counted, ignored. An event without a
mallId (a shape temu-webhooks.md does not foresee) is stored for every shop of its app: a hint
for each to re-read its recent window. A stored event (or one already stored: a re-send) is
200. A database that cannot take the event in time is 503, so
Temu delivers it again later; so is an unknown mallId while a shop of that app has not been
tried yet (no token check answered or refused: it may be that shop's).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from typing import Protocol

from aiohttp import web

from engine.app.webhooks import MallNotKnownYet
from engine.store.events import INSERT_TIMEOUT_S, EventStore
from engine.temu.webhooks import Event, WebhookError, open_message

log = logging.getLogger(__name__)

DEFAULT_PATH = "/temu/events"
# An event is a few hundred bytes of ciphertext; anything far larger is not Temu's.
MAX_BODY = 64 * 1024

# Outcomes, as counted by the observer (and in /metrics).
STORED = "stored"
DUPLICATE = "duplicate"
BAD_SIGNATURE = "bad_signature"
BAD_BODY = "bad_body"
UNKNOWN_MALL = "unknown_mall"
MALL_NOT_YET = "mall_not_yet"
NOT_SUBSCRIBED = "not_subscribed"
STORE_FAILED = "store_failed"

# (app_key, mallId) -> the shops an event is for: the one that is that mall, every shop of the
# app for an event without a mallId, none when no configured shop is that mall; raises
# MallNotKnownYet when one of the app's shops may still be that mall (not tried yet).
ShopsFor = Callable[[str, int | None], Awaitable[Sequence[str]]]


class EventObserver(Protocol):
    def on_event(self, code: str, outcome: str) -> None: ...

    def on_answer(self, status: int, seconds: float) -> None:
        """Every answer of the route: its HTTP status and how long it took (Temu's 500 ms)."""


class _NoObserver:
    def on_event(self, code: str, outcome: str) -> None:
        pass

    def on_answer(self, status: int, seconds: float) -> None:
        pass


class WebhookReceiver:
    def __init__(
        self,
        *,
        apps: Mapping[str, str],
        shops_for: ShopsFor,
        events: Collection[str],
        store: EventStore,
        observer: EventObserver | None = None,
        on_stored: Callable[[], None] | None = None,
        insert_timeout_s: float = INSERT_TIMEOUT_S,
        max_body: int = MAX_BODY,
    ) -> None:
        self._apps = dict(apps)
        self._shops_for = shops_for
        self._events = frozenset(events)
        self._store = store
        self._observer = observer or _NoObserver()
        self._on_stored = on_stored
        self._insert_timeout_s = insert_timeout_s
        self._max_body = max_body

    async def handle(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        status = 500  # what aiohttp answers if anything below raises
        try:
            response = await self._handle(request)
            status = response.status
            return response
        finally:
            self._observer.on_answer(status, time.perf_counter() - started)

    async def _handle(self, request: web.Request) -> web.Response:
        code_header = request.headers.get("x-tm-event-code", "")
        if request.content_length is not None and request.content_length > self._max_body:
            return self._refuse(400, code_header, BAD_BODY, "body too large")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return self._refuse(400, code_header, BAD_BODY, "body too large")
        try:
            event = open_message(request.headers, body, self._apps)
        except WebhookError as exc:
            outcome = BAD_SIGNATURE if exc.status == 401 else BAD_BODY
            return self._refuse(exc.status, code_header, outcome, str(exc))
        return await self._accept(event)

    async def _accept(self, event: Event) -> web.Response:
        if event.code not in self._events:
            return self._ignore(event, NOT_SUBSCRIBED, "event code not in [webhooks] events")
        try:
            shops = await self._shops_for(event.app_key, event.mall_id)
        except MallNotKnownYet as exc:
            log.warning("webhook %s answered 503 so Temu retries: %s", event.code, exc)
            self._observer.on_event(event.code, MALL_NOT_YET)
            return web.Response(status=503, text="mallId not known yet, retry later\n")
        if not shops:
            why = (
                "no mallId, and the app has no shop"
                if event.mall_id is None
                else f"no configured shop is mallId {event.mall_id}"
            )
            return self._ignore(event, UNKNOWN_MALL, why)
        shop_id = ", ".join(shops)
        try:
            new = await self._store.insert_for(event, shops, timeout_s=self._insert_timeout_s)
        except Exception as exc:  # any database trouble: Temu must deliver it again
            log.warning(
                "webhook %s for shop %s not stored (%s): answering 503 so Temu retries",
                event.code,
                shop_id,
                type(exc).__name__,
                extra={"shop": shop_id},
            )
            self._observer.on_event(event.code, STORE_FAILED)
            return web.Response(status=503, text="event not stored, retry later\n")
        self._observer.on_event(event.code, STORED if new else DUPLICATE)
        if new and self._on_stored is not None:
            self._on_stored()
        log.debug("webhook %s stored for shop %s (new=%s)", event.code, shop_id, new)
        return web.Response(status=200, text="ok\n")

    def _ignore(self, event: Event, outcome: str, why: str) -> web.Response:
        log.info("webhook %s from app %s ignored: %s", event.code, event.app_key, why)
        self._observer.on_event(event.code, outcome)
        return web.Response(status=200, text="ignored\n")

    def _refuse(self, status: int, code: str, outcome: str, why: str) -> web.Response:
        # The code header is unverified input: it is logged only shortened and as a repr.
        shown = repr(code[:64])
        log.warning("webhook refused with %d: %s (event code %s)", status, why, shown)
        self._observer.on_event(code[:64] if code else "unknown", outcome)
        return web.Response(status=status, text=f"{why}\n")


def create_webhook_app(
    *,
    apps: Mapping[str, str],
    shops_for: ShopsFor,
    events: Collection[str],
    store: EventStore,
    observer: EventObserver | None = None,
    on_stored: Callable[[], None] | None = None,
    path: str = DEFAULT_PATH,
    insert_timeout_s: float = INSERT_TIMEOUT_S,
    max_body: int = MAX_BODY,
) -> web.Application:
    """The aiohttp application for ``[webhooks] listen``: one POST route at ``path``.

    ``apps``: app_key -> app_secret. ``on_stored``: called after each new event is stored
    (wakes the consumer). Serve it with ``web.AppRunner(app, handler_cancellation=False)`` so a
    client that hangs up does not cancel an INSERT half way."""
    receiver = WebhookReceiver(
        apps=apps,
        shops_for=shops_for,
        events=events,
        store=store,
        observer=observer,
        on_stored=on_stored,
        insert_timeout_s=insert_timeout_s,
        max_body=max_body,
    )
    # aiohttp's own limit sits above ours so an oversized body gets our 400, not its 413.
    app = web.Application(client_max_size=max_body + 1024)
    app.router.add_post(path, receiver.handle)
    return app
