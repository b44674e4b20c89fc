"""changed_fields computed in the engine, from the stored record and the one just parsed.

Postgres computing them (``jsonb_changed_keys``, a set-returning join per row) was about half
of an all-changed page's server time. Here a key is changed when its values differ as jsonb
values would: Python's ``==`` is right except that it calls ``True`` equal to ``1`` (checked
by type at the top, by the canonical bytes inside containers) and cannot compare the tolerant
decoder's number fragments or text whose U+0000 was replaced on the way to Postgres (the
caller rules those records out with ``plain``). Whenever a doubt remains the answer is None
and the statement computes the fields itself, so the result is always what
``jsonb_changed_keys`` says.
"""

from __future__ import annotations

from typing import Any

import orjson

# What the tolerant decoder keeps as an orjson.Fragment (20+ digits, or a 3-digit exponent)
# and the escape pool.without_nul replaces: a record holding either (or anything that looks
# like it, e.g. a long digit run inside a string) is diffed by Postgres. Found with
# translate + substring search: a regular expression took ~1 ms per page of 100 orders.
_FOLD = bytes.maketrans(b"123456789E", b"000000000e")
_LONG_NUMBER = b"0" * 19
_LONG_EXPONENT = b"e000"


def plain(raw: bytes) -> bool:
    """True when the record's Python values compare as its stored jsonb values do."""
    if b"\\u0000" in raw:
        return False
    folded = raw.translate(_FOLD, b"+-")
    return _LONG_NUMBER not in folded and _LONG_EXPONENT not in folded


def _canon(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def changed_keys(old: Any, new: Any) -> list[str] | None:
    """Top-level keys whose values differ (added, removed or changed), sorted by code point,
    as ``jsonb_changed_keys``; None when Python cannot tell for sure."""
    o = old if type(old) is dict else {}
    n = new if type(new) is dict else {}
    out = [k for k in o if k not in n]
    for k, b in n.items():
        if k not in o:
            out.append(k)
            continue
        a = o[k]
        if a != b:
            out.append(k)
            continue
        ta, tb = type(a), type(b)
        if ta is not tb:
            if ta is bool or tb is bool:
                out.append(k)  # True == 1 to Python only; 1 == 1.0 to jsonb too
        elif (ta is dict or ta is list) and _canon(a) != _canon(b):
            return None  # equal to Python, not byte for byte: a bool or a 1.0 inside
    out.sort()
    return out


def order_changed_fields(old: Any, new: Any) -> list[str] | None:
    """Keys of parentOrderMap that differ, then the other top-level keys that differ."""
    o = old if type(old) is dict else {}
    n = new if type(new) is dict else {}
    inner = changed_keys(o.get("parentOrderMap"), n.get("parentOrderMap"))
    outer = changed_keys(o, n)
    if inner is None or outer is None:
        return None
    return inner + [k for k in outer if k != "parentOrderMap"]
