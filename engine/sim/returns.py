"""One shop's parent returns (after-sales), their lines and reverse logistics."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engine.sim.index import MAX_RECORDS, TimeIndex

LABEL_PENDING = 8
OP_FULL_REFUND = 1
OP_UPLOAD_LABEL = 10
DROP_OFF = 3
PICK_UP = 4
REFUND_ONLY = 1
RETURN_AND_REFUND = 2

# afterSalesStatusGroup is not documented value by value; the simulator groups statuses by
# what the merchant sees: 1 awaiting a decision, 2 goods on their way back, 3 refunding,
# 4 refunded, 5 closed without refund.
STATUS_GROUP: dict[int, int] = {1: 1, 10: 1, 11: 1, 2: 2, 3: 2, 8: 2, 4: 3, 9: 3, 5: 4, 6: 5, 7: 5}
ALL_STATUSES = tuple(range(1, 12))
# Statuses that only exist when the goods come back.
RETURN_ONLY_STATUSES = (2, 3, 8, 10)


@dataclass(slots=True)
class ReturnRec:
    seq: int
    sn: str
    order_sn: str
    after_sales_type: int
    status: int
    create_at: int
    update_at: int
    operations: list[int]
    delivery_type: int | None
    lines: list[dict[str, Any]]
    logistics: list[dict[str, Any]] = field(default_factory=list)
    pickup_slots: list[dict[str, int]] = field(default_factory=list)
    latest_pickup_ms: int = 0

    def item(self) -> dict[str, Any]:
        """A ``result.data[]`` element of bg.aftersales.parentaftersales.list.get."""
        out: dict[str, Any] = {
            "parentAfterSalesSn": self.sn,
            "parentOrderSn": self.order_sn,
            "afterSalesType": self.after_sales_type,
            "parentAfterSalesStatus": self.status,
            "afterSalesStatusGroup": STATUS_GROUP[self.status],
            "createAt": self.create_at,
            "updateAt": self.update_at,
            "availableOperateList": list(self.operations),
            "operateExpireTimeMs": (self.update_at + 5 * 86400) * 1000 if self.operations else 0,
        }
        # Refund-only returns have no goods coming back, hence no delivery type at all.
        if self.delivery_type is not None:
            out["returnDeliveryType"] = self.delivery_type
        return out

    def line_items(self) -> list[dict[str, Any]]:
        return [
            {**line, "afterSalesStatus": self.status, "afterSalesType": self.after_sales_type}
            for line in self.lines
        ]


def default_operations(status: int, *, label_uploaded: bool) -> list[int]:
    if status == LABEL_PENDING:
        return [] if label_uploaded else [OP_UPLOAD_LABEL]
    if status in (1, 3):
        return [OP_FULL_REFUND]
    return []


class ReturnTable:
    def __init__(self) -> None:
        self.records: list[ReturnRec] = []
        self.by_sn: dict[str, ReturnRec] = {}
        self.by_update = TimeIndex()
        self.by_create = TimeIndex()
        self.version = 0

    def __len__(self) -> int:
        return len(self.records)

    def next_seq(self) -> int:
        return len(self.records)

    def load(self, records: list[ReturnRec]) -> None:
        if len(records) >= MAX_RECORDS:
            raise ValueError("too many returns for one shop")
        self.records = records
        self.by_sn = {r.sn: r for r in records}
        self.by_update = TimeIndex((r.update_at, r.seq) for r in records)
        self.by_create = TimeIndex((r.create_at, r.seq) for r in records)
        self.version += 1

    def add(self, rec: ReturnRec) -> None:
        if rec.seq != len(self.records) or rec.sn in self.by_sn:
            raise ValueError("return added out of sequence or twice")
        self.records.append(rec)
        self.by_sn[rec.sn] = rec
        self.by_update.add(rec.update_at, rec.seq)
        self.by_create.add(rec.create_at, rec.seq)
        self.version += 1

    def touch(self, rec: ReturnRec, now: int) -> None:
        """Record a change: updateAt becomes now and the index follows."""
        if rec.update_at != now:
            self.by_update.move(rec.update_at, now, rec.seq)
            rec.update_at = now
        self.version += 1

    def item(self, seq: int) -> dict[str, Any]:
        return self.records[seq].item()

    def update_time(self, seq: int) -> int:
        return self.records[seq].update_at

    def create_time(self, seq: int) -> int:
        return self.records[seq].create_at
