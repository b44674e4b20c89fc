"""The Temu API types the engine uses, each a function of (call) -> result."""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from engine.sim import poison
from engine.sim.catalog import CARRIERS, CARRIERS_BY_ID
from engine.sim.codes import (
    AFTERSALES_FORBIDDEN,
    AFTERSALES_NOT_FOUND,
    BAD_PARAMS,
    LABEL_INVALID,
    ORDER_NOT_FOUND,
    TRACKING_INVALID,
    ApiError,
)
from engine.sim.data import ShopData, logistics_entry
from engine.sim.orders import REGION_US, STATUSES
from engine.sim.params import opt_int, opt_str_list, refuse, req_int, req_str, window
from engine.sim.pickup import check_mode
from engine.sim.query import Query, Selection, page
from engine.sim.returns import LABEL_PENDING, OP_UPLOAD_LABEL, STATUS_GROUP, ReturnRec
from engine.sim.tokens import TOKEN_INFO, info_result
from engine.sim.world import World

_TRACKING = re.compile(r"[A-Za-z0-9-]{6,40}")


@dataclass
class Call:
    world: World
    shop: ShopData
    params: dict[str, Any]
    request_id: str
    rng: random.Random
    drift_wanted: bool = False
    drifted: list[str] = field(default_factory=list)  # record keys moved by drift


Handler = Callable[[Call], Any]


def _drift(call: Call, kind: str, query: Query, offset: int, limit: int) -> None:
    """Before answering, one record of the window that is not on this page changes (moves to
    now and out of the window), shifting every later page by one: the spec's paging hazard."""
    ends = [w[1] for w in (query.update, query.create) if w is not None]
    if not call.drift_wanted or not ends or max(ends) >= call.world.now():
        return
    table = call.shop.orders if kind == "orders" else call.shop.returns
    selection = call.world.cache.select(table, query)
    on_page = max(0, min(selection.total, offset + limit) - offset)
    others = selection.total - on_page
    if others <= 0:
        return
    pos = call.rng.randrange(others)
    if pos >= offset:
        pos += on_page
    seq = selection.at(pos)
    call.world.drift(call.shop, kind, seq)
    call.drifted.append(kind)


def _select_page(
    call: Call, kind: str, query: Query, offset: int, limit: int
) -> tuple[Selection, list[int]]:
    _drift(call, kind, query, offset, limit)
    table = call.shop.orders if kind == "orders" else call.shop.returns
    selection = call.world.cache.select(table, query)
    return selection, page(selection, offset, limit)


# -- orders ---------------------------------------------------------------------------------
def order_list(call: Call) -> dict[str, Any]:
    p, orders = call.params, call.shop.orders
    refuse(p, "pageNo", "pageNumber")
    page_number = opt_int(p, "pageNumber", 1, lo=1) or 1
    size = opt_int(p, "pageSize", 10, lo=1, hi=100) or 10
    updated = window(p, "updateAtStart", "updateAtEnd")
    created = window(p, "createAfter", "createBefore")
    if updated is not None and created is not None and call.world.modes.exclusive_order_filters:
        raise ApiError(BAD_PARAMS, "give updateAtStart/updateAtEnd or createAfter/createBefore")
    status = opt_int(p, "parentOrderStatus", 0) or 0
    if status and status not in STATUSES:
        raise ApiError(BAD_PARAMS, f"parentOrderStatus {status} is not a known status")
    sns = opt_str_list(p, "parentOrderSnList", 20)
    region = opt_int(p, "regionId")
    types = opt_str_list(p, "fulfillmentTypeList", 10)
    sortby = p.get("sortby", "createTime")
    if sortby not in ("updateTime", "createTime"):
        raise ApiError(BAD_PARAMS, "sortby must be updateTime or createTime")
    candidates = None
    if sns is not None:
        candidates = tuple(s for s in map(orders.seq_of, sns) if s is not None)
    predicate: Callable[[int], bool] | None = None
    if status or region is not None or types is not None:
        type_set = frozenset(types) if types is not None else None

        def predicate(seq: int) -> bool:
            return (
                (not status or orders.status[seq] == status)
                and (region is None or region == REGION_US)
                and (type_set is None or orders.fulfillment_type(seq) in type_set)
            )

    query = Query(
        update=updated,
        create=created,
        sort="update" if sortby == "updateTime" else "create",
        candidates=candidates,
        filter_key=(status, region, tuple(types or ())),
        predicate=predicate,
    )
    offset = (page_number - 1) * size
    selection, seqs = _select_page(call, "orders", query, offset, size)
    items = [orders.item(s) for s in seqs]
    total = selection.total
    if call.world.modes.poison:
        for s, item in zip(seqs, items, strict=True):
            poison.poison_item(s, item, poison.ORDER_KINDS)
        total = poison.order_total(orders, updated, created, total)
        items = poison.with_strays(seqs, items)
    return {"totalItemNum": total, "pageItems": items}


def order_detail(call: Call) -> dict[str, Any]:
    orders = call.shop.orders
    seq = orders.seq_of(req_str(call.params, "parentOrderSn"))
    if seq is None:
        raise ApiError(ORDER_NOT_FOUND)
    return orders.detail(seq)


# -- returns --------------------------------------------------------------------------------
def parent_returns_list(call: Call) -> dict[str, Any]:
    p, table = call.params, call.shop.returns
    refuse(p, "pageNumber", "pageNo")
    page_no = opt_int(p, "pageNo", 1, lo=1) or 1
    size = opt_int(p, "pageSize", 10, lo=1, hi=200) or 10
    created = window(p, "createAtStart", "createAtEnd")
    updated = window(p, "updateAtStart", "updateAtEnd")
    if created is None and updated is None:
        raise ApiError(BAD_PARAMS, "a createAt or updateAt window is required")
    group = opt_int(p, "afterSalesStatusGroup")
    order_sns = opt_str_list(p, "parentOrderSnList", 100)
    return_sns = opt_str_list(p, "parentAfterSalesSnList", 100)
    candidates = None
    if return_sns is not None and not call.world.modes.ignore_return_sn_filter:
        candidates = tuple(table.by_sn[s].seq for s in return_sns if s in table.by_sn)
    predicate: Callable[[int], bool] | None = None
    if group is not None or order_sns is not None:
        order_set = frozenset(order_sns) if order_sns is not None else None

        def predicate(seq: int) -> bool:
            rec = table.records[seq]
            return (group is None or STATUS_GROUP[rec.status] == group) and (
                order_set is None or rec.order_sn in order_set
            )

    query = Query(
        update=updated,
        create=created,
        sort="update",
        candidates=candidates,
        filter_key=(group, tuple(order_sns or ())),
        predicate=predicate,
    )
    offset = (page_no - 1) * size
    selection, seqs = _select_page(call, "returns", query, offset, size)
    items = [table.records[s].item() for s in seqs]
    modes = call.world.modes
    if modes.stale_items:  # return_list_lag_s: the list has not caught up with an upload yet
        shop_id, now = call.shop.shop.shop_id, call.world.clock()
        items = [modes.list_item(shop_id, i["parentAfterSalesSn"], i, now) for i in items]
    if modes.poison:
        for s, item in zip(seqs, items, strict=True):
            poison.poison_item(s, item, poison.RETURN_KINDS)
        items = poison.with_strays(seqs, items)
    return {"total": selection.total, "pageNumber": page_no, "data": items}


def return_lines_list(call: Call) -> dict[str, Any]:
    p, table = call.params, call.shop.returns
    refuse(p, "pageNumber", "pageNo")
    sns = opt_str_list(p, "parentAfterSalesSnList", 100)
    if not sns:
        raise ApiError(BAD_PARAMS, "parentAfterSalesSnList is required")
    page_no = opt_int(p, "pageNo", 1, lo=1) or 1
    size = opt_int(p, "pageSize", 10, lo=1, hi=200) or 10
    cap = call.world.modes.lines_max_page_size
    if cap and size > cap:
        raise ApiError(BAD_PARAMS, f"pageSize must be at most {cap}")
    lines = []
    for sn in dict.fromkeys(sns):
        rec = table.by_sn.get(poison.clean_key(sn))
        if rec is not None:
            mine = rec.line_items()
            if call.world.modes.poison:
                poison.poison_lines(rec.seq, mine)
                if rec.seq == poison.STRAY_SEQ:
                    mine = [*mine, *poison.STRAYS]
            lines += mine
    offset = (page_no - 1) * size
    return {"total": len(lines), "data": lines[offset : offset + size]}


def _return_of(call: Call, *, with_order: bool) -> ReturnRec:
    sn = poison.clean_key(req_str(call.params, "parentAfterSalesSn"))
    rec = call.shop.returns.by_sn.get(sn)
    if with_order:
        order_sn = req_str(call.params, "parentOrderSn")
        if rec is not None and rec.order_sn != order_sn:
            rec = None
    if rec is None:
        raise ApiError(AFTERSALES_NOT_FOUND, sn)
    return rec


def parent_return_order(call: Call) -> dict[str, Any]:
    rec = _return_of(call, with_order=False)
    if call.world.modes.take_logistics_not_ready():
        raise ApiError(AFTERSALES_NOT_FOUND, "reverse order not found")
    return {"logisticsInfoList": [dict(x) for x in rec.logistics]}


def _awaiting_label(call: Call, rec: ReturnRec) -> None:
    done = (call.shop.shop.shop_id, rec.sn) in call.world.uploaded
    if call.world.modes.accept_second_label and rec.status == LABEL_PENDING and done:
        return  # the mode: a labelled return still in status 8 takes another label
    if rec.status != LABEL_PENDING or OP_UPLOAD_LABEL not in rec.operations:
        # The reason only goes to the attempt log; Temu's answer is the same either way.
        done = (call.shop.shop.shop_id, rec.sn) in call.world.uploaded or (
            rec.status == LABEL_PENDING and bool(rec.logistics)
        )
        raise ApiError(
            AFTERSALES_FORBIDDEN,
            "no return label can be uploaded for this return",
            reason="already_uploaded" if done else "not_awaiting_label",
        )


def returnlabel_prepare(call: Call) -> dict[str, Any]:
    rec = _return_of(call, with_order=True)
    _awaiting_label(call, rec)
    return {
        "availableReturnWarehouseList": [
            {"warehouseId": w.warehouse_id, "warehouseName": w.name} for w in call.shop.warehouses
        ],
        "userSelectedPickUpTimeList": [dict(s) for s in rec.pickup_slots],
        "merchantLatestPickUpTime": rec.latest_pickup_ms,
    }


def _http_url(value: object) -> bool:
    """An absolute http(s) URL (the spec asks for a public one, not for TLS)."""
    return isinstance(value, str) and any(
        value.startswith(p) and len(value) > len(p) for p in ("https://", "http://")
    )


def _carrier_id(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def _is_pick_up(p: dict[str, Any], dtos: list[Any]) -> bool:
    """The upload says which it is (temu-api.md "Drop off vs pick up"): a pick-up carries the
    certificate image and a schedule; the return's own returnDeliveryType does not decide."""
    if p.get("pickUpTimeScheduleMode") is not None:
        return True
    return any(isinstance(d, dict) and d.get("pickUpCertificateImageUrl") for d in dtos)


def _check_label(call: Call, dto: object, *, pick_up: bool) -> tuple[str, str]:
    """Validates one returnLabelDTO; answers (carrier name, tracking number)."""
    if not isinstance(dto, dict):
        raise ApiError(BAD_PARAMS, "returnLabelDTOList items must be objects")
    warehouses = {w.warehouse_id for w in call.shop.warehouses}
    if str(dto.get("mallWarehouseId")) not in warehouses:
        raise ApiError(LABEL_INVALID, "mallWarehouseId is not one of the return's warehouses")
    carrier = CARRIERS_BY_ID.get(_carrier_id(dto.get("carrierId")) or -1)
    if carrier is None:
        raise ApiError(LABEL_INVALID, "carrierId is not a known carrier")
    urls = {k: dto.get(k) for k in ("returnLabelUrl", "pickUpCertificateImageUrl")}
    for key, url in urls.items():
        if url not in (None, "") and not _http_url(url):
            raise ApiError(LABEL_INVALID, f"{key} must be an http(s) URL")
    if pick_up:
        # temu-api.md "Drop off vs pick up": a pick-up carries the certificate image, and a
        # label PDF alone does not stand in for it.
        if not _http_url(urls["pickUpCertificateImageUrl"]):
            raise ApiError(LABEL_INVALID, "a pick-up needs pickUpCertificateImageUrl")
    elif not _http_url(urls["returnLabelUrl"]):
        raise ApiError(LABEL_INVALID, "a drop-off needs returnLabelUrl (the label PDF)")
    tracking = dto.get("trackingNumber")
    if not isinstance(tracking, str) or not _TRACKING.fullmatch(tracking):
        raise ApiError(TRACKING_INVALID, "trackingNumber is missing or malformed")
    return carrier.name, tracking


def _check_schedule(p: dict[str, Any], rec: ReturnRec) -> dict[str, Any]:
    mode = opt_int(p, "pickUpTimeScheduleMode")
    if mode == 1:
        slot = {
            "startTimestamp": req_int(p, "startTimestamp"),
            "endTimestamp": req_int(p, "endTimestamp"),
        }
        if slot not in rec.pickup_slots:
            raise ApiError(BAD_PARAMS, "startTimestamp/endTimestamp is not a slot the buyer chose")
        return {"pickUpTimeScheduleMode": 1, **slot}
    if mode == 3:
        latest = req_int(p, "latestTimestamp")
        if not 0 < latest <= rec.latest_pickup_ms:
            raise ApiError(BAD_PARAMS, "latestTimestamp is after merchantLatestPickUpTime")
        return {"pickUpTimeScheduleMode": 3, "latestTimestamp": latest}
    raise ApiError(BAD_PARAMS, "a pick-up needs pickUpTimeScheduleMode 1 or 3")


def upload_returnlabel(call: Call) -> None:
    p = call.params
    rec = _return_of(call, with_order=True)
    _awaiting_label(call, rec)
    dtos = p.get("returnLabelDTOList")
    if not isinstance(dtos, list) or not dtos:
        raise ApiError(BAD_PARAMS, "returnLabelDTOList is required")
    pick_up = _is_pick_up(p, dtos)
    if call.world.modes.refuse_mode_mismatch:
        check_mode(rec, pick_up=pick_up)
    labels = [_check_label(call, dto, pick_up=pick_up) for dto in dtos]
    schedule = _check_schedule(p, rec) if pick_up else {}
    world = call.world
    now = world.now()
    world.uploads.append(
        {
            "shopId": call.shop.shop.shop_id,
            "parentAfterSalesSn": rec.sn,
            "parentOrderSn": rec.order_sn,
            "returnLabelDTOList": dtos,
            **schedule,
            "at": now,
            "requestId": call.request_id,
        }
    )
    shop_id = call.shop.shop.shop_id
    world.uploaded.add((shop_id, rec.sn))
    world.modes.hold_stale(shop_id, rec.sn, rec.item(), world.clock())
    rec.operations = [op for op in rec.operations if op != OP_UPLOAD_LABEL]
    rec.logistics = [logistics_entry(name, tracking) for name, tracking in labels]
    call.shop.returns.touch(rec, now)
    return None


# -- carriers -------------------------------------------------------------------------------
def _carriers(call: Call) -> tuple[Any, ...]:
    # empty_carrier_lists: a momentarily empty list, as a cache miss upstream could give.
    return () if call.world.modes.take_empty_carriers() else CARRIERS


def return_carriers(call: Call) -> dict[str, Any]:
    req_int(call.params, "returnWarehouseRegionId1")
    return {
        "carrierDTOList": [
            {"carrierId": c.carrier_id, "carrierName": c.name} for c in _carriers(call)
        ]
    }


def logistics_companies(call: Call) -> dict[str, Any]:
    return {
        "logisticsServiceProviderList": [
            {"logisticsServiceProviderId": c.carrier_id, "logisticsServiceProviderName": c.name}
            for c in _carriers(call)
        ]
    }


# -- access token ---------------------------------------------------------------------------
def access_token_info(call: Call) -> dict[str, Any]:
    shop = call.shop
    grant = call.world.grants[shop.shop.shop_id]
    return info_result(
        shop.shop.access_token, grant, mall_id=call.world.mall_ids[shop.shop.shop_id]
    )


HANDLERS: dict[str, Handler] = {
    "bg.order.list.v2.get": order_list,
    "bg.order.detail.v2.get": order_detail,
    "bg.aftersales.parentaftersales.list.get": parent_returns_list,
    "bg.aftersales.aftersales.list.get": return_lines_list,
    "bg.aftersales.parentreturnorder.get": parent_return_order,
    "temu.aftersales.returnlabel.prepare.get": returnlabel_prepare,
    "temu.aftersales.upload.returnlabel": upload_returnlabel,
    "temu.aftersales.carrier.get": return_carriers,
    "bg.logistics.companies.get": logistics_companies,
    TOKEN_INFO: access_token_info,
}
LIST_TYPES = frozenset({"bg.order.list.v2.get", "bg.aftersales.parentaftersales.list.get"})
MUTATING_TYPES = frozenset({"temu.aftersales.upload.returnlabel"})
