"""Temu's webhook side: event delivery for the changes the simulator makes, and
``bg.tmc.message.update`` (subscriptions).

Written from temu-webhooks.md, independently of engine.temu (stdlib hmac/json and the
cryptography package), so the two sides cannot share a misreading. Delivery follows Temu's
rules: an answer other than 200 within 500 ms is a failure, retried after 2 min, 10 min,
30 min, 1 h, 1 h, 1 h, 12 h, 12 h (times ``retry_scale``, so tests take seconds), then dropped.
Knobs: occasional duplicates (the same message re-sent), forged messages (a wrong
signature), to check that a receiver ignores those, and lost acknowledgements (the receiver's
200 came too late or never arrived: Temu counts the delivery as failed and re-sends the same
message on its retry schedule, although the receiver has it).
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import hashlib
import hmac
import json
import logging
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from engine.sim.codes import ApiError

log = logging.getLogger(__name__)

TMC_UPDATE = "bg.tmc.message.update"
TMC_TOO_FAST = 110020007
TMC_TOKEN_NOT_AUTHORIZED = 110020008
TMC_APP_NOT_APPROVED = 110020009
TMC_MESSAGES = {
    TMC_TOO_FAST: "request too frequently, at most 1 request per second",
    TMC_TOKEN_NOT_AUTHORIZED: "access token has no permission for the event",
    TMC_APP_NOT_APPROVED: "app has no approved subscription for the event",
}

ORDER_STATUS = "bg_order_status_change_event"
CANCEL_ORDER_STATUS = "bg_cancel_order_status_change"
AFTERSALES_STATUS = "bg_aftersales_status_change"
ADDRESS_CHANGED = "bg_trade_logistics_address_changed"
TEST_EVENT = "bg_open_event_test"
EVENT_CODES = (ORDER_STATUS, CANCEL_ORDER_STATUS, AFTERSALES_STATUS, ADDRESS_CHANGED, TEST_EVENT)
MAX_CODES_PER_CALL = 20

RETRY_DELAYS_S = (120, 600, 1800, 3600, 3600, 3600, 43200, 43200)
ACK_DEADLINE_S = 0.5
_ORDER_CANCELLED = 3


def encrypt(plain: str, app_secret: str) -> str:
    """AES-128-CBC, PKCS5 padding, key = IV = the secret's first 16 UTF-8 bytes; base64."""
    key = app_secret.encode("utf-8")[:16]
    if len(key) < 16:
        raise ValueError("webhook delivery needs an app secret of at least 16 bytes (Temu: 40 hex)")
    padder = padding.PKCS7(128).padder()
    data = padder.update(plain.encode("utf-8")) + padder.finalize()
    enc = Cipher(algorithms.AES(key), modes.CBC(key)).encryptor()
    return base64.b64encode(enc.update(data) + enc.finalize()).decode("ascii")


def sign(app_secret: str, headers: Mapping[str, str], plain: str, *, with_ext: bool) -> str:
    """Hex HMAC-SHA256 over name+value pairs sorted by name (eventData decrypted)."""
    pairs = {k: v for k, v in headers.items() if k.startswith("x-tm-") and k != "x-tm-signature"}
    if not with_ext:
        pairs.pop("x-tm-ext-param", None)
    pairs["eventData"] = plain
    text = "".join(k + pairs[k] for k in sorted(pairs))
    return hmac.new(app_secret.encode(), text.encode(), hashlib.sha256).hexdigest()


@dataclass
class _Message:
    url: str
    headers: dict[str, str]
    body: bytes
    attempt: int = 0


class WebhookSender:
    """Turns world changes into event POSTs once ``configure``d with a callback URL."""

    def __init__(
        self,
        app_secrets: Mapping[str, str],
        shop_apps: Mapping[str, str],
        mall_ids: dict[str, int],
    ) -> None:
        self._secrets = dict(app_secrets)
        self._shop_apps = dict(shop_apps)  # shop_id -> app_key
        self.url: str | None = None
        # The world's own map (shared, not copied): the token info answer shows the same ids.
        self.mall_ids = mall_ids
        self.retry_scale = 1.0
        self.duplicate_rate = 0.0
        self.forge_rate = 0.0
        self.lost_ack_rate = 0.0
        self.ext_param: str | None = "{}"
        self.sign_with_ext = False  # the docs' sample request signs without x-tm-ext-param
        self.require_subscription = True
        self.approved: set[str] = set(EVENT_CODES)  # codes the app's subscription covers
        self.denied_tokens: set[str] = set()  # tokens the seller did not authorize events for
        self.subscriptions: dict[str, set[str]] = collections.defaultdict(set)  # shop -> codes
        self._last_tmc: dict[str, float] = {}
        self._rng = random.Random(7)
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None
        self.counts: collections.Counter[str] = collections.Counter()

    def configure(
        self,
        url: str | None,
        *,
        mall_ids: Mapping[str, int] | None = None,
        retry_scale: float | None = None,
        duplicate_rate: float | None = None,
        forge_rate: float | None = None,
        lost_ack_rate: float | None = None,
        require_subscription: bool | None = None,
        seed: int | None = None,
    ) -> None:
        for app, secret in self._secrets.items():
            if url and len(secret.encode()) < 16:
                raise ValueError(f"app {app}: webhooks need an app secret of at least 16 bytes")
        self.url = url
        if mall_ids is not None:
            self.mall_ids.update(mall_ids)
        if retry_scale is not None:
            self.retry_scale = retry_scale
        if duplicate_rate is not None:
            self.duplicate_rate = duplicate_rate
        if forge_rate is not None:
            self.forge_rate = forge_rate
        if lost_ack_rate is not None:
            self.lost_ack_rate = lost_ack_rate
        if require_subscription is not None:
            self.require_subscription = require_subscription
        if seed is not None:
            self._rng = random.Random(seed)

    # -- world hooks ------------------------------------------------------------------------
    def order_changed(self, shop_id: str, item: Mapping[str, Any]) -> None:
        parent = item["parentOrderMap"]
        lines = item.get("orderList") or []
        code = (
            CANCEL_ORDER_STATUS if parent["parentOrderStatus"] == _ORDER_CANCELLED else ORDER_STATUS
        )
        payload = {
            "mallId": self.mall_ids.get(shop_id),
            "parentOrderSn": parent["parentOrderSn"],
            "orderSn": lines[0]["orderSn"] if lines else None,
            "orderStatus": parent["parentOrderStatus"],
            "updateTime": parent["updateTime"],
        }
        self.emit(shop_id, code, payload)

    def return_changed(self, shop_id: str, item: Mapping[str, Any]) -> None:
        payload = {
            "mallId": self.mall_ids.get(shop_id),
            "parentAfterSalesSn": item["parentAfterSalesSn"],
            "parentOrderSn": item["parentOrderSn"],
            "afterSalesStatus": item["parentAfterSalesStatus"],
            # temu-api.md: this event's updateAt is in milliseconds (the list's is seconds).
            "updateAt": item["updateAt"] * 1000,
        }
        self.emit(shop_id, AFTERSALES_STATUS, payload)

    def emit(self, shop_id: str, code: str, payload: Mapping[str, Any]) -> None:
        if not self.url:
            return
        if self.require_subscription and code not in self.subscriptions.get(shop_id, ()):
            self.counts["unsubscribed"] += 1
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # changed outside the server's loop (generation): nobody to tell
        app_key = self._shop_apps[shop_id]
        secret = self._secrets[app_key]
        self.counts["events"] += 1  # originals; duplicates, forgeries and retries are extra
        plain = json.dumps(payload, separators=(",", ":"))
        headers = {
            "x-tm-app-key": app_key,
            "x-tm-event-code": code,
            "x-tm-timestamp": str(int(time.time() * 1000)),
        }
        if self.ext_param is not None:
            headers["x-tm-ext-param"] = self.ext_param
        headers["x-tm-signature"] = sign(secret, headers, plain, with_ext=self.sign_with_ext)
        body = json.dumps({"eventData": encrypt(plain, secret)}).encode()
        self._spawn(loop, self._deliver(_Message(self.url, headers, body)))
        if self._rng.random() < self.duplicate_rate:
            self.counts["duplicates"] += 1
            self._spawn(loop, self._deliver(_Message(self.url, dict(headers), body)))
        if self._rng.random() < self.forge_rate:
            forged = dict(headers)
            forged["x-tm-signature"] = sign("forged" + secret, headers, plain, with_ext=False)
            self.counts["forged"] += 1
            self._spawn(loop, self._post_once(_Message(self.url, forged, body)))

    # -- delivery ---------------------------------------------------------------------------
    def _spawn(self, loop: asyncio.AbstractEventLoop, coro: Any) -> None:
        task = loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _post_once(self, msg: _Message) -> bool:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        self.counts["posts"] += 1
        headers = {**msg.headers, "Content-Type": "application/json"}
        try:
            async with asyncio.timeout(ACK_DEADLINE_S):
                async with self._session.post(msg.url, data=msg.body, headers=headers) as resp:
                    await resp.read()
                    self.counts[f"http_{resp.status}"] += 1
                    return resp.status == 200
        except (TimeoutError, aiohttp.ClientError):
            self.counts["no_answer"] += 1
            return False

    def _ack_lost(self, msg: _Message) -> bool:
        """lost_ack_rate: the receiver's 200 never reached Temu in time (a retry follows)."""
        if msg.attempt >= len(RETRY_DELAYS_S) or self.lost_ack_rate <= 0:
            return False
        if self._rng.random() >= self.lost_ack_rate:
            return False
        self.counts["lost_acks"] += 1
        return True

    async def _deliver(self, msg: _Message) -> None:
        while True:
            if await self._post_once(msg) and not self._ack_lost(msg):
                self.counts["delivered"] += 1
                return
            if msg.attempt >= len(RETRY_DELAYS_S):
                self.counts["dropped"] += 1
                return
            self.counts["retries"] += 1
            await asyncio.sleep(RETRY_DELAYS_S[msg.attempt] * self.retry_scale)
            msg.attempt += 1

    async def drain(self, timeout_s: float = 10.0) -> None:
        """Waits until every delivery (with its retries) finished."""
        async with asyncio.timeout(timeout_s):
            while self._tasks:
                await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- bg.tmc.message.update ---------------------------------------------------------------
    def tmc_update(self, shop_id: str, app_key: str, token: str, params: Mapping[str, Any]) -> Any:
        now = time.monotonic()
        last = self._last_tmc.get(app_key)
        if last is not None and now - last < 1.0:
            raise ApiError(TMC_TOO_FAST, TMC_MESSAGES[TMC_TOO_FAST])
        self._last_tmc[app_key] = now
        permit = _codes(params, "permitEventCodeList")
        cancel = _codes(params, "cancelEventCodeList")
        if not permit and not cancel:
            raise ApiError(3000000, "permitEventCodeList or cancelEventCodeList is required")
        for code in permit:
            if code not in self.approved:
                raise ApiError(
                    TMC_APP_NOT_APPROVED, f"{TMC_MESSAGES[TMC_APP_NOT_APPROVED]}: {code}"
                )
            if token in self.denied_tokens:
                raise ApiError(
                    TMC_TOKEN_NOT_AUTHORIZED, f"{TMC_MESSAGES[TMC_TOKEN_NOT_AUTHORIZED]}: {code}"
                )
        subs = self.subscriptions[shop_id]
        subs.update(permit)
        subs.difference_update(cancel)
        return {"eventCodeList": sorted(subs)}


def _codes(params: Mapping[str, Any], name: str) -> list[str]:
    value = params.get(name)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(c, str) and c for c in value):
        raise ApiError(3000000, f"{name} must be a list of event codes")
    if len(value) > MAX_CODES_PER_CALL:
        raise ApiError(3000000, f"{name} holds more than {MAX_CODES_PER_CALL} codes")
    return list(value)


def tmc_handlers(sender: WebhookSender) -> dict[str, Any]:
    """The Temu API types this module answers, for the router's handler table."""

    def update(call: Any) -> Any:
        shop = call.shop.shop
        return sender.tmc_update(shop.shop_id, shop.app_key, shop.access_token, call.params)

    return {TMC_UPDATE: update}
