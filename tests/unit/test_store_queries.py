"""Store pieces that need no database: named-query loading, migration discovery, value types."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from engine.store import paths
from engine.store.migrate import load_migrations
from engine.store.queries import QueryError, default_queries, load_queries, parse_queries
from engine.store.store import CursorAdvance, DiffCounts


def test_parse_named_queries() -> None:
    text = "-- file header\n\n-- name: one\n-- doc\nSELECT 1;\n\n-- name: two\nSELECT 2\n"
    assert parse_queries(text) == {"one": "-- doc\nSELECT 1;", "two": "SELECT 2"}


@pytest.mark.parametrize(
    "text",
    [
        "SELECT 0;\n-- name: one\nSELECT 1;",  # SQL outside any block
        "-- name: one\nSELECT 1;\n-- name: one\nSELECT 2;",  # duplicate
        "-- name: one\n-- only a comment\n",  # empty
    ],
)
def test_bad_query_files_are_rejected(text: str) -> None:
    with pytest.raises(QueryError):
        parse_queries(text)


def test_duplicate_names_across_files(tmp_path: Path) -> None:
    (tmp_path / "a.sql").write_text("-- name: q\nSELECT 1;")
    (tmp_path / "b.sql").write_text("-- name: q\nSELECT 2;")
    with pytest.raises(QueryError, match="already defined"):
        load_queries(tmp_path)


def test_every_query_the_store_uses_exists() -> None:
    source = (Path(__file__).parents[2] / "engine" / "store" / "store.py").read_text()
    used = set(re.findall(r'self\._q\["([a-z_]+)"\]', source))
    assert used, "the pattern no longer matches store.py"
    assert used <= set(default_queries())


def test_migrations_are_ordered_and_named() -> None:
    migs = load_migrations()
    assert migs[0].name == "0001_init"
    assert [m.name for m in migs] == sorted(m.name for m in migs)


def test_migration_names_are_checked(tmp_path: Path) -> None:
    (tmp_path / "init.sql").write_text("SELECT 1;")
    with pytest.raises(ValueError, match="NNNN"):
        load_migrations(tmp_path)


def test_sql_is_read_as_package_data() -> None:
    root = paths.sql_root()
    assert str(root).replace("\\", "/").endswith("engine/store/sql")
    assert next(f.name for f in paths.sql_files(root)) == "0001_init.sql"
    assert "orders.sql" in [f.name for f in paths.sql_files(root / "queries")]


def test_value_types() -> None:
    assert DiffCounts(1, 2, 3) + DiffCounts(1, 0, 0, 4) == DiffCounts(2, 2, 3, 4)
    assert DiffCounts(1, 2, 3).written == 3
    with pytest.raises(ValueError, match="timezone"):
        CursorAdvance("orders", "incremental", datetime(2025, 1, 1))
    CursorAdvance("orders", "incremental", datetime(2025, 1, 1, tzinfo=UTC))
