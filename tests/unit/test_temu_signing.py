"""The spec's signature vector, and that the body sent is exactly what was signed."""

from __future__ import annotations

import hashlib

import orjson

from engine.temu.signing import sign, signed_body

SECRET = "c7e0a1a63542be4de3cb5488f9fba8149e8fc290"
VECTOR = {
    "access_token": "2nifvmpyymvypwmcms5ct4uqqudrwgpmzbcnmkt1jzjkuaf3x56iixym",
    "app_key": "f9d5cc9313893a20d5aa85c654e8f503",
    "data_type": "JSON",
    "sendType": 0,
    "timestamp": 1711009072,
    "type": "bg.logistics.shipment.confirm",
    "sendRequestList": [
        {
            "orderSendInfoList": [
                {
                    "quantity": 1,
                    "orderSn": "211-21905473070712792",
                    "parentOrderSn": "PO-211-21905452099192792",
                    "goodsId": 601099548666279,
                    "skuId": 17592352673534,
                }
            ],
            "carrierId": "699272611",
            "trackingNumber": "270324232756",
        }
    ],
}


def test_spec_vector() -> None:
    assert sign(VECTOR, SECRET) == "4CCF219942D4180C6DDA3CE36C1B838F"


def test_nested_key_order_changes_the_signature() -> None:
    # Proves the vector test is sensitive to the sent key order inside nested objects.
    reordered = dict(VECTOR)
    line = dict(VECTOR["sendRequestList"][0])  # type: ignore[index]
    reordered["sendRequestList"] = [dict(reversed(list(line.items())))]
    assert sign(reordered, SECRET) != "4CCF219942D4180C6DDA3CE36C1B838F"


def test_signed_body_is_flat_and_verifiable() -> None:
    body = orjson.loads(signed_body(VECTOR, SECRET))
    assert body["sign"] == "4CCF219942D4180C6DDA3CE36C1B838F"
    assert {k: v for k, v in body.items() if k != "sign"} == VECTOR
    # Recompute independently of engine code from the parsed body.
    text = SECRET
    for key in sorted(k for k in body if k != "sign"):
        value = body[key]
        text += key + (value if isinstance(value, str) else orjson.dumps(value).decode())
    text += SECRET
    assert hashlib.md5(text.encode()).hexdigest().upper() == body["sign"]
