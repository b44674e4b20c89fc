"""One shop's orders, stored column-wise so 200,000 of them cost a few MB, not a few hundred.

Page items are built on demand from the columns; everything a record needs besides its
status and times (lines, goods, quantities) is derived from its record number with a hash, so
it is stable across calls without being stored.
"""

from __future__ import annotations

from array import array
from typing import Any

from engine.sim.catalog import Product
from engine.sim.index import MAX_RECORDS, TimeIndex

REGION_US = 211
STATUSES = (1, 2, 3, 4, 5, 41, 51)
PARTIAL = (41, 51)

_MASK64 = (1 << 64) - 1
_SN_BASE = 10**16
_SN_MOD = 9 * 10**16
_SN_MUL = 2654435761  # prime, so coprime with the modulus: numbering is a bijection
_SN_INV = pow(_SN_MUL, -1, _SN_MOD)


def mix64(x: int) -> int:
    """splitmix64 finaliser: a cheap, well-spread hash of an int."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


_QUANTITIES = (1, 1, 1, 1, 2, 2, 3, 5)


class OrderTable:
    def __init__(self, salt: int, products: tuple[Product, ...]) -> None:
        self._salt = salt & _MASK64
        self._sn_offset = salt % _SN_MOD
        self._products = products
        self.created = array("q")
        self.updated = array("q")
        self.expect = array("q")
        self.status = array("B")
        self.nlines = array("B")
        self.by_update = TimeIndex()
        self.by_create = TimeIndex()
        self.version = 0  # bumped on every change so cached query results know they are stale

    def __len__(self) -> int:
        return len(self.created)

    # -- building -------------------------------------------------------------------------
    def load(
        self,
        created: array[int],
        updated: array[int],
        expect: array[int],
        status: array[int],
        nlines: array[int],
    ) -> None:
        """Bulk load (generation): columns indexed by record number."""
        if len(created) >= MAX_RECORDS:
            raise ValueError("too many orders for one shop")
        self.created, self.updated, self.expect = created, updated, expect
        self.status, self.nlines = status, nlines
        self.by_create = TimeIndex(zip(created, range(len(created)), strict=True))
        self.by_update = TimeIndex(zip(updated, range(len(updated)), strict=True))
        self.version += 1

    def add(self, created: int, expect: int, status: int, nlines: int) -> int:
        seq = len(self.created)
        if seq + 1 >= MAX_RECORDS:
            raise ValueError("too many orders for one shop")
        self.created.append(created)
        self.updated.append(created)
        self.expect.append(expect)
        self.status.append(status)
        self.nlines.append(nlines)
        self.by_create.add(created, seq)
        self.by_update.add(created, seq)
        self.version += 1
        return seq

    def touch(self, seq: int, now: int, *, status: int | None = None) -> None:
        if status is not None:
            self.status[seq] = status
        old = self.updated[seq]
        if old != now:
            self.by_update.move(old, now, seq)
            self.updated[seq] = now
        self.version += 1

    def update_time(self, seq: int) -> int:
        return self.updated[seq]

    def create_time(self, seq: int) -> int:
        return self.created[seq]

    # -- identity -------------------------------------------------------------------------
    def number(self, seq: int) -> int:
        return _SN_BASE + (seq * _SN_MUL + self._sn_offset) % _SN_MOD

    def sn(self, seq: int) -> str:
        return f"PO-{REGION_US}-{self.number(seq)}"

    def seq_of(self, sn: object) -> int | None:
        if not isinstance(sn, str) or not sn.startswith(f"PO-{REGION_US}-"):
            return None
        digits = sn[len(f"PO-{REGION_US}-") :]
        if not digits.isdigit() or len(digits) != 17:
            return None
        seq = ((int(digits) - _SN_BASE - self._sn_offset) * _SN_INV) % _SN_MOD
        return seq if seq < len(self.created) else None

    # -- derived attributes ---------------------------------------------------------------
    def line_status(self, seq: int, k: int) -> int:
        st = self.status[seq]
        if st == 41:  # partly shipped: the first line went out, the others wait
            return 4 if k == 0 else 2
        if st == 51:
            return 5 if k == 0 else 4
        return st

    def line_product(self, seq: int, k: int) -> tuple[Product, int]:
        h = mix64(self._salt ^ (seq * 4 + k))
        return self._products[h % len(self._products)], _QUANTITIES[(h >> 32) % 8]

    def line_sn(self, seq: int, k: int) -> str:
        return f"{REGION_US}-{self.number(seq)}{k + 1:02d}"

    def fulfillment_type(self, seq: int) -> str:
        cooperative = mix64(self._salt ^ ~seq) % 10 == 0
        return "fulfillByCooperativeWarehouse" if cooperative else "fulfillBySeller"

    # -- API shapes -----------------------------------------------------------------------
    def item(self, seq: int) -> dict[str, Any]:
        """A ``result.pageItems[]`` element of bg.order.list.v2.get."""
        fulfillment = self.fulfillment_type(seq)
        lines = []
        for k in range(self.nlines[seq]):
            product, quantity = self.line_product(seq, k)
            lines.append(
                {
                    "orderSn": self.line_sn(seq, k),
                    "goodsId": product.goods_id,
                    "goodsName": product.name,
                    "skuId": product.sku_id,
                    "spec": product.spec,
                    "orderStatus": self.line_status(seq, k),
                    "quantity": quantity,
                    "fulfillmentType": fulfillment,
                    "productList": [
                        {
                            "productSkuId": product.product_sku_id,
                            "productId": product.product_id,
                            "soldFactor": 1,
                        }
                    ],
                }
            )
        return {
            "parentOrderMap": {
                "parentOrderSn": self.sn(seq),
                "parentOrderStatus": self.status[seq],
                "parentOrderTime": self.created[seq],
                "updateTime": self.updated[seq],
                "expectShipLatestTime": self.expect[seq],
                "regionId": REGION_US,
                "parentOrderLabel": [],
            },
            "orderList": lines,
        }

    def detail(self, seq: int) -> dict[str, Any]:
        """The ``result`` of bg.order.detail.v2.get: the list item plus detail-only fields."""
        item = self.item(seq)
        parent = item["parentOrderMap"]
        del parent["updateTime"]  # the docs list updateTime for the list API only
        created = self.created[seq]
        shipped = self.status[seq] in (4, 5, 41, 51)
        ship_time = created + 3600 * (6 + mix64(self._salt + seq) % 60)
        parent["latestDeliveryTime"] = self.expect[seq] + 7 * 86400
        if shipped:
            parent["parentShippingTime"] = ship_time
        for k, line in enumerate(item["orderList"]):
            line["orderCreateTime"] = created
            if self.line_status(seq, k) in (4, 5):
                line["orderShippingTime"] = ship_time
        return item
