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

from collections.abc import Sequence
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


def plain_all(raws: Sequence[bytes]) -> bool:
    """``plain`` of every record, in one pass over the page (a call per record costs more than
    the search itself)."""
    return plain(b" ".join(raws))


def _canon(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


_MISSING = object()


class Diff:
    """changed_fields of a page's records, the byte checks batched.

    A container equal to Python may still differ to jsonb (a ``true`` where a ``1`` was, deep
    inside): such pairs are queued and compared as canonical bytes all at once by ``sure``
    (two serialisations per page instead of two per container)."""

    __slots__ = ("_new", "_old")

    def __init__(self) -> None:
        self._old: list[Any] = []
        self._new: list[Any] = []

    def keys(self, old: Any, new: Any) -> list[str]:
        """Top-level keys whose values differ (added, removed or changed), sorted by code
        point, as ``jsonb_changed_keys`` (valid once ``sure``)."""
        o = old if type(old) is dict else {}
        n = new if type(new) is dict else {}
        out = [k for k in o if k not in n]
        get = o.get  # called for every key of every record of a page: bound once
        for k, b in n.items():
            a = get(k, _MISSING)
            if a is _MISSING or a != b:
                out.append(k)
            elif (tb := type(b)) is dict or tb is list:
                self._old.append(a)
                self._new.append(b)
            elif type(a) is not tb and (tb is bool or type(a) is bool):
                out.append(k)  # True == 1 to Python only; 1 == 1.0 to jsonb too
        out.sort()
        return out

    def order_keys(self, old: Any, new: Any) -> list[str]:
        """Keys of parentOrderMap that differ, then the other top-level keys that differ."""
        o = old if type(old) is dict else {}
        n = new if type(new) is dict else {}
        inner = self.keys(o.get("parentOrderMap"), n.get("parentOrderMap"))
        return inner + [k for k in self.keys(o, n) if k != "parentOrderMap"]

    def sure(self) -> bool:
        """Every container Python called equal is equal byte for byte."""
        return not self._old or _canon(self._old) == _canon(self._new)


def changed_keys(old: Any, new: Any) -> list[str] | None:
    """``Diff.keys`` of one pair; None when Python cannot tell for sure."""
    d = Diff()
    out = d.keys(old, new)
    return out if d.sure() else None


def order_changed_fields(old: Any, new: Any) -> list[str] | None:
    """``Diff.order_keys`` of one pair; None when Python cannot tell for sure."""
    d = Diff()
    out = d.order_keys(old, new)
    return out if d.sure() else None
