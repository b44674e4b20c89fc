"""Temu request signature check, written from temu-api.md and the partner docs' TestSign.py.

Deliberately independent of the client's signer (stdlib ``json``, not orjson) so that a
misreading of the spec on either side shows up as a rejected request instead of agreeing bugs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any


def _value_text(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    if isinstance(value, str):
        # The spec: the JSON text of a string loses its surrounding quotes; escapes inside stay.
        return text[1:-1]
    return text


def expected_sign(params: Mapping[str, Any], app_secret: str) -> str:
    """MD5 of secret + key1 value1 key2 value2 ... + secret over every key but ``sign``, upper hex.

    ``params`` must be the body as parsed, in received order: nested objects are serialized in
    that order, which is what the client signed.
    """
    pieces = [app_secret]
    for key in sorted(k for k in params if k != "sign"):
        pieces.append(key)
        pieces.append(_value_text(params[key]))
    pieces.append(app_secret)
    return hashlib.md5("".join(pieces).encode("utf-8")).hexdigest().upper()


def sign_matches(params: Mapping[str, Any], app_secret: str) -> bool:
    given = params.get("sign")
    # Exact match: the spec says upper-case hex, and a client sending lower case is wrong.
    return isinstance(given, str) and given == expected_sign(params, app_secret)
