"""Decoding JSON from outside: orjson on the fast path, a tolerant decoder as the fallback.

A root leaf: the Temu transport decodes every answer with it, and the store reads payloads
back from Postgres with it (a stored ``1e400`` or an integer past 64 bits must read back as
it was stored, not fail the query or turn into a float).

orjson refuses a whole body for one invalid UTF-8 byte, one lone surrogate escape
(``"\\ud83d"``) or one ``1e400``, and silently turns an integer beyond 64 bits into a float.
Either way one hostile record would cost its whole page (retried, then stuck for good) or
change ``payload``. The fallback keeps everything else exact:

- invalid UTF-8 sequences and lone surrogates become U+FFFD;
- integers outside the 64-bit range and numbers beyond a float (``1e400``) stay numbers,
  written back to Postgres verbatim (an ``orjson.Fragment``) as long as Postgres ``numeric``
  can hold them; beyond that (more than ``MAX_NUMBER_CHARS`` characters, or an exponent
  numeric refuses) they become strings holding the digits as sent;
- ``NaN`` / ``Infinity`` (not JSON, but Python's decoder takes them) become strings.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

__all__ = ["DecodeResult", "decode_body", "json_type", "loads"]

# A number token (after ':', '[' or ',') of 20 digits, or negative with 19, may be beyond 64
# bits, and a negative three-digit exponent may underflow to 0.0: orjson reads these as floats
# without a word (a positive one that overflows makes orjson raise, which takes the tolerant
# path anyway). Anything shorter orjson reads exactly; long digit runs inside strings
# (tracking numbers, Temu's 19-digit line numbers) follow a quote, a letter or '-', not ':',
# so ordinary pages stay on the fast path. The patterns below start at every ':' or digit
# (1.4 ms on a 148 KB page, three times the parse), so a cheaper test that every match passes
# comes first: digits folded to '0', '[', ',' and blanks to ':', then substring searches
# (0.19 ms); only a page that trips it is searched with the patterns.
_SUSPECT_INTEGER = re.compile(rb"[:\[,]\s*(?:-[0-9]{19}|[0-9]{20})")
_SUSPECT_EXPONENT = re.compile(rb"[0-9][eE]-[0-9]{3}")
_FOLD = bytes.maketrans(b"123456789[, \t\n\r\f\vE", b"000000000::::::::e")
_LONG = b":" + b"0" * 20
_LONG_NEGATIVE = b":-" + b"0" * 19
# The exponent pattern's folded image, a digit then e-000. Found by the regex engine's literal
# scan: `in` takes three times as long on Temu pages, which are full of '0', 'e' and '-'.
_TINY = re.compile(rb"0e-000")
# A number with 16 or more digits and a fraction of 8 or more: a float may not hold all its
# digits (a float keeps 15-17). Folded, such a fraction is ".00000000", which Temu's strings
# (URLs, names) do not hold; only then is the page searched for the number itself. The
# tolerant decoder then keeps it verbatim unless a float spells the same value.
_LONG_FRACTION = b".00000000"
_SUSPECT_DECIMAL = re.compile(rb"[:\[,]\s*-?(?=[0-9.]{17})[0-9]*\.[0-9]{8}")
# Shorter number tokens always round-trip through a float.
_EXACT_FLOAT_CHARS = 16


def _suspect(raw: bytes) -> bool:
    folded = raw.translate(_FOLD)
    long = _LONG in folded or _LONG_NEGATIVE in folded
    if long and _SUSPECT_INTEGER.search(raw) is not None:
        return True
    if _LONG_FRACTION in folded and _SUSPECT_DECIMAL.search(raw) is not None:
        return True
    return _TINY.search(folded) is not None and _SUSPECT_EXPONENT.search(raw) is not None


_SURROGATE = re.compile("[\ud800-\udfff]")
_INT64_MIN = -(2**63)
_UINT64_MAX = 2**64 - 1
# Postgres numeric: up to 131072 digits before the point and 16383 after; stay well inside.
MAX_NUMBER_CHARS = 4000
_MAX_EXPONENT = 131000
_MIN_EXPONENT = -16000


class DecodeResult:
    __slots__ = ("repaired", "value")

    def __init__(self, value: Any, repaired: bool) -> None:
        self.value = value
        self.repaired = repaired  # the tolerant path ran (some bytes or numbers were unusual)


def decode_body(raw: bytes) -> DecodeResult:
    """Raises ``ValueError`` only for what is not JSON even to the tolerant decoder."""
    if not _suspect(raw):
        try:
            return DecodeResult(orjson.loads(raw), False)
        except orjson.JSONDecodeError:
            pass
    return DecodeResult(tolerant_loads(raw), True)


def loads(raw: bytes) -> Any:
    """The value alone (``decode_body``'s rules)."""
    return decode_body(raw).value


def tolerant_loads(raw: bytes) -> Any:
    text = raw.decode("utf-8", "replace")
    value = json.loads(
        text, parse_int=_number_int, parse_float=_number_float, parse_constant=_constant
    )
    return _clean(value)


def _number_int(text: str) -> Any:
    if len(text) > MAX_NUMBER_CHARS:
        return text
    n = int(text)
    if _INT64_MIN <= n <= _UINT64_MAX:
        return n
    return orjson.Fragment(text)


def _number_float(text: str) -> Any:
    value = float(text)
    # Beyond a float (1e400), below it (1e-400), or with more digits than a float holds
    # (0.12345678901234567891): kept as sent, so the payload is the record exactly as Temu
    # returned it.
    if (
        value not in (float("inf"), float("-inf"))
        and (value != 0.0 or not _underflows(text))
        and (len(text) < _EXACT_FLOAT_CHARS or _same_value(value, text))
    ):
        return value
    if len(text) > MAX_NUMBER_CHARS:
        return text
    try:
        exponent = Decimal(text).adjusted()
    except InvalidOperation:
        return text
    if _MIN_EXPONENT < exponent < _MAX_EXPONENT:
        return orjson.Fragment(text)
    return text


def _same_value(value: float, text: str) -> bool:
    """Whether the float's shortest spelling is the number ``text`` spells (12.50 is 12.5)."""
    try:
        return Decimal(repr(value)) == Decimal(text)
    except InvalidOperation:
        return True


def _underflows(text: str) -> bool:
    """``1e-400`` reads as 0.0: keep it as sent rather than silently change it."""
    try:
        return Decimal(text) != 0
    except InvalidOperation:
        return False


def _constant(name: str) -> str:
    return name


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value) if _SURROGATE.search(value) else value
    if isinstance(value, dict):
        return {_clean(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def json_type(value: Any) -> str:
    """The JSON type of a decoded value, as a message names it (a tolerant decoder's number
    fragment is a number)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "object"
    return "array" if isinstance(value, list) else "number"
