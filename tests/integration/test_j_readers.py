"""The typed-column readers (sql/0009) are total: NULL for what they cannot convert, never an
error, whatever Temu sends (issue 12: one "2\u3000" used to fail a page on every try)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

# (raw JSON text, j_int, j_bigint, j_ts as Unix seconds)
NASTY: list[tuple[str, Any, Any, Any]] = [
    ('"2\\u3000"', None, None, None),  # ideographic space: \s matched it, the cast did not
    ('"\\u20032"', None, None, None),  # em space
    ('"\\u00a07"', None, None, None),  # no-break space
    ('" 7 "', 7, 7, 7),  # ASCII blanks are still fine
    ('"\\t42\\n"', 42, 42, 42),
    ('"²"', None, None, None),  # a digit to isdigit(), not to Postgres
    ('"١٢"', None, None, None),  # Arabic-Indic digits
    ('"\uff11\uff12"', None, None, None),  # full-width digits
    ('""', None, None, None),
    ('"   "', None, None, None),
    ('"-"', None, None, None),
    ('"1e3"', None, None, None),
    ('"0x10"', None, None, None),
    ("[2]", None, None, None),
    ('{"a": 1}', None, None, None),
    ("true", None, None, None),
    ("null", None, None, None),
    ("1e400", None, None, None),
    ("-1e400", None, None, None),
    ("1e-400", None, None, None),
    ("123456789012345678901234567890", None, None, None),
    ('"99999999999999999999"', None, None, None),
    ('"9999999999"', None, 9999999999, 9999999999),
    ("2.5", None, None, 2.5),
    ("2147483648", None, 2147483648, 2147483648),
    ("-2147483648", -2147483648, -2147483648, None),
    ("1711009072", 1711009072, 1711009072, 1711009072),
    ("1711009072000", None, 1711009072000, 1711009072),
    ('"1711009072000"', None, 1711009072000, 1711009072),
    ('"999999999999999999"', None, 999999999999999999, None),
]


@pytest.mark.parametrize(("raw", "as_int", "as_bigint", "as_ts"), NASTY)
async def test_readers_never_raise(
    pool: asyncpg.Pool, raw: str, as_int: Any, as_bigint: Any, as_ts: Any
) -> None:
    row = await pool.fetchrow(
        "SELECT j_int($1::text::jsonb) AS i, j_bigint($1::text::jsonb) AS b, "
        "j_ts($1::text::jsonb) AS t, j_int_array(('[' || $1::text || ', 3]')::jsonb) AS a",
        raw,
    )
    assert row is not None
    assert row["i"] == as_int
    assert row["b"] == as_bigint
    expected_ts = None if as_ts is None else datetime.fromtimestamp(as_ts, UTC)
    assert row["t"] == expected_ts
    assert row["a"] == ([as_int, 3] if as_int is not None else [3])
    json.loads(raw)  # the table itself holds valid JSON only
