"""Window queries over a time-indexed table: filter, sort newest first, page.

The common case (one window on the field the result is sorted by, no other filter) is served
straight from the index in O(log n + page). Anything else is materialised once, sorted, and
cached until the table changes, so paging through it stays cheap.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from engine.sim.index import TimeIndex

Window = tuple[int, int]
SortField = Literal["update", "create"]


class Table(Protocol):
    by_update: TimeIndex
    by_create: TimeIndex
    version: int

    def update_time(self, seq: int) -> int: ...
    def create_time(self, seq: int) -> int: ...


class Selection(Protocol):
    @property
    def total(self) -> int: ...

    def at(self, pos: int) -> int: ...


@dataclass(frozen=True, slots=True)
class IndexSelection:
    index: TimeIndex
    lo: int
    hi: int

    @property
    def total(self) -> int:
        return self.hi - self.lo

    def at(self, pos: int) -> int:
        return self.index.seq_at(self.hi - 1 - pos)


@dataclass(frozen=True, slots=True)
class ListSelection:
    seqs: Sequence[int]

    @property
    def total(self) -> int:
        return len(self.seqs)

    def at(self, pos: int) -> int:
        return self.seqs[pos]


@dataclass(frozen=True, slots=True)
class Query:
    update: Window | None = None
    create: Window | None = None
    sort: SortField = "update"
    candidates: tuple[int, ...] | None = None  # record numbers named by the caller (sn lists)
    filter_key: Hashable = None  # identifies ``predicate`` for the cache
    predicate: Callable[[int], bool] | None = None


def page(selection: Selection, offset: int, limit: int) -> list[int]:
    end = min(selection.total, offset + limit)
    return [selection.at(p) for p in range(offset, end)]


class QueryCache:
    def __init__(self, size: int = 32) -> None:
        self._size = size
        self._entries: OrderedDict[Hashable, tuple[int, ListSelection]] = OrderedDict()

    def select(self, table: Table, query: Query) -> Selection:
        by_update = query.sort == "update"
        other_window = query.create if by_update else query.update
        if query.candidates is None and query.predicate is None and other_window is None:
            window = query.update if by_update else query.create
            index = table.by_update if by_update else table.by_create
            lo, hi = index.span(*(window or (None, None)))
            return IndexSelection(index, lo, hi)
        key = (
            id(table),
            query.update,
            query.create,
            query.sort,
            query.candidates,
            query.filter_key,
        )
        hit = self._entries.get(key)
        if hit is not None and hit[0] == table.version:
            self._entries.move_to_end(key)
            return hit[1]
        selection = ListSelection(_materialise(table, query))
        self._entries[key] = (table.version, selection)
        if len(self._entries) > self._size:
            self._entries.popitem(last=False)
        return selection


def _inside(t: int, window: Window | None) -> bool:
    return window is None or window[0] <= t <= window[1]


def _materialise(table: Table, query: Query) -> list[int]:
    seqs: Sequence[int]
    if query.candidates is not None:
        seqs = sorted(set(query.candidates))
    else:
        window, index = query.update, table.by_update
        if window is None:
            window, index = query.create, table.by_create
        lo, hi = index.span(*(window or (None, None)))
        seqs = [index.seq_at(p) for p in range(lo, hi)]
    upd, crt, pred = table.update_time, table.create_time, query.predicate
    chosen = [
        s
        for s in seqs
        if _inside(upd(s), query.update)
        and _inside(crt(s), query.create)
        and (pred is None or pred(s))
    ]
    when = upd if query.sort == "update" else crt
    chosen.sort(key=lambda s: (when(s), s), reverse=True)
    return chosen
