"""Temu webhook messages on the wire: signature check, payload decryption, event parsing.

temu-webhooks.md: ``eventData`` is AES-128-CBC/PKCS5 (key = IV = the first 16 bytes of the app
secret), base64. The signature is hex HMAC-SHA256 (keyed with the app secret) over the sorted
pairs name + value with no separators, ``eventData`` taken DECRYPTED. Temu's own examples
disagree on whether ``x-tm-ext-param`` is signed, so both variants are accepted.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

APP_KEY = "x-tm-app-key"
EVENT_CODE = "x-tm-event-code"
TIMESTAMP = "x-tm-timestamp"
SIGNATURE = "x-tm-signature"
EXT_PARAM = "x-tm-ext-param"

ORDER_STATUS = "bg_order_status_change_event"
AFTERSALES_STATUS = "bg_aftersales_status_change"
CANCEL_ORDER_STATUS = "bg_cancel_order_status_change"
ADDRESS_CHANGED = "bg_trade_logistics_address_changed"
TEST_EVENT = "bg_open_event_test"
KNOWN_CODES = (ORDER_STATUS, AFTERSALES_STATUS, CANCEL_ORDER_STATUS, ADDRESS_CHANGED, TEST_EVENT)

# Anything above this is a millisecond timestamp, not seconds (year 5138 in seconds).
_MS_THRESHOLD = 100_000_000_000


class WebhookError(Exception):
    """A message that is not a valid Temu event; ``status`` is the HTTP answer it deserves."""

    status = 400


class BadSignature(WebhookError):
    status = 401


class UndecryptablePayload(WebhookError):
    pass


class UnparsableEvent(WebhookError):
    pass


def _key(app_secret: str) -> bytes:
    key = app_secret.encode("utf-8")[:16]
    if len(key) != 16:
        # Temu secrets are 40 hex characters; a shorter one cannot key AES-128.
        raise UndecryptablePayload("the app secret is shorter than 16 bytes")
    return key


def decrypt_event_data(event_data: str, app_secret: str) -> str:
    """The decrypted ``eventData`` text (UTF-8 JSON)."""
    key = _key(app_secret)
    try:
        raw = base64.b64decode(event_data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise UndecryptablePayload("eventData is not base64") from exc
    if not raw or len(raw) % 16:
        raise UndecryptablePayload("eventData is not a whole number of AES blocks")
    decryptor = Cipher(algorithms.AES(key), modes.CBC(key)).decryptor()
    padded = decryptor.update(raw) + decryptor.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    try:
        plain = unpadder.update(padded) + unpadder.finalize()
        return plain.decode("utf-8")
    except (ValueError, UnicodeDecodeError) as exc:
        raise UndecryptablePayload("eventData does not decrypt with this app's secret") from exc


def encrypt_event_data(plain: str, app_secret: str) -> str:
    """The inverse of ``decrypt_event_data`` (tests and tools)."""
    key = _key(app_secret)
    padder = padding.PKCS7(128).padder()
    padded = padder.update(plain.encode("utf-8")) + padder.finalize()
    encryptor = Cipher(algorithms.AES(key), modes.CBC(key)).encryptor()
    return base64.b64encode(encryptor.update(padded) + encryptor.finalize()).decode("ascii")


def signed_string(
    decrypted: str, app_key: str, event_code: str, timestamp: str, ext_param: str | None
) -> str:
    pairs = {
        "eventData": decrypted,
        APP_KEY: app_key,
        EVENT_CODE: event_code,
        TIMESTAMP: timestamp,
    }
    if ext_param is not None:
        pairs[EXT_PARAM] = ext_param
    return "".join(name + pairs[name] for name in sorted(pairs))


def signature(
    app_secret: str,
    decrypted: str,
    app_key: str,
    event_code: str,
    timestamp: str,
    ext_param: str | None,
) -> str:
    text = signed_string(decrypted, app_key, event_code, timestamp, ext_param)
    return hmac.new(app_secret.encode("utf-8"), text.encode("utf-8"), hashlib.sha256).hexdigest()


def verify_signature(
    given: str,
    app_secret: str,
    decrypted: str,
    app_key: str,
    event_code: str,
    timestamp: str,
    ext_param: str | None,
) -> bool:
    """True when ``given`` matches the signature with or without ``x-tm-ext-param``."""
    given_b = given.strip().lower().encode("ascii", "replace")
    variants = [None] if ext_param is None else [ext_param, None]
    ok = False
    for ext in variants:
        want = signature(app_secret, decrypted, app_key, event_code, timestamp, ext)
        # Every variant is compared (no early exit) so timing says nothing about which matched.
        ok |= hmac.compare_digest(given_b, want.encode("ascii"))
    return ok


@dataclass(frozen=True)
class Event:
    """One verified, decrypted event. ``raw`` is the decrypted object exactly as sent."""

    code: str
    app_key: str
    timestamp_ms: int | None
    mall_id: int | None
    parent_order_sn: str | None
    order_sn: str | None
    parent_after_sales_sn: str | None
    update_time: int | None  # Unix seconds
    raw: dict[str, Any] = field(repr=False)
    decrypted: str = field(repr=False, default="")

    @property
    def event_key(self) -> str:
        """Stable across Temu's re-sends of one message, which keep its x-tm-timestamp
        (temu-webhooks.md). The timestamp is part of it: two messages with the same content
        (an event shape without a time of its own, say) are two changes, each a re-read."""
        h = hashlib.sha256()
        stamp = "" if self.timestamp_ms is None else str(self.timestamp_ms)
        for part in (self.app_key, self.code, stamp, self.decrypted):
            h.update(part.encode("utf-8"))
            h.update(b"\0")
        return h.hexdigest()


def _opt_str(raw: Mapping[str, Any], name: str) -> str | None:
    value = raw.get(name)
    if isinstance(value, str) and value:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _opt_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def parse_event(decrypted: str, *, code: str, app_key: str, timestamp: str | None = None) -> Event:
    """Parses the decrypted payload; unknown fields are kept in ``raw``, missing ones are None.

    temu-webhooks.md: an unknown shape is a hint for a wider re-read, never an error. A payload
    that is not an object (not even JSON: it decrypted and its signature matched, so it is
    Temu's) is kept as ``{"eventData": ...}``: no identifiers and no mallId, so every shop of
    the app re-reads its recent window."""
    try:
        raw = orjson.loads(decrypted)
    except orjson.JSONDecodeError:
        raw = decrypted
    if not isinstance(raw, dict):
        raw = {"eventData": raw}
    update = _opt_int(raw.get("updateTime"))
    if update is None:
        update = _opt_int(raw.get("updateAt"))
    if update is not None and update > _MS_THRESHOLD:
        update //= 1000  # the spec assumes seconds; a millisecond value is not misread
    return Event(
        code=code,
        app_key=app_key,
        timestamp_ms=_opt_int(timestamp),
        mall_id=_opt_int(raw.get("mallId")),
        parent_order_sn=_opt_str(raw, "parentOrderSn"),
        order_sn=_opt_str(raw, "orderSn"),
        parent_after_sales_sn=_opt_str(raw, "parentAfterSalesSn"),
        update_time=update,
        raw=raw,
        decrypted=decrypted,
    )


def open_message(headers: Mapping[str, str], body: bytes, secrets: Mapping[str, str]) -> Event:
    """Verifies and decodes one POST. ``secrets``: app_key -> app_secret.

    Raises BadSignature (unknown app, missing headers, wrong signature) or another
    WebhookError (body unusable). Messages name no secret and no payload content.
    """
    app_key = headers.get(APP_KEY, "")
    secret = secrets.get(app_key) if app_key else None
    if secret is None:
        raise BadSignature("unknown or missing x-tm-app-key")
    code = headers.get(EVENT_CODE)
    timestamp = headers.get(TIMESTAMP)
    given = headers.get(SIGNATURE)
    if not code or not timestamp or not given:
        raise BadSignature("x-tm-event-code, x-tm-timestamp or x-tm-signature missing")
    try:
        envelope = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise UnparsableEvent("body is not JSON") from exc
    event_data = envelope.get("eventData") if isinstance(envelope, dict) else None
    if not isinstance(event_data, str) or not event_data:
        raise UnparsableEvent("body has no eventData string")
    decrypted = decrypt_event_data(event_data, secret)
    if not verify_signature(
        given, secret, decrypted, app_key, code, timestamp, headers.get(EXT_PARAM)
    ):
        raise BadSignature("signature does not match")
    return parse_event(decrypted, code=code, app_key=app_key, timestamp=timestamp)
