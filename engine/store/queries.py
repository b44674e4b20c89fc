"""Named SQL, loaded once from ``sql/queries/*.sql``.

A file holds several queries, each introduced by a ``-- name: <name>`` line; the comment lines
that follow document it and are sent along (Postgres ignores them, and they help when a query
shows up in ``pg_stat_statements`` or a log).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from importlib.resources.abc import Traversable

from engine.store.paths import sql_files, sql_root

_NAME = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)


class QueryError(Exception):
    pass


def _only_comments(text: str) -> bool:
    return all(not ln.strip() or ln.lstrip().startswith("--") for ln in text.splitlines())


def parse_queries(text: str, source: str = "<string>") -> dict[str, str]:
    out: dict[str, str] = {}
    marks = list(_NAME.finditer(text))
    prelude = text[: marks[0].start()] if marks else text
    if not _only_comments(prelude):
        # SQL before the first name would silently belong to no query.
        raise QueryError(f"{source}: SQL outside a '-- name:' block")
    for i, m in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
        body = text[m.end() : end].strip()
        name = m.group(1)
        if name in out:
            raise QueryError(f"{source}: query {name!r} defined twice")
        if _only_comments(body):
            raise QueryError(f"{source}: query {name!r} is empty")
        out[name] = body
    return out


def load_queries(directory: Traversable) -> dict[str, str]:
    out: dict[str, str] = {}
    for path in sql_files(directory):
        for name, sql in parse_queries(path.read_text(encoding="utf-8"), str(path)).items():
            if name in out:
                raise QueryError(f"{path}: query {name!r} already defined in another file")
            out[name] = sql
    return out


@functools.cache
def default_queries() -> Mapping[str, str]:
    return load_queries(sql_root() / "queries")
