"""The tolerant fallback decoder: what orjson refuses or bends is kept, as exactly as
Postgres allows."""

from __future__ import annotations

import orjson
import pytest

from engine.jsonvalue import _SUSPECT_EXPONENT, _SUSPECT_INTEGER, _suspect
from engine.temu.decode import decode_body


def _dumped(raw: bytes) -> bytes:
    """What the store would send to Postgres for this body."""
    return orjson.dumps(decode_body(raw).value)


def test_plain_bodies_take_the_fast_path() -> None:
    out = decode_body(b'{"a": [1, 2.5, "x"], "b": 123456789012345678}')
    assert not out.repaired
    assert out.value == {"a": [1, 2.5, "x"], "b": 123456789012345678}


def test_invalid_utf8_byte_becomes_replacement_character() -> None:
    out = decode_body(b'{"name": "caf\xe9", "n": 1}')
    assert out.repaired
    assert out.value == {"name": "caf\ufffd", "n": 1}


def test_lone_surrogate_becomes_replacement_but_pairs_survive() -> None:
    out = decode_body(b'{"a": "x\\ud83d", "b": "\\ud83d\\ude00", "\\udc00k": 1}')
    assert out.repaired
    assert out.value == {"a": "x\ufffd", "b": "\U0001f600", "\ufffdk": 1}
    orjson.dumps(out.value)  # encodable again


@pytest.mark.parametrize(
    "number",
    [
        b"18446744073709551616",
        b"-9223372036854775809",
        b"123456789012345678901234567890",
        b"1e400",
        b"-1.5E+400",
        b"1e-400",
    ],
)
def test_numbers_beyond_float_or_int64_stay_exact(number: bytes) -> None:
    out = decode_body(b'{"v": ' + number + b', "w": 7}')
    assert out.repaired
    assert _dumped(b'{"v": ' + number + b', "w": 7}') == b'{"v":' + number + b',"w":7}'
    assert out.value["w"] == 7


@pytest.mark.parametrize(
    "number", [b"0.12345678901234567891", b"123456789.123456789123", b"-1.0000000000000000001"]
)
def test_decimals_longer_than_a_float_keep_every_digit(number: bytes) -> None:
    """interface.md: payload is the record exactly as the API returned it; a float keeps 15-17
    digits, jsonb keeps them all."""
    body = b'{"v": ' + number + b', "w": 2.5}'
    assert _dumped(body) == b'{"v":' + number + b',"w":2.5}'


def test_decimals_a_float_holds_keep_the_fast_path() -> None:
    for body in (b'{"v": 40.71234567, "w": 12.50}', b'{"v": 0.1234567890123}'):
        out = decode_body(body)
        assert not out.repaired, body
    # A long fraction the float spells the same way stays a float even on the careful path.
    out = decode_body(b'{"v": 0.5000000000000000000, "w": 1e400}')
    assert out.value["v"] == 0.5 and isinstance(out.value["v"], float)


def test_numbers_postgres_cannot_hold_become_strings() -> None:
    huge = b"9" * 5000
    assert decode_body(b'{"v": ' + huge + b"}").value == {"v": huge.decode()}
    assert decode_body(b'{"v": 1e999999}').value == {"v": "1e999999"}
    assert decode_body(b'{"v": NaN}').value == {"v": "NaN"}


def test_long_digit_string_is_not_a_number() -> None:
    out = decode_body(b'{"tracking": "123456789012345678901234"}')
    assert out.value == {"tracking": "123456789012345678901234"}


def test_not_json_at_all_still_fails() -> None:
    with pytest.raises(ValueError):
        decode_body(b"<html>502</html>")


@pytest.mark.parametrize(
    "body",
    [
        b'{"v": [ -1234567890123456789012 ]}',
        b'{"v":\n\t18446744073709551616}',
        b'{"a": [1, 18446744073709551616]}',
        b'{"v": 1E-400}',
        b'{"v": 2.5e-300}',
    ],
)
def test_unusual_numbers_are_found_however_they_are_spaced(body: bytes) -> None:
    """The quick pre-test before the exact patterns must pass everything they would match."""
    assert decode_body(body).repaired
    exact = _SUSPECT_INTEGER.search(body) or _SUSPECT_EXPONENT.search(body)
    assert exact is not None and _suspect(body)


def test_long_ids_and_hyphens_in_text_keep_the_fast_path() -> None:
    """Temu's line numbers are 19-digit runs inside strings and "e-" is common in text: neither
    sends a page to the tolerant decoder."""
    body = b'{"orderSn": "211-1234567890123456789", "label": "free-shipping", "n": 1}'
    out = decode_body(body)
    assert not out.repaired
    assert out.value["n"] == 1
