"""A time index: record numbers kept sorted by (time, record number) for O(log n) windows.

Keys pack the time and the record number into one int so the index is a flat ``array('q')``
(8 bytes a record) that ``bisect`` searches directly; ties in time fall back to the record
number, which makes the order of equal timestamps deterministic.
"""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Iterable

SEQ_BITS = 24
SEQ_MASK = (1 << SEQ_BITS) - 1
MAX_RECORDS = 1 << SEQ_BITS


def pack(ts: int, seq: int) -> int:
    return (ts << SEQ_BITS) | seq


class TimeIndex:
    __slots__ = ("_keys",)

    def __init__(self, pairs: Iterable[tuple[int, int]] = ()) -> None:
        self._keys = array("q", sorted(pack(ts, seq) for ts, seq in pairs))

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, ts: int, seq: int) -> None:
        bisect.insort(self._keys, pack(ts, seq))

    def move(self, old_ts: int, new_ts: int, seq: int) -> None:
        key = pack(old_ts, seq)
        pos = bisect.bisect_left(self._keys, key)
        if pos == len(self._keys) or self._keys[pos] != key:
            raise KeyError(f"record {seq} not indexed at {old_ts}")
        del self._keys[pos]
        bisect.insort(self._keys, pack(new_ts, seq))

    def span(self, start: int | None, end: int | None) -> tuple[int, int]:
        """Positions [lo, hi) of the records with start <= ts <= end (a closed interval)."""
        lo = 0 if start is None else bisect.bisect_left(self._keys, pack(start, 0))
        hi = (
            len(self._keys) if end is None else bisect.bisect_right(self._keys, pack(end, SEQ_MASK))
        )
        return lo, max(lo, hi)

    def seq_at(self, pos: int) -> int:
        return self._keys[pos] & SEQ_MASK

    def desc(self, lo: int, hi: int, offset: int, limit: int) -> list[int]:
        """Record numbers of positions [lo, hi) newest first, skipping ``offset``."""
        top = hi - offset
        bottom = max(lo, top - limit)
        return [self._keys[p] & SEQ_MASK for p in range(top - 1, bottom - 1, -1)]
