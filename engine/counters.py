"""Counters of one run and the JSON summary that `--json` prints (interface.md)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

RowObserver = Callable[[str, int, int, int], None]


@dataclass
class RowCounts:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0

    def add(self, inserted: int, updated: int, unchanged: int) -> None:
        self.inserted += inserted
        self.updated += updated
        self.unchanged += unchanged

    def as_dict(self) -> dict[str, int]:
        return {"inserted": self.inserted, "updated": self.updated, "unchanged": self.unchanged}


@dataclass
class RunCounters:
    """Rows written per entity ('order', 'order_line', 'return', ...) and reconciler pushes."""

    rows: dict[str, RowCounts] = field(default_factory=dict)
    labels_uploaded: int = 0
    oc_updates: int = 0
    drift_events: int = 0
    rejected: int = 0  # records set aside in rejected_records during this run
    shops_failed: set[str] = field(default_factory=set)
    observer: RowObserver | None = None
    _rejected_ids: set[str] = field(default_factory=set, repr=False)

    def note_rejected(self, ids: Iterable[str]) -> None:
        """Records set aside (their rejected_records identity): one read twice in the run (an
        overlap, a re-read window) is counted once, as interface.md counts records."""
        new = set(ids) - self._rejected_ids
        self._rejected_ids |= new
        self.rejected += len(new)

    def add_rows(self, entity: str, inserted: int, updated: int, unchanged: int) -> None:
        self.rows.setdefault(entity, RowCounts()).add(inserted, updated, unchanged)
        if self.observer is not None:
            self.observer(entity, inserted, updated, unchanged)

    def entity(self, name: str) -> RowCounts:
        return self.rows.get(name, RowCounts())


def build_summary(
    counters: RunCounters, *, requests: int, rate_limited: int, retries: int, elapsed_s: float
) -> dict[str, Any]:
    return {
        "requests": requests,
        "rate_limited": rate_limited,
        "retries": retries,
        "elapsed_s": round(elapsed_s, 3),
        # From the elapsed_s printed, so requests / elapsed_s gives exactly this figure.
        "qps": round(requests / round(elapsed_s, 3), 3) if round(elapsed_s, 3) > 0 else 0.0,
        "orders": counters.entity("order").as_dict(),
        "returns": counters.entity("return").as_dict(),
        "labels_uploaded": counters.labels_uploaded,
        "oc_updates": counters.oc_updates,
        "shops_failed": sorted(counters.shops_failed),
        "rejected": counters.rejected,
    }
