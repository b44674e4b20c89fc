"""Deterministic generation of each shop's orders, returns and Orange Connex RMAs.

Everything comes from ``random.Random`` seeded with the config seed and the shop id, so the same
config always yields the same data (and the same mutation sequence).
"""

from __future__ import annotations

import bisect
import random
from array import array
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from engine.sim.catalog import (
    CARRIERS,
    Carrier,
    Product,
    Warehouse,
    make_products,
    make_warehouses,
    tracking_number,
)
from engine.sim.config import SimShop
from engine.sim.oc_state import CANCELLED, OPEN, OcState, Rma
from engine.sim.orders import PARTIAL, STATUSES, OrderTable
from engine.sim.returns import (
    ALL_STATUSES,
    DROP_OFF,
    LABEL_PENDING,
    PICK_UP,
    REFUND_ONLY,
    RETURN_AND_REFUND,
    RETURN_ONLY_STATUSES,
    ReturnRec,
    ReturnTable,
    default_operations,
)

DAY = 86400
HOUR = 3600
RETURN_REGION = "United States"
# Carriers a generated label uses; every one is in the Temu carrier list.
LABEL_CARRIERS: tuple[Carrier, ...] = CARRIERS[:4]


@dataclass
class ShopData:
    shop: SimShop
    index: int
    orders: OrderTable
    returns: ReturnTable
    products: tuple[Product, ...]
    warehouses: tuple[Warehouse, ...]
    rng: random.Random  # drives mutations, so a mutation sequence replays identically
    used_numbers: set[int] = field(default_factory=set)


# -- orders ---------------------------------------------------------------------------------
def _order_status(rng: random.Random, age: int) -> int:
    r = rng.random()
    if age < 2 * DAY:
        return 1 if r < 0.3 else 2 if r < 0.85 else 41 if r < 0.95 else 3
    if age < 12 * DAY:
        if r < 0.1:
            return 2
        return 4 if r < 0.55 else 41 if r < 0.65 else 51 if r < 0.7 else 5 if r < 0.9 else 3
    return 5 if r < 0.8 else 3 if r < 0.88 else 4 if r < 0.95 else 51


_UPDATE_DELAY = {1: (0, 2 * HOUR), 2: (0, DAY), 3: (0, 3 * DAY), 4: (DAY, 5 * DAY)}
_UPDATE_DELAY.update({41: (DAY, 5 * DAY), 5: (5 * DAY, 20 * DAY), 51: (5 * DAY, 20 * DAY)})


def order_lines_count(rng: random.Random, status: int) -> int:
    r = rng.random()
    n = 1 if r < 0.6 else 2 if r < 0.9 else 3
    # A partly shipped order needs one line shipped and one not.
    return max(n, 2) if status in PARTIAL else n


def generate_orders(table: OrderTable, count: int, seed: str, start: int, end: int) -> None:
    rng = random.Random(seed)
    span = max(1, end - start + 1)
    rand = rng.random
    created = array("q", sorted(start + int(rand() * span) for _ in range(count)))
    updated = array("q", bytes(8 * count))
    expect = array("q", bytes(8 * count))
    status = array("B", bytes(count))
    nlines = array("B", bytes(count))
    for seq, c in enumerate(created):
        st = _order_status(rng, end - c)
        lo, hi = _UPDATE_DELAY[st]
        # Scale the delay into the time left before end rather than clip it: clipping would
        # pile thousands of records onto the single second end_ts.
        room = end - c
        if room < hi:
            lo, hi = lo * room // hi, room
        updated[seq] = c + lo + int(rand() * (hi - lo))
        expect[seq] = c + 2 * DAY + int(rand() * 2 * DAY)
        status[seq] = st
        nlines[seq] = order_lines_count(rng, st)
    # Small shops still show every status, so tests and demos meet each one.
    counts = Counter(status)
    for st in STATUSES:
        if counts[st] == 0 and count >= len(STATUSES):
            seq = rng.randrange(count)
            while counts[status[seq]] < 2:
                seq = rng.randrange(count)
            counts[status[seq]] -= 1
            counts[st] += 1
            status[seq] = st
            if st in PARTIAL:
                nlines[seq] = max(2, nlines[seq])
    table.load(created, updated, expect, status, nlines)


# -- returns --------------------------------------------------------------------------------
_STATUS_WEIGHTS = {8: 25, 5: 20, 2: 8, 3: 6, 4: 6, 9: 4, 6: 8, 7: 6, 1: 7, 10: 6, 11: 4}


@dataclass(frozen=True)
class ReturnPlan:
    status: int
    delivery_type: int | None = None  # None: choose
    label_uploaded: bool | None = None
    with_slots: bool | None = None


def _return_plans(rng: random.Random, count: int) -> list[ReturnPlan]:
    forced = [ReturnPlan(s) for s in ALL_STATUSES]
    forced += [
        ReturnPlan(LABEL_PENDING, DROP_OFF, label_uploaded=False),
        ReturnPlan(LABEL_PENDING, PICK_UP, label_uploaded=False, with_slots=True),
        ReturnPlan(LABEL_PENDING, PICK_UP, label_uploaded=False, with_slots=False),
        ReturnPlan(LABEL_PENDING, DROP_OFF, label_uploaded=True),
    ]
    plans = forced[:count]
    statuses = list(_STATUS_WEIGHTS)
    weights = list(_STATUS_WEIGHTS.values())
    plans += [ReturnPlan(s) for s in rng.choices(statuses, weights, k=count - len(plans))]
    rng.shuffle(plans)
    return plans


def new_number(data: ShopData) -> int:
    while True:
        n = 10**16 + data.rng.randrange(9 * 10**16)
        if n not in data.used_numbers:
            data.used_numbers.add(n)
            return n


def logistics_entry(carrier_name: str, tracking: str) -> dict[str, Any]:
    return {
        "carrierName": carrier_name,
        "trackingNumber": tracking,
        "returnWarehouseType": 1,
        "returnWarehouseRegion1Name": RETURN_REGION,
    }


def pickup_slots(update_at: int, rng: random.Random) -> list[dict[str, int]]:
    day = (update_at // DAY + 1 + rng.randrange(2)) * DAY
    return [
        {"startTimestamp": (day + 9 * HOUR) * 1000, "endTimestamp": (day + 13 * HOUR) * 1000},
        {"startTimestamp": (day + 14 * HOUR) * 1000, "endTimestamp": (day + 18 * HOUR) * 1000},
    ]


def make_return(
    data: ShopData,
    plan: ReturnPlan,
    order_seq: int,
    create_at: int,
    update_at: int,
    seq: int,
) -> ReturnRec:
    rng = data.rng
    orders = data.orders
    status = plan.status
    if status in RETURN_ONLY_STATUSES or rng.random() < 0.7:
        after_sales_type = RETURN_AND_REFUND
    else:
        after_sales_type = REFUND_ONLY
    delivery: int | None = None
    if after_sales_type == RETURN_AND_REFUND:
        delivery = plan.delivery_type or (PICK_UP if rng.random() < 0.35 else DROP_OFF)
    uploaded = plan.label_uploaded
    if uploaded is None:
        uploaded = rng.random() < 0.15
    number = new_number(data)
    sn = f"RA-211-{number}"
    n_lines = min(orders.nlines[order_seq], 1 + (rng.random() < 0.25) + (rng.random() < 0.1))
    lines = []
    for k in range(n_lines):
        product, quantity = orders.line_product(order_seq, k)
        lines.append(
            {
                "afterSalesSn": f"211-{number}{k + 1:02d}",
                "parentAfterSalesSn": sn,
                "orderSn": orders.line_sn(order_seq, k),
                "goodsId": product.goods_id,
                "skuId": product.sku_id,
                "productSkuId": product.product_sku_id,
                "applyAfterSalesGoodsNumber": 1 + rng.randrange(quantity),
            }
        )
    rec = ReturnRec(
        seq=seq,
        sn=sn,
        order_sn=orders.sn(order_seq),
        after_sales_type=after_sales_type,
        status=status,
        create_at=create_at,
        update_at=update_at,
        operations=default_operations(status, label_uploaded=uploaded),
        delivery_type=delivery,
        lines=lines,
    )
    goods_back = after_sales_type == RETURN_AND_REFUND
    shipped = status in (2, 3, 4, 5, 9) or (status == LABEL_PENDING and uploaded)
    if goods_back and (shipped or (status in (6, 7) and rng.random() < 0.4)):
        carrier = rng.choice(LABEL_CARRIERS)
        rec.logistics.append(logistics_entry(carrier.name, tracking_number(carrier, rng)))
    if status == LABEL_PENDING and delivery == PICK_UP and not uploaded:
        with_slots = plan.with_slots if plan.with_slots is not None else rng.random() < 0.6
        if with_slots:
            rec.pickup_slots = pickup_slots(update_at, rng)
    rec.latest_pickup_ms = (update_at + 7 * DAY) * 1000
    return rec


_RECENT = (1, 8, 10, 11)  # states a return does not stay in for long


def generate_returns(data: ShopData, count: int, start: int, end: int) -> list[ReturnRec]:
    rng = data.rng
    created = data.orders.created
    if len(created) == 0:
        return []
    records: list[ReturnRec] = []
    for plan in _return_plans(rng, count):
        if plan.status in _RECENT:
            create_at = end - rng.randrange(20 * DAY)
        else:
            create_at = start + 3 * DAY + rng.randrange(max(1, end - start - 3 * DAY))
        create_at = max(start, min(end, create_at))
        bound = bisect.bisect_right(created, create_at - DAY)
        order_seq = rng.randrange(bound) if bound else 0
        create_at = min(end, max(create_at, created[order_seq]))
        longest = 2 * DAY if plan.status in _RECENT else 12 * DAY
        update_at = create_at + rng.randrange(min(longest, end - create_at + 1))
        records.append(make_return(data, plan, order_seq, create_at, update_at, len(records)))
    return records


# -- Orange Connex --------------------------------------------------------------------------
def make_rma(data: ShopData, rec: ReturnRec, oc: OcState, *, status: str = OPEN) -> Rma:
    rng = data.rng
    while True:
        order_number = f"OCS1US{rng.randrange(10**9, 10**10)}"
        if order_number not in oc.rmas:
            break
    if rec.logistics:
        known = rec.logistics[-1]
        carrier_name, label_tracking = known["carrierName"], known["trackingNumber"]
    else:
        carrier = rng.choice(LABEL_CARRIERS)
        carrier_name, label_tracking = carrier.name, tracking_number(carrier, rng)
    # Some RMAs do not know the tracking the buyer ships with: UPDATE_TRACKING has work to do.
    knows_tracking = bool(rec.logistics) and rng.random() < 0.5
    rma = Rma(
        order_number=order_number,
        reference_number=rec.sn,
        shop_id=data.shop.shop_id,
        status=status,
        tracking_number=label_tracking if knows_tracking else "",
        carrier_name=carrier_name if knows_tracking else "",
        label_tracking=label_tracking,
        label_carrier=carrier_name,
        service_type="PICK_UP" if rec.delivery_type == PICK_UP else "DROP_OFF",
    )
    if rec.logistics:
        # The label was issued long ago: past its first "ready" answer, which is when OC
        # learns the tracking of a label it issues itself.
        rma.label_queries = oc.label_ready_after + 1
    oc.add(rma)
    return rma


def generate_rmas(data: ShopData, records: list[ReturnRec], oc: OcState) -> None:
    rng = data.rng
    first_pending = True
    for rec in records:
        if rec.status == LABEL_PENDING:
            waiting = 10 in rec.operations
            # The first waiting return always has an RMA so a small demo has a label to move.
            if (waiting and first_pending) or rng.random() < 0.85:
                make_rma(data, rec, oc)
            first_pending = first_pending and not waiting
        elif rec.status in (2, 6, 7) and rng.random() < 0.5:
            closed = rec.status in (6, 7) and rng.random() < 0.5
            make_rma(data, rec, oc, status=CANCELLED if closed else OPEN)


def generate_shop(
    shop: SimShop, index: int, seed: int, start: int, end: int, oc: OcState
) -> ShopData:
    products = make_products(random.Random(f"{seed}:{shop.shop_id}:products"))
    salt = random.Random(f"{seed}:{shop.shop_id}:salt").getrandbits(64)
    data = ShopData(
        shop=shop,
        index=index,
        orders=OrderTable(salt, products),
        returns=ReturnTable(),
        products=products,
        warehouses=make_warehouses(index),
        rng=random.Random(f"{seed}:{shop.shop_id}:returns"),
    )
    generate_orders(data.orders, shop.orders, f"{seed}:{shop.shop_id}:orders", start, end)
    records = generate_returns(data, shop.returns, start, end)
    for seq, rec in enumerate(sorted(records, key=lambda r: (r.create_at, r.sn))):
        rec.seq = seq
    data.returns.load(sorted(records, key=lambda r: r.seq))
    generate_rmas(data, data.returns.records, oc)
    return data
