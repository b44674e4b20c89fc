"""The simulated world: every shop's data, Orange Connex, and the ways tests change them."""

from __future__ import annotations

import gc
import random
import time
from collections.abc import Callable
from typing import Any, Protocol

from engine.sim.attempts import AttemptLog
from engine.sim.catalog import tracking_number
from engine.sim.config import SimApp, SimConfig
from engine.sim.data import (
    DAY,
    LABEL_CARRIERS,
    ReturnPlan,
    ShopData,
    generate_shop,
    logistics_entry,
    make_return,
    make_rma,
    order_lines_count,
    pickup_slots,
)
from engine.sim.modes import Modes
from engine.sim.oc_state import OPEN, OcState, OcTokens
from engine.sim.pickup import add_pickup_cases
from engine.sim.poison import poisoned
from engine.sim.query import QueryCache
from engine.sim.returns import (
    LABEL_PENDING,
    OP_UPLOAD_LABEL,
    PICK_UP,
    RETURN_AND_REFUND,
    ReturnRec,
    default_operations,
)
from engine.sim.tokens import TokenGrant, make_grant

_ORDER_TERMINAL = (3, 5)
MALL_ID_BASE = 634418200000  # mallIds look like Temu's (12 digits)
_RETURN_TERMINAL = (5, 6, 7)


def _next_order_status(status: int, nlines: int, rng: random.Random) -> int:
    r = rng.random()
    if status == 1:
        return 2 if r < 0.9 else 3
    if status == 2:
        if nlines >= 2 and r < 0.2:
            return 41
        return 4 if r < 0.9 else 3
    if status == 41:
        return 4
    if status == 4:
        return 51 if nlines >= 2 and r < 0.2 else 5
    if status == 51:
        return 5
    return status  # terminal: something else about it changed


def _next_return_status(rec: ReturnRec, rng: random.Random) -> int:
    s, r = rec.status, rng.random()
    if s == 11:
        return 1 if r < 0.6 else 7
    if s == 10:
        return LABEL_PENDING if r < 0.8 else 6
    if s == 1:
        return 4 if r < 0.6 else 7 if r < 0.8 else 6
    if s == LABEL_PENDING:
        if OP_UPLOAD_LABEL in rec.operations:
            return 6 if r < 0.2 else s  # the buyer may give up while the label is awaited
        return 2
    return {2: 3, 3: 4 if r < 0.7 else 7, 4: 5, 9: 5}.get(s, s)


class ChangeListener(Protocol):
    def order_changed(self, shop_id: str, item: dict[str, Any]) -> None: ...

    def return_changed(self, shop_id: str, item: dict[str, Any]) -> None: ...


class World:
    def __init__(self, config: SimConfig, *, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock
        self.start_ts, self.end_ts = config.time_range()
        self.apps: dict[str, SimApp] = {a.app_key: a for a in config.apps}
        self.oc = OcState(
            OcTokens(
                config.oc_client_id,
                config.oc_refresh_token,
                config.oc_token_ttl_s,
                rotate=config.oc_rotate_refresh,
            ),
            config.oc_label_ready_after,
        )
        self.shops: dict[str, ShopData] = {}
        # Each shop's mallId: one home for the token info answer and the webhook events, so
        # an event maps to the shop the engine learned from bg.open.accesstoken.info.get.
        self.mall_ids: dict[str, int] = {
            shop.shop_id: MALL_ID_BASE + i for i, shop in enumerate(config.shops, start=1)
        }
        for i, shop in enumerate(config.shops, start=1):
            self.shops[shop.shop_id] = generate_shop(
                shop, i, config.seed, self.start_ts, self.end_ts, self.oc
            )
        self.by_token: dict[str, ShopData] = {s.shop.access_token: s for s in self.shops.values()}
        self.revoked: set[str] = set()
        self.uploads: list[dict[str, Any]] = []  # applied uploads only; attempts has them all
        self.attempts = AttemptLog()
        self.uploaded: set[tuple[str, str]] = set()  # (shop_id, sn) with an applied upload
        self.cache = QueryCache()
        self.modes = Modes.from_config(config)
        # What a default token grant covers: every API type served. Imported here because
        # temu_api itself needs World.
        from engine.sim.temu_api import HANDLERS
        from engine.sim.webhooks import TMC_UPDATE

        self.api_types = (*HANDLERS, TMC_UPDATE)
        api_types = self.api_types
        now = self.now()
        self.grants: dict[str, TokenGrant] = {
            s.shop_id: make_grant(s.token_expires_at, s.token_scopes, now=now, all_types=api_types)
            for s in config.shops
        }
        self.pickup_cases: list[dict[str, Any]] = []
        if self.modes.pickup_cases:
            for data in self.shops.values():
                self.pickup_cases += add_pickup_cases(data, self.oc, self.end_ts)
        # Told about every order or return a mutation changes (webhook delivery).
        self.listeners: list[ChangeListener] = []

    def now(self) -> int:
        return int(self.clock())

    def shop(self, shop_id: str) -> ShopData:
        try:
            return self.shops[shop_id]
        except KeyError:
            raise KeyError(f"unknown shop {shop_id!r}") from None

    def revoke_token(self, token: str) -> bool:
        if token not in self.by_token:
            return False
        self.revoked.add(token)
        return True

    def unrevoke_token(self, token: str) -> bool:
        """The seller re-authorised: a revoked token works again (its grant is unchanged)."""
        if token not in self.by_token:
            return False
        self.revoked.discard(token)
        return True

    def set_token(
        self,
        shop_id: str,
        *,
        expires_at: int | None = None,
        scopes: list[str] | None = None,
        keep: bool = True,
    ) -> dict[str, Any]:
        """Changes a shop's token grant; with ``keep``, what is not given stays as it was."""
        old = self.grants[self.shop(shop_id).shop.shop_id]
        if keep:
            expires_at = old.expires_at if expires_at is None else expires_at
            scopes = sorted(old.scopes) if scopes is None else scopes
        grant = make_grant(expires_at, scopes, now=self.now(), all_types=self.api_types)
        self.grants[shop_id] = grant
        return {
            "shopId": shop_id,
            "expiredTime": grant.expires_at,
            "apiScopeList": sorted(grant.scopes),
        }

    # -- mutations ------------------------------------------------------------------------
    def mutate(
        self,
        shop_id: str,
        orders_changed: int = 0,
        orders_new: int = 0,
        returns_changed: int = 0,
        returns_new: int = 0,
    ) -> dict[str, Any]:
        """Changes existing records and creates new ones, all stamped now; returns their sns."""
        data = self.shop(shop_id)
        now = self.now()
        return {
            "now": now,
            "orders_changed": self._change_orders(data, orders_changed, now),
            "orders_new": self._new_orders(data, orders_new, now),
            "returns_changed": self._change_returns(data, returns_changed, now),
            "returns_new": self._new_returns(data, returns_new, now),
        }

    def _change_orders(self, data: ShopData, count: int, now: int) -> list[str]:
        orders, rng = data.orders, data.rng
        n = len(orders)
        if count <= 0 or n == 0:
            return []
        pool = rng.sample(range(n), min(n, count * 3))
        # Orders that can still move come first; terminal ones only change other fields.
        pool.sort(key=lambda s: orders.status[s] in _ORDER_TERMINAL)
        changed = []
        for seq in pool[:count]:
            status = _next_order_status(orders.status[seq], orders.nlines[seq], rng)
            if status in (1, 2):
                orders.expect[seq] += DAY  # the ship-by date moved: a non-status change
            orders.touch(seq, now, status=status)
            changed.append(orders.sn(seq))
            self._order_changed(data, seq)
        return changed

    def _new_orders(self, data: ShopData, count: int, now: int) -> list[str]:
        orders, rng = data.orders, data.rng
        made = []
        for _ in range(max(0, count)):
            status = 1 if rng.random() < 0.4 else 2
            expect = now + 2 * DAY + rng.randrange(2 * DAY)
            seq = orders.add(now, expect, status, order_lines_count(rng, status))
            made.append(orders.sn(seq))
            self._order_changed(data, seq)
        return made

    def _change_returns(self, data: ShopData, count: int, now: int) -> list[str]:
        table, rng = data.returns, data.rng
        n = len(table)
        if count <= 0 or n == 0:
            return []
        pool = [table.records[s] for s in rng.sample(range(n), min(n, count * 3))]
        pool.sort(key=lambda r: r.status in _RETURN_TERMINAL)
        changed = []
        for rec in pool[:count]:
            self._move_return(data, rec, _next_return_status(rec, rng), None, now)
            changed.append(rec.sn)
        return changed

    def _new_returns(self, data: ShopData, count: int, now: int) -> list[str]:
        rng, orders = data.rng, data.orders
        made: list[str] = []
        if len(orders) == 0:
            return made
        for _ in range(max(0, count)):
            status = rng.choices((10, 1, LABEL_PENDING, 11), (40, 25, 25, 10))[0]
            plan = ReturnPlan(status, label_uploaded=False)
            order_seq = rng.randrange(len(orders))
            rec = make_return(data, plan, order_seq, now, now, data.returns.next_seq())
            data.returns.add(rec)
            if status == LABEL_PENDING and rng.random() < 0.85:
                make_rma(data, rec, self.oc)
            made.append(rec.sn)
            self._return_changed(data, rec)
        return made

    def _move_return(
        self,
        data: ShopData,
        rec: ReturnRec,
        status: int,
        operations: list[int] | None,
        now: int,
    ) -> None:
        rng = data.rng
        was = rec.status
        chosen_by_caller = operations is not None
        rec.status = status
        waiting = status == LABEL_PENDING and (operations is None or OP_UPLOAD_LABEL in operations)
        if operations is None:
            operations = default_operations(status, label_uploaded=not waiting)
        rec.operations = list(operations)
        goods_back = rec.after_sales_type == RETURN_AND_REFUND
        if waiting and was != LABEL_PENDING:
            # A label is awaited: nothing ships yet and OC is asked for an RMA.
            rec.logistics = []
            rec.pickup_slots = []
            if rec.delivery_type == PICK_UP and rng.random() < 0.6:
                rec.pickup_slots = pickup_slots(now, rng)
            rec.latest_pickup_ms = (now + 7 * DAY) * 1000
        elif status == 2 and goods_back and not rec.logistics:
            carrier = rng.choice(LABEL_CARRIERS)
            rec.logistics.append(logistics_entry(carrier.name, tracking_number(carrier, rng)))
        data.returns.touch(rec, now)
        needs_rma = waiting and not chosen_by_caller and not self.oc.by_reference.get(rec.sn)
        if needs_rma and rng.random() < 0.85:
            make_rma(data, rec, self.oc)
        self._return_changed(data, rec)

    def _order_changed(self, data: ShopData, seq: int) -> None:
        for listener in self.listeners:
            listener.order_changed(data.shop.shop_id, data.orders.item(seq))

    def _return_changed(self, data: ShopData, rec: ReturnRec) -> None:
        for listener in self.listeners:
            listener.return_changed(data.shop.shop_id, rec.item())

    def set_return_status(
        self, shop_id: str, sn: str, status: int, operations: list[int] | None = None
    ) -> dict[str, Any]:
        """Puts a return into ``status`` now (default operations for that status unless given)."""
        if status not in range(1, 12):
            raise ValueError(f"status {status} is not a Temu after-sales status")
        data = self.shop(shop_id)
        rec = data.returns.by_sn.get(sn)
        if rec is None:
            raise KeyError(f"unknown return {sn!r} in shop {shop_id!r}")
        self._move_return(data, rec, status, operations, self.now())
        return rec.item()

    def open_rma(self, shop_id: str, sn: str, *, status: str = OPEN) -> dict[str, Any]:
        data = self.shop(shop_id)
        rec = data.returns.by_sn.get(sn)
        if rec is None:
            raise KeyError(f"unknown return {sn!r} in shop {shop_id!r}")
        return make_rma(data, rec, self.oc, status=status).summary()

    def drift(self, data: ShopData, kind: str, seq: int) -> None:
        """A record changes while someone pages: only its update time moves (to now)."""
        now = self.now()
        if kind == "orders":
            data.orders.touch(seq, now)
        else:
            data.returns.touch(data.returns.records[seq], now)

    # -- ground truth ---------------------------------------------------------------------
    def truth(self, kind: str, shop_id: str | None) -> Any:
        # Hundreds of thousands of fresh dicts would trigger the cyclic GC over and over
        # (half the time for 200k orders); none of them form cycles.
        paused = gc.isenabled()
        gc.disable()
        try:
            return self._truth(kind, shop_id)
        finally:
            if paused:
                gc.enable()

    def _truth(self, kind: str, shop_id: str | None) -> Any:
        if kind == "uploads":
            return [u for u in self.uploads if shop_id is None or u["shopId"] == shop_id]
        if kind == "oc_pushes":
            return list(self.oc.pushes)
        if kind == "upload_attempts":
            return self.attempts.of("temu", shop_id)
        if kind == "oc_attempts":
            return self.attempts.of("oc", shop_id)
        if kind == "pickup_cases":
            return [c for c in self.pickup_cases if shop_id is None or c["shopId"] == shop_id]
        if kind == "rmas":
            return [r for r in self.oc.truth() if shop_id is None or r["shopId"] == shop_id]
        if shop_id is None:
            raise KeyError(f"truth of {kind!r} needs a shop")
        data = self.shop(shop_id)
        if kind == "orders":
            index = data.orders.by_update
            return [data.orders.item(index.seq_at(p)) for p in range(len(index) - 1, -1, -1)]
        records = sorted(data.returns.records, key=lambda r: (r.update_at, r.seq), reverse=True)
        if kind == "returns":
            return [r.item() for r in records]
        if kind == "return_lines":
            return [line for r in records for line in r.line_items()]
        if kind == "logistics":
            return {r.sn: [dict(x) for x in r.logistics] for r in records}
        if kind == "poisoned":
            return poisoned(data)
        raise KeyError(f"unknown truth kind {kind!r}")


TRUTH_KINDS = (
    "orders",
    "returns",
    "return_lines",
    "logistics",
    "uploads",
    "oc_pushes",
    "rmas",
    "upload_attempts",
    "oc_attempts",
    "pickup_cases",
    "poisoned",
)
