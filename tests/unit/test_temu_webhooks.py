"""Webhook wire format: the spec's own test vectors, reproduced exactly (temu-webhooks.md)."""

from __future__ import annotations

import orjson
import pytest

from engine.temu import webhooks as wh

SECRET = "12345678abcdefgh"
APP = "demo-test-app"
CODE = "bg_test_event"
TS = "1726127013525"
PLAIN = '{"orderSn":"XXYYZZ","status":1}'
CIPHER = "sQmNTAKR2o4HrmCO3OchFgGyJU5Qta57+JQxxgVyVPU="
WITH_EXT = "b5143d1a831453afbcf76d4621baa74a2dc07a486f26f5a956c6e50c61a338fb"
WITHOUT_EXT = "987875c01ea5c7f608502fb92e1de102c59e1c9195c010ab8a80bdb501a04fbc"


def test_decryption_vector() -> None:
    assert wh.decrypt_event_data(CIPHER, SECRET) == PLAIN
    assert wh.encrypt_event_data(PLAIN, SECRET) == CIPHER


def test_signed_string_and_both_signature_vectors() -> None:
    assert wh.signed_string(PLAIN, APP, CODE, TS, "{}") == (
        'eventData{"orderSn":"XXYYZZ","status":1}x-tm-app-keydemo-test-app'
        "x-tm-event-codebg_test_eventx-tm-ext-param{}x-tm-timestamp1726127013525"
    )
    assert wh.signature(SECRET, PLAIN, APP, CODE, TS, "{}") == WITH_EXT
    assert wh.signature(SECRET, PLAIN, APP, CODE, TS, None) == WITHOUT_EXT


@pytest.mark.parametrize("given", [WITH_EXT, WITHOUT_EXT, WITH_EXT.upper()])
def test_either_variant_verifies_when_ext_param_is_sent(given: str) -> None:
    assert wh.verify_signature(given, SECRET, PLAIN, APP, CODE, TS, "{}")


def test_absent_ext_param_only_verifies_the_variant_without_it() -> None:
    assert wh.verify_signature(WITHOUT_EXT, SECRET, PLAIN, APP, CODE, TS, None)
    assert not wh.verify_signature(WITH_EXT, SECRET, PLAIN, APP, CODE, TS, None)


def test_any_changed_field_fails_the_signature() -> None:
    assert not wh.verify_signature(WITHOUT_EXT, SECRET, PLAIN, APP, CODE, "1726127013526", None)
    assert not wh.verify_signature(WITHOUT_EXT, "12345678abcdefgX", PLAIN, APP, CODE, TS, None)
    assert not wh.verify_signature(WITHOUT_EXT, SECRET, PLAIN + " ", APP, CODE, TS, None)
    assert not wh.verify_signature("not-hex", SECRET, PLAIN, APP, CODE, TS, None)


def _headers(**over: str) -> dict[str, str]:
    h = {
        wh.APP_KEY: APP,
        wh.EVENT_CODE: CODE,
        wh.TIMESTAMP: TS,
        wh.SIGNATURE: WITHOUT_EXT,
        wh.EXT_PARAM: "{}",
    }
    h.update(over)
    return h


def test_open_message_accepts_the_docs_sample_request() -> None:
    event = wh.open_message(_headers(), orjson.dumps({"eventData": CIPHER}), {APP: SECRET})
    assert event.code == CODE
    assert event.order_sn == "XXYYZZ"
    assert event.raw == {"orderSn": "XXYYZZ", "status": 1}
    assert event.mall_id is None and event.update_time is None
    # A re-send (same message: same content and timestamp) keeps the key: it is stored once.
    again = wh.parse_event(PLAIN, code=CODE, app_key=APP, timestamp=TS)
    assert again.event_key == event.event_key
    # Another message with the same content (a later timestamp) is another change.
    later = wh.parse_event(PLAIN, code=CODE, app_key=APP, timestamp="1")
    assert later.event_key != event.event_key


@pytest.mark.parametrize(
    ("headers", "body", "error"),
    [
        (_headers(**{wh.APP_KEY: "other"}), {"eventData": CIPHER}, wh.BadSignature),
        (_headers(**{wh.SIGNATURE: "0" * 64}), {"eventData": CIPHER}, wh.BadSignature),
        (_headers(**{wh.SIGNATURE: ""}), {"eventData": CIPHER}, wh.BadSignature),
        (_headers(), {"eventData": "not base64!"}, wh.UndecryptablePayload),
        (_headers(), {"eventData": "AAAA"}, wh.UndecryptablePayload),
        (_headers(), {"nothing": 1}, wh.UnparsableEvent),
        (_headers(), [1, 2], wh.UnparsableEvent),
    ],
)
def test_bad_messages_are_refused(
    headers: dict[str, str], body: object, error: type[wh.WebhookError]
) -> None:
    with pytest.raises(error):
        wh.open_message(headers, orjson.dumps(body), {APP: SECRET})


def test_wrong_secret_does_not_decrypt_or_verify() -> None:
    with pytest.raises(wh.WebhookError):
        wh.open_message(_headers(), orjson.dumps({"eventData": CIPHER}), {APP: "x" * 40})


def test_parse_event_fields_and_units() -> None:
    text = (
        '{"mallId": 634418212345, "parentOrderSn": "PO-1", "orderSn": "1-01",'
        ' "updateTime": 1726127013525, "extra": {"a": 1}}'
    )
    e = wh.parse_event(text, code=wh.ORDER_STATUS, app_key=APP)
    assert (e.mall_id, e.parent_order_sn, e.order_sn) == (634418212345, "PO-1", "1-01")
    assert e.update_time == 1726127013  # milliseconds read as seconds
    assert e.raw["extra"] == {"a": 1}
    r = wh.parse_event('{"mallId": "7", "parentAfterSalesSn": "PA-1"}', code="x", app_key=APP)
    assert (r.mall_id, r.parent_after_sales_sn, r.update_time) == (7, "PA-1", None)
    # temu-webhooks.md: an unknown shape is a hint for a wider re-read, never an error.
    odd = wh.parse_event("[1, 2]", code=wh.ORDER_STATUS, app_key=APP)
    assert (odd.mall_id, odd.parent_order_sn, odd.update_time) == (None, None, None)
    assert odd.raw == {"eventData": [1, 2]}
    # Not JSON at all (it decrypted and its signature matched): the same hint, text kept.
    text_only = wh.parse_event("{", code="x", app_key=APP)
    assert (text_only.mall_id, text_only.raw) == (None, {"eventData": "{"})
