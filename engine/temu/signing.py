"""Temu Open API request signing (MD5 over the sorted, concatenated parameters).

The body is serialized once and exactly those bytes are sent: nested objects are signed in the
key order in which they are sent, so re-serializing after signing could break the signature.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import orjson


def _value_text(value: Any) -> str:
    # Compact JSON (orjson: ',' and ':', non-ASCII unescaped); a string keeps its JSON escapes
    # but loses its surrounding quotes, as Temu's reference signer does.
    text = orjson.dumps(value).decode("utf-8")
    if isinstance(value, str):
        return text[1:-1]
    return text


def sign(params: Mapping[str, Any], app_secret: str) -> str:
    """Upper-case hex MD5 of ``secret + k1 v1 k2 v2 ... + secret`` over every key but ``sign``."""
    parts = [app_secret]
    for key in sorted(k for k in params if k != "sign"):
        parts.append(key)
        parts.append(_value_text(params[key]))
    parts.append(app_secret)
    return hashlib.md5("".join(parts).encode("utf-8")).hexdigest().upper()


def signed_body(params: Mapping[str, Any], app_secret: str) -> bytes:
    """The JSON body to send: ``params`` plus ``sign``, serialized once."""
    body = dict(params)
    body["sign"] = sign(params, app_secret)
    return orjson.dumps(body)
